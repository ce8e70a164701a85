"""linux.resources on cgroup v1 (and hybrid): runc 1.1's fs driver, controller by controller, in its order.

0 (or empty) means "leave as it is", as in runc; `update` relies on that to
change only what it is given. Every failure names the field and the value.
"""

from __future__ import annotations

import errno
import os

from runproc.errors import RunprocError
from runproc.linux.cgroups import Cgroup, Writer, read_value, write_value
from runproc.spec.resources import THROTTLE_KEYS, DeviceRule, Resources


def apply(cgroup: Cgroup, resources: Resources, devices: list[DeviceRule] | None, where: str) -> None:
    """Set everything given (devices None: leave the device rules alone, as `update` does)."""
    if resources.unified is not None:
        raise RunprocError(f"{where}.unified: invalid configuration: cannot use unified on cgroup v1")
    out = Writer(cgroup, where)
    if resources.cpuset_cpus:
        out.write("cpuset", "cpuset.cpus", resources.cpuset_cpus, "cpu.cpus")
    if resources.cpuset_mems:
        out.write("cpuset", "cpuset.mems", resources.cpuset_mems, "cpu.mems")
    if devices is not None:
        from runproc.linux.cgroups import devices as device_rules

        device_rules.apply_v1(out.path("devices", "devices"), devices)
    _memory(out, resources)
    _cpu(out, resources)
    if resources.pids_limit:
        out.write("pids", "pids.max", resources.pids_limit if resources.pids_limit > 0 else "max", "pids.limit")
    _block_io(out, resources)
    for size, limit in resources.hugepage_limits:
        out.write("hugetlb", f"hugetlb.{size}.limit_in_bytes", limit, "hugepageLimits")
    if resources.net_class_id:
        out.write("net_cls", "net_cls.classid", resources.net_class_id, "network.classID")
    for name, priority in resources.net_priorities:
        out.write("net_prio", "net_prio.ifpriomap", f"{name} {priority}", "network.priorities")
    for device, (handles, objects) in resources.rdma.items():
        out.write("rdma", "rdma.max", rdma_line(device, handles, objects), f"rdma.{device}")


def rdma_line(device: str, handles: int | None, objects: int | None) -> str:
    line = device
    if handles is not None:
        line += f" hca_handle={handles}"
    if objects is not None:
        line += f" hca_object={objects}"
    return line


def _memory(out: Writer, r: Resources) -> None:
    """runc's setMemoryAndSwap: the order of limit and memsw depends on the old limit (the kernel keeps
    limit <= memsw at every step)."""
    swap = r.memory_swap
    if r.memory == -1 and swap == 0 and "memory" in out.paths and \
            os.path.exists(os.path.join(out.paths["memory"], "memory.memsw.limit_in_bytes")):
        swap = -1  # unlimited memory means unlimited swap too
    swap_first = False
    if r.memory and swap:
        current = out.read_int("memory", "memory.limit_in_bytes", "memory.limit")
        swap_first = swap == -1 or current < swap
    steps = [("memory.limit_in_bytes", r.memory, "memory.limit"), ("memory.memsw.limit_in_bytes", swap, "memory.swap")]
    for name, value, field in reversed(steps) if swap_first else steps:
        if value:
            _write_memory(out, name, value, field)
    if r.memory_reservation:
        out.write("memory", "memory.soft_limit_in_bytes", r.memory_reservation, "memory.reservation")
    if r.oom_kill_disable:
        out.write("memory", "memory.oom_control", 1, "memory.disableOOMKiller")
    if r.memory_swappiness is not None:
        out.write("memory", "memory.swappiness", r.memory_swappiness, "memory.swappiness")


def _write_memory(out: Writer, name: str, value: int, field: str) -> None:
    path = out.path("memory", field)
    try:
        write_value(path, name, str(value))
    except OSError as err:
        if err.errno == errno.EBUSY and name == "memory.limit_in_bytes":
            usage = out.read_int("memory", "memory.usage_in_bytes", field)
            peak = out.read_int("memory", "memory.max_usage_in_bytes", field)
            raise RunprocError(f"{out.where}.{field}: unable to set memory limit to {value} "
                               f"(current usage: {usage}, peak usage: {peak})") from None
        raise RunprocError(f"{out.where}.{field}={value}: write {path}/{name}: {err.strerror}") from None


def _cpu(out: Writer, r: Resources) -> None:
    """runc's CpuGroup.Set: shares (checked by reading back), period then quota (retrying the period
    when the kernel refused it against the old quota), burst, realtime, idle."""
    if r.cpu_shares:
        out.write("cpu", "cpu.shares", r.cpu_shares, "cpu.shares")
        actual = out.read_int("cpu", "cpu.shares", "cpu.shares")
        if r.cpu_shares > actual:
            raise RunprocError(f"{out.where}.cpu.shares={r.cpu_shares}: the maximum allowed cpu-shares is {actual}")
        if r.cpu_shares < actual:
            raise RunprocError(f"{out.where}.cpu.shares={r.cpu_shares}: the minimum allowed cpu-shares is {actual}")
    period_later = False
    if r.cpu_period:
        try:
            write_value(out.path("cpu", "cpu.period"), "cpu.cfs_period_us", str(r.cpu_period))
        except OSError as err:
            if err.errno != errno.EINVAL or not r.cpu_quota:
                out.write("cpu", "cpu.cfs_period_us", r.cpu_period, "cpu.period")
            period_later = True
    if r.cpu_quota:
        out.write("cpu", "cpu.cfs_quota_us", r.cpu_quota, "cpu.quota")
        if period_later:
            out.write("cpu", "cpu.cfs_period_us", r.cpu_period, "cpu.period")
    if r.cpu_burst is not None:
        out.write("cpu", "cpu.cfs_burst_us", r.cpu_burst, "cpu.burst")
    set_realtime(out, r)
    if r.cpu_idle is not None:
        out.write("cpu", "cpu.idle", r.cpu_idle, "cpu.idle")


def set_realtime(out: Writer, r: Resources) -> None:
    if r.cpu_rt_period:
        out.write("cpu", "cpu.rt_period_us", r.cpu_rt_period, "cpu.realtimePeriod")
    if r.cpu_rt_runtime:
        out.write("cpu", "cpu.rt_runtime_us", r.cpu_rt_runtime, "cpu.realtimeRuntime")


def _block_io(out: Writer, r: Resources) -> None:
    """blkio.weight where CFQ has it, else BFQ's blkio.bfq.weight (runc's detectWeightFilenames)."""
    if not (r.blkio_weight or r.blkio_leaf_weight or r.blkio_weight_devices or r.throttle):
        return
    path = out.path("blkio", "blockIO")
    cfq = os.path.exists(os.path.join(path, "blkio.weight"))
    weight_file, device_file = ("blkio.weight", "blkio.weight_device") if cfq else \
        ("blkio.bfq.weight", "blkio.bfq.weight_device")
    if r.blkio_weight:
        out.write("blkio", weight_file, r.blkio_weight, "blockIO.weight")
    if r.blkio_leaf_weight:
        out.write("blkio", "blkio.leaf_weight", r.blkio_leaf_weight, "blockIO.leafWeight")
    for device in r.blkio_weight_devices:
        if device.weight:
            out.write("blkio", device_file, f"{device.major}:{device.minor} {device.weight}",
                      "blockIO.weightDevice")
        if device.leaf_weight:
            out.write("blkio", "blkio.leaf_weight_device", f"{device.major}:{device.minor} {device.leaf_weight}",
                      "blockIO.weightDevice")
    for key, entries in r.throttle.items():
        for entry in entries:
            out.write("blkio", f"blkio.throttle.{THROTTLE_KEYS[key][0]}", f"{entry.major}:{entry.minor} {entry.rate}",
                      f"blockIO.{key}")


def freeze(path: str, frozen: bool) -> None:
    """FROZEN, retried while the kernel says FREEZING (runc's loop: thaw and retry now and then); or THAWED."""
    import time

    try:
        if not frozen:
            write_value(path, "freezer.state", "THAWED")
            return
        try:
            for attempt in range(1000):
                if attempt % 50 == 49:
                    write_value(path, "freezer.state", "THAWED")
                    time.sleep(0.01)
                write_value(path, "freezer.state", "FROZEN")
                state = read_value(path, "freezer.state")
                if state == "FROZEN":
                    return
                if state != "FREEZING":
                    raise RunprocError(f"unexpected state {state} while freezing")
            raise RunprocError("unable to freeze")
        except BaseException:
            write_value(path, "freezer.state", "THAWED")  # never leave it half frozen
            raise
    except OSError as err:
        raise RunprocError(f"freezer: {path}: {err.strerror}") from None
