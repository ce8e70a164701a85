"""Joining a running container, for exec: its init's namespaces and its root (runc's setns process).

The exec side opens, from the host, every namespace of the container's init
that differs from its own (/proc/<init>/ns/<type>, type-checked as joined
namespaces are at create) and the init's root directory, then checks that the
init is still the process create recorded (so none of those fds came from a
process that reused its pid). Its child is forked into the pid and time
namespaces (they take effect for children: runproc.linux.namespaces), joins
the rest, user first, and moves into the init's root: setns into the mount
namespace puts it at that namespace's root, and the chroot to the init's own
root also covers containers without a mount namespace of their own or made
with --no-pivot.
"""

from __future__ import annotations

import os

from runproc.errors import RunprocError
from runproc.fsutil import os_error_text
from runproc.kernel import process_alive
from runproc.linux import namespaces
from runproc.spec.namespaces import NAMESPACE_TYPES, Namespace, NamespacePlan

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

O_PATH = getattr(os, "O_PATH", 0o10000000)


class ContainerEntry:
    """What a child needs to enter a container: the namespaces to join (opened) and its root (an fd)."""

    __slots__ = ("plan", "joined", "root")

    def __init__(self, plan: NamespacePlan, joined: dict[str, int], root: int) -> None:
        self.plan = plan
        self.joined = joined
        self.root = root

    def fds(self) -> set[int]:
        return {*self.joined.values(), self.root}

    def close(self) -> None:
        namespaces.close_all(self.joined)
        if self.root >= 0:
            os.close(self.root)
            self.root = -1


class ContainerStopped(RunprocError):
    def __init__(self) -> None:
        super().__init__("cannot exec in a stopped container")


def open_container(pid: int, start_time: int) -> ContainerEntry:
    """Open the namespaces and root of the init `pid` (started at `start_time`)."""
    plan = NamespacePlan()
    for kind in NAMESPACE_TYPES:
        if not namespaces.kernel_has(kind):
            continue
        link = namespaces.PROC_LINKS[kind]
        try:
            theirs = os.stat(f"/proc/{pid}/ns/{link}")
            ours = os.stat(f"/proc/self/ns/{link}")
        except FileNotFoundError:
            raise ContainerStopped() from None
        except OSError as err:
            raise RunprocError(f"cannot inspect the {kind} namespace of process {pid}: {os_error_text(err)}") from None
        if (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino):
            plan.namespaces.append(Namespace(kind, f"/proc/{pid}/ns/{link}"))
    joined = namespaces.open_joined(plan)
    try:
        root = os.open(f"/proc/{pid}/root", O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        namespaces.close_all(joined)
        if not process_alive(pid, start_time):
            raise ContainerStopped() from None
        raise RunprocError(f"cannot open the root of process {pid}: {os_error_text(err)}") from None
    entry = ContainerEntry(plan, joined, root)
    if not process_alive(pid, start_time):  # the fds may be another process's: the init is gone
        entry.close()
        raise ContainerStopped()
    return entry


def fork_inside(entry: ContainerEntry, fork: Callable[[], int] = os.fork) -> int:
    """`fork` (os.fork), the child born in the container's pid and time namespaces (if it has its own)."""
    return namespaces.fork_in_child_namespaces(entry.plan, entry.joined, fork=fork)


def enter(entry: ContainerEntry) -> None:
    """In the forked child: join the other namespaces (user first, then root there), then the init's root;
    "/" is the cwd."""
    namespaces.join_all(entry.plan, entry.joined)
    try:
        if entry.plan.private("user"):
            # Root of the container's user namespace (as runc's nsexec): until then our ids are
            # the host's, unmapped there, and what we make (the pty) would be owned by no one in it.
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        theirs, ours = os.fstat(entry.root), os.stat("/")
        if (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino):
            os.fchdir(entry.root)
            os.chroot(".")
        os.chdir("/")
    except OSError as err:
        raise RunprocError(f"entering the container's root: {os_error_text(err)}") from None
    entry.close()
