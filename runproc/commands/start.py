"""`runproc start ID`: let a created container's process run its program."""

from __future__ import annotations

from runproc.cli import Context
from runproc.container import poststart_hooks, start_container
from runproc.state import StateStore


def run(context: Context) -> int:
    store = StateStore(context.root)
    container_id = str(context.values["id"])
    with store.lock(container_id) as locked:
        record = store.load(locked)
        start_container(record)
        poststart = poststart_hooks(record)
    poststart(context.log)
    return 0
