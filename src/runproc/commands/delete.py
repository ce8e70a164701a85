"""`runproc delete [--force] ID`: remove a container (with --force, also a running one)."""

from __future__ import annotations

from runproc.cli import Context
from runproc.container import destroy_container
from runproc.errors import ContainerNotFound
from runproc.state import StateStore


def run(context: Context) -> int:
    store = StateStore(context.root)
    container_id = str(context.values["id"])
    force = bool(context.values.get("force"))
    try:
        with store.lock(container_id):
            destroy_container(store.load(container_id), force)
    except ContainerNotFound:
        if force:
            return 0  # containerd's cleanup deletes with --force whatever is left, if anything
        raise
    return 0
