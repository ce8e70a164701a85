"""`runproc run [--detach] [--keep] ... ID [BUNDLE]`: create + start (+ wait, + delete)."""

from __future__ import annotations

import _signal
import os

from runproc.cli import Context
from runproc.container import destroy_container, start_container
from runproc.create import create_from_values
from runproc.errors import ContainerNotFound, RunprocError
from runproc.log import report_error
from runproc.state import ContainerRecord, StateStore

# Signals a foreground `run` passes on to the container, as runc does.
FORWARDED = ("SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGCONT")


def run(context: Context) -> int:
    values = context.values
    store = StateStore(context.root)
    try:
        created = create_from_values(store, values, context.systemd_cgroup)
    except RunprocError as err:
        raise RunprocError(f"runproc run failed: {err}") from None
    if not values.get("detach"):
        # From before start: the program may be ready for signals (and get them) at once.
        _forward_signals(created.pid)
    try:
        with store.lock(created.id) as locked:
            start_container(_ours(store.load(locked), created))
    except BaseException:
        try:
            _delete_if_ours(store, created)
        except RunprocError:
            pass  # the error that stopped the start is the one to show
        raise
    if values.get("detach"):
        return 0
    status = _wait(created.pid)
    if not values.get("keep"):
        try:
            _delete_if_ours(store, created)
        except RunprocError as err:
            # The program's exit code is what run reports; the failed clean-up gets its line.
            report_error(context.log, err.message)
    return status


def _ours(current: ContainerRecord, created: ContainerRecord) -> ContainerRecord:
    """The record under the id, if it is still the container this run made (not deleted and made anew)."""
    if (current.pid, current.start_time) != (created.pid, created.start_time):
        raise ContainerNotFound()
    return current


def _delete_if_ours(store: StateStore, created: ContainerRecord) -> None:
    try:
        with store.lock(created.id) as locked:
            destroy_container(store, locked, _ours(store.load(locked), created), force=True)
    except ContainerNotFound:
        pass  # someone else deleted it meanwhile


def _forward_signals(pid: int) -> None:
    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for name in FORWARDED:
        _signal.signal(getattr(_signal, name), forward)


def _wait(pid: int) -> int:
    """Wait for our child the init; its exit code, or 128+N when killed by signal N."""
    _, wait_status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status)
