"""End-to-end: the runtime under test driven by a real containerd through `ctr`.

Every call goes ctr -> containerd -> containerd-shim-runc-v2 -> $RUNPROC_BIN, so what is
asserted is what a containerd user sees. The same tests pass with
RUNPROC_BIN=/usr/sbin/runc (the reference runtime).

`ctr run --rootfs` puts no PATH in process.env: commands use absolute paths, or the test
passes `--env PATH=/bin`.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # conftest is not an importable module at run time; fixtures carry it.
    from conftest import Ctr

NewId = Callable[[str], str]

# `ctr task delete` reports a non-zero exit status only as a warning on stderr (exit 0).
EXIT_WARNING = re.compile(r"exit with non-zero exit code (\d+)")


def exit_code_from_delete(proc: subprocess.CompletedProcess[str]) -> int:
    match = EXIT_WARNING.search(proc.stderr)
    return int(match.group(1)) if match else 0


def assert_gone(ctr: Ctr, cid: str, timeout: float = 5.0) -> None:
    """No container, no task and no runtime state dir (<--root>/<id>) left for ``cid``.

    A short grace period: the shim's final `delete --force` may still be finishing.
    """
    deadline = time.monotonic() + timeout
    while True:
        leftovers = []
        if cid in ctr.container_ids():
            leftovers.append("container")
        if cid in ctr.tasks():
            leftovers.append("task")
        if (ctr.runtime_root / cid).exists():
            leftovers.append(f"runtime state dir {ctr.runtime_root / cid}")
        if not leftovers:
            return
        if time.monotonic() > deadline:
            pytest.fail(
                f"{cid}: still present after {timeout}s: {', '.join(leftovers)}",
                pytrace=False,
            )
        time.sleep(0.05)


# --------------------------------------------------------------------------- foreground runs


def test_echo_hello(ctr: Ctr, new_id: NewId) -> None:
    cid = new_id("echo")
    proc = ctr.run(cid, "/bin/echo", "hello")
    assert proc.returncode == 0, ctr.describe(proc)
    assert proc.stdout == "hello\n", ctr.describe(proc)
    assert_gone(ctr, cid)  # --rm removed it, and the runtime's `delete` removed its state


def test_stdout_and_stderr_are_separate(ctr: Ctr, new_id: NewId) -> None:
    # The shim hands create three distinct pipes; the process must get them as 0/1/2.
    proc = ctr.run(new_id("stdio"), "/bin/sh", "-c", "echo to-out; echo to-err >&2")
    assert proc.returncode == 0, ctr.describe(proc)
    assert proc.stdout == "to-out\n", ctr.describe(proc)
    assert "to-err" in proc.stderr and "to-err" not in proc.stdout, ctr.describe(proc)


@pytest.mark.parametrize("code", [0, 3])
def test_exit_code_propagates(ctr: Ctr, new_id: NewId, code: int) -> None:
    proc = ctr.run(new_id(f"exit{code}"), "/bin/sh", "-c", f"exit {code}")
    assert proc.returncode == code, ctr.describe(proc)


def test_stdin_line(ctr: Ctr, new_id: NewId) -> None:
    # `echo data | ctr run ...`: ctr 1.6 copies its stdin into the container's stdin pipe
    # for non-detached runs (no -t needed). `read` needs the data, not the EOF.
    proc = ctr.run(new_id("stdin"), "/bin/sh", "-c", 'read line; echo "got:$line"', input="data\n")
    assert proc.returncode == 0, ctr.describe(proc)
    assert proc.stdout == "got:data\n", ctr.describe(proc)


def test_stdin_cat_until_eof(ctr: Ctr, new_id: NewId) -> None:
    """`cat` echoes stdin and exits only once stdin's EOF reaches it through the shim.

    ctr 1.6 race: it forwards EOF (CloseIO) only if its stdin hits EOF *after* the task
    was created; with `echo data | ctr run ... cat` the EOF usually comes first and cat
    then waits forever, with runc too. So keep stdin open until cat has echoed the data
    (proof that the task runs), then close it.
    """
    proc = ctr.popen_run(new_id("cat"), "/bin/cat")
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        proc.stdin.write(b"data\n")
        proc.stdin.flush()
        first = ctr.read_until(proc.stdout.fileno(), lambda b: b"\n" in b, timeout=ctr.timeout)
        assert first == b"data\n"
        proc.stdin.close()  # -> ctr CloseIO -> shim closes the container's stdin -> cat EOF
        rest = ctr.read_until(proc.stdout.fileno(), lambda b: False, timeout=ctr.timeout)  # to EOF
        code = proc.wait(timeout=ctr.timeout)
        err = proc.stderr.read().decode(errors="replace")
    except BaseException:
        proc.kill()  # the container itself is killed by the new_id finalizer
        proc.wait(timeout=ctr.timeout)
        raise
    finally:
        proc.stdout.close()
        proc.stderr.close()
    assert code == 0, f"exit={code} stderr={err!r}"
    assert first + rest == b"data\n"


def test_env_is_visible(ctr: Ctr, new_id: NewId) -> None:
    proc = ctr.run(new_id("env"), "/bin/sh", "-c", "echo $FOO", opts=["--env", "FOO=bar"])
    assert proc.returncode == 0, ctr.describe(proc)
    assert proc.stdout == "bar\n", ctr.describe(proc)


def test_cwd(ctr: Ctr, new_id: NewId) -> None:
    proc = ctr.run(new_id("cwd"), "/bin/pwd", opts=["--cwd", "/tmp"])
    assert proc.returncode == 0, ctr.describe(proc)
    assert proc.stdout == "/tmp\n", ctr.describe(proc)


# --------------------------------------------------------------------------- detached tasks


def test_detached_kill_term_runs_trap(ctr: Ctr, new_id: NewId) -> None:
    # A TERM trap so the test holds with and without a pid namespace: as pid 1 (runc) a
    # process without a handler ignores TERM; as an ordinary pid it would die of it.
    cid = new_id("term")
    ready = ctr.rootfs / "tmp" / f"{cid}.ready"  # the rootfs is a host dir: visible from here
    script = f'trap "exit 42" TERM; touch /tmp/{cid}.ready; while true; do /bin/sleep 0.1; done'
    proc = ctr.run_detached(cid, "/bin/sh", "-c", script)
    assert proc.returncode == 0, ctr.describe(proc)
    try:
        deadline = time.monotonic() + ctr.timeout
        while not ready.exists():  # the trap is installed before the marker is written
            assert time.monotonic() < deadline, f"{cid}: container never wrote {ready}"
            time.sleep(0.05)
        assert ctr.tasks()[cid][1] == "RUNNING"

        kill = ctr("task", "kill", cid)  # default signal: SIGTERM
        assert kill.returncode == 0, ctr.describe(kill)
        ctr.wait_status(cid, "STOPPED")

        delete = ctr("task", "delete", cid)
        assert delete.returncode == 0, ctr.describe(delete)
        assert exit_code_from_delete(delete) == 42, ctr.describe(delete)
        assert cid not in ctr.tasks()
    finally:
        ready.unlink(missing_ok=True)


def test_detached_lifecycle_kill(ctr: Ctr, new_id: NewId) -> None:
    cid = new_id("sleep")
    proc = ctr.run_detached(cid, "/bin/sleep", "1000")
    assert proc.returncode == 0, ctr.describe(proc)

    pid, status = ctr.tasks()[cid]
    assert status == "RUNNING"
    started = _start_time(pid)
    assert started is not None, f"task pid {pid} is not a live host process"
    # The shim passed --root <runc-root>/<namespace>: the runtime must keep its state there.
    assert (ctr.runtime_root / cid).is_dir(), f"no runtime state dir under {ctr.runtime_root}"

    kill = ctr("task", "kill", "--signal", "KILL", cid)
    assert kill.returncode == 0, ctr.describe(kill)
    ctr.wait_status(cid, "STOPPED")

    delete = ctr("task", "delete", cid)
    assert delete.returncode == 0, ctr.describe(delete)
    assert exit_code_from_delete(delete) == 128 + 9, ctr.describe(delete)
    assert cid not in ctr.tasks()
    assert _start_time(pid) != started, f"container process {pid} still exists"

    rm = ctr("container", "delete", cid)
    assert rm.returncode == 0, ctr.describe(rm)
    assert_gone(ctr, cid)


def _start_time(pid: int) -> int | None:
    """Start time of live ``pid`` (tells a reused pid apart); None if gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


# --------------------------------------------------------------------------- failing create


@pytest.mark.parametrize(
    ("cmd", "opts", "message"),
    [
        pytest.param(
            "/no/such/e2e-cmd",
            [],
            'exec: "/no/such/e2e-cmd": stat /no/such/e2e-cmd: no such file or directory',
            id="absolute-path",
        ),
        pytest.param(
            "e2e-no-such-cmd",
            ["--env", "PATH=/bin"],
            'unable to start container process: exec: "e2e-no-such-cmd": '
            "executable file not found in $PATH",
            id="path-lookup",
        ),
    ],
)
def test_failing_create_reports_runtime_error(
    ctr: Ctr, new_id: NewId, cmd: str, opts: list[str], message: str
) -> None:
    # The message reaches ctr only via the runtime's --log log.json (last "error" entry).
    cid = new_id("nocmd")
    proc = ctr.run(cid, cmd, opts=opts)
    assert proc.returncode != 0, ctr.describe(proc)
    assert message in proc.stderr, ctr.describe(proc)
    assert_gone(ctr, cid)


# --------------------------------------------------------------------------- runtime root


def test_runtime_root_has_no_leftovers(ctr: Ctr, new_id: NewId) -> None:
    """Last on purpose: earlier tests' containers are deleted by now (their finalizers ran).

    Runs one container of its own so the check is meaningful when run alone.
    """
    proc = ctr.run(new_id("last"), "/bin/true")
    assert proc.returncode == 0, ctr.describe(proc)
    assert ctr.container_ids() == [], f"containers left in the namespace: {ctr.container_ids()}"
    assert ctr.tasks() == {}, f"tasks left in the namespace: {ctr.tasks()}"
    leftovers = sorted(os.listdir(ctr.runtime_root)) if ctr.runtime_root.exists() else []
    assert leftovers == [], f"leftover state under {ctr.runtime_root}: {leftovers}"


def test_task_start_detached_on_an_existing_container(ctr: Ctr, new_id: NewId) -> None:
    """`ctr task start -d`: a new task of a container whose first task ended.

    `ctr container create` has no --runc-binary, so the container comes from
    `ctr run -d`, which stores the runtime options (binary, root) with it; the
    second task is then created and started by `ctr task start -d` alone.
    """
    cid = new_id("tstart")
    ready = ctr.rootfs / "tmp" / f"{cid}.ready"  # the rootfs is a host dir: visible from here
    script = f'trap "exit 7" TERM; touch /tmp/{cid}.ready; while true; do /bin/sleep 0.1; done'
    proc = ctr.run_detached(cid, "/bin/sh", "-c", script)
    assert proc.returncode == 0, ctr.describe(proc)
    kill = ctr("task", "kill", "--signal", "KILL", cid)
    assert kill.returncode == 0, ctr.describe(kill)
    ctr.wait_status(cid, "STOPPED")
    assert ctr("task", "delete", cid).returncode == 0
    ready.unlink(missing_ok=True)

    start = ctr("task", "start", "-d", cid)
    assert start.returncode == 0, ctr.describe(start)
    pid, status = ctr.tasks()[cid]
    assert status == "RUNNING" and _start_time(pid) is not None
    deadline = time.monotonic() + ctr.timeout
    while not ready.exists():  # the trap is installed before the marker is written
        assert time.monotonic() < deadline, f"{cid}: container never wrote {ready}"
        time.sleep(0.05)
    ready.unlink()
    kill = ctr("task", "kill", cid)  # SIGTERM
    assert kill.returncode == 0, ctr.describe(kill)
    ctr.wait_status(cid, "STOPPED")
    delete = ctr("task", "delete", cid)
    assert delete.returncode == 0, ctr.describe(delete)
    assert exit_code_from_delete(delete) == 7, ctr.describe(delete)
    rm = ctr("container", "delete", cid)
    assert rm.returncode == 0, ctr.describe(rm)
    assert_gone(ctr, cid)


def test_task_ps(ctr: Ctr, new_id: NewId) -> None:
    """`ctr task ps` runs the runtime's `ps --format json` and lists the task's host pids."""
    cid = new_id("ps")
    proc = ctr.run_detached(cid, "/bin/sleep", "1000")
    assert proc.returncode == 0, ctr.describe(proc)
    pid, _ = ctr.tasks()[cid]
    ps = ctr("task", "ps", cid)
    assert ps.returncode == 0, ctr.describe(ps)
    assert str(pid) in ps.stdout.split(), ps.stdout
    assert ctr("task", "kill", "--signal", "KILL", cid).returncode == 0
    ctr.wait_status(cid, "STOPPED")
    assert ctr("task", "delete", cid).returncode == 0
    assert ctr("container", "delete", cid).returncode == 0
