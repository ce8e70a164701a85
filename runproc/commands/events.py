"""`runproc events [--stats] [--interval D] ID`: the container's cgroup statistics and OOM events, as JSON lines.

--stats prints one {"type":"stats","id":...,"data":{...}} object (runc's
shape). Without it, a stats object every interval (default 5s) and an
{"type":"oom","id":...} object whenever the kernel kills in the container's
memory cgroup, until the container's cgroup is gone (runc would go on
printing errors forever). The container's lock is not held while streaming,
so delete is never kept waiting.
"""

from __future__ import annotations

import select
import sys
import time

from runproc import jsonio
from runproc.cli import Context
from runproc.commands.pause import container_cgroup
from runproc.errors import RunprocError
from runproc.state import StateStore

# Go's time.ParseDuration units.
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """A Go duration (`5s`, `100ms`, `1m30s`) in seconds."""
    rest, total = text, 0.0
    if rest == "0":
        return 0.0
    while rest:
        digits = len(rest) - len(rest.lstrip("0123456789."))
        number, rest = rest[:digits], rest[digits:]
        unit = next((u for u in sorted(_UNITS, key=len, reverse=True) if rest.startswith(u)), None)
        if not number or number == "." or number.count(".") > 1 or unit is None:
            raise RunprocError(f'invalid value "{text}" for flag -interval: parse error')
        total += float(number) * _UNITS[unit]
        rest = rest[len(unit):]
    return total


def _emit(event: dict) -> None:
    # Compact, as runc's encoder (ids and stats hold no ", " of their own).
    sys.stdout.write(jsonio.dumps(event).replace(", ", ",").replace(": ", ":") + "\n")
    sys.stdout.flush()


def run(context: Context) -> int:
    container_id = str(context.values["id"])
    interval = parse_duration(str(context.values.get("interval", "5s")))
    if interval <= 0:
        raise RunprocError("duration interval must be greater than 0")
    store = StateStore(context.root)
    with store.lock(container_id) as locked:
        record = store.load(locked)
        if record.status() == "stopped":
            raise RunprocError(f"container with id {container_id} is not running")
        cgroup = container_cgroup(record)
    from runproc.linux.cgroups.stats import stats

    if context.values.get("stats"):
        _emit({"type": "stats", "id": container_id, "data": stats(cgroup)})
        return 0
    from runproc.linux.cgroups.oom import OomWatch

    watch = OomWatch(cgroup)
    poller = select.poll()
    poller.register(watch.fd, select.POLLIN)
    next_stats = time.monotonic() + interval
    try:
        while cgroup.exists():
            wait = max(0.0, next_stats - time.monotonic())
            if poller.poll(int(wait * 1000) + 1) and watch.fired():
                _emit({"type": "oom", "id": container_id})
            if time.monotonic() >= next_stats and cgroup.exists():
                _emit({"type": "stats", "id": container_id, "data": stats(cgroup)})
                next_stats += interval
    finally:
        watch.close()
    return 0
