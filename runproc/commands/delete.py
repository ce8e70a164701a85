"""`runproc delete [--force] ID`: remove a container (with --force, also a running one)."""

from __future__ import annotations

from runproc.cli import Context
from runproc.container import destroy_container
from runproc.errors import ContainerNotFound, RunprocError
from runproc.state import StateStore


def run(context: Context) -> int:
    store = StateStore(context.root)
    container_id = str(context.values["id"])
    force = bool(context.values.get("force"))
    try:
        with store.lock(container_id) as locked:
            try:
                record = store.load(locked)
            except RunprocError:
                # No record (a create that died half-way; its init ends by itself)
                # or one we cannot trust: --force, as containerd's cleanup, removes
                # the directory, and signals nothing on its word.
                if not force:
                    raise
                store.remove(locked)
                return 0
            destroy_container(store, locked, record, force, context.log)
    except ContainerNotFound:
        if not force:
            raise
        # containerd's cleanup deletes with --force whatever is left, if anything;
        # what killed commands left in the root goes too.
        store.sweep()
    return 0
