"""`runproc list [--format table|json] [--quiet]`: the containers of the state root, as runc lists them.

Each container's record is read without its lock (records are written whole,
so an unlocked read sees one or none): a long-running command on one container
does not hold up `list`. Staging entries are left out; an entry that is not a
container runproc made (or one it must not trust) gets a line on stderr and is
skipped, as runc does with what it cannot load.
"""

from __future__ import annotations

import os
import sys

from runproc import jsonio
from runproc.cli import Context
from runproc.errors import ContainerNotFound, RunprocError
from runproc.state import StateStore

HEADER = ("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")
# Go's text/tabwriter as runc sets it up: minwidth 12, padding 3, spaces.
MIN_WIDTH = 12
PADDING = 3


def run(context: Context) -> int:
    output_format = str(context.values.get("format", "table"))
    if output_format not in ("table", "json"):
        raise RunprocError("invalid format option")
    states = _states(StateStore(context.root))
    if context.values.get("quiet"):
        sys.stdout.write("".join(f"{state['id']}\n" for state in states))
    elif output_format == "json":
        sys.stdout.write((jsonio.dumps(states, compact=True) if states else "null") + "\n")
    else:
        rows = [HEADER] + [(state["id"], str(state["pid"]), state["status"], state["bundle"], state["created"],
                            state["owner"]) for state in states]
        sys.stdout.write(tabulate(rows))
    return 0


def _states(store: StateStore) -> list[dict]:
    states = []
    owners: dict[int, str] = {}
    for name in store.names():
        try:
            locked = store.peek(name)
            if locked is None:
                continue  # deleted meanwhile
            with locked:
                state = store.load(locked).oci_state()
                uid = os.fstat(locked.fd).st_uid
        except ContainerNotFound:
            continue  # a create still making it
        except RunprocError as err:
            sys.stderr.write(f"load container {name}: {err.message}\n")
            continue
        if uid not in owners:
            owners[uid] = user_name(uid)
        state["owner"] = owners[uid]  # runc lists the directory's owner by name
        states.append(_runc_order(state))
    return states


def _runc_order(state: dict) -> dict:
    """runc's containerState field order: annotations (only when there are some) before owner."""
    ordered = {key: state[key] for key in ("ociVersion", "id", "pid", "status", "bundle", "rootfs", "created")}
    if state.get("annotations"):
        ordered["annotations"] = state["annotations"]
    ordered["owner"] = state["owner"]
    return ordered


def user_name(uid: int, passwd: str = "/etc/passwd") -> str:
    """The name of `uid` in the host's passwd file, else `#uid` (runc's fallback)."""
    try:
        with open(passwd, encoding="utf-8", errors="replace") as stream:
            for line in stream:
                fields = line.split(":")
                if len(fields) >= 3 and fields[2] == str(uid):
                    return fields[0]
    except OSError:
        pass
    return f"#{uid}"


def tabulate(rows: list[tuple[str, ...]]) -> str:
    """Go's tabwriter: every cell but the last of a line padded to its column's width."""
    widths = [max(MIN_WIDTH, max(len(row[n]) for row in rows) + PADDING) for n in range(len(rows[0]) - 1)]
    return "".join("".join(cell.ljust(width) for cell, width in zip(row, widths)) + row[-1] + "\n" for row in rows)
