"""linux.resources on the unified (v2) hierarchy: runc 1.1's fs2 driver, in its order.

runc's conversions: cpu.weight from shares, io.weight from a blkio weight,
memory.swap.max from the v1-style memory+swap total. As runc's fs2, what v2
has no file for (swappiness, disableOOMKiller, network classID/priorities,
blkio leafWeight, realtime) is ignored; `unified` writes its keys as given.
"""

from __future__ import annotations

import errno
import os

from runproc.errors import RunprocError
from runproc.linux.cgroups import Cgroup, Writer, read_value, write_value
from runproc.linux.cgroups.v1 import rdma_line
from runproc.spec.resources import THROTTLE_KEYS, DeviceRule, Resources


def shares_to_weight(shares: int) -> int:
    """runc 1.1's ConvertCPUSharesToCgroupV2Value: [2, 262144] onto [1, 10000]."""
    return 0 if shares == 0 else 1 + ((shares - 2) * 9999) // 262142


def blkio_to_io_weight(weight: int) -> int:
    """runc's ConvertBlkIOToIOWeightValue: [10, 1000] onto [1, 10000]."""
    return 0 if weight == 0 else 1 + (weight - 10) * 9999 // 990


def swap_max(swap: int, memory: int, where: str) -> int:
    """runc's ConvertMemorySwapToCgroupV2Value: v1's memory+swap total to v2's swap alone (-1: max, 0: unset)."""
    if memory == -1 and swap == 0:
        return -1
    if swap in (-1, 0):
        return swap
    if memory in (0, -1):
        raise RunprocError(f"{where}.memory.swap={swap}: unable to set swap limit without memory limit")
    if swap < memory:
        raise RunprocError(f"{where}.memory.swap={swap}: memory+swap limit should be >= memory limit ({memory})")
    return swap - memory


def _number(value: int) -> str:
    return "max" if value == -1 else str(value)


def check(resources: Resources, where: str) -> None:
    """What runc's validator refuses on v2 before anything is made."""
    swap_max(resources.memory_swap, resources.memory, where)


def apply(cgroup: Cgroup, resources: Resources, devices: list[DeviceRule] | None, where: str) -> None:
    r = resources
    out = Writer(cgroup, where)
    if r.pids_limit:
        out.write("pids", "pids.max", _number(r.pids_limit) if r.pids_limit > 0 else "max", "pids.limit")
    _memory(out, r)
    _io(out, r)
    _cpu(out, r)
    if devices is not None:
        from runproc.linux.cgroups import devices as device_rules

        device_rules.apply_v2(cgroup.paths[""], devices)
    if r.cpuset_cpus:
        out.write("cpuset", "cpuset.cpus", r.cpuset_cpus, "cpu.cpus")
    if r.cpuset_mems:
        out.write("cpuset", "cpuset.mems", r.cpuset_mems, "cpu.mems")
    for size, limit in r.hugepage_limits:
        out.write("hugetlb", f"hugetlb.{size}.max", limit, "hugepageLimits")
    for device, (handles, objects) in r.rdma.items():
        out.write("rdma", "rdma.max", rdma_line(device, handles, objects), f"rdma.{device}")
    for key, value in (r.unified or {}).items():
        out.write(key.partition(".")[0], key, value, f"unified.{key}")


def _memory(out: Writer, r: Resources) -> None:
    if not (r.memory or r.memory_swap or r.memory_reservation):
        return
    swap = swap_max(r.memory_swap, r.memory, out.where)
    if swap or r.memory_swap > 0:  # memory == swap total: no swap at all ("0")
        value = _number(swap)
        # As runc: without swap accounting, "max" and "0" are what there is anyway.
        if value not in ("max", "0") or os.path.exists(os.path.join(out.path("memory", "memory.swap"),
                                                                    "memory.swap.max")):
            out.write("memory", "memory.swap.max", value, "memory.swap")
    if r.memory:
        out.write("memory", "memory.max", _number(r.memory), "memory.limit")
    if r.memory_reservation:
        out.write("memory", "memory.low", _number(r.memory_reservation), "memory.reservation")


def _io(out: Writer, r: Resources) -> None:
    """BFQ's io.bfq.weight where the kernel has it (as runc), else io.weight converted; throttles in io.max."""
    path = out.path("io", "blockIO")
    bfq = (r.blkio_weight or r.blkio_weight_devices) and os.path.exists(os.path.join(path, "io.bfq.weight"))
    if r.blkio_weight:
        if bfq:
            out.write("io", "io.bfq.weight", r.blkio_weight, "blockIO.weight")
        else:
            out.write("io", "io.weight", blkio_to_io_weight(r.blkio_weight), "blockIO.weight")
    if bfq:
        for device in r.blkio_weight_devices:
            if device.weight:
                out.write("io", "io.bfq.weight", f"{device.major}:{device.minor} {device.weight}",
                          "blockIO.weightDevice")
    for key, entries in r.throttle.items():
        for entry in entries:
            out.write("io", "io.max", f"{entry.major}:{entry.minor} {THROTTLE_KEYS[key][1]}={entry.rate}",
                      f"blockIO.{key}")


def _cpu(out: Writer, r: Resources) -> None:
    if r.cpu_idle is not None:
        out.write("cpu", "cpu.idle", r.cpu_idle, "cpu.idle")
    if r.cpu_shares:
        out.write("cpu", "cpu.weight", shares_to_weight(r.cpu_shares), "cpu.shares")
    if r.cpu_quota or r.cpu_period:
        quota = "max" if r.cpu_quota <= 0 else str(r.cpu_quota)
        if not r.cpu_quota:
            # Only the period given (update): keep the quota the cgroup has, runc keeps the configured one.
            quota = read_value(out.path("cpu", "cpu.period"), "cpu.max").split()[0]
        value = f"{quota} {r.cpu_period}" if r.cpu_period else quota
        out.write("cpu", "cpu.max", value, "cpu.quota" if r.cpu_quota else "cpu.period")
    if r.cpu_burst is not None:
        out.write("cpu", "cpu.max.burst", r.cpu_burst, "cpu.burst")


def freeze(path: str, frozen: bool) -> None:
    """cgroup.freeze, then wait until cgroup.events says frozen 1 (runc's waitFrozen: 10 ms steps, 10 s)."""
    import time

    try:
        write_value(path, "cgroup.freeze", "1" if frozen else "0")
        if not frozen:
            return
        for _ in range(1000):
            for line in read_value(path, "cgroup.events").splitlines():
                if line == "frozen 1":
                    return
            time.sleep(0.01)
    except OSError as err:
        if err.errno == errno.ENOENT and not frozen:
            return  # nothing to thaw without the freezer
        raise RunprocError(f"freezer: {path}: {err.strerror}") from None
    write_value(path, "cgroup.freeze", "0")
    raise RunprocError("timeout of 10s reached waiting for the cgroup to freeze")
