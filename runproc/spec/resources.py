"""linux.cgroupsPath and linux.resources: checked and turned into a CgroupPlan.

Pure: no cgroup file is read here. `update` feeds its JSON (or its flags, put
into the same shape) through `parse_resources` too, with another origin in
the messages. As in runc, 0 means "not set" for the numeric limits (runc's
configs.Resources has no pointers for them); what depends on the host's
cgroup layout (unified on v1, swap without a memory limit on v2) is checked
by runproc.linux.cgroups before anything is made.
"""

from __future__ import annotations

from runproc.errors import RunprocError

INT64 = (-(2**63), 2**63 - 1)
UINT64 = (0, 2**64 - 1)
UINT32 = (0, 2**32 - 1)
UINT16 = (0, 2**16 - 1)
DEVICE_NUMBER = (-1, 2**32 - 1)  # -1: any
DEVICE_TYPES = ("a", "c", "b")
_PAGE_UNITS = ("KB", "MB", "GB", "TB", "PB")


class DeviceRule:
    """One devices cgroup rule: type a/c/b, major/minor (-1: any), access from "rwm", allow or deny."""

    __slots__ = ("type", "major", "minor", "access", "allow")

    def __init__(self, kind: str, major: int, minor: int, access: str, allow: bool) -> None:
        self.type = kind
        self.major = major
        self.minor = minor
        self.access = access
        self.allow = allow

    def cgroup_string(self) -> str:
        """As devices.allow/devices.deny take it: `c 1:3 rwm`, `*` for any number."""
        major = "*" if self.major < 0 else str(self.major)
        minor = "*" if self.minor < 0 else str(self.minor)
        return f"{self.type} {major}:{minor} {self.access}"

    def __repr__(self) -> str:
        return f"DeviceRule({'allow' if self.allow else 'deny'} {self.cgroup_string()})"


class WeightDevice:
    __slots__ = ("major", "minor", "weight", "leaf_weight")

    def __init__(self, major: int, minor: int, weight: int, leaf_weight: int) -> None:
        self.major, self.minor, self.weight, self.leaf_weight = major, minor, weight, leaf_weight


class ThrottleDevice:
    __slots__ = ("major", "minor", "rate")

    def __init__(self, major: int, minor: int, rate: int) -> None:
        self.major, self.minor, self.rate = major, minor, rate


class Resources:
    """linux.resources, runc's configs.Resources: 0 (or None, "", empty) means not set."""

    __slots__ = (
        "memory", "memory_reservation", "memory_swap", "memory_swappiness", "oom_kill_disable", "kernel_memory",
        "cpu_shares", "cpu_quota", "cpu_period", "cpu_burst", "cpu_rt_runtime", "cpu_rt_period", "cpuset_cpus",
        "cpuset_mems", "cpu_idle", "pids_limit", "blkio_weight", "blkio_leaf_weight", "blkio_weight_devices",
        "throttle", "hugepage_limits", "net_class_id", "net_priorities", "rdma", "unified", "devices",
    )

    def __init__(self) -> None:
        self.memory = 0
        self.memory_reservation = 0
        self.memory_swap = 0
        self.memory_swappiness: int | None = None
        self.oom_kill_disable = False
        self.kernel_memory = False  # kernel/kernelTCP given: runc 1.1 ignores them with a warning
        self.cpu_shares = 0
        self.cpu_quota = 0
        self.cpu_period = 0
        self.cpu_burst: int | None = None
        self.cpu_rt_runtime = 0
        self.cpu_rt_period = 0
        self.cpuset_cpus = ""
        self.cpuset_mems = ""
        self.cpu_idle: int | None = None
        self.pids_limit = 0
        self.blkio_weight = 0
        self.blkio_leaf_weight = 0
        self.blkio_weight_devices: list[WeightDevice] = []
        # throttle key of the spec (throttleReadBpsDevice, ...) -> devices, in the spec's order
        self.throttle: dict[str, list[ThrottleDevice]] = {}
        self.hugepage_limits: list[tuple[str, int]] = []  # (page size as "2MB", limit in bytes)
        self.net_class_id = 0
        self.net_priorities: list[tuple[str, int]] = []
        self.rdma: dict[str, tuple[int | None, int | None]] = {}  # device -> (hca handles, hca objects)
        self.unified: dict[str, str] | None = None
        self.devices: list[DeviceRule] = []


class CgroupPlan:
    """Where the container's cgroup goes and what it limits.

    `path` is linux.cgroupsPath as given ("" when unset): create resolves it
    with the container's id and the cgroup driver (runproc.linux.cgroups).
    `devices` is the whole device rule list runc would apply: the spec's
    rules, then runc's default allowed devices (less those linux.devices
    redefines by path).
    """

    __slots__ = ("path", "resources", "devices")

    def __init__(self, path: str, resources: Resources, devices: list[DeviceRule]) -> None:
        self.path = path
        self.resources = resources
        self.devices = devices


# runc 1.1's AllowedDevices: (path or "", rule), appended after the spec's rules.
ALLOWED_DEVICES = (
    ("", DeviceRule("c", -1, -1, "m", True)),
    ("", DeviceRule("b", -1, -1, "m", True)),
    ("/dev/null", DeviceRule("c", 1, 3, "rwm", True)),
    ("/dev/random", DeviceRule("c", 1, 8, "rwm", True)),
    ("/dev/full", DeviceRule("c", 1, 7, "rwm", True)),
    ("/dev/tty", DeviceRule("c", 5, 0, "rwm", True)),
    ("/dev/zero", DeviceRule("c", 1, 5, "rwm", True)),
    ("/dev/urandom", DeviceRule("c", 1, 9, "rwm", True)),
    ("", DeviceRule("c", 136, -1, "rwm", True)),  # /dev/pts/*
    ("", DeviceRule("c", 5, 2, "rwm", True)),  # /dev/ptmx
    ("", DeviceRule("c", 10, 200, "rwm", True)),  # /dev/net/tun
)


# (JSON key, attribute, range, what) of the plain numbers of each section.
_MEMORY = (("limit", "memory", INT64), ("reservation", "memory_reservation", INT64), ("swap", "memory_swap", INT64))
_CPU = (
    ("shares", "cpu_shares", UINT64), ("quota", "cpu_quota", INT64), ("period", "cpu_period", UINT64),
    ("realtimeRuntime", "cpu_rt_runtime", INT64), ("realtimePeriod", "cpu_rt_period", UINT64),
)
# spec key -> (v1 file blkio.throttle.<this>, v2 io.max key)
THROTTLE_KEYS = {
    "throttleReadBpsDevice": ("read_bps_device", "rbps"),
    "throttleWriteBpsDevice": ("write_bps_device", "wbps"),
    "throttleReadIOPSDevice": ("read_iops_device", "riops"),
    "throttleWriteIOPSDevice": ("write_iops_device", "wiops"),
}


class _Reader:
    """Typed reads that name the field: `<origin>: <where> must be ...`."""

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def fail(self, where: str, what: str) -> RunprocError:
        return RunprocError(f"{self.origin}: {where} {what}")

    def section(self, parent: dict, key: str, where: str) -> dict | None:
        value = parent.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.fail(where, "must be an object")
        return value

    def list(self, parent: dict, key: str, where: str) -> list:
        value = parent.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(where, "must be a list")
        return value

    def integer(self, parent: dict, key: str, where: str, bounds: tuple[int, int], default: int | None = 0
                ) -> int | None:
        value = parent.get(key)
        if value is None:
            return default
        low, high = bounds
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise self.fail(where, f"must be an integer from {low} to {high}, not {_show(value)}")
        return value

    def boolean(self, parent: dict, key: str, where: str) -> bool:
        value = parent.get(key)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise self.fail(where, f"must be true or false, not {_show(value)}")
        return value

    def string(self, parent: dict, key: str, where: str) -> str:
        value = parent.get(key)
        if value is None:
            return ""
        if not isinstance(value, str) or "\0" in value or "\n" in value:
            raise self.fail(where, f"must be a string of one line, not {_show(value)}")
        return value


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_cgroup_plan(config: dict) -> CgroupPlan:
    """linux.cgroupsPath, linux.resources and the device rules that follow from them (runc's specconv)."""
    reader = _Reader("config.json")
    linux = reader.section(config, "linux", "linux") or {}
    path = linux.get("cgroupsPath")
    if path is not None and (not isinstance(path, str) or "\0" in path or "\n" in path):
        raise reader.fail("linux.cgroupsPath", f"must be a string, not {_show(path)}")
    raw = reader.section(linux, "resources", "linux.resources") or {}
    resources = parse_resources(raw, "config.json", "linux.resources")
    # linux.devices is checked by runproc.spec.rootfs; only its paths matter here.
    node_paths = {entry.get("path") for entry in linux.get("devices") or [] if isinstance(entry, dict)}
    defaults = [rule for where, rule in ALLOWED_DEVICES if not where or where not in node_paths]
    return CgroupPlan(path or "", resources, resources.devices + defaults)


def systemd_unit(path: str, container_id: str) -> tuple[str, str, str]:
    """"slice:prefix:name" (runc's form for --systemd-cgroup); unset: ("", "runc", id) as runc."""
    if not path:
        return ("", "runc", container_id)
    parts = path.split(":")
    if len(parts) != 3:
        raise RunprocError(
            f'expected cgroupsPath to be of format "slice:prefix:name" for systemd cgroups, got "{path}" instead')
    return (parts[0], parts[1], parts[2])


def clean_path(path: str) -> str:
    """runc's utils.CleanPath: lexically clean; a relative path cannot climb above its start."""
    absolute = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    cleaned = "/".join(parts)
    return "/" + cleaned if absolute else cleaned


def parse_resources(raw: dict, origin: str, where: str) -> Resources:
    """A LinuxResources object (config.json's linux.resources, or update's input)."""
    reader = _Reader(origin)
    resources = Resources()
    _parse_memory(reader, raw, where, resources)
    _parse_cpu(reader, raw, where, resources)
    pids = reader.section(raw, "pids", f"{where}.pids")
    if pids is not None:
        resources.pids_limit = reader.integer(pids, "limit", f"{where}.pids.limit", INT64) or 0
    _parse_block_io(reader, raw, where, resources)
    _parse_misc(reader, raw, where, resources)
    resources.devices = parse_device_rules(reader, reader.list(raw, "devices", f"{where}.devices"),
                                           f"{where}.devices")
    return resources


def _parse_memory(reader: _Reader, raw: dict, where: str, resources: Resources) -> None:
    memory = reader.section(raw, "memory", f"{where}.memory")
    if memory is None:
        return
    at = f"{where}.memory"
    for key, attribute, bounds in _MEMORY:
        setattr(resources, attribute, reader.integer(memory, key, f"{at}.{key}", bounds))
    for key in ("kernel", "kernelTCP"):
        if reader.integer(memory, key, f"{at}.{key}", INT64, None) is not None:
            resources.kernel_memory = True
    swappiness = reader.integer(memory, "swappiness", f"{at}.swappiness", UINT64, None)
    # -1 as uint64 (the Docker API's "unset") is skipped, as runc does; above 100 is an error.
    if swappiness is not None and swappiness != 2**64 - 1:
        if swappiness > 100:
            raise reader.fail(f"{at}.swappiness", f"must be from 0 to 100, not {swappiness}")
        resources.memory_swappiness = swappiness
    resources.oom_kill_disable = reader.boolean(memory, "disableOOMKiller", f"{at}.disableOOMKiller")
    reader.boolean(memory, "useHierarchy", f"{at}.useHierarchy")
    reader.boolean(memory, "checkBeforeUpdate", f"{at}.checkBeforeUpdate")
    for key, attribute, _ in _MEMORY:
        value = getattr(resources, attribute)
        if value < -1:
            raise reader.fail(f"{at}.{key}", f"must be -1 (unlimited) or a number of bytes, not {value}")


def _parse_cpu(reader: _Reader, raw: dict, where: str, resources: Resources) -> None:
    cpu = reader.section(raw, "cpu", f"{where}.cpu")
    if cpu is None:
        return
    at = f"{where}.cpu"
    for key, attribute, bounds in _CPU:
        setattr(resources, attribute, reader.integer(cpu, key, f"{at}.{key}", bounds))
    resources.cpu_burst = reader.integer(cpu, "burst", f"{at}.burst", UINT64, None)
    resources.cpu_idle = reader.integer(cpu, "idle", f"{at}.idle", INT64, None)
    # cpus/mems lists go to the kernel as they are (it knows its syntax, strides and all).
    resources.cpuset_cpus = reader.string(cpu, "cpus", f"{at}.cpus")
    resources.cpuset_mems = reader.string(cpu, "mems", f"{at}.mems")


def _parse_block_io(reader: _Reader, raw: dict, where: str, resources: Resources) -> None:
    block = reader.section(raw, "blockIO", f"{where}.blockIO")
    if block is None:
        return
    at = f"{where}.blockIO"
    resources.blkio_weight = reader.integer(block, "weight", f"{at}.weight", UINT16) or 0
    resources.blkio_leaf_weight = reader.integer(block, "leafWeight", f"{at}.leafWeight", UINT16) or 0
    for n, entry in enumerate(reader.list(block, "weightDevice", f"{at}.weightDevice")):
        item = f"{at}.weightDevice[{n}]"
        major, minor = _device_numbers(reader, entry, item)
        weight = reader.integer(entry, "weight", f"{item}.weight", UINT16) or 0
        leaf = reader.integer(entry, "leafWeight", f"{item}.leafWeight", UINT16) or 0
        resources.blkio_weight_devices.append(WeightDevice(major, minor, weight, leaf))
    for key in THROTTLE_KEYS:
        for n, entry in enumerate(reader.list(block, key, f"{at}.{key}")):
            item = f"{at}.{key}[{n}]"
            major, minor = _device_numbers(reader, entry, item)
            rate = reader.integer(entry, "rate", f"{item}.rate", UINT64) or 0
            resources.throttle.setdefault(key, []).append(ThrottleDevice(major, minor, rate))


def _device_numbers(reader: _Reader, entry: object, where: str) -> tuple[int, int]:
    if not isinstance(entry, dict):
        raise reader.fail(where, "must be an object")
    numbers = []
    for key in ("major", "minor"):
        if entry.get(key) is None:
            raise reader.fail(f"{where}.{key}", "must be given")
        numbers.append(reader.integer(entry, key, f"{where}.{key}", UINT32) or 0)
    return numbers[0], numbers[1]


def _parse_misc(reader: _Reader, raw: dict, where: str, resources: Resources) -> None:
    """hugepageLimits, network, rdma and unified."""
    for n, entry in enumerate(reader.list(raw, "hugepageLimits", f"{where}.hugepageLimits")):
        item = f"{where}.hugepageLimits[{n}]"
        if not isinstance(entry, dict):
            raise reader.fail(item, "must be an object")
        size = reader.string(entry, "pageSize", f"{item}.pageSize")
        number, unit = size[:-2], size[-2:]
        if not (number.isascii() and number.isdigit() and unit in _PAGE_UNITS):
            raise reader.fail(f"{item}.pageSize", f"must be a page size like 2MB or 1GB, not {size!r}")
        resources.hugepage_limits.append((size, reader.integer(entry, "limit", f"{item}.limit", UINT64) or 0))
    network = reader.section(raw, "network", f"{where}.network")
    if network is not None:
        resources.net_class_id = reader.integer(network, "classID", f"{where}.network.classID", UINT32) or 0
        for n, entry in enumerate(reader.list(network, "priorities", f"{where}.network.priorities")):
            item = f"{where}.network.priorities[{n}]"
            if not isinstance(entry, dict):
                raise reader.fail(item, "must be an object")
            name = reader.string(entry, "name", f"{item}.name")
            if not name or " " in name or "/" in name:
                raise reader.fail(f"{item}.name", f"must be an interface name, not {name!r}")
            priority = reader.integer(entry, "priority", f"{item}.priority", UINT32) or 0
            resources.net_priorities.append((name, priority))
    rdma = reader.section(raw, "rdma", f"{where}.rdma")
    for device, limits in sorted((rdma or {}).items()):
        item = f"{where}.rdma.{device}"
        if not isinstance(limits, dict):
            raise reader.fail(item, "must be an object")
        if not device or " " in device or "\n" in device:
            raise reader.fail(item, "is not an RDMA device name")
        resources.rdma[device] = (reader.integer(limits, "hcaHandles", f"{item}.hcaHandles", UINT32, None),
                                  reader.integer(limits, "hcaObjects", f"{item}.hcaObjects", UINT32, None))
    unified = reader.section(raw, "unified", f"{where}.unified")
    if unified is not None:
        for key, value in unified.items():
            if not isinstance(value, str):
                raise reader.fail(f"{where}.unified.{key}", f"must be a string, not {_show(value)}")
            if not key or "/" in key or key in (".", ".."):
                # runc: "unified resource %q must be a file name (no slashes)"
                raise reader.fail(f"{where}.unified", f"key {key!r} must be a file name (no slashes)")
        resources.unified = dict(unified)


def parse_device_rules(reader: _Reader, entries: list, where: str) -> list[DeviceRule]:
    """linux.resources.devices, as runc's specconv reads them (type "a" and any number by default)."""
    rules = []
    for n, entry in enumerate(entries):
        item = f"{where}[{n}]"
        if not isinstance(entry, dict):
            raise reader.fail(item, "must be an object")
        if not isinstance(entry.get("allow"), bool):
            raise reader.fail(f"{item}.allow", "must be true or false")
        kind = reader.string(entry, "type", f"{item}.type") or "a"
        if kind not in DEVICE_TYPES:
            raise reader.fail(f"{item}.type", f"must be a, c or b, not {kind!r}")
        major = reader.integer(entry, "major", f"{item}.major", DEVICE_NUMBER, -1)
        minor = reader.integer(entry, "minor", f"{item}.minor", DEVICE_NUMBER, -1)
        access = reader.string(entry, "access", f"{item}.access")
        if not access:
            raise reader.fail(f"{item}.access", "cannot be empty")  # runc: "device access ... cannot be empty"
        if not set(access) <= set("rwm"):
            raise reader.fail(f"{item}.access", f"must be letters of rwm, not {access!r}")
        assert major is not None and minor is not None
        rules.append(DeviceRule(kind, major, minor, access, entry["allow"]))
    return rules
