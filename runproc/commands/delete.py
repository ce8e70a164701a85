"""`runproc delete [--force] ID`: remove a container (with --force, also a running one)."""

from __future__ import annotations

from runproc.cli import Context
from runproc.container import destroy_container
from runproc.errors import ContainerNotFound, RunprocError
from runproc.state import StateStore, remove_directory


def run(context: Context) -> int:
    store = StateStore(context.root)
    container_id = str(context.values["id"])
    force = bool(context.values.get("force"))
    try:
        with store.lock(container_id) as locked:
            try:
                record = store.load(container_id)
            except RunprocError:
                # No record (a create that died half-way; its init ends by itself)
                # or one we cannot read: --force, as containerd's cleanup, removes it.
                if not force:
                    raise
                remove_directory(locked.directory)
                return 0
            destroy_container(record, force)
    except ContainerNotFound:
        if force:
            return 0  # containerd's cleanup deletes with --force whatever is left, if anything
        raise
    return 0
