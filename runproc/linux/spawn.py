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


def spawn_init(plan: NamespacePlan | None, joined: dict[str, int], run_init: Callable[[], NoReturn]) -> int:
    """Fork the init (which runs `run_init`) into the container's namespaces; its pid as create sees it."""
    if plan is None:
        pid = os.fork()
    elif not plan.private("user"):
        pid = namespaces.fork_in_child_namespaces(plan, joined)
    else:
        return _spawn_through_stage(plan, joined, run_init)
    if pid == 0:
        run_init()
    return pid


def _spawn_through_stage(plan: NamespacePlan, joined: dict[str, int], run_init: Callable[[], NoReturn]) -> int:
    syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)  # the init comes back to us when the stage exits
    to_stage_r, to_stage_w = os.pipe()
    from_stage_r, from_stage_w = os.pipe()
    stage = os.fork()
    if stage == 0:  # never returns into the caller's code
        try:
            os.close(to_stage_w)
            os.close(from_stage_r)
            _stage(plan, joined, to_stage_r, from_stage_w, run_init)
        finally:
            os._exit(1)
    os.close(to_stage_r)
    os.close(from_stage_w)
    try:
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
