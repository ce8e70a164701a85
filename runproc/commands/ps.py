"""`runproc ps [--format table|json] ID [PS-OPTIONS...]`: the container's processes, as host pids.

containerd's `ctr task ps` runs `ps --format json ID` and reads a JSON array of
pids (runc prints `null` when there are none). The table is runc's: ps(1) runs
with the options after the id (default `-ef`), and its header and the lines
whose PID column is one of the container's are printed as ps wrote them. The
container's processes are those in its cgroup; without one, its pid
namespace's or its init's session.
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
    if output_format == "json":
        ordered = sorted(pids)
        sys.stdout.write((jsonio.dumps(ordered, compact=True) if ordered else "null") + "\n")
        return 0
    ps_args = context.values.get("ps_args") or ["-ef"]
    assert isinstance(ps_args, list)
    sys.stdout.write(filter_ps_output(run_ps(ps_args), pids))
    return 0


def run_ps(args: list[str]) -> str:
    """ps(1)'s output; its failure as runc reports it (`exit status N: <stderr>`)."""
    import subprocess

    try:
        result = subprocess.run(["ps", *args], stdin=subprocess.DEVNULL, capture_output=True)
    except OSError as err:
        raise RunprocError(f'exec: "ps": {err.strerror.lower() if err.strerror else err}') from None
    if result.returncode != 0:
        status = f"exit status {result.returncode}" if result.returncode > 0 else f"signal: {-result.returncode}"
        raise RunprocError(f"{status}: {result.stderr.decode(errors='replace')}")
    return result.stdout.decode(errors="replace")


def filter_ps_output(output: str, pids: set[int]) -> str:
    """The header and the lines of `pids`, by the header's PID column (runc's rules and messages)."""
    lines = output.split("\n")
    titles = lines[0].split()
    if "PID" not in titles:
        raise RunprocError("couldn't find PID field in ps output")
    index = titles.index("PID")
    kept = [lines[0]]
    for line in lines[1:]:
        if not line:
            continue
        fields = line.split()
        try:
            pid = int(fields[index])
        except (IndexError, ValueError):
            raise RunprocError(f"unable to parse pid: {line!r}") from None
        if pid in pids:
            kept.append(line)
    return "".join(f"{line}\n" for line in kept)
