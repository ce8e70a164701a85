"""runproc.linux.syscalls.fork_into_cgroup (clone3 CLONE_INTO_CGROUP from Python), run in this process.

Its child must behave as os.fork's: born in the cgroup, and running no Python signal handler
before Python's after-fork hooks (a handler that runs in the child would act there as if it
were create, e.g. a KeyboardInterrupt unwinding into create's clean-up).
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from runproc.linux import syscalls

CGROUP = Path("/sys/fs/cgroup")
V2_ROOT = CGROUP if (CGROUP / "cgroup.controllers").exists() else CGROUP / "unified"


@pytest.fixture
def v2_cgroup() -> Iterator[Path]:
    if os.geteuid() != 0 or not (V2_ROOT / "cgroup.controllers").exists():
        pytest.fail("needs root and a cgroup v2 hierarchy (unified, or a hybrid host's)")
    directory = V2_ROOT / f"runproc-forktest-{uuid.uuid4().hex[:12]}"
    directory.mkdir()
    yield directory
    directory.rmdir()


def test_the_child_is_born_in_the_cgroup(v2_cgroup: Path) -> None:
    fd = os.open(v2_cgroup, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    read_end, write_end = os.pipe()
    try:
        pid = syscalls.fork_into_cgroup(fd)
        if pid == 0:
            try:
                os.write(write_end, Path("/proc/self/cgroup").read_bytes())
            finally:
                os._exit(0)
        os.close(write_end)
        seen = os.read(read_end, 65536).decode()
        assert os.waitpid(pid, 0)[1] == 0
    finally:
        os.close(fd)
        os.close(read_end)
    v2_line = next(line for line in seen.splitlines() if line.startswith("0::"))
    assert v2_line == f"0::/{v2_cgroup.relative_to(V2_ROOT)}", seen


def test_no_signal_handler_runs_in_the_child_before_the_after_fork_hooks(v2_cgroup: Path) -> None:
    parent = os.getpid()
    read_end, write_end = os.pipe2(os.O_NONBLOCK)

    def handler(signum: int, frame: object) -> None:
        if os.getpid() != parent:
            os.write(write_end, b"x")

    fd = os.open(v2_cgroup, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 0.0001, 0.0001)  # a signal every 100 us, around every fork
    try:
        for _ in range(1500):
            pid = syscalls.fork_into_cgroup(fd)
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        os.close(fd)
    try:
        ran = len(os.read(read_end, 65536))
    except BlockingIOError:
        ran = 0
    finally:
        os.close(read_end)
        os.close(write_end)
    assert ran == 0, f"a signal handler ran in {ran} children"
