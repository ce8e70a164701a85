"""`runproc resume ID`: thaw a paused container."""

from __future__ import annotations

from runproc.cli import Context
from runproc.commands.pause import container_cgroup
from runproc.errors import RunprocError
from runproc.state import StateStore


def run(context: Context) -> int:
    store = StateStore(context.root)
    with store.lock(str(context.values["id"])) as locked:
        record = store.load(locked)
        if record.status() != "paused":
            raise RunprocError("container not paused")
        container_cgroup(record).set_frozen(False)
    return 0
