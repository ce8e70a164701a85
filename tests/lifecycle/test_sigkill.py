"""SIGKILL at every step of create, start, delete and run: the next command understands what is left.

strace kills runproc on entry to the K-th call of a system call S among those
that touch the state root, the container's directory, record or exec fifo
(also once unlinked), or the pid file's directory (`-P`), for each S in
KILL_AT and K = 1, 2, ... until a run goes through without a kill: every
mkdir, open, mknod, rename, link, write, read, unlink, rmdir, flock and
close of the state, and a kill between two calls is a kill at the entry of
the second. Counting is per process, so the container's init gets killed at
its K-th such call too (another fault runproc must survive). The fork of the
init touches no path: `test_sigkill_right_after_the_fork` stalls runproc on
its return from clone(2) and kills it there; a kill just before the fork is
the kill at the last traced call before it (the fcntl that moves its fds).

After each kill: `state` says created (and the program has not run, and a
start runs it), running (and the program runs), stopped, or "does not
exist"; a second start fails at once; `delete --force` leaves no entry,
temporary file or process.

The frozen binary is a static bootloader that runs the Python app as its
child (killed with it, by PR_SET_PDEATHSIG): strace follows both (-f); the
bootloader touches none of the traced paths, so the kills land in the app
(or the init it forks).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from chaos_testlib import (
    EXPECTED_ERRORS,
    TAG_ENV,
    exception_text,
    kill_tagged,
    leftovers,
    processes_tagged,
    wait_for_no_processes,
)
from runproc_testlib import MakeBundle, Runproc, strace_joined

MAX_KILL_POINTS = 40  # per system call: far more than any command makes; a sweep that never ends fails
# Every call that makes, changes, reads or locks state (stat-like calls change nothing: a kill
# there is a kill at the next of these).
KILL_AT = ("openat", "mkdirat", "mknodat", "renameat", "renameat2", "linkat", "unlinkat", "write", "read",
           "flock", "close", "fcntl")


class Rig:
    """One runproc, one tagged bundle, and strace."""

    def __init__(self, runproc: Runproc, make_bundle: MakeBundle, state_root: Path, tmp_path: Path,
                 exit_code: int | None) -> None:
        self.runproc = runproc
        self.state_root = state_root
        self.tmp_path = tmp_path
        self.pid_dir = tmp_path / "pids"
        self.pid_dir.mkdir(exist_ok=True)
        self.tag = uuid.uuid4().hex
        self.env = {**os.environ, TAG_ENV: self.tag}
        self.markers = tmp_path / "markers"
        self.markers.mkdir(exist_ok=True)
        # The program marks that it ran (by the container's id), then lives on or exits with a code.
        tail = f"exit {exit_code}" if exit_code is not None else "exec sleep 300"
        self.bundle = make_bundle(["/bin/sh", "-c", f'touch {self.markers}/"$ID"; {tail}'], host=True,
                                  env=["PATH=/usr/bin:/bin", f"{TAG_ENV}={self.tag}"])

    def bundle_for(self, container_id: str) -> Path:
        """The bundle with the container's id in the program's environment."""
        config = json.loads((self.bundle / "config.json").read_text())
        config["process"]["env"].append(f"ID={container_id}")
        bundle = self.tmp_path / f"bundle-{container_id}"
        bundle.mkdir()
        (bundle / "config.json").write_text(json.dumps(config))
        return bundle

    def marker(self, container_id: str) -> Path:
        return self.markers / container_id

    def __call__(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        result = self.runproc(*args, env=self.env, timeout=timeout)
        assert exception_text(result.stderr) is None, (args, result.stderr)
        return result

    def traced_paths(self, container_id: str) -> list[str]:
        directory = self.state_root / container_id
        fifo = directory / "exec.fifo"
        return [str(self.state_root), str(directory), str(fifo), f"{fifo} (deleted)", str(directory / "state.json"),
                str(self.pid_dir), str(self.pid_dir / f"{container_id}.pid")]

    def traced(self, args: list[str], container_id: str, inject: list[str]) -> tuple[int, str]:
        """Run runproc under strace; (its exit status, strace's log). strace is gone when this returns."""
        log = self.tmp_path / f"strace-{uuid.uuid4().hex}.log"
        paths = [arg for path in self.traced_paths(container_id) for arg in ("-P", path)]
        # -D: strace runs detached, so runproc is our child and we wait for it alone
        # (a created container's init lives on, traced until strace is told to go).
        argv = ["strace", "-D", "-f", "-q", "-o", str(log), "-e", "signal=none", *inject, *paths, "--",
                *self.runproc.argv(*args)]
        with open(self.tmp_path / "out", "w") as out:
            process = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
            try:
                code = process.wait(timeout=60)
            finally:
                process.kill()
                end_strace(log)
        return code, log.read_text()


def end_strace(log: Path) -> None:
    """End the strace writing `log` (ours, found by its log's name): the kernel detaches what it traced.

    strace -D ignores SIGTERM; its log is written line by line, so nothing is lost.
    """
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline[:1] == [b"strace"] and str(log).encode() in cmdline:
            os.kill(int(name), signal.SIGKILL)
            deadline = time.monotonic() + 30
            while process_state(int(name)) not in (None, "Z"):
                assert time.monotonic() < deadline, "strace did not end"
                time.sleep(0.01)


def process_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def settle(init_pid: int) -> None:
    """Wait until the init is gone, waits for start (in epoll_wait), or has exec'd the program.

    Not a timing assumption: after a kill the init may still be reacting to it
    (a start that vanished wakes it, and it ends); state must be judged after.
    """
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        state = process_state(init_pid)
        if state in (None, "Z"):
            return
        try:
            wchan = Path(f"/proc/{init_pid}/wchan").read_text()
            exe = os.readlink(f"/proc/{init_pid}/exe")
        except OSError:
            continue
        if state == "S" and ("epoll" in wchan or not exe.endswith("runproc")):
            return
        time.sleep(0.005)
    pytest.fail(f"the init {init_pid} never settled")


def recorded_pid(rig: Rig, container_id: str) -> int | None:
    try:
        return json.loads((rig.state_root / container_id / "state.json").read_text())["pid"]
    except (OSError, ValueError):
        return None


def wait_for_marker(marker: Path) -> None:
    deadline = time.monotonic() + 20
    while not marker.exists():
        assert time.monotonic() < deadline, f"the program of {marker.name} never ran"
        time.sleep(0.01)


def check_after_kill(rig: Rig, container_id: str, where: str, may_have_run: bool) -> None:
    """`may_have_run`: the killed command (or one before it) may have started the program."""
    pid = recorded_pid(rig, container_id)
    if pid is not None:
        settle(pid)
    marker = rig.marker(container_id)
    state = rig("state", container_id)
    if state.returncode:
        assert state.stderr.strip() == "container does not exist", (where, state.stderr)
        assert may_have_run or not marker.exists(), f"{where}: the program ran, but its container does not exist"
    else:
        status = json.loads(state.stdout)["status"]
        if status == "created":
            assert not marker.exists(), f"{where}: the program ran, but its container says created"
            started = rig("start", container_id, timeout=15)
            assert started.returncode == 0, (where, started.stderr)
            wait_for_marker(marker)
        elif status == "running":
            wait_for_marker(marker)
        else:
            assert status == "stopped", (where, status)
    again = rig("start", container_id, timeout=15)
    if again.returncode:
        assert any(error in again.stderr for error in EXPECTED_ERRORS), (where, again.stderr)
    deleted = rig("delete", "--force", container_id)
    assert deleted.returncode == 0, (where, deleted.stderr)
    assert os.listdir(rig.state_root) == [], f"{where}: left {os.listdir(rig.state_root)}"
    assert leftovers(rig.pid_dir) == [], f"{where}: temporary files left"
    assert wait_for_no_processes(rig.tag) == [], f"{where}: processes left"


SCENARIOS = {
    # name: (what runs before, traced under strace, exit code of the program or None for a long one)
    "create": ([], ["create", "--pid-file", "{pid_file}", "{id}", "{bundle}"], None),
    "start": ([["create", "{id}", "{bundle}"]], ["start", "{id}"], None),
    "delete-running": ([["run", "--detach", "{id}", "{bundle}"]], ["delete", "--force", "{id}"], None),
    "delete-stopped": ([["run", "--keep", "{id}", "{bundle}"]], ["delete", "{id}"], 0),
    "run": ([], ["run", "--pid-file", "{pid_file}", "{id}", "{bundle}"], 3),
}


@pytest.fixture
def rig_factory(runproc: Runproc, make_bundle: MakeBundle, state_root: Path, tmp_path: Path) -> Iterator[type]:
    if shutil.which("strace") is None:
        pytest.fail("strace is not installed (make deps installs it)")
    rigs: list[Rig] = []

    def make(exit_code: int | None) -> Rig:
        rig = Rig(runproc, make_bundle, state_root, tmp_path, exit_code)
        rigs.append(rig)
        return rig

    yield make  # type: ignore[misc]
    for rig in rigs:
        kill_tagged(rig.tag)


def fill(args: list[str], rig: Rig, container_id: str, bundle: Path) -> list[str]:
    return [arg.format(id=container_id, bundle=bundle, pid_file=rig.pid_dir / f"{container_id}.pid") for arg in args]


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_sigkill_at_every_state_step(scenario: str, rig_factory: type) -> None:
    before, traced, exit_code = SCENARIOS[scenario]
    rig = rig_factory(exit_code)  # type: ignore[call-arg]
    kills: dict[str, int] = {}
    for syscall in KILL_AT:
        for k in range(1, MAX_KILL_POINTS + 1):
            container_id = f"{scenario}-{syscall}-{k}"
            bundle = rig.bundle_for(container_id)
            for args in before:
                assert rig(*fill(args, rig, container_id, bundle)).returncode == 0
            code, log = rig.traced(fill(traced, rig, container_id, bundle), container_id,
                                   ["-e", f"inject={syscall}:signal=SIGKILL:when={k}"])
            # A call that never returned (strace -D prints no "+++ killed" line for its own tracee).
            killed = any(line.endswith("= ?") and f" {syscall}(" in line for line in strace_joined(log).splitlines())
            where = f"{scenario}, killed at {syscall} #{k}" if killed else f"{scenario}, {syscall} #{k}: no kill"
            if not killed:
                assert code == (exit_code if scenario == "run" else 0), (where, code, log)
            check_after_kill(rig, container_id, where, scenario != "create")
            if not killed:
                break
            kills[syscall] = k
        else:
            pytest.fail(f"{scenario}: still killed at {syscall} #{MAX_KILL_POINTS}")
    print(f"{scenario}: killed at {kills}")
    # The calls no runproc command can do without: if strace matched none of them, nothing was tested.
    assert {"openat", "close"} <= set(kills), f"{scenario}: kill points {kills}: is strace's -P matching?"


@pytest.mark.parametrize("scenario", ["create", "run"])
def test_sigkill_right_after_the_fork(scenario: str, rig_factory: type) -> None:
    """runproc stalled on its return from clone(2) (strace's delay), and killed there, before anything else."""
    rig = rig_factory(3 if scenario == "run" else None)  # type: ignore[call-arg]
    container_id = f"fork-{scenario}"
    bundle = rig.bundle_for(container_id)
    args = fill(SCENARIOS[scenario][1], rig, container_id, bundle)
    log = rig.tmp_path / "fork.log"
    # Every clone returns 2 s late in its parent: the bootloader starting the app (harmless), and the
    # app forking the init (the moment to kill it). The child runs on at once.
    argv = ["strace", "-D", "-f", "-q", "-o", str(log), "-e", "trace=clone,clone3,fork,vfork",
            "-e", "inject=clone,clone3,fork,vfork:delay_exit=2000000:when=1", "--", *rig.runproc.argv(*args)]
    with open(rig.tmp_path / "out", "w") as out:
        process = subprocess.Popen(argv, env=rig.env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        try:
            app = wait_for_forking_app(rig)  # the init exists: the app is stalled in clone's return
            os.kill(app, signal.SIGKILL)
            process.wait(timeout=60)
        finally:
            process.kill()
            end_strace(log)
    check_after_kill(rig, container_id, f"{scenario}, killed right after forking the init", False)


def wait_for_forking_app(rig: Rig) -> int:
    """The Python app (not the static bootloader that runs it) once it has forked the init.

    Both carry the test's tag in their environment and run the unpacked app,
    not the binary the test started.
    """
    binary = os.path.realpath(rig.runproc.binary)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        apps: dict[int, int] = {}  # pid -> parent, of tagged processes running the app
        for pid in processes_tagged(rig.tag):
            try:
                exe = os.readlink(f"/proc/{pid}/exe")
                parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
            if exe != binary:
                apps[pid] = parent
        for pid, parent in apps.items():
            if parent in apps:
                return parent
        time.sleep(0.005)
    pytest.fail("runproc never forked its init")
