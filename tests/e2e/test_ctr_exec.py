"""End-to-end: exec, terminals and ps through containerd (`ctr task exec`, `ctr run -t`, `ctr task ps`).

The shim calls `exec --process FILE --detach --pid-file F [--console-socket S] ID`
and `create --console-socket S` for terminals (containerd-runc-contract.md 3, 4).
Terminal cases run ctr on a real pseudo-terminal of the test's. The same tests
pass with RUNPROC_BIN=/usr/sbin/runc.
"""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import termios
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # conftest is not an importable module at run time; fixtures carry it.
    from conftest import Ctr

NewId = Callable[[str], str]
# What the rig gives ctr (conftest.base_env, not importable from here).
CTR_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}


def on_a_pty(argv: list[str], timeout: float) -> tuple[bytes, int]:
    """Run `argv` (ctr) with a new pty as its stdio; everything it wrote, and its exit code."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 90, 0, 0))
    process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                               env=CTR_ENV)
    os.close(slave)
    output = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                pytest.fail(f"{argv}: no output for {timeout}s; got {output!r}", pytrace=False)
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break  # EIO: ctr and everything it ran closed the pty
            if not chunk:
                break
            output += chunk
        return output, process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)


@pytest.fixture
def sleeping(ctr: Ctr, new_id: NewId) -> Iterator[str]:
    """A running container (`sleep`), killed and removed afterwards; nothing of it may be left."""
    cid = new_id("exec")
    proc = ctr.run_detached(cid, "/bin/sleep", "1000")
    assert proc.returncode == 0, ctr.describe(proc)
    yield cid
    assert ctr("task", "kill", "--signal", "KILL", cid).returncode == 0
    ctr.wait_status(cid, "STOPPED")
    assert ctr("task", "delete", cid).returncode == 0
    assert ctr("container", "delete", cid).returncode == 0
    assert_nothing_left(ctr, cid)


def assert_nothing_left(ctr: Ctr, cid: str, timeout: float = 5.0) -> None:
    """No container, task, runtime state dir or process of the runtime left for `cid`."""
    deadline = time.monotonic() + timeout  # the shim's last `delete --force` may still be running
    while True:
        leftovers = [what for what, present in (
            ("container", cid in ctr.container_ids()), ("task", cid in ctr.tasks()),
            ("runtime state dir", (ctr.runtime_root / cid).exists()),
            ("runtime process", any(cid in arg for arg in _runtime_argvs(ctr)))) if present]
        if not leftovers:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{cid}: still present: {', '.join(leftovers)}", pytrace=False)
        time.sleep(0.05)


def _runtime_argvs(ctr: Ctr) -> list[str]:
    argvs = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as stream:
                argv = stream.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if argv and argv[0] == str(ctr.runtime):
            argvs.append(" ".join(argv))
    return argvs


def test_exec_output_and_exit_code(ctr: Ctr, sleeping: str) -> None:
    proc = ctr("task", "exec", "--exec-id", "out", sleeping, "/bin/sh", "-c", "echo out; echo err >&2; exit 5")
    assert proc.returncode == 5, ctr.describe(proc)
    assert proc.stdout == "out\n" and "err" in proc.stderr, ctr.describe(proc)


def test_exec_joins_the_container(ctr: Ctr, sleeping: str) -> None:
    pid, _ = ctr.tasks()[sleeping]
    proc = ctr("task", "exec", "--exec-id", "ns", sleeping, "/bin/sh", "-c",
               "for n in pid mnt net ipc uts; do /bin/readlink /proc/self/ns/$n; done")
    assert proc.returncode == 0, ctr.describe(proc)
    init = [os.readlink(f"/proc/{pid}/ns/{n}") for n in ("pid", "mnt", "net", "ipc", "uts")]
    assert proc.stdout.split() == init, ctr.describe(proc)


def test_exec_user(ctr: Ctr, sleeping: str) -> None:
    proc = ctr("task", "exec", "--exec-id", "user", "--user", "1000", sleeping, "/bin/id")
    assert proc.returncode == 0, ctr.describe(proc)
    assert proc.stdout.startswith("uid=1000 "), ctr.describe(proc)  # gid: from the rootfs's /etc/passwd (none here)


def test_exec_missing_command(ctr: Ctr, sleeping: str) -> None:
    proc = ctr("task", "exec", "--exec-id", "missing", sleeping, "/no/such/e2e-exec")
    assert proc.returncode != 0, ctr.describe(proc)
    assert 'exec: "/no/such/e2e-exec": stat /no/such/e2e-exec: no such file or directory' in proc.stderr, \
        ctr.describe(proc)
    assert ctr.tasks()[sleeping][1] == "RUNNING"  # the init lives on
    again = ctr("task", "exec", "--exec-id", "again", sleeping, "/bin/true")
    assert again.returncode == 0, ctr.describe(again)


def test_exec_with_a_terminal(ctr: Ctr, sleeping: str) -> None:
    output, code = on_a_pty(ctr.argv("task", "exec", "-t", "--exec-id", "tty", sleeping, "/bin/sh", "-c",
                                     "/usr/bin/tty || /bin/tty; exit 6"), ctr.timeout)
    assert code == 6, output
    assert b"/dev/pts/" in output, output


def test_task_ps_lists_exec_processes(ctr: Ctr, sleeping: str) -> None:
    proc = ctr("task", "exec", "--detach", "--exec-id", "bg", sleeping, "/bin/sleep", "500")
    assert proc.returncode == 0, ctr.describe(proc)
    init, _ = ctr.tasks()[sleeping]
    ps = ctr("task", "ps", sleeping)
    assert ps.returncode == 0, ctr.describe(ps)
    pids = [int(line.split()[0]) for line in ps.stdout.splitlines()[1:]]
    assert init in pids and len(pids) == 2, ps.stdout
    (other,) = set(pids) - {init}
    with open(f"/proc/{other}/cmdline", "rb") as stream:
        assert stream.read() == b"/bin/sleep\x00500\x00"


def test_run_with_a_terminal(ctr: Ctr, new_id: NewId) -> None:
    cid = new_id("runtty")
    output, code = on_a_pty(ctr.run_argv(cid, "/bin/sh", "-c", "/bin/tty; exit 4", opts=["-t"]), ctr.timeout)
    assert code == 4, output
    assert b"/dev/pts/0" in output, output
    assert_nothing_left(ctr, cid)
