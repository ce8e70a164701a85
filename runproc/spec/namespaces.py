"""The namespace parts of config.json: linux.namespaces, uid/gid mappings,
hostname, domainname and linux.sysctl, checked as runc's validator checks them.

What can be checked without the kernel is checked here; whether a joined
path really is a namespace of its type is checked at create, before the init
is forked (runproc.linux.namespaces.open_joined).
"""

from __future__ import annotations

from runproc.errors import RunprocError
from runproc.spec.fields import optional, os_string, want
from runproc.spec.plan import ContainerPlan

# The spec's names, in the order runc enters them (user first: the others are
# then owned by the container's user namespace).
NAMESPACE_TYPES = ("user", "ipc", "uts", "network", "pid", "mount", "cgroup", "time")

# Largest id mapping count the kernel accepts per map (uid_map/gid_map lines).
MAX_MAPPINGS = 340


class Namespace:
    """One entry of linux.namespaces: new (path "") or joined (path of an nsfs file)."""

    __slots__ = ("type", "path")

    def __init__(self, kind: str, path: str) -> None:
        self.type = kind
        self.path = path

    def __repr__(self) -> str:
        return f"Namespace({self.type!r}, {self.path!r})"


class IdMapping:
    """One line of uid_map or gid_map: container id, host id, count."""

    __slots__ = ("container_id", "host_id", "size")

    def __init__(self, container_id: int, host_id: int, size: int) -> None:
        self.container_id = container_id
        self.host_id = host_id
        self.size = size

    def line(self) -> str:
        return f"{self.container_id} {self.host_id} {self.size}\n"


class NamespacePlan:
    """The namespaces to make or join, in the order to enter them, and what is set in them."""

    __slots__ = ("namespaces", "uid_mappings", "gid_mappings", "hostname", "domainname", "sysctl", "time_offsets")

    def __init__(self) -> None:
        self.namespaces: list[Namespace] = []
        self.uid_mappings: list[IdMapping] = []
        self.gid_mappings: list[IdMapping] = []
        self.hostname: str | None = None
        self.domainname: str | None = None
        self.sysctl: dict[str, str] = {}
        self.time_offsets: dict[str, tuple[int, int]] = {}  # clock -> (secs, nanosecs)

    def get(self, kind: str) -> Namespace | None:
        for namespace in self.namespaces:
            if namespace.type == kind:
                return namespace
        return None

    def private(self, kind: str) -> bool:
        """Is there a namespace of this type other than the host's (new, or joined by path)?"""
        return self.get(kind) is not None

    def new(self, kind: str) -> bool:
        namespace = self.get(kind)
        return namespace is not None and not namespace.path


def apply_namespaces(config: dict, plan: ContainerPlan) -> None:
    """Check the namespace parts of the spec and set plan.namespaces."""
    linux = optional(config, "linux", dict, "linux", "an object", {})
    assert isinstance(linux, dict)
    result = NamespacePlan()
    result.namespaces = _namespaces(optional(linux, "namespaces", list, "linux.namespaces", "a list", []))
    result.uid_mappings = _mappings(linux, "uidMappings")
    result.gid_mappings = _mappings(linux, "gidMappings")
    if (result.uid_mappings or result.gid_mappings) and not result.private("user"):
        raise RunprocError("config.json: user namespace mappings specified, but no user namespace in linux.namespaces")
    if result.new("user") and not (result.uid_mappings or result.gid_mappings):
        raise RunprocError("config.json: user namespaces enabled, but no namespace path to join nor mappings "
                           "to apply specified")
    for field in ("hostname", "domainname"):
        value = optional(config, field, str, field, "a string", None)
        if value is None:
            continue
        assert isinstance(value, str)
        if value and not result.private("uts"):
            raise RunprocError(f"config.json: unable to set {field} without a private UTS namespace")
        setattr(result, field, os_string(value, field))
    result.sysctl = _sysctl(optional(linux, "sysctl", dict, "linux.sysctl", "an object", {}), result)
    result.time_offsets = _time_offsets(optional(linux, "timeOffsets", dict, "linux.timeOffsets", "an object", {}))
    if result.time_offsets and not result.new("time"):
        raise RunprocError("config.json: linux.timeOffsets needs a new time namespace in linux.namespaces")
    plan.namespaces = result


def _namespaces(raw: object) -> list[Namespace]:
    assert isinstance(raw, list)
    seen: dict[str, Namespace] = {}
    for n, entry in enumerate(raw):
        where = f"linux.namespaces[{n}]"
        want(entry, dict, where, "an object")
        kind = entry.get("type")
        if kind not in NAMESPACE_TYPES:
            raise RunprocError(f"config.json: {where}: unknown namespace type {kind!r}")
        if kind in seen:
            raise RunprocError(f"config.json: {where}: duplicate namespace type {kind!r}")
        path = optional(entry, "path", str, f"{where}.path", "a string", "")
        assert isinstance(path, str)
        if path and not path.startswith("/"):
            raise RunprocError(f"config.json: {where} (type {kind}): path {path!r} is not absolute")
        seen[kind] = Namespace(kind, os_string(path, f"{where}.path"))
    return [seen[kind] for kind in NAMESPACE_TYPES if kind in seen]


def _mappings(linux: dict, key: str) -> list[IdMapping]:
    where = f"linux.{key}"
    raw = optional(linux, key, list, where, "a list", [])
    assert isinstance(raw, list)
    if len(raw) > MAX_MAPPINGS:
        raise RunprocError(f"config.json: {where} has {len(raw)} entries, more than the kernel's {MAX_MAPPINGS}")
    mappings = []
    for n, entry in enumerate(raw):
        want(entry, dict, f"{where}[{n}]", "an object")
        values = []
        for field in ("containerID", "hostID", "size"):
            value = entry.get(field)
            want(value, int, f"{where}[{n}].{field}", "an integer from 0 to 4294967295")
            if not 0 <= value <= 2**32 - 1:
                raise RunprocError(f"config.json: {where}[{n}].{field} must be an integer from 0 to 4294967295")
            values.append(value)
        if values[2] == 0:
            raise RunprocError(f"config.json: {where}[{n}].size must not be 0")
        mappings.append(IdMapping(*values))
    return mappings


def _time_offsets(raw: object) -> dict[str, tuple[int, int]]:
    """linux.timeOffsets: {"monotonic"|"boottime": {"secs": N, "nanosecs": N}}."""
    assert isinstance(raw, dict)
    offsets = {}
    for clock, value in raw.items():
        where = f"linux.timeOffsets.{clock}"
        if clock not in ("monotonic", "boottime"):
            raise RunprocError(f"config.json: {where}: unknown clock {clock!r} (monotonic or boottime)")
        want(value, dict, where, "an object")
        secs = optional(value, "secs", int, f"{where}.secs", "an integer", 0)
        nanosecs = optional(value, "nanosecs", int, f"{where}.nanosecs", "an integer", 0)
        assert isinstance(secs, int) and isinstance(nanosecs, int)
        if not 0 <= nanosecs < 1_000_000_000:
            raise RunprocError(f"config.json: {where}.nanosecs must be from 0 to 999999999")
        offsets[clock] = (secs, nanosecs)
    return offsets


# sysctl keys that live in a namespace, as runc's validator knows them.
_IPC_SYSCTLS = {"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
                "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"}


def _sysctl(raw: object, namespaces: NamespacePlan) -> dict[str, str]:
    assert isinstance(raw, dict)
    result = {}
    for key, value in raw.items():
        where = f"linux.sysctl[{key!r}]"
        want(value, str, where, "a string")
        parts = key.replace("/", ".").split(".")
        if "\0" in key or any(part in ("", "..") for part in parts):
            raise RunprocError(f"config.json: {where}: invalid sysctl name")
        _check_sysctl_namespace(key.replace("/", "."), namespaces)
        result[key] = os_string(value, where)
    return result


def _check_sysctl_namespace(key: str, namespaces: NamespacePlan) -> None:
    """A sysctl may only be set in a namespace the container does not share with the host (runc's rule)."""
    if key in _IPC_SYSCTLS or key.startswith("fs.mqueue."):
        if not namespaces.private("ipc"):
            raise RunprocError(f"config.json: sysctl {key!r} is not allowed in the host's ipc namespace")
        return
    if key.startswith("net."):
        if not namespaces.private("network"):
            raise RunprocError(f"config.json: sysctl {key!r} is not allowed in the host's network namespace")
        return
    if key in ("kernel.hostname", "kernel.domainname"):
        if not namespaces.private("uts"):
            raise RunprocError(f"config.json: sysctl {key!r} is not allowed in the host's uts namespace")
        return
    raise RunprocError(f"config.json: sysctl {key!r} is not in a separate kernel namespace")
