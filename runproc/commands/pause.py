"""`runproc pause ID`: freeze every process of the container (its cgroup's freezer)."""

from __future__ import annotations

from runproc.cli import Context
from runproc.errors import RunprocError
from runproc.state import ContainerRecord, StateStore


def container_cgroup(record: ContainerRecord):  # noqa: ANN201 - a Cgroup; its module loads only here
    """The cgroup of a container that has one; runc's texts for the rest."""
    if record.cgroup is None:
        raise RunprocError(f"container {record.id} has no cgroup (runproc makes one as root, outside host mode)")
    return record.cgroup


def run(context: Context) -> int:
    store = StateStore(context.root)
    with store.lock(str(context.values["id"])) as locked:
        record = store.load(locked)
        if record.status() not in ("running", "created"):
            raise RunprocError("container not running")
        container_cgroup(record).set_frozen(True)
    return 0
