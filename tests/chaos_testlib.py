"""Helpers of the tests that hit runproc with races, SIGKILLs and fuzzed input: what must never be seen,
and what must not be left behind."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

TAG_ENV = "RUNPROC_TEST_TAG"

# The errors runc's users (containerd above all) expect from a lifecycle that races with itself.
EXPECTED_ERRORS = (
    "already exists",
    "container does not exist",
    "container not running",
    "cannot start a container that has stopped",
    "cannot start an already running container",
    "that is not stopped: running",
)

# Text that means a Python exception escaped the error path.
EXCEPTION_TEXT = ("internal error", "Traceback", "Error:", "Exception", "errno", "[Errno")


def exception_text(stderr: str) -> str | None:
    """The first line of stderr that shows Python exception text, if any."""
    for line in stderr.splitlines():
        if any(marker in line for marker in EXCEPTION_TEXT):
            return line
    return None


def processes_tagged(tag: str) -> list[int]:
    """Live processes whose environment carries `tag` (a leaked init inherits create's environment)."""
    needle = f"{TAG_ENV}={tag}".encode()
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                environ = Path(f"/proc/{name}/environ").read_bytes()
                state = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if needle in environ.split(b"\0") and state != "Z":
                found.append(int(name))
    return found


def wait_for_no_processes(tag: str, timeout: float = 10) -> list[int]:
    """Tagged processes still alive once SIGKILLed ones had `timeout` to go (the list must end empty)."""
    deadline = time.monotonic() + timeout
    while (alive := processes_tagged(tag)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def kill_tagged(tag: str) -> None:
    """After a failed test: leave no process behind (each by its pid)."""
    for pid in processes_tagged(tag):
        subprocess.run(["kill", "-KILL", str(pid)], check=False)


def leftovers(*directories: Path) -> list[str]:
    """Entries in a state root, and temporary files anywhere below the given directories."""
    found: list[str] = []
    for directory in directories:
        for path in directory.rglob("*"):
            if path.name.endswith(".tmp") or path.name.startswith("@"):
                found.append(str(path))
    return found
