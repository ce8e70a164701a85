"""`runproc create [--bundle B] [--pid-file F] ... ID [BUNDLE]`."""

from __future__ import annotations

from runproc.cli import Context
from runproc.container import check_pid_file, create_container, load_plan_for, parse_preserve_fds
from runproc.errors import RunprocError
from runproc.state import StateStore, validate_id


def run(context: Context) -> int:
    values = context.values
    container_id = str(values["id"])
    try:
        validate_id(container_id)
        pid_file = check_pid_file(values.get("pid_file"))
        preserve_fds = parse_preserve_fds(values.get("preserve_fds"))
        plan = load_plan_for(values)
        create_container(StateStore(context.root), container_id, plan, pid_file, preserve_fds)
    except RunprocError as err:
        # The prefix runc uses; containerd shows "OCI runtime create failed: <this>".
        raise RunprocError(f"runproc create failed: {err}") from None
    return 0
