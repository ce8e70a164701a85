"""The container's cgroups: the host's layout, where the container's cgroup goes, making, joining, removing.

Three layouts, as runc 1.1's fs drivers see them:
  v1       every controller its own hierarchy (/sys/fs/cgroup/<controller>), and
           name=systemd; runc makes the container's directory in each;
  hybrid   v1 plus a cgroup2 mount at /sys/fs/cgroup/unified (no controllers
           there): runc also puts the container in that hierarchy;
  unified  /sys/fs/cgroup is cgroup2: one directory, controllers enabled down
           the path through cgroup.subtree_control.
A Cgroup (the state record keeps it) maps each hierarchy to the container's
directory there ("" is the v2 one) and lists the directories create made,
which are all delete removes. Only os here: later commands (state, kill, ps)
import this module; resources, devices and stats are in their own modules.
"""

from __future__ import annotations

import errno
import os
import time

from runproc.errors import RunprocError
from runproc.fsutil import os_error_text

TYPE_CHECKING = False
if TYPE_CHECKING:  # runproc.spec's package imports every section's module: create's cost, not state's
    from runproc.spec.resources import DeviceRule, Resources

CGROUP_ROOT = "/sys/fs/cgroup"
HYBRID_MOUNT = "/sys/fs/cgroup/unified"  # where runc looks for the v2 hierarchy of a hybrid host
UNIFIED = ""  # the key of the v2 hierarchy in Cgroup.paths
# runc 1.1's v1 subsystems, in the order it joins and sets them.
V1_CONTROLLERS = ("cpuset", "devices", "memory", "cpu", "cpuacct", "pids", "blkio", "hugetlb", "net_cls",
                  "net_prio", "perf_event", "freezer", "rdma", "name=systemd", "misc")


class Layout:
    """The host's cgroup mounts, from /proc/self/mountinfo, and the caller's own cgroups."""

    __slots__ = ("unified", "v1_mounts", "hybrid", "own")

    def __init__(self) -> None:
        self.unified = False  # /sys/fs/cgroup is a cgroup2 mount
        self.v1_mounts: dict[str, tuple[str, str]] = {}  # controller -> (mount point, root of the mount)
        self.hybrid = False  # v1 with a cgroup2 mount at HYBRID_MOUNT
        self.own: dict[str, str] = {}  # controller (UNIFIED for v2) -> our cgroup, from /proc/self/cgroup


def detect_layout() -> Layout:
    """From /proc/self/mountinfo and /proc/self/cgroup (create's business: mounts loads ctypes)."""
    from runproc.linux.mounts import read_cgroup_file, read_mountinfo

    layout = Layout()
    try:
        mounts = read_mountinfo()
        layout.own = read_cgroup_file()  # "" is the v2 line's empty controller list
    except OSError as err:
        raise RunprocError(f"cannot read the cgroup layout from /proc: {os_error_text(err)}") from None
    for mount in mounts:
        if mount["fstype"] == "cgroup2":
            if mount["mountpoint"] == CGROUP_ROOT:
                layout.unified = True
            elif mount["mountpoint"] == HYBRID_MOUNT:
                layout.hybrid = True
        elif mount["fstype"] == "cgroup":
            for option in mount["super"].split(","):
                if option in V1_CONTROLLERS:
                    layout.v1_mounts.setdefault(option, (mount["mountpoint"], mount["root"]))
    if layout.unified:
        layout.v1_mounts.clear()
        layout.hybrid = False
    return layout


def systemd_running() -> bool:
    """runc's test: /run/systemd/system is a directory."""
    return os.path.isdir("/run/systemd/system") and not os.path.islink("/run/systemd/system")


def expand_slice(slice_name: str) -> str:
    """systemd's slice path: "a-b.slice" -> "/a.slice/a-b.slice" ("" and "-.slice" are the root)."""
    if slice_name in ("", "-.slice"):
        return ""
    stem = slice_name[: -len(".slice")] if slice_name.endswith(".slice") else ""
    if not stem or "/" in slice_name or stem.startswith("-") or stem.endswith("-") or "--" in stem:
        raise RunprocError(f"invalid slice name: {slice_name}")
    path, prefix = "", ""
    for part in stem.split("-"):
        prefix = f"{prefix}-{part}" if prefix else part
        path += f"/{prefix}.slice"
    return path


def inner_path(configured: str, container_id: str) -> str:
    """The fs driver's: the container's cgroup below a hierarchy's root (absolute) or below our own
    cgroup (relative): the cleaned linux.cgroupsPath; unset, the relative path `<id>` (runc 1.1)."""
    from runproc.spec.resources import clean_path

    return clean_path(configured) if configured else container_id


def systemd_placement(configured: str, container_id: str) -> tuple[str, str, str]:
    """--systemd-cgroup's `slice:prefix:name`: (slice, unit, the unit's cgroup path). runc needs
    systemd as PID 1 and fails without; the unit goes where systemd puts it (runproc.linux.cgroups.systemd
    starts it)."""
    from runproc.spec.resources import systemd_unit

    slice_name, prefix, name = systemd_unit(configured, container_id)
    if not systemd_running():
        raise RunprocError("systemd not running on this host, cannot use systemd cgroups manager")
    unit = name if name.endswith(".slice") else f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
    if "/" in unit:
        raise RunprocError(f"invalid systemd unit name: {unit}")
    slice_name = slice_name or "system.slice"
    if unit.endswith(".slice"):  # runc: a slice unit is its own path, its parent the given slice
        return slice_name, unit, f"{expand_slice(unit)}"
    return slice_name, unit, f"{expand_slice(slice_name)}/{unit}"


def _under(mountpoint: str, below: str) -> str:
    """mountpoint + a path below it, which cannot climb out of it."""
    from runproc.spec.resources import clean_path

    cleaned = clean_path("/" + below)
    return mountpoint + cleaned if cleaned != "/" else mountpoint


def _place(layout: Layout, key: str, mountpoint: str, mount_root: str, inner: str) -> str:
    if inner.startswith("/"):
        return _under(mountpoint, inner)
    own = layout.own.get(key)
    if own is None:
        raise RunprocError(f"cannot find our own {key or 'unified'} cgroup in /proc/self/cgroup")
    own = os.path.normpath("/" + own)
    if mount_root != "/" and (own + "/").startswith(mount_root.rstrip("/") + "/"):
        own = own[len(mount_root.rstrip("/")):]
    return _under(mountpoint, f"{own}/{inner}")


def container_paths(layout: Layout, inner: str) -> dict[str, str]:
    """Each hierarchy's directory for the container (runc's initPaths)."""
    if layout.unified:
        return {UNIFIED: _place(layout, UNIFIED, CGROUP_ROOT, "/", inner)}
    if "devices" not in layout.v1_mounts:
        # As runc: without the devices controller the container could open any device.
        raise RunprocError("cgroup: the devices controller is not mounted (/sys/fs/cgroup/devices)")
    paths = {}
    for controller in V1_CONTROLLERS:
        if controller in layout.v1_mounts:
            mountpoint, mount_root = layout.v1_mounts[controller]
            paths[controller] = _place(layout, controller, mountpoint, mount_root, inner)
    if layout.hybrid:
        paths[UNIFIED] = _place(layout, UNIFIED, HYBRID_MOUNT, "/", inner)
    return paths


class Cgroup:
    """The container's cgroup as create recorded it: one directory per hierarchy, and what create made."""

    __slots__ = ("version", "paths", "created", "unit", "slice")

    def __init__(self, version: int, paths: dict[str, str], created: list[str] | None = None,
                 unit: str | None = None) -> None:
        self.version = version  # 1 (v1 or hybrid) or 2 (unified)
        self.paths = paths
        self.created = created if created is not None else []  # parents first
        self.unit = unit  # --systemd-cgroup: the systemd unit create started (delete stops it)
        self.slice = ""  # and its slice (create's business only)

    def to_json(self) -> dict:
        data = {"version": self.version, "paths": self.paths, "created": self.created}
        if self.unit is not None:
            data["unit"] = self.unit
        return data

    @classmethod
    def from_json(cls, data: object) -> Cgroup:
        """ValueError unless it is what create wrote: every path a directory under /sys/fs/cgroup."""
        if not isinstance(data, dict) or data.get("version") not in (1, 2):
            raise ValueError("cgroup: not a cgroup record")
        paths, created = data.get("paths"), data.get("created")
        if not isinstance(paths, dict) or not isinstance(created, list):
            raise ValueError("cgroup: paths or created of the wrong type")
        for path in [*paths.values(), *created]:
            if not isinstance(path, str) or os.path.normpath(path) != path or not path.startswith(CGROUP_ROOT + "/"):
                raise ValueError(f"cgroup: {path!r} is not a path under {CGROUP_ROOT}")
        if not all(isinstance(key, str) for key in paths):
            raise ValueError("cgroup: controller names are not strings")
        unit = data.get("unit")
        if unit is not None and (not isinstance(unit, str) or "/" in unit or not unit.endswith((".scope", ".slice"))):
            raise ValueError(f"cgroup: {unit!r} is not a systemd unit name")
        return cls(data["version"], paths, created, unit)

    def with_sub_cgroups(self, specs: list[str]) -> Cgroup:
        """exec --cgroup [<controller>:]<path>: the same cgroup with those (existing) sub-cgroups
        joined instead, for every hierarchy or for the named controller's (runc's rules)."""
        paths = dict(self.paths)
        for spec in specs:
            controller, sep, sub = spec.partition(":")
            if not sep:
                controller, sub = "", spec
            sub = sub.strip("/")
            if not sub or ".." in sub.split("/"):
                raise RunprocError(f"--cgroup {spec!r}: not a sub-cgroup path")
            if controller and self.version == 2:
                raise RunprocError(f"--cgroup {spec!r}: a controller name has no meaning on cgroup v2")
            keys = [key for key in paths if not controller or controller in key.split(",")]
            if not keys:
                raise RunprocError(f"--cgroup {spec!r}: the container has no {controller} cgroup")
            for key in keys:
                target = os.path.join(self.paths[key], sub)
                if not os.path.isdir(target):
                    raise RunprocError(f"--cgroup {spec!r}: {target} does not exist")
                paths[key] = target
        return Cgroup(self.version, paths)

    def unique_paths(self) -> list[str]:
        """Each directory once (co-mounted controllers share one), in runc's order."""
        return list(dict.fromkeys(self.paths.values()))

    @property
    def procs_dir(self) -> str:
        """Where the container's processes are listed (runc reads the devices hierarchy on v1)."""
        return self.paths.get("devices") or self.paths.get(UNIFIED) or next(iter(self.paths.values()))

    @property
    def freezer_dir(self) -> str | None:
        return self.paths.get(UNIFIED) if self.version == 2 else self.paths.get("freezer")

    def exists(self) -> bool:
        return os.path.isdir(self.procs_dir)

    def missing(self, layout: Layout) -> Cgroup:
        """The directories `make` would create now (those that do not exist), as a Cgroup to record first."""
        planned = []
        for key, path in self.paths.items():
            hierarchy = mount_point(layout, key)
            current = hierarchy
            for part in path[len(hierarchy):].strip("/").split("/"):
                current = f"{current}/{part}"
                if current not in planned and not os.path.isdir(current):
                    planned.append(current)
        return Cgroup(self.version, self.paths, planned, self.unit)

    def make(self, layout: Layout) -> None:
        """mkdir every directory that is missing (parents too), remembering each one made."""
        done = set()
        for key, path in self.paths.items():
            if path in done:
                continue
            done.add(path)
            hierarchy = mount_point(layout, key)
            current = hierarchy
            for part in path[len(hierarchy):].strip("/").split("/"):
                parent, current = current, f"{current}/{part}"
                if self.version == 2:
                    enable_controllers(parent)
                try:
                    os.mkdir(current, 0o755)
                except FileExistsError:
                    continue
                except OSError as err:
                    raise RunprocError(f"cgroup: mkdir {current}: {os_error_text(err)}") from None
                self.created.append(current)
                if key == "cpuset":
                    _inherit_cpuset(parent, current)

    def join(self, pid: int) -> None:
        """Put `pid` into each of the container's directories (before it runs anything of its own)."""
        for path in self.unique_paths():
            _join_one(path, "cgroup.procs", str(pid))

    def join_self(self, born_in: str | None = None) -> None:
        """Move the calling process into each directory but `born_in`, by itself: "0" (the writer)
        to `tasks` on v1, which moves its one thread (call it in a process with one thread, as a
        fresh fork is) and, unlike a write to cgroup.procs, takes no global lock and waits for no
        RCU grace period; "0" to cgroup.procs on v2 (runproc.linux.cgroups.entry says more)."""
        v2_dir = self.paths.get(UNIFIED)
        for path in self.unique_paths():
            if path != born_in:
                _join_one(path, "cgroup.procs" if path == v2_dir else "tasks", "0")

    def set_frozen(self, frozen: bool) -> None:
        """pause (frozen) or resume, waiting until the kernel has done it."""
        directory = self.freezer_dir
        if directory is None:
            if frozen:
                raise RunprocError("cannot pause: the freezer cgroup controller is not mounted")
            return
        if self.version == 2:
            from runproc.linux.cgroups import v2

            v2.freeze(directory, frozen)
        else:
            from runproc.linux.cgroups import v1

            v1.freeze(directory, frozen)

    def kill_all(self) -> bool:
        """SIGKILL everything at once through cgroup.kill (v2, Linux 5.14+); False where there is none."""
        if self.version != 2:
            return False
        try:
            write_value(self.paths[UNIFIED], "cgroup.kill", "1")
            return True
        except OSError:
            return False

    def remove(self) -> None:
        """Stop the systemd unit if create started one (systemd removes its directories), then rmdir
        what create made, deepest first; a directory someone else now uses stays."""
        if self.unit is not None:
            from runproc.linux.cgroups import systemd

            systemd.stop_unit(self.unit)
        for path in reversed(self.created):
            _rmdir_retrying(path, leaf=path in self.paths.values())

    def pids(self) -> list[int]:
        """Every process in the container's cgroup and below it (runc's GetAllPids)."""
        found: list[int] = []
        for directory, _, _ in os.walk(self.procs_dir):
            try:
                with open(os.path.join(directory, "cgroup.procs"), "rb") as stream:
                    found.extend(int(line) for line in stream.read().split())
            except OSError:
                continue  # removed while we walk
        return found

    def frozen(self) -> bool:
        """Is the container paused? (freezer.state FROZEN on v1, cgroup.freeze 1 on v2)"""
        directory = self.freezer_dir
        if directory is None:
            return False
        try:
            if self.version == 2:
                return read_value(directory, "cgroup.freeze") == "1"
            return read_value(directory, "freezer.state") == "FROZEN"
        except OSError:
            return False


def apply_resources(cgroup: Cgroup, resources: Resources, devices: list[DeviceRule] | None, where: str) -> None:
    """Set what `resources` gives (0 and empty: unchanged); device rules unless None."""
    if cgroup.version == 2:
        from runproc.linux.cgroups import v2

        v2.apply(cgroup, resources, devices, where)
    else:
        from runproc.linux.cgroups import v1

        v1.apply(cgroup, resources, devices, where)


def mount_point(layout: Layout, key: str) -> str:
    """The root of the hierarchy that `key` (a v1 controller, or UNIFIED) lives in."""
    if key == UNIFIED:
        return CGROUP_ROOT if layout.unified else HYBRID_MOUNT
    return layout.v1_mounts[key][0]


def enable_controllers(directory: str) -> None:
    """v2: let children of `directory` use every controller it has (runc: all at once, else one by one)."""
    try:
        available = read_value(directory, "cgroup.controllers").split()
    except OSError:
        return
    if not available:
        return
    try:
        write_value(directory, "cgroup.subtree_control", " ".join("+" + name for name in available))
    except OSError:
        for name in available:
            try:
                write_value(directory, "cgroup.subtree_control", "+" + name)
            except OSError:
                pass  # a setting that needs it fails later, naming its field


def _inherit_cpuset(parent: str, child: str) -> None:
    """v1: a new cpuset cgroup starts with no cpus and mems, and nothing can join it; copy the parent's."""
    for name in ("cpuset.cpus", "cpuset.mems"):
        try:
            if not read_value(child, name):
                write_value(child, name, read_value(parent, name))
        except OSError as err:
            raise RunprocError(f"cgroup: {child}/{name}: {os_error_text(err)}") from None


def _rmdir_retrying(path: str, leaf: bool) -> None:
    """rmdir, retrying while the kernel still sees exiting tasks (EBUSY) for a short while, as runc."""
    delay = 0.01
    for attempt in range(6):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as err:
            if err.errno == errno.EBUSY and leaf and attempt < 5:
                time.sleep(delay)
                delay *= 2
                continue
            if err.errno in (errno.EBUSY, errno.ENOTEMPTY) and not leaf:
                return  # a parent another container now uses
            raise RunprocError(f"cgroup: remove {path}: {os_error_text(err)}") from None


class Writer:
    """Writes of one apply: where each controller's directory is, and how to name a field in an error."""

    def __init__(self, cgroup: Cgroup, where: str) -> None:
        self.paths = cgroup.paths
        self.version = cgroup.version
        self.where = where

    def path(self, controller: str, field: str) -> str:
        path = self.paths.get(UNIFIED if self.version == 2 else controller)
        if path is None:
            # runc: "cannot set <controller> limit: container could not join or create cgroup"
            raise RunprocError(f"{self.where}.{field}: cannot set {controller} limit: "
                               f"the {controller} cgroup controller is not mounted on this host")
        return path

    def write(self, controller: str, name: str, value: object, field: str) -> None:
        path = self.path(controller, field)
        try:
            write_value(path, name, str(value))
        except OSError as err:
            reason = err.strerror
            if self.version == 2 and err.errno in (errno.ENOENT, errno.EACCES, errno.EPERM):
                available = read_value(path, "cgroup.controllers").split() if os.path.isdir(path) else []
                if controller not in available and controller != "cgroup":
                    reason = f"controller {controller!r} not available in {path}"
            raise RunprocError(f"{self.where}.{field}={value}: write {path}/{name}: {reason}") from None

    def read_int(self, controller: str, name: str, field: str) -> int:
        path = self.path(controller, field)
        try:
            return int(read_value(path, name))
        except (OSError, ValueError) as err:
            raise RunprocError(f"{self.where}.{field}: read {path}/{name}: {err}") from None


def _join_one(directory: str, name: str, pid: str) -> None:
    try:
        write_value(directory, name, pid)
    except OSError as err:
        raise RunprocError(f"cgroup: join {directory}: {os_error_text(err)}") from None


def read_value(directory: str, name: str) -> str:
    with open(os.path.join(directory, name), encoding="utf-8", errors="replace") as stream:
        return stream.read().strip()


def write_value(directory: str, name: str, value: str) -> None:
    """One write(2) of `value` to a cgroup file; the kernel's error comes back as OSError."""
    fd = os.open(os.path.join(directory, name), os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)
