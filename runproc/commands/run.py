"""`runproc run [--detach] [--keep] ... ID [BUNDLE]`: create + start (+ wait, + delete)."""

from __future__ import annotations

import _signal
import os

from runproc.cli import Context
from runproc.container import create_from_values, destroy_container, start_container
from runproc.errors import ContainerNotFound, RunprocError
from runproc.state import StateStore

# Signals a foreground `run` passes on to the container, as runc does.
FORWARDED = ("SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGCONT")


def run(context: Context) -> int:
    values = context.values
    container_id = str(values["id"])
    store = StateStore(context.root)
    try:
        record = create_from_values(store, values)
    except RunprocError as err:
        raise RunprocError(f"runproc run failed: {err}") from None
    try:
        with store.lock(container_id):
            start_container(record)
    except BaseException:
        with store.lock(container_id):
            destroy_container(record, force=True)
        raise
    if values.get("detach"):
        return 0
    status = _wait_forwarding_signals(record.pid)
    if not values.get("keep"):
        try:
            with store.lock(container_id):
                current = store.load(container_id)
                # Only ours: meanwhile someone may have deleted it and made another.
                if (current.pid, current.start_time) == (record.pid, record.start_time):
                    destroy_container(current, force=True)
        except ContainerNotFound:
            pass
    return status


def _wait_forwarding_signals(pid: int) -> int:
    """Wait for our child the init; its exit code, or 128+N when killed by signal N."""

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for name in FORWARDED:
        _signal.signal(getattr(_signal, name), forward)
    _, wait_status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status)
