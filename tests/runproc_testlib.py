"""Shared helpers of the test suites: the binary under test, bundles, a runproc driver.

Lifecycle, differential and end-to-end tests drive the frozen binary named by
$RUNPROC_BIN (default: dist/runproc, which `make build` makes).
Imported by name (tests/ is on pytest's pythonpath): several suites have a
conftest.py of their own, so `from conftest import ...` would be ambiguous.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


NOBODY = 65534


def runproc_path() -> Path:
    return Path(os.environ.get("RUNPROC_BIN", REPO / "dist" / "runproc")).resolve()


def default_process(args: list[str]) -> dict:
    return {
        "terminal": False,
        "user": {"uid": 0, "gid": 0},
        "args": args,
        "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
        "cwd": "/",
        "noNewPrivileges": True,
    }


MakeBundle = Callable[..., Path]


def make_reachable(path: Path) -> None:
    """Let every user search `path` and its parents up to /tmp (pytest makes them 0700)."""
    for parent in [path, *path.parents]:
        if parent in (Path("/tmp"), Path("/")):
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o755)


_COPIES_FOR_USERS: dict[Path, Path] = {}


def runnable_by_all(binary: Path) -> Path:
    """`binary`, or (once per session) a copy every user can run, if a directory above it shuts
    others out: a checkout in `mktemp -d`'s 0700 directory, say (the launcher reads its own file)."""
    reachable = all(os.stat(parent).st_mode & 0o001 for parent in binary.parents)
    if reachable and os.stat(binary).st_mode & 0o005 == 0o005:
        return binary
    if binary not in _COPIES_FOR_USERS:
        directory = Path(tempfile.mkdtemp(prefix="runproc-bin-"))
        os.chmod(directory, 0o755)
        atexit.register(shutil.rmtree, directory, True)
        copy = directory / binary.name
        shutil.copy2(binary, copy)
        os.chmod(copy, 0o755)
        _COPIES_FOR_USERS[binary] = copy
    return _COPIES_FOR_USERS[binary]


class Runproc:
    """Runs the binary with one state root; `as_user` runs it unprivileged via setpriv (from a copy
    that user can reach, if need be)."""

    def __init__(self, binary: Path, root: Path, as_user: int | None = None, name: str = "runproc") -> None:
        self.binary = runnable_by_all(binary) if as_user is not None else binary
        self.root = root
        self.as_user = as_user
        self.name = name  # how failures name this runtime (the differential tests drive runc too)

    def argv(self, *args: str, global_args: tuple[str, ...] = ()) -> list[str]:
        argv = [str(self.binary), "--root", str(self.root), *global_args, *args]
        if self.as_user is not None:
            uid = str(self.as_user)
            argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *argv]
        return argv

    def __call__(
        self,
        *args: str,
        input: bytes | str | None = None,
        timeout: float = 30,
        env: dict[str, str] | None = None,
        global_args: tuple[str, ...] = (),
        prefix: tuple[str, ...] = (),
        cwd: Path | None = None,
        umask: int | None = None,
    ) -> subprocess.CompletedProcess[str]:
        text_input = input.decode() if isinstance(input, bytes) else input
        # Files, not pipes, for output: a created container's process inherits them,
        # and a pipe would not reach EOF until that process exits (containerd too
        # waits for the runtime's exit, not for EOF).
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            process = subprocess.Popen(
                [*prefix, *self.argv(*args, global_args=global_args)],
                stdin=subprocess.PIPE if text_input is not None else subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                cwd=cwd,
                umask=-1 if umask is None else umask,
            )
            try:
                if text_input is not None:
                    assert process.stdin is not None
                    process.stdin.write(text_input.encode())
                    process.stdin.close()
                returncode = process.wait(timeout=timeout)
            except BaseException:
                process.kill()
                process.wait()
                raise
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(
                process.args, returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace")
            )

    def ok(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        result = self(*args, **kwargs)  # type: ignore[arg-type]
        assert result.returncode == 0, f"{self.name} {' '.join(args)} failed: {result.stderr}"
        return result

    def state(self, container_id: str) -> dict:
        return json.loads(self.ok("state", container_id).stdout)

    def status(self, container_id: str) -> str:
        return self.state(container_id)["status"]

    def wait_status(self, container_id: str, status: str, timeout: float = 10) -> dict:
        """Poll `state` until it shows `status`; the state that did."""
        deadline = time.monotonic() + timeout
        while (state := self.state(container_id))["status"] != status:
            assert time.monotonic() < deadline, f"{self.name}: {container_id} never became {status}: {state}"
            time.sleep(0.02)
        return state


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")


def descendants(pid: int) -> list[int]:
    """All descendants of ``pid``, deepest first (via /proc/<pid>/task/*/children)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        children = [int(c) for t in tasks for c in (t / "children").read_text().split()]
    except OSError:
        return []
    return [d for child in children for d in (*descendants(child), child)]


def alive(pid: int, proc_root: Path = Path("/proc")) -> bool:
    """True while ``pid`` exists and is not a zombie (a zombie has left its cgroups).

    ``proc_root``: another pid namespace's procfs (a machine's /proc seen from here)."""
    try:
        with open(proc_root / str(pid) / "stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


LOGRUS_MSG = re.compile(r'msg="((?:[^"\\]|\\.)*)"')


def error_text(stderr: str) -> str:
    """stderr with runc's logrus `msg="..."` values unquoted (runc prints `exec: \\"x\\"`), lower case."""
    messages = []
    for quoted in LOGRUS_MSG.findall(stderr):
        try:
            messages.append(json.loads(f'"{quoted}"'))  # Go's %q is JSON for printable ASCII
        except ValueError:
            messages.append(quoted)
    return "\n".join([stderr, *messages]).lower()


def stop_daemon(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM a daemon the tests started (containerd), SIGKILL it if it lingers, and reap it."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def log_tail(log: Path, lines: int) -> str:
    """The last lines of a daemon's log, for failure messages."""
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no containerd log)"


def strace_joined(log: str) -> str:
    """strace -f output with every call on one line. A call that another process's line
    interrupted is printed in two parts, "PID name(args <unfinished ...>" and later
    "PID <... name resumed>rest"; they are joined where the second part was."""
    pending: dict[str, tuple[int, str]] = {}
    lines: list[str] = []
    for line in log.splitlines():
        pid, _, call = line.partition(" ")
        call = call.lstrip()
        if call.endswith(" <unfinished ...>"):
            pending[pid] = (len(lines), call[: -len(" <unfinished ...>")])
            lines.append(line)  # kept if it never resumes (the process was killed in it)
            continue
        resumed = re.match(r"<\.\.\. [\w]+ resumed>(.*)", call)
        if resumed and pid in pending:
            index, start = pending.pop(pid)
            lines[index] = ""
            line = f"{pid} {start}{resumed.group(1)}"
        lines.append(line)
    return "\n".join(line for line in lines if line) + "\n"
