"""`runproc create [--bundle B] [--pid-file F] ... ID [BUNDLE]`."""

from __future__ import annotations

from runproc.cli import Context
from runproc.create import create_from_values
from runproc.errors import RunprocError
from runproc.state import StateStore


def run(context: Context) -> int:
    try:
        # Always detached: no host terminal.
        create_from_values(StateStore(context.root), context.values, context.log, systemd_cgroup=context.systemd_cgroup)
    except RunprocError as err:
        # The prefix runc uses; containerd shows "OCI runtime create failed: <this>".
        raise RunprocError(f"runproc create failed: {err}") from None
    return 0
