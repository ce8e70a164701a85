"""`events` data: the container's cgroup statistics in runc 1.1's JSON shape (types.Stats), v1 and v2.

runc's Go structs drop some zero values (`omitempty`) and keep others; the
helpers here do the same, so the keys match what runc prints on the same host.
"""

from __future__ import annotations

import os

from runproc.linux.cgroups import UNIFIED, Cgroup

MAX_UINT64 = 2**64 - 1
CLOCK_TICKS = 100  # USER_HZ, what cpuacct.stat counts in (runc assumes 100 as well)


def _read(directory: str | None, name: str) -> str | None:
    if directory is None:
        return None
    try:
        with open(os.path.join(directory, name), encoding="utf-8", errors="replace") as stream:
            return stream.read()
    except OSError:
        return None


def _uint(directory: str | None, name: str) -> int:
    """A single-number file; "max" is the largest uint64, as runc parses it; missing is 0."""
    text = (_read(directory, name) or "").strip()
    if text == "max":
        return MAX_UINT64
    try:
        return int(text)
    except ValueError:
        return 0


def _keyed(directory: str | None, name: str) -> dict[str, int]:
    """A flat-keyed file (memory.stat, cpu.stat): `key value` lines."""
    values = {}
    for line in (_read(directory, name) or "").splitlines():
        key, _, value = line.partition(" ")
        try:
            values[key] = int(value)
        except ValueError:
            continue
    return values


def _omit_zero(data: dict, *keys: str) -> dict:
    for key in keys:
        if not data.get(key):
            data.pop(key, None)
    return data


def _memory_entry(limit: int, usage: int, peak: int, failcnt: int) -> dict:
    return _omit_zero({"limit": limit, "usage": usage, "max": peak, "failcnt": failcnt}, "usage", "max")


def _cpu_list(text: str | None) -> list[int]:
    """cpuset.cpus/mems ("0-2,4") as runc's list of numbers."""
    numbers: list[int] = []
    for part in (text or "").strip().split(","):
        low, _, high = part.partition("-")
        if low.isdigit():
            numbers.extend(range(int(low), int(high or low) + 1))
    return numbers


def stats(cgroup: Cgroup) -> dict:
    data = stats_v2(cgroup.paths[UNIFIED]) if cgroup.version == 2 else stats_v1(cgroup.paths)
    data["intel_rdt"] = {}
    data["network_interfaces"] = None
    return data


def stats_v1(paths: dict[str, str]) -> dict:
    cpuacct, cpu, memory = paths.get("cpuacct"), paths.get("cpu"), paths.get("memory")
    usage: dict = {"total": _uint(cpuacct, "cpuacct.usage"),
                   "percpu": [int(n) for n in (_read(cpuacct, "cpuacct.usage_percpu") or "").split()]}
    rows = [line.split() for line in (_read(cpuacct, "cpuacct.usage_all") or "").splitlines()[1:]]
    usage["percpu_kernel"] = [int(row[2]) for row in rows if len(row) == 3]
    usage["percpu_user"] = [int(row[1]) for row in rows if len(row) == 3]
    ticks = _keyed(cpuacct, "cpuacct.stat")
    usage["kernel"] = ticks.get("system", 0) * 1_000_000_000 // CLOCK_TICKS
    usage["user"] = ticks.get("user", 0) * 1_000_000_000 // CLOCK_TICKS
    throttle = _keyed(cpu, "cpu.stat")
    raw = _keyed(memory, "memory.stat")
    cpuset = paths.get("cpuset")

    def entry(prefix: str) -> dict:
        return _memory_entry(_uint(memory, f"{prefix}.limit_in_bytes"), _uint(memory, f"{prefix}.usage_in_bytes"),
                             _uint(memory, f"{prefix}.max_usage_in_bytes"), _uint(memory, f"{prefix}.failcnt"))

    pids = paths.get("pids")
    return {
        "cpu": {"usage": _omit_zero(usage, "total", "percpu", "percpu_kernel", "percpu_user"),
                "throttling": _throttling(throttle.get("nr_periods", 0), throttle.get("nr_throttled", 0),
                                          throttle.get("throttled_time", 0))},
        "cpuset": _cpuset_v1(cpuset),
        "memory": _omit_zero({"cache": raw.get("cache", 0), "usage": entry("memory"), "swap": entry("memory.memsw"),
                              "kernel": entry("memory.kmem"), "kernelTCP": entry("memory.kmem.tcp"), "raw": raw},
                             "cache", "raw"),
        "pids": _pids(pids),
        "blkio": _blkio_v1(paths.get("blkio")),
        "hugetlb": _hugetlb(paths.get("hugetlb"), "usage_in_bytes", "max_usage_in_bytes", "limit_in_bytes"),
    }


def _throttling(periods: int, throttled: int, time_ns: int) -> dict:
    return _omit_zero({"periods": periods, "throttledPeriods": throttled, "throttledTime": time_ns},
                      "periods", "throttledPeriods", "throttledTime")


def _pids(directory: str | None) -> dict:
    limit = _uint(directory, "pids.max")
    return _omit_zero({"current": _uint(directory, "pids.current"), "limit": 0 if limit == MAX_UINT64 else limit},
                      "current", "limit")


def _cpuset_v1(directory: str | None) -> dict:
    names = ("cpu_exclusive", "mem_hardwall", "mem_exclusive", "memory_migrate", "memory_spread_page",
             "memory_spread_slab", "memory_pressure", "sched_load_balance")
    data: dict = {"cpus": _cpu_list(_read(directory, "cpuset.cpus"))}
    for name in names:
        data[name] = _uint(directory, f"cpuset.{name}")
        if name == "cpu_exclusive":
            data["mems"] = _cpu_list(_read(directory, "cpuset.mems"))
    relax = (_read(directory, "cpuset.sched_relax_domain_level") or "0").strip()
    data["sched_relax_domain_level"] = int(relax) if relax.lstrip("-").isdigit() else 0
    return _omit_zero(data, "cpus", "mems")


def _blkio_entries(text: str | None, op_names: dict[str, str] | None = None) -> list[dict]:
    """`MAJ:MIN Op value` lines (v1); "Total" lines are skipped, as runc does."""
    entries = []
    for line in (text or "").splitlines():
        fields = line.split()
        if len(fields) != 3 or ":" not in fields[0]:
            continue
        major, _, minor = fields[0].partition(":")
        entries.append(_omit_zero({"major": int(major), "minor": int(minor), "op": fields[1],
                                   "value": int(fields[2])}, "major", "minor", "op", "value"))
    return entries


def _blkio_v1(directory: str | None) -> dict:
    # runc reads CFQ's files where they are, else BFQ's, else the throttle ones.
    for prefix in ("blkio.", "blkio.bfq.", "blkio.throttle."):
        if _read(directory, f"{prefix}io_serviced_recursive") is not None:
            break
    data = {"ioServiceBytesRecursive": _blkio_entries(_read(directory, f"{prefix}io_service_bytes_recursive")),
            "ioServicedRecursive": _blkio_entries(_read(directory, f"{prefix}io_serviced_recursive"))}
    return {key: value for key, value in data.items() if value}


def _page_sizes() -> list[str]:
    """The host's huge page sizes as the cgroup files name them: hugepages-2048kB -> 2MB."""
    sizes = []
    try:
        names = sorted(os.listdir("/sys/kernel/mm/hugepages"))
    except OSError:
        return []
    for name in names:
        kib = int(name.removeprefix("hugepages-").removesuffix("kB"))
        unit = 0
        while kib >= 1024 and kib % 1024 == 0 and unit < 3:
            kib //= 1024
            unit += 1
        sizes.append(f"{kib}{('KB', 'MB', 'GB', 'TB')[unit]}")
    return sizes


def _hugetlb(directory: str | None, usage: str, peak: str, limit: str) -> dict:
    if directory is None:
        return {}
    data = {}
    for size in _page_sizes():
        failcnt = _keyed(directory, f"hugetlb.{size}.events").get("max", 0) if limit == "max" else \
            _uint(directory, f"hugetlb.{size}.failcnt")
        data[size] = _omit_zero({"usage": _uint(directory, f"hugetlb.{size}.{usage}"),
                                 "max": _uint(directory, f"hugetlb.{size}.{peak}") if peak else 0,
                                 "failcnt": failcnt}, "usage", "max")
    return data


def stats_v2(directory: str) -> dict:
    cpu = _keyed(directory, "cpu.stat")
    raw = _keyed(directory, "memory.stat")
    memory_usage, memory_limit = _uint(directory, "memory.current"), _uint(directory, "memory.max")
    swap_limit = _uint(directory, "memory.swap.max")
    if swap_limit != MAX_UINT64:  # v1 reports memory+swap: runc adds them up for compatibility
        swap_limit += memory_limit
    usage = {"total": cpu.get("usage_usec", 0) * 1000, "kernel": cpu.get("system_usec", 0) * 1000,
             "user": cpu.get("user_usec", 0) * 1000}
    return {
        "cpu": {"usage": _omit_zero(usage, "total"),
                "throttling": _throttling(cpu.get("nr_periods", 0), cpu.get("nr_throttled", 0),
                                          cpu.get("throttled_usec", 0) * 1000)},
        "cpuset": {"cpu_exclusive": 0, "mem_hardwall": 0, "mem_exclusive": 0, "memory_migrate": 0,
                   "memory_spread_page": 0, "memory_spread_slab": 0, "memory_pressure": 0,
                   "sched_load_balance": 0, "sched_relax_domain_level": 0},
        "memory": _omit_zero({
            "cache": raw.get("file", 0),
            "usage": _memory_entry(memory_limit, memory_usage, 0, _keyed(directory, "memory.events").get("max", 0)),
            "swap": _memory_entry(swap_limit, _uint(directory, "memory.swap.current") + memory_usage, 0, 0),
            "kernel": _memory_entry(0, 0, 0, 0), "kernelTCP": _memory_entry(0, 0, 0, 0), "raw": raw,
        }, "cache", "raw"),
        "pids": _pids(directory),
        "blkio": _io_stat(_read(directory, "io.stat")),
        "hugetlb": _hugetlb(directory, "current", "", "max"),
    }


def _io_stat(text: str | None) -> dict:
    """io.stat (`MAJ:MIN rbytes=N wbytes=N rios=N wios=N ...`) as runc's v1-style entries."""
    service_bytes, serviced = [], []
    for line in (text or "").splitlines():
        fields = line.split()
        if not fields or ":" not in fields[0]:
            continue
        major, minor = (int(n) for n in fields[0].split(":", 1))
        values = dict(field.split("=", 1) for field in fields[1:] if "=" in field)
        for key, target, op in (("rbytes", service_bytes, "Read"), ("wbytes", service_bytes, "Write"),
                                ("rios", serviced, "Read"), ("wios", serviced, "Write")):
            if key in values:
                target.append(_omit_zero({"major": major, "minor": minor, "op": op, "value": int(values[key])},
                                         "major", "minor", "value"))
    data = {"ioServiceBytesRecursive": service_bytes, "ioServicedRecursive": serviced}
    return {key: value for key, value in data.items() if value}
