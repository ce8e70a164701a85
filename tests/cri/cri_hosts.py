"""The machine a CRI containerd runs on, as the tests reach it, and /proc, mount and cgroup
helpers for this VM.

A CRI case checks what a Pod does to the machine its containerd runs on: processes,
namespaces, mounts, files, sysctls. For the suite's private containerd that machine is this
VM (``LocalHost``); for the Kind-like node's containerd it is the node (tests/node's
``NodeHost``), whose pids, paths, mounts and network namespace are its own. Cases ask their
rig's ``host`` (a ``CriHost``) instead of reading /proc or / directly, so that each reads the
machine its Pods run on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

from runproc_testlib import alive, descendants

RUN_TIMEOUT = 60.0


class CriHost(Protocol):
    """The machine a CRI containerd runs on. Paths given to it and pids are that machine's."""

    @property
    def reference_pid(self) -> int:
        """A process that stands for the machine itself: its namespaces, capabilities, root."""
        ...

    def proc(self, pid: int) -> Path:
        """That machine's /proc/<pid>, as a path the tests can open."""
        ...

    def processes(self) -> Iterable[tuple[int, list[bytes]]]:
        """(pid, argv) of every process there."""
        ...

    def alive(self, pid: int) -> bool: ...

    def mount_points(self) -> list[str]:
        """The mount points of its mount namespace (where containerd mounts rootfs and netns)."""
        ...

    def run(self, argv: Sequence[str], *, input: bytes | str | None = None, check: bool = True,
            timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """Run a command there (its file system, mount and network namespace, as root)."""
        ...

    def read_text(self, path: str | Path) -> str: ...

    def write_text(self, path: str | Path, text: str) -> None:
        """Write a file there (its parent made), through that machine's own mounts."""
        ...

    def existing(self, paths: Sequence[Path]) -> list[Path]:
        """Those of ``paths`` that exist there (a dangling symlink counts)."""
        ...

    def resolve(self, path: Path) -> Path:
        """``path`` with its symlinks resolved there (as mountinfo shows mount points)."""
        ...

    def kill(self, pid: int, sig: signal.Signals) -> None: ...

    def network_namespace(self) -> AbstractContextManager[None]:
        """Sockets this thread makes inside the block are in that machine's network namespace."""
        ...


def run_captured(argv: Sequence[str], *, input: bytes | str | None = None,
                 timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run ``argv`` with its output captured; str ``input`` is encoded, output decoded leniently
    (a container's output need not be UTF-8)."""
    raw = subprocess.run(argv, input=input.encode() if isinstance(input, str) else input, capture_output=True,
                         stdin=None if input is not None else subprocess.DEVNULL, timeout=timeout)  # fmt: skip
    return subprocess.CompletedProcess(argv, raw.returncode, raw.stdout.decode(errors="replace"),
                                       raw.stderr.decode(errors="replace"))  # fmt: skip


class ProcView:
    """What a machine's procfs tells, read through ``proc_root`` (its /proc, as a path here)."""

    def __init__(self, proc_root: Path, reference_pid: int) -> None:
        self.proc_root = proc_root
        self._reference_pid = reference_pid

    @property
    def reference_pid(self) -> int:
        return self._reference_pid

    def proc(self, pid: int) -> Path:
        return self.proc_root / str(pid)

    def processes(self) -> Iterable[tuple[int, list[bytes]]]:
        return processes(self.proc_root)

    def alive(self, pid: int) -> bool:
        return alive(pid, self.proc_root)

    def mount_points(self) -> list[str]:
        # mountinfo shows the mount points of that process's namespace, relative to its root.
        return mount_points(self.proc(self.reference_pid) / "mountinfo")


class LocalHost(ProcView):
    """This VM, where the tests run: the suite's private containerd runs here."""

    def __init__(self) -> None:
        super().__init__(Path("/proc"), os.getpid())

    def run(self, argv: Sequence[str], *, input: bytes | str | None = None, check: bool = True,
            timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:  # fmt: skip
        proc = run_captured(argv, input=input, timeout=timeout)
        if check:
            proc.check_returncode()
        return proc

    def read_text(self, path: str | Path) -> str:
        return Path(path).read_text()

    def write_text(self, path: str | Path, text: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)

    def existing(self, paths: Sequence[Path]) -> list[Path]:
        return [p for p in paths if os.path.lexists(p)]

    def resolve(self, path: Path) -> Path:
        return path.resolve()

    def kill(self, pid: int, sig: signal.Signals) -> None:
        os.kill(pid, sig)

    def network_namespace(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()


@contextlib.contextmanager
def shared_mount(host: CriHost, path: Path) -> Iterator[Path]:
    """``path`` on ``host`` bound onto itself as a shared mount, for the block: a hostPath
    volume's propagation needs a shared (or slave) source, and / is private on this VM and
    in the node. Mounts made below it (on ``host``) are unmounted with it."""
    host.run(["mount", "--bind", str(path), str(path)], timeout=10)
    try:
        host.run(["mount", "--make-shared", str(path)], timeout=10)
        yield path
    finally:
        host.run(["umount", "-R", "-l", str(path)], check=False, timeout=10)


# --------------------------------------------------------------------------- this VM's /proc


def processes(proc_root: Path = Path("/proc")) -> Iterator[tuple[int, list[bytes]]]:
    for entry in proc_root.iterdir():
        if entry.name.isdigit():
            try:
                yield int(entry.name), (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue


def kill_tree(pids: Sequence[int]) -> None:
    """SIGKILL ``pids`` and all their descendants, children first, and wait for them briefly."""
    victims = [d for pid in pids for d in descendants(pid)] + list(pids)
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 3.0
    while any(alive(p) for p in victims) and time.monotonic() < deadline:
        time.sleep(0.02)


def mount_points(mountinfo: Path = Path("/proc/self/mountinfo")) -> list[str]:
    with mountinfo.open() as info:
        return [line.split()[4].replace("\\040", " ") for line in info]


def unmount_under(root: Path) -> list[str]:
    """Lazily unmount every mount point at or below ``root`` (deepest first); return survivors."""
    prefix = str(root) + "/"

    def ours() -> list[str]:
        return [p for p in mount_points() if p == str(root) or p.startswith(prefix)]

    for point in sorted(ours(), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=10)
    return ours()


def remove_cgroups(name: str) -> list[Path]:
    """rmdir the (empty) cgroup tree /<name> in every hierarchy, deepest first; the survivors."""
    base = Path("/sys/fs/cgroup")
    left = []
    for hierarchy in [base, *(p for p in base.iterdir() if p.is_dir())]:
        top = hierarchy / name
        if not top.is_dir():
            continue
        dirs = sorted((Path(d) for d, _, _ in os.walk(top)), key=lambda p: len(p.parts), reverse=True)
        for d in dirs:
            with contextlib.suppress(OSError):  # not empty / in use: never forced
                d.rmdir()
        if top.exists():
            left.append(top)
    return left
