"""The container's root filesystem in config.json: mounts, devices, masked and
read-only paths, root propagation and root.readonly, checked as runc 1.1 checks them.

Pure: runproc.linux.rootfs applies the RootfsPlan in the init.
"""

from __future__ import annotations

from runproc.errors import RunprocError
from runproc.spec.fields import id_value, optional, os_string, string_list, want
from runproc.spec.mounts import MS_PRIVATE, PROPAGATION, Mount, clean_path, read_mounts
from runproc.spec.plan import ContainerPlan

S_IFMT = 0o170000

# Device kinds (stat's file type bits); runc treats "u" (unbuffered) as a char device.
DEVICE_TYPES = {"c": 0o020000, "u": 0o020000, "b": 0o060000, "p": 0o010000}


class Device:
    """A device node to create in the container (runc's devices.Device, as far as the rootfs needs)."""

    __slots__ = ("path", "kind", "major", "minor", "mode", "uid", "gid", "where")

    def __init__(self, path: str, kind: str, major: int, minor: int, mode: int = 0o666, uid: int = 0,
                 gid: int = 0, where: str = "") -> None:
        self.path = path
        self.kind = kind  # "c", "b" or "p" ("u" is stored as "c")
        self.major = major
        self.minor = minor
        self.mode = mode  # permission bits only
        self.uid = uid
        self.gid = gid
        self.where = where or f"device {path}"  # how errors name it

    def file_type(self) -> int:
        return DEVICE_TYPES[self.kind]

    def __repr__(self) -> str:
        return f"Device({self.path!r}, {self.kind!r}, {self.major}, {self.minor}, {self.mode:#o}, {self.uid}, {self.gid})"


# runc's AllowedDevices that have a path, in its order: made in every container with its own /dev.
DEFAULT_DEVICES = (
    ("/dev/null", 1, 3),
    ("/dev/random", 1, 8),
    ("/dev/full", 1, 7),
    ("/dev/tty", 5, 0),
    ("/dev/zero", 1, 5),
    ("/dev/urandom", 1, 9),
)


class RootfsPlan:
    """What the init does to the container's root filesystem (see runproc.linux.rootfs)."""

    __slots__ = ("mounts", "devices", "setup_dev", "masked_paths", "readonly_paths", "readonly",
                 "propagation", "cgroup_namespace")

    def __init__(self) -> None:
        self.mounts: list[Mount] = []
        self.devices: list[Device] = []  # runc's defaults (less those the spec redefines), then linux.devices
        self.setup_dev = True  # False when a bind mount provides /dev: no devices, ptmx or /dev symlinks
        self.masked_paths: list[str] = []
        self.readonly_paths: list[str] = []
        self.readonly = False  # root.readonly
        self.propagation = 0  # linux.rootfsPropagation as mount(2) flags; 0: runc's default (rslave)
        self.cgroup_namespace = False  # a cgroup namespace of its own: cgroup v1 hierarchies are mounted, not bound


def apply_rootfs(config: dict, plan: ContainerPlan) -> None:
    """Check the rootfs parts of the spec; set plan.rootfs_setup (None in host mode or without a mount namespace)."""
    plan.rootfs_setup = None
    if plan.host_mode:
        return
    linux = optional(config, "linux", dict, "linux", "an object", {})
    assert isinstance(linux, dict)
    setup = RootfsPlan()
    setup.mounts = read_mounts(config, plan.bundle)
    setup.setup_dev = not any(m.kind == "bind" and clean_path(m.destination) == "/dev" for m in setup.mounts)
    setup.devices = _devices(linux)
    masked = linux.get("maskedPaths")
    readonly = linux.get("readonlyPaths")
    setup.masked_paths = string_list(masked, "linux.maskedPaths") if masked is not None else []
    setup.readonly_paths = string_list(readonly, "linux.readonlyPaths") if readonly is not None else []
    root = config.get("root")
    if isinstance(root, dict):
        setup.readonly = bool(optional(root, "readonly", bool, "root.readonly", "a boolean", False))
    propagation = optional(linux, "rootfsPropagation", str, "linux.rootfsPropagation", "a string", "")
    assert isinstance(propagation, str)
    if propagation not in PROPAGATION:
        raise RunprocError(f"config.json: rootfsPropagation={propagation} is not supported")
    setup.propagation = PROPAGATION[propagation]

    kinds = _namespace_types(linux)
    setup.cgroup_namespace = "cgroup" in kinds
    if "mount" not in kinds:
        # As runc: without a mount namespace nothing is mounted; restricting paths would touch the host.
        if setup.masked_paths or setup.readonly_paths:
            raise RunprocError("config.json: unable to restrict sys entries without a private MNT namespace")
        return
    plan.rootfs_setup = setup


def check_no_pivot(setup: RootfsPlan) -> None:
    """create --no-pivot: runc refuses a private root propagation then (nothing would hide the old root)."""
    if setup.propagation & MS_PRIVATE:
        raise RunprocError("rootfsPropagation of [r]private is not safe without pivot_root")


def _namespace_types(linux: dict) -> set[str]:
    """The types in linux.namespaces (runproc.spec.namespaces checks the section itself)."""
    raw = linux.get("namespaces")
    if not isinstance(raw, list):
        return set()
    return {entry.get("type") for entry in raw if isinstance(entry, dict) and isinstance(entry.get("type"), str)}


def _devices(linux: dict) -> list[Device]:
    raw = optional(linux, "devices", list, "linux.devices", "a list", [])
    assert isinstance(raw, list)
    spec_devices = []
    for n, entry in enumerate(raw):
        where = f"linux.devices[{n}]"
        want(entry, dict, where, "an object")
        path = entry.get("path")
        want(path, str, f"{where}.path", "a string")
        assert isinstance(path, str)
        if not path:
            raise RunprocError(f"config.json: {where}.path must be set")
        os_string(path, f"{where}.path")
        where = f"{where} (path {path})"
        kind = entry.get("type")
        if kind not in DEVICE_TYPES:
            raise RunprocError(f"config.json: {where}: invalid device type {_go_quote(kind)}")
        numbers = []
        for field in ("major", "minor"):
            value = optional(entry, field, int, f"{where}.{field}", "an integer", 0)
            assert isinstance(value, int)
            if kind != "p" and not 0 <= value < 2**32:
                raise RunprocError(f"config.json: {where}.{field} must be an integer from 0 to {2**32 - 1}")
            numbers.append(value)
        mode = optional(entry, "fileMode", int, f"{where}.fileMode", "an integer", 0o666)
        assert isinstance(mode, int)
        if not 0 <= mode < 2**32:
            raise RunprocError(f"config.json: {where}.fileMode must be an integer from 0 to {2**32 - 1}")
        uid = id_value(entry["uid"], f"{where}.uid") if entry.get("uid") is not None else 0
        gid = id_value(entry["gid"], f"{where}.gid") if entry.get("gid") is not None else 0
        spec_devices.append(Device(path, "c" if kind == "u" else kind, numbers[0], numbers[1],
                                   mode & ~S_IFMT, uid, gid, where))
    spec_paths = {device.path for device in spec_devices}
    defaults = [Device(path, "c", major, minor) for path, major, minor in DEFAULT_DEVICES if path not in spec_paths]
    return defaults + spec_devices


def _go_quote(value: object) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return '""' if value is None else str(value)


__all__ = ["Device", "RootfsPlan", "apply_rootfs", "check_no_pivot"]
