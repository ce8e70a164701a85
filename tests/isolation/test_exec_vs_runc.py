"""exec, differential: the same exec calls into a runc container and into a runproc container.

Both containers come from `runc spec`'s config (namespaces, capabilities,
masked paths; spec_bundle), each on its own rootfs copy, running `sleep`.
What the exec'd process sees, its exit code and the errors are compared.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from isolation_probe import NAMESPACE_LINKS, Probe, SpecBundle
from runproc_testlib import Runproc, error_text, make_reachable

Probes = tuple[Probe, Probe]
SECCOMP_NO_MKDIR = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "architectures": ["SCMP_ARCH_X86_64"],
    "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}],
}


class Running:
    """A started container of one runtime, to exec into."""

    def __init__(self, side: Runproc, cid: str) -> None:
        self.side = side
        self.cid = cid

    def exec(self, *cmd: str, flags: tuple[str, ...] = (), **kwargs: object) -> subprocess.CompletedProcess[str]:
        return self.side("exec", *flags, self.cid, *cmd, **kwargs)  # type: ignore[arg-type]

    def pid(self) -> int:
        return int(self.side.state(self.cid)["pid"])


Start = Callable[..., list[Running]]


@pytest.fixture
def start(probes: Probes, spec_bundle: SpecBundle) -> Start:
    """start(edit=None) -> [runc's, runproc's] running containers of the same config."""
    counter = iter(range(100))

    def make(edit: Callable[[dict], None] | None = None) -> list[Running]:
        started = []
        n = next(counter)
        for probe in probes:
            bundle = spec_bundle("exec sleep 1000", edit)
            config = json.loads((bundle / "config.json").read_text())
            shutil.copytree(config["root"]["path"], bundle / "rootfs", symlinks=True)
            for mount_point in ("proc", "sys", "dev", "tmp"):  # root of a user namespace cannot make them
                (bundle / "rootfs" / mount_point).mkdir(exist_ok=True)
            make_reachable(bundle / "rootfs")
            config["root"]["path"] = str(bundle / "rootfs")
            (bundle / "config.json").write_text(json.dumps(config))
            cid = f"exec-{probe.side.name}-{n}"
            probe.side.ok("run", "--detach", "--bundle", str(bundle), cid)
            started.append(Running(probe.side, cid))
        return started

    return make


def same(results: list[subprocess.CompletedProcess[str]]) -> subprocess.CompletedProcess[str]:
    """runc's and runproc's results agree in exit code and output; runproc's."""
    runc, runproc = results
    assert (runproc.returncode, runproc.stdout) == (runc.returncode, runc.stdout), (runc, runproc)
    return runproc


def test_exit_codes(start: Start) -> None:
    pair = start()
    for script, code in (("true", 0), ("exit 3", 3), ("kill -9 $$", 137), ("kill -TERM $$", 143)):
        result = same([c.exec("sh", "-c", script) for c in pair])
        assert result.returncode == code, (script, result)


def test_joins_every_namespace_of_the_init(start: Start) -> None:
    script = "for n in " + " ".join(NAMESPACE_LINKS) + "; do echo $n $(readlink /proc/self/ns/$n); done"
    for running in start():
        init = running.pid()
        result = running.exec("sh", "-c", script)
        assert result.returncode == 0, result.stderr
        seen = dict(line.split(" ", 1) for line in result.stdout.splitlines())
        expected = {name: os.readlink(f"/proc/{init}/ns/{name}") for name in seen}
        assert seen == expected, running.side.name
        assert seen["pid"] != os.readlink("/proc/self/ns/pid")  # really the container's


def test_sees_the_containers_root_pid_one_and_cwd(start: Start) -> None:
    result = same([c.exec("sh", "-c", "pwd; ls /; cat /proc/1/cmdline | tr '\\0' ' '; echo; echo $HOME")
                   for c in start()])
    assert result.stdout.splitlines()[0] == "/"
    assert "sleep 1000" in result.stdout


def secured(config: dict) -> None:
    config["linux"]["seccomp"] = SECCOMP_NO_MKDIR
    config["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 321, "hard": 654}]


def test_containers_security_applies(start: Start) -> None:
    script = "grep -E '^(Cap|NoNewPrivs|Seccomp|Uid|Gid|Groups)' /proc/self/status; mkdir /tmp/x; echo $?"
    pair = start(secured)
    result = same([c.exec("sh", "-c", script) for c in pair])
    assert "Seccomp:\t2" in result.stdout and "NoNewPrivs:\t1" in result.stdout
    assert "CapEff:\t0000000020000420" in result.stdout, result.stdout
    assert result.stdout.splitlines()[-1] == "1"  # mkdir refused by the filter
    # runc 1.1.5's exec shows 321 or 654 (its Go runtime raises the soft NOFILE limit to the
    # hard one, racing the limits it sets): the spec's values are the reference.
    assert pair[1].exec("sh", "-c", "ulimit -Sn; ulimit -Hn").stdout == "321\n654\n"


@pytest.mark.parametrize("flags", [
    # (runc refuses both spellings of one flag in one call)
    ("--user", "1000:1000", "-g", "5", "-g", "6"),
    ("-u", "1000",),
    ("--cwd", "/tmp", "--env", "FOO=bar", "--env", "PATH=/bin:/sbin"),
    ("-c", "CAP_SYS_ADMIN", "-c", "CAP_NET_ADMIN"),
    ("--no-new-privs",),
], ids=["user-gids", "uid-only", "cwd-env", "caps", "nnp"])
def test_flags(start: Start, flags: tuple[str, ...]) -> None:
    def no_nnp(config: dict) -> None:
        config["process"]["noNewPrivileges"] = False

    script = "id; pwd; env | sort; grep -E '^(Cap|NoNewPrivs)' /proc/self/status"
    same([c.exec("sh", "-c", script, flags=flags) for c in start(no_nnp)])


def test_process_file(start: Start, tmp_path: Path) -> None:
    process = {"args": ["sh", "-c", "id; pwd; echo $A; grep -E '^(Cap|NoNew|Seccomp:)' /proc/self/status"],
               "cwd": "/etc", "env": ["A=from-file", "PATH=/bin"], "user": {"uid": 7, "gid": 8}}
    path = tmp_path / "process.json"
    path.write_text(json.dumps(process) + "\n")
    pair = start(secured)
    result = same([c.exec(flags=("--process", str(path))) for c in pair])
    assert result.stdout.startswith("uid=7 gid=8") and "/etc\nfrom-file\n" in result.stdout
    assert "NoNewPrivs:\t0" in result.stdout  # the file's (absent: false), not the container's
    assert "Seccomp:\t2" in result.stdout  # the container's filter, always
    # A file without rlimits: runproc keeps the container's; runc 1.1.5 sets none (the caller's
    # limits leak in). containerd's process files always carry the container's (README, Limitations).
    process["args"] = ["sh", "-c", "ulimit -n"]
    path.write_text(json.dumps(process))
    assert pair[1].exec(flags=("--process", str(path))).stdout == "321\n"


def test_missing_command_fails_and_the_init_lives(start: Start, tmp_path: Path) -> None:
    for running in start():
        log = tmp_path / f"{running.side.name}.log"
        result = running.exec("no-such-cmd", global_args=("--log", str(log), "--log-format", "json"))
        assert result.returncode == 255, result
        text = 'exec failed: unable to start container process: exec: "no-such-cmd": executable file not found in $path'
        assert text in error_text(result.stderr), result.stderr
        records = [json.loads(line) for line in log.read_text().splitlines()]
        assert records[-1]["level"] == "error" and text in records[-1]["msg"].lower(), records
        assert running.side.status(running.cid) == "running"
        assert running.exec("true").returncode == 0


@pytest.mark.parametrize(("cmd", "flags", "text"), [
    ((), (), "exec failed: process args cannot be empty"),
    (("pwd",), ("--cwd", "tmp"), "Cwd must be an absolute path"),
    (("true",), ("-t", "-d"), "cannot allocate tty if"),
    (("true",), ("--console-socket", "/nonexistent.sock"), "cannot use console socket if"),
])
def test_bad_exec(start: Start, cmd: tuple[str, ...], flags: tuple[str, ...], text: str) -> None:
    for running in start():
        result = running.exec(*cmd, flags=flags)
        assert result.returncode == 255 and text.lower() in error_text(result.stderr), (running.side.name, result)


def test_stopped_and_unknown_containers(start: Start) -> None:
    for running in start():
        running.side.ok("kill", running.cid, "KILL")
        running.side.wait_status(running.cid, "stopped")
        result = running.exec("true")
        assert result.returncode == 255, result
        assert "exec failed: cannot exec in a stopped container" in error_text(result.stderr), result.stderr
        result = running.side("exec", "no-such-container", "true")
        assert result.returncode == 255, result
        assert "exec failed: container does not exist" in error_text(result.stderr), result.stderr


def test_detach_with_pid_file(start: Start, tmp_path: Path) -> None:
    for running in start():
        pid_file = tmp_path / f"{running.side.name}.pid"
        result = running.exec("sleep", "77", flags=("--detach", "--pid-file", str(pid_file)))
        assert result.returncode == 0 and result.stdout == "", result
        raw = pid_file.read_text()
        assert raw.isdigit(), raw  # bare digits, no newline
        pid = int(raw)
        assert Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\x0077\x00"
        assert os.readlink(f"/proc/{pid}/ns/pid") == os.readlink(f"/proc/{running.pid()}/ns/pid")
        ps = json.loads(running.side.ok("ps", "--format", "json", running.cid).stdout)
        assert pid in ps and running.pid() in ps
        os.kill(pid, 9)


@pytest.fixture
def freezer() -> Iterator[Path]:
    """A freezer cgroup (v1) of the test's own, thawed and removed afterwards."""
    base = Path("/sys/fs/cgroup/freezer")
    if not base.is_dir():
        pytest.fail("this test needs the cgroup v1 freezer (the project's VM has it)")
    group = base / f"runproc-test-{uuid.uuid4().hex[:8]}"
    group.mkdir()
    yield group
    (group / "freezer.state").write_text("THAWED")
    deadline = time.monotonic() + 10  # a hang guard: a process may still be leaving it
    while True:
        for pid in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                (base / "cgroup.procs").write_text(pid)
        try:
            group.rmdir()
            return
        except OSError:
            assert time.monotonic() < deadline, f"cannot remove {group}"
            time.sleep(0.05)


def test_paused_container(start: Start, freezer: Path) -> None:
    """runc pauses with its freezer cgroup; runproc's container is moved into one and frozen by hand
    (pause is not runproc's yet): exec refuses both, and with --ignore-paused runproc execs."""
    runc, runproc = start()
    runc.side.ok("pause", runc.cid)
    (freezer / "cgroup.procs").write_text(str(runproc.pid()))
    (freezer / "freezer.state").write_text("FROZEN")
    try:
        for running in (runc, runproc):
            result = running.exec("true")
            assert result.returncode == 255, result
            text = "exec failed: cannot exec in a paused container (use --ignore-paused to override)"
            assert text in error_text(result.stderr), result.stderr
        # runc's would wait for the resume (it joins the frozen cgroup); runproc joins no cgroup yet.
        assert runproc.exec("sh", "-c", "echo ok", flags=("--ignore-paused",)).stdout == "ok\n"
    finally:
        runc.side.ok("resume", runc.cid)
        (freezer / "freezer.state").write_text("THAWED")


def in_a_user_namespace(config: dict) -> None:
    config["linux"]["namespaces"].append({"type": "user"})
    config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    config["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["mode=1777"]})


@pytest.mark.parametrize("user", [(), ("-u", "1000:1000")], ids=["root", "user"])
def test_user_namespace(start: Start, user: tuple[str, ...]) -> None:
    """exec becomes root of the container's user namespace first: what it makes is owned inside it."""
    script = "id; cat /proc/self/uid_map; touch /tmp/f; stat -c '%u %g' /tmp/f; grep -E '^Cap(Eff|Bnd)' /proc/self/status"
    pair = start(in_a_user_namespace)
    result = same([c.exec("sh", "-c", script, flags=user) for c in pair])
    assert result.stdout.splitlines()[1].split() == ["0", "100000", "65536"], result.stdout
    for running in pair:
        assert running.exec("readlink", "/proc/self/ns/user").stdout.strip() == \
            os.readlink(f"/proc/{running.pid()}/ns/user")




def test_exec_into_sub_cgroups(start: Start) -> None:
    """--cgroup [<controller>:]<path>: the exec'd process joins an existing sub-cgroup, as runc's."""
    made: list[Path] = []
    try:
        both = start()
        for running in both:
            for line in Path(f"/proc/{running.pid()}/cgroup").read_text().splitlines():
                _, controllers, path = line.split(":", 2)
                if controllers in ("memory", "pids"):
                    sub = Path(f"/sys/fs/cgroup/{controllers}{path}/probe-sub")
                    sub.mkdir(exist_ok=True)
                    made.append(sub)
        # Each runtime's container cgroup has its own path: keep only whether it is the sub-cgroup.
        script = "grep -E ':(memory|pids):' /proc/self/cgroup | sed -E 's#:/.*/probe-sub$#:<c>/probe-sub#; s#:/[^<]*$#:<c>#'"
        for flags in (("--cgroup", "memory:probe-sub"), ("--cgroup", "memory:probe-sub", "--cgroup", "pids:probe-sub")):
            result = same([running.exec("sh", "-c", script, flags=flags) for running in both])
            assert "memory:" in result.stdout and "probe-sub" in result.stdout, result.stdout
        refused = [running.exec("true", flags=("--cgroup", "memory:no-such-sub")) for running in both]
        assert refused[0].returncode != 0 and refused[1].returncode != 0
        assert "no-such-sub" in refused[1].stderr
    finally:
        for sub in made:
            with contextlib.suppress(OSError):
                sub.rmdir()
