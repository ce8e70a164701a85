"""Forking the container's init into its namespaces.

Without a user namespace, create forks the init itself, having entered the
pid and time namespaces for its child (they take effect for children only);
the init enters the rest.

With one, runc's nsexec shape: create forks a short-lived *stage* process
that joins the namespaces given by path (user first, while still privileged),
makes the new user namespace and waits while create writes its id maps,
becomes root there, enters the pid and time namespaces (now owned by the new
user namespace, so the init may mount /proc) and forks the init. It tells
create the init's pid and exits; create, a child subreaper meanwhile, is then
the init's parent, as without a stage.
"""

from __future__ import annotations

import os

from runproc.errors import RunprocError
from runproc.linux import namespaces, syscalls
from runproc.spec.namespaces import NamespacePlan

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn

    from runproc.linux.cgroups.entry import Entry

_NEED_MAPS = b"m"
_MAPS_WRITTEN = b"w"


def spawn_init(plan: NamespacePlan | None, joined: dict[str, int], run_init: Callable[[], NoReturn],
               cgroup: Entry | None = None) -> int:
    """Fork the init (which runs `run_init`) into the container's namespaces; its pid as create sees it.

    With a `cgroup`, the first child (the init, or the stage that forks it) is in the
    container's cgroup before it does anything, so everything the container does, the
    init's own setup too, happens inside (runc applies its cgroup to its stage-0
    process the same way): runproc.linux.cgroups.entry says how it gets there. If it
    cannot get in, the child is ended and RunprocError says why.
    """
    entering = _Entering(cgroup) if cgroup is not None else None
    fork = entering.fork if entering is not None else os.fork
    if plan is not None and plan.private("user"):
        return _spawn_through_stage(plan, joined, run_init, fork, entering)
    pid = fork() if plan is None else namespaces.fork_in_child_namespaces(plan, joined, fork=fork)
    if pid == 0:  # never returns into the caller's code
        try:
            if entering is not None:
                entering.in_child()
            run_init()
        finally:
            os._exit(1)
    if entering is not None:
        entering.in_parent(pid)
    return pid


class _Entering:
    """The first child's way into the cgroup, and the pipe that orders it with create: the child
    joins by itself and tells create if that failed, or it waits while create joins it by pid."""

    def __init__(self, entry: Entry) -> None:
        self.entry = entry
        self.read_end = self.write_end = -1

    def fork(self) -> int:
        self.read_end, self.write_end = os.pipe()
        try:
            return self.entry.fork()
        except BaseException:
            os.close(self.read_end)
            os.close(self.write_end)
            raise

    def in_child(self) -> None:
        if self.entry.joins_itself:
            os.close(self.read_end)
            try:
                self.entry.join_self()
            except RunprocError as err:
                _tell_and_exit(self.write_end, err.message, status=1)
            os.close(self.write_end)
            return
        os.close(self.write_end)
        if os.read(self.read_end, 1) != b"\1":
            os._exit(1)  # create could not put us in, or died
        os.close(self.read_end)

    def in_parent(self, pid: int) -> None:
        try:
            if self.entry.joins_itself:
                os.close(self.write_end)
                self.write_end = -1
                failure = _read_all(self.read_end)
                if failure:
                    raise RunprocError(failure.decode(errors="replace"))
            else:
                self.entry.join(pid)
                os.write(self.write_end, b"\1")
        except BaseException:
            _end(pid)
            raise
        finally:
            for fd in (self.read_end, self.write_end):
                if fd >= 0:
                    os.close(fd)


def _spawn_through_stage(plan: NamespacePlan, joined: dict[str, int], run_init: Callable[[], NoReturn],
                         fork: Callable[[], int], entering: _Entering | None) -> int:
    syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)  # the init comes back to us when the stage exits
    to_stage_r, to_stage_w = os.pipe()
    from_stage_r, from_stage_w = os.pipe()
    try:
        stage = fork()
    except BaseException:
        for fd in (to_stage_r, to_stage_w, from_stage_r, from_stage_w):
            os.close(fd)
        raise
    if stage == 0:  # never returns into the caller's code
        try:
            os.close(to_stage_w)
            os.close(from_stage_r)
            if entering is not None:
                entering.in_child()
            _stage(plan, joined, to_stage_r, from_stage_w, run_init)
        finally:
            os._exit(1)
    os.close(to_stage_r)
    os.close(from_stage_w)
    try:
        if entering is not None:
            entering.in_parent(stage)  # the init, forked by the stage, is born inside
        return _guide_stage(stage, plan, to_stage_w, from_stage_r)
    finally:
        os.close(to_stage_w)
        os.close(from_stage_r)
        _reap(stage)


def _guide_stage(stage: int, plan: NamespacePlan, to_stage: int, from_stage: int) -> int:
    """create's side: write the id maps when the stage asks, then read the init's pid (or the stage's error)."""
    message = _read_all(from_stage, until=_NEED_MAPS) if plan.new("user") else b""
    if plan.new("user"):
        if message != _NEED_MAPS:
            raise RunprocError(message.decode(errors="replace") or "the namespace stage exited early")
        namespaces.write_id_maps(stage, plan)
        os.write(to_stage, _MAPS_WRITTEN)
    reply = _read_all(from_stage)
    if not reply.startswith(b"pid "):
        raise RunprocError(reply.decode(errors="replace") or "the namespace stage exited early")
    return int(reply[4:])


def _stage(plan: NamespacePlan, joined: dict[str, int], from_create: int, to_create: int,
           run_init: Callable[[], NoReturn]) -> NoReturn:
    try:
        namespaces.join_all(plan, joined)
        if plan.new("user"):
            try:
                syscalls.unshare(syscalls.CLONE_NEWUSER)
            except OSError as err:
                raise RunprocError(f"linux.namespaces: unshare user namespace: {err.strerror}") from None
            os.write(to_create, _NEED_MAPS)
            if os.read(from_create, 1) != _MAPS_WRITTEN:
                os._exit(1)  # create failed to write them; it reports why
        os.setresgid(0, 0, 0)  # root of the user namespace, as runc's stage
        os.setresuid(0, 0, 0)
        pid = namespaces.fork_in_child_namespaces(plan, joined, restore=False)
    except RunprocError as err:
        _tell_and_exit(to_create, err.message)
    except OSError as err:
        _tell_and_exit(to_create, f"linux.namespaces: {err.strerror}")
    if pid == 0:
        os.close(from_create)
        os.close(to_create)
        namespaces.close_all(joined)  # joined already; the init must not join again
        run_init()
    _tell_and_exit(to_create, f"pid {pid}")


def _tell_and_exit(fd: int, text: str, status: int = 0) -> NoReturn:
    try:
        os.write(fd, text.encode(errors="replace"))
    finally:
        os._exit(status)


def _read_all(fd: int, until: bytes | None = None) -> bytes:
    data = b""
    while data != until:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data


def _end(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass
    _reap(pid)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
