"""`runproc kill [--all] ID [SIGNAL]`: signal a container (default SIGTERM)."""

from __future__ import annotations

from runproc.cli import Context
from runproc.container import kill_container
from runproc.signals import parse_signal
from runproc.state import StateStore


def run(context: Context) -> int:
    store = StateStore(context.root)
    container_id = str(context.values["id"])
    sig = parse_signal(str(context.values.get("signal", "SIGTERM")))
    with store.lock(container_id) as locked:
        kill_container(store.load(locked), sig, bool(context.values.get("all")))
    return 0
