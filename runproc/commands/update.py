"""`runproc update [--resources FILE|-] [--memory N ...] ID`: change a running container's limits.

As runc: with --resources, the JSON (a LinuxResources object) and nothing
else; otherwise the flags. What is not given (or 0) stays as it is; device
rules are never changed here (runc's update skips them too).
"""

from __future__ import annotations

import sys

from runproc import jsonio
from runproc.cli import Context
from runproc.commands.pause import container_cgroup
from runproc.errors import RunprocError
from runproc.state import StateStore

# flag destination -> (section, key) of LinuxResources, for the plain numbers.
NUMBER_FLAGS = {
    "blkio_weight": ("blockIO", "weight"),
    "cpu_period": ("cpu", "period"),
    "cpu_quota": ("cpu", "quota"),
    "cpu_share": ("cpu", "shares"),
    "cpu_rt_period": ("cpu", "realtimePeriod"),
    "cpu_rt_runtime": ("cpu", "realtimeRuntime"),
    "pids_limit": ("pids", "limit"),
}
MEMORY_FLAGS = {  # sizes with units (go-units RAMInBytes), or -1
    "memory": "limit", "memory_swap": "swap", "memory_reservation": "reservation",
    "kernel_memory": "kernel", "kernel_memory_tcp": "kernelTCP",
}
STRING_FLAGS = {"cpuset_cpus": ("cpu", "cpus"), "cpuset_mems": ("cpu", "mems")}
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def ram_in_bytes(text: str, flag: str) -> int:
    """go-units RAMInBytes: `512`, `1.5g`, `64MiB`, `100 kb` (binary units), as runc's flags take them."""
    if text == "-1":
        return -1
    rest, unit = text, ""
    for letters in ("bB", "iI"):
        if rest and rest[-1] in letters:
            rest = rest[:-1]
    if rest and rest[-1].lower() in "kmgtp":
        unit, rest = rest[-1].lower(), rest[:-1]
    rest = rest[:-1] if rest.endswith(" ") else rest
    parts = rest.split(".")
    if not rest or not all(part.isascii() and part.isdigit() for part in parts) or len(parts) > 2:
        raise RunprocError(f"invalid value for {flag}: invalid size: '{text}'")
    return int(float(rest) * _UNITS[unit])


def _from_flags(values: dict[str, str | bool]) -> dict:
    raw: dict[str, dict] = {}
    for name, (section, key) in NUMBER_FLAGS.items():
        if isinstance(values.get(name), str):
            text = str(values[name])
            try:
                number = int(text, 10)
            except ValueError:
                raise RunprocError(f"invalid value for {name.replace('_', '-')}: {text!r} is not a number") from None
            if number:
                raw.setdefault(section, {})[key] = number
    for name, key in MEMORY_FLAGS.items():
        if isinstance(values.get(name), str):
            raw.setdefault("memory", {})[key] = ram_in_bytes(str(values[name]), name.replace("_", "-"))
    for name, (section, key) in STRING_FLAGS.items():
        if values.get(name):
            raw.setdefault(section, {})[key] = str(values[name])
    memory = raw.get("memory", {})
    if memory.get("limit") == -1 and "swap" not in memory:
        memory["swap"] = 0  # runc: unlimited memory without a swap value means unlimited swap too
    return raw


def _from_json(source: str) -> dict:
    try:
        if source == "-":
            text = sys.stdin.buffer.read()
        else:
            with open(source, "rb") as stream:
                text = stream.read()
        data = jsonio.loads(text)
    except OSError as err:
        raise RunprocError(f"open {source}: {err.strerror}") from None
    except (ValueError, RecursionError) as err:
        raise RunprocError(f"unable to parse the resources: {err}") from None
    if not isinstance(data, dict):
        raise RunprocError("unable to parse the resources: not a JSON object")
    return data


def run(context: Context) -> int:
    values = context.values
    for flag in ("l3_cache_schema", "mem_bw_schema"):
        if values.get(flag):
            raise RunprocError(f"--{flag.replace('_', '-')}: Intel RDT (resctrl) is not supported by runproc")
    source = values.get("resources")
    raw = _from_json(str(source)) if isinstance(source, str) and source else _from_flags(values)
    from runproc.linux.cgroups import apply_resources
    from runproc.spec.resources import parse_resources

    resources = parse_resources(raw, "update", "resources")
    if resources.kernel_memory:
        sys.stderr.write("runproc: warning: kernel memory settings are ignored (as by runc 1.1)\n")
    store = StateStore(context.root)
    with store.lock(str(values["id"])) as locked:
        record = store.load(locked)
        if record.status() == "stopped":
            raise RunprocError("container not running")
        apply_resources(container_cgroup(record), resources, None, "resources")
    return 0
