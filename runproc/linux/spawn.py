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

_NEED_MAPS = b"m"
_MAPS_WRITTEN = b"w"


def spawn_init(plan: NamespacePlan | None, joined: dict[str, int], run_init: Callable[[], NoReturn],
               before_run: Callable[[int], None] | None = None) -> int:
    """Fork the init (which runs `run_init`) into the container's namespaces; its pid as create sees it.

    `before_run(pid)` runs in create while the first child (the init, or the
    stage that forks it) waits, before it does anything: create puts it into
    the container's cgroup there, so everything the container does, the
    init's own setup too, happens inside (runc applies its cgroup to its
    stage-0 process the same way). If it raises, the child is ended.
    """
    hold = _Hold() if before_run is not None else None
    if plan is not None and plan.private("user"):
        return _spawn_through_stage(plan, joined, run_init, before_run, hold)
    pid = os.fork() if plan is None else namespaces.fork_in_child_namespaces(plan, joined)
    if pid == 0:
        if hold is not None:
            hold.wait()
        run_init()
    if hold is not None and before_run is not None:
        hold.release_after(pid, before_run)
    return pid


class _Hold:
    """A pipe that keeps a new child waiting until create has done its part."""

    def __init__(self) -> None:
        self.read_end, self.write_end = os.pipe()

    def wait(self) -> None:
        """In the child: go on once create says so; end if create gives up (the pipe closes)."""
        os.close(self.write_end)
        if os.read(self.read_end, 1) != b"\1":
            os._exit(1)
        os.close(self.read_end)

    def release_after(self, pid: int, before_run: Callable[[int], None]) -> None:
        os.close(self.read_end)
        try:
            before_run(pid)
            os.write(self.write_end, b"\1")
        except BaseException:
            os.close(self.write_end)
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
            _reap(pid)
            raise
        os.close(self.write_end)


def _spawn_through_stage(plan: NamespacePlan, joined: dict[str, int], run_init: Callable[[], NoReturn],
                         before_run: Callable[[int], None] | None, hold: _Hold | None) -> int:
    syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)  # the init comes back to us when the stage exits
    to_stage_r, to_stage_w = os.pipe()
    from_stage_r, from_stage_w = os.pipe()
    stage = os.fork()
    if stage == 0:  # never returns into the caller's code
        try:
            os.close(to_stage_w)
            os.close(from_stage_r)
            if hold is not None:
                hold.wait()
            _stage(plan, joined, to_stage_r, from_stage_w, run_init)
        finally:
            os._exit(1)
    os.close(to_stage_r)
    os.close(from_stage_w)
    try:
        if hold is not None and before_run is not None:
            hold.release_after(stage, before_run)  # the init, forked by the stage, is born inside
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


def _tell_and_exit(fd: int, text: str) -> NoReturn:
    try:
        os.write(fd, text.encode(errors="replace"))
    finally:
        os._exit(0)


def _read_all(fd: int, until: bytes | None = None) -> bytes:
    data = b""
    while data != until:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
