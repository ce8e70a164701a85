"""`runproc ps [--format table|json] ID`: the container's processes, as host pids.

containerd's `ctr task ps` runs `ps --format json ID` and reads a JSON array of
pids (runc prints `null` when there are none). The container's processes are
those in its cgroup; without one, its pid namespace's or its init's session.
"""

from __future__ import annotations

import sys

from runproc import jsonio
from runproc.cli import Context
from runproc.errors import RunprocError
from runproc.container import container_pids
from runproc.kernel import process_alive
from runproc.state import StateStore


def run(context: Context) -> int:
    output_format = str(context.values.get("format", "table"))
    if output_format not in ("table", "json"):
        raise RunprocError(f"invalid format option {output_format!r}: want table or json")
    store = StateStore(context.root)
    container_id = str(context.values["id"])
    with store.lock(container_id) as locked:
        record = store.load(locked)
        pids = set(container_pids(record))
        if process_alive(record.pid, record.start_time):
            pids.add(record.pid)
    ordered = sorted(pids)
    if output_format == "json":
        sys.stdout.write((jsonio.dumps(ordered).replace(" ", "") if ordered else "null") + "\n")
        return 0
    lines = ["PID    CMD"]
    for pid in ordered:
        lines.append(f"{pid:<6} {_command_line(pid)}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as stream:
            return stream.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""
