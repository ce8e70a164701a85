"""`runproc run [--detach] [--keep] ... ID [BUNDLE]`: create + start (+ wait, + delete)."""

from __future__ import annotations

from runproc import foreground
from runproc.cli import Context
from runproc.container import destroy_container, poststart_hooks, start_container
from runproc.create import create_from_values
from runproc.errors import ContainerNotFound, RunprocError
from runproc.log import LogSettings, report_error
from runproc.state import ContainerRecord, StateStore


def run(context: Context) -> int:
    values = context.values
    store = StateStore(context.root)
    detach = bool(values.get("detach"))
    try:
        created, host_terminal = create_from_values(store, values, context.log, detach, context.systemd_cgroup)
    except RunprocError as err:
        raise RunprocError(f"runproc run failed: {err}") from None
    if not detach:
        # From before start: the program may be ready for signals (and get them) at once.
        foreground.forward_signals(created.pid)
    try:
        if host_terminal is not None:
            host_terminal.receive()  # the init sent the master before it reported ready
        with store.lock(created.id) as locked:
            record = _ours(store.load(locked), created)
            start_container(record)
            poststart = poststart_hooks(record)
    except BaseException:
        if host_terminal is not None:
            host_terminal.close()
        try:
            _delete_if_ours(store, created, context.log)
        except RunprocError:
            pass  # the error that stopped the start is the one to show
        raise
    poststart(context.log)
    if detach:
        return 0
    status = foreground.wait(created.pid, host_terminal)
    if not values.get("keep"):
        try:
            _delete_if_ours(store, created, context.log)
        except RunprocError as err:
            # The program's exit code is what run reports; the failed clean-up gets its line.
            report_error(context.log, err.message)
    return status


def _ours(current: ContainerRecord, created: ContainerRecord) -> ContainerRecord:
    """The record under the id, if it is still the container this run made (not deleted and made anew)."""
    if (current.pid, current.start_time) != (created.pid, created.start_time):
        raise ContainerNotFound()
    return current


def _delete_if_ours(store: StateStore, created: ContainerRecord, log: LogSettings) -> None:
    try:
        with store.lock(created.id) as locked:
            destroy_container(store, locked, _ours(store.load(locked), created), True, log)
    except ContainerNotFound:
        pass  # someone else deleted it meanwhile
