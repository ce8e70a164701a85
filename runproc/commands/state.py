"""`runproc state ID`: the container's state as runc prints it (JSON)."""

from __future__ import annotations

import sys

from runproc import jsonio
from runproc.cli import Context
from runproc.state import StateStore


def run(context: Context) -> int:
    store = StateStore(context.root)
    container_id = str(context.values["id"])
    with store.lock(container_id) as locked:
        state = store.load(locked).oci_state()
    sys.stdout.write(jsonio.dumps(state, indent=2) + "\n")
    return 0
