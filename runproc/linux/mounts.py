"""The entries of config.json's `mounts`, mounted inside the rootfs as runc 1.1 mounts them.

Runs in the init, in its own mount namespace, before pivot_root. Every
destination is resolved with runproc.linux.paths and mounted onto its
/proc/self/fd/N. See mount_entry for the per-type rules (runc's mountToRootfs).
"""

from __future__ import annotations

import errno
import os
import stat

from runproc.errors import RunprocError
from runproc.fsutil import os_error_text
from runproc.linux import paths, syscalls
from runproc.linux.paths import Root
from runproc.spec.mounts import (
    MNT_DETACH,
    MS_BIND,
    MS_MOVE,
    MS_NODEV,
    MS_NODIRATIME,
    MS_NOEXEC,
    MS_NOSUID,
    MS_NOSYMFOLLOW,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    Mount,
    MountOptions,
    clean_path,
)

DEFAULT_MOUNT_FLAGS = MS_NOEXEC | MS_NOSUID | MS_NODEV
PROC_SUPER_MAGIC = 0x9FA0
CGROUP2_SUPER_MAGIC = 0x63677270
UNIFIED_MOUNTPOINT = "/sys/fs/cgroup"

# statvfs f_flag bits (ST_*) -> the mount flags a remount must keep when they are locked.
_LOCKED = ((os.ST_RDONLY, MS_RDONLY), (os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV),
           (os.ST_NOEXEC, MS_NOEXEC), (os.ST_NODIRATIME, MS_NODIRATIME), (0x2000, MS_NOSYMFOLLOW))

# runc's checkProcMount: the only places under /proc a bind may cover (lxcfs's files).
VALID_PROC_MOUNTS = ("cpuinfo", "diskstats", "meminfo", "stat", "swaps", "uptime", "loadavg", "slabinfo",
                     "net/dev")


class RootfsError(RunprocError):
    """A failure to set up the root filesystem; the message names the spec field and value."""


class MountContext:
    """What mount_entry needs besides the entry: the rootfs, and the cgroup facts of the init."""

    __slots__ = ("root", "cgroup_namespace", "cgroup2_path")

    def __init__(self, root: Root, cgroup_namespace: bool = False, cgroup2_path: str = "") -> None:
        self.root = root
        self.cgroup_namespace = cgroup_namespace
        self.cgroup2_path = cgroup2_path  # the container's own cgroup v2 directory on the host, if known


def _fail(m: Mount, what: str, err: OSError | str) -> RootfsError:
    text = os_error_text(err) if isinstance(err, OSError) else err
    if isinstance(err, OSError) and err.errno == errno.EXDEV and err.strerror and "malicious" in err.strerror:
        text = err.strerror
    return RootfsError(f"{m.where()}: {what}: {text}" if what else f"{m.where()}: {text}")


def _mount_at(root: Root, parts: list[str], source: str | None, fstype: str | None, flags: int,
              data: str | None = None) -> None:
    fd = paths.open_target(root, parts)
    try:
        syscalls.mount(source, paths.fd_path(fd), fstype, flags, data or None)
    finally:
        os.close(fd)


def mount_propagate(m: Mount, parts: list[str], ctx: MountContext, source: str | None = None) -> None:
    """runc's mountPropagate: the mount, then each propagation flag in its own call (on the new mount)."""
    flags = m.flags
    if m.kind == "tmpfs" or clean_path(m.destination) == "/dev":
        flags &= ~MS_RDONLY  # made read-only by finalize_rootfs, once files are in place
    src = m.source if source is None else source
    try:
        _mount_at(ctx.root, parts, src, m.kind or None, flags, m.data)
    except OSError as err:
        raise _fail(m, f"mount {m.kind or 'type none'} {src} on {m.destination}"
                    + (f" (data {m.data!r})" if m.data else ""), err) from None
    for flag in m.propagation:
        try:
            _mount_at(ctx.root, parts, None, None, flag)
        except OSError as err:
            raise _fail(m, f"change mount propagation of {m.destination}", err) from None


def remount(m: Mount, parts: list[str], ctx: MountContext) -> None:
    """runc's remount: a bind's options take effect only on MS_REMOUNT|MS_BIND.

    When that fails (EPERM in a user namespace: the source's ro, nosuid, nodev,
    noexec... are locked), retry keeping the source's flags, read with statvfs.
    """
    flags = m.flags | MS_REMOUNT
    try:
        _mount_at(ctx.root, parts, m.source, m.kind, flags)
        return
    except OSError as err:
        first = err
    try:
        locked = os.statvfs(m.source).f_flag
    except OSError as err:
        raise _fail(m, f"statfs {m.source}", err) from None
    extra = 0
    for st_flag, ms_flag in _LOCKED:
        if locked & st_flag:
            extra |= ms_flag
    if not extra & ~flags:
        raise _fail(m, f"remount {m.destination} with its options", first)
    try:
        _mount_at(ctx.root, parts, m.source, m.kind, flags | extra)
    except OSError as err:
        raise _fail(m, f"remount {m.destination} with its options", err) from None


def set_rec_attr(m: Mount, parts: list[str], ctx: MountContext) -> None:
    """Recursive attributes (rro, rnosuid, ...) through mount_setattr(AT_RECURSIVE)."""
    if not (m.attr_set or m.attr_clr):
        return
    try:
        fd = paths.open_target(ctx.root, parts)
        try:
            syscalls.mount_setattr(fd, "", syscalls.AT_EMPTY_PATH | syscalls.AT_RECURSIVE, m.attr_set, m.attr_clr)
        finally:
            os.close(fd)
    except OSError as err:
        raise _fail(m, f"set recursive mount attributes on {m.destination}", err) from None


def _resolve(m: Mount, ctx: MountContext) -> list[str]:
    try:
        return paths.lookup(ctx.root, m.destination)
    except OSError as err:
        raise _fail(m, f"resolve {m.destination} in the rootfs", err) from None


def _make_dirs(m: Mount, ctx: MountContext, parts: list[str]) -> None:
    try:
        paths.make_dirs(ctx.root, parts)
    except OSError as err:
        raise _fail(m, f"mkdir {ctx.root.host_path(parts)}", err) from None


def check_proc_mount(m: Mount, parts: list[str], source: str, ctx: MountContext) -> None:
    """runc's checkProcMount: nothing may cover /proc or what is in it, but proc and lxcfs's files."""
    if not parts or parts[0] != "proc":
        return
    dest = ctx.root.host_path(parts)
    if len(parts) == 1:
        if not source:
            return
        try:
            is_proc = syscalls.statfs_type(source) == PROC_SUPER_MAGIC
        except OSError as err:
            raise _fail(m, f"statfs {source}", err) from None
        if not is_proc:
            raise _fail(m, "", f'"{dest}" cannot be mounted because it is not of type proc')
        return
    if "/".join(parts[1:]) in VALID_PROC_MOUNTS:
        return
    raise _fail(m, "", f'"{dest}" cannot be mounted because it is inside /proc')


def mount_entry(m: Mount, ctx: MountContext) -> None:
    """Mount one entry of `mounts` (runc's mountToRootfs)."""
    root = ctx.root
    if m.kind in ("proc", "sysfs"):
        # Only ever on a real directory: a symlink here has been an escape before
        # (CVE-2019-16884, CVE-2023-27561), so the last component is not followed.
        wanted = paths.split(clean_path(m.destination))
        try:
            parent = paths.lookup(root, "/".join(wanted[:-1]))
        except OSError as err:
            raise _fail(m, f"resolve {m.destination} in the rootfs", err) from None
        parts = parent + wanted[-1:]
        if parts:
            try:
                fd = paths.open_in_root(root, parent)
                try:
                    info = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
                finally:
                    os.close(fd)
            except FileNotFoundError:
                info = None
            except OSError as err:
                raise _fail(m, f"lstat {root.host_path(parts)}", err) from None
            if info is not None and not stat.S_ISDIR(info.st_mode):
                raise _fail(m, "", f'filesystem "{m.kind}" must be mounted on ordinary directory')
        _make_dirs(m, ctx, parts)
        mount_propagate(m, parts, ctx)
        return

    parts = _resolve(m, ctx)
    if m.kind == "mqueue":
        _make_dirs(m, ctx, parts)
        mount_propagate(m, parts, ctx)
    elif m.kind == "tmpfs":
        try:
            before = paths.exists(root, parts)
        except OSError as err:
            raise _fail(m, f"stat {root.host_path(parts)}", err) from None
        if before is None:
            _make_dirs(m, ctx, parts)
        if m.copy_up:
            _tmpfs_copy_up(m, parts, ctx)
        else:
            mount_propagate(m, parts, ctx)
        if before is not None:
            # runc 1.1 gives the new tmpfs the mode of the directory it covers.
            _chmod(m, parts, ctx, stat.S_IMODE(before.st_mode))
    elif m.kind == "bind":
        try:
            source_info = os.stat(m.source)
        except OSError as err:
            raise _fail(m, f"stat source {m.source}", err) from None
        check_proc_mount(m, parts, m.source, ctx)
        _create_if_missing(m, parts, ctx, stat.S_ISDIR(source_info.st_mode))
        mount_propagate(m, parts, ctx)
        if m.flags & ~(MS_REC | MS_REMOUNT | MS_BIND):
            remount(m, parts, ctx)
        # runc applies recursive attributes to bind mounts only.
        set_rec_attr(m, parts, ctx)
    elif m.kind == "cgroup":
        if _cgroup2_unified():
            _mount_cgroup2(m, parts, ctx)
        else:
            _mount_cgroup1(m, ctx)
    else:
        check_proc_mount(m, parts, m.source, ctx)
        _make_dirs(m, ctx, parts)
        mount_propagate(m, parts, ctx)


def _create_if_missing(m: Mount, parts: list[str], ctx: MountContext, directory: bool) -> None:
    try:
        if paths.exists(ctx.root, parts) is not None:
            return
        if directory:
            paths.make_dirs(ctx.root, parts)
        else:
            paths.make_file(ctx.root, parts)
    except OSError as err:
        raise _fail(m, f"create {ctx.root.host_path(parts)}", err) from None


def _chmod(m: Mount, parts: list[str], ctx: MountContext, mode: int) -> None:
    try:
        fd = paths.open_target(ctx.root, parts)
        try:
            os.chmod(paths.fd_path(fd), mode)
        finally:
            os.close(fd)
    except OSError as err:
        raise _fail(m, f"chmod {m.destination}", err) from None


def _tmpfs_copy_up(m: Mount, parts: list[str], ctx: MountContext) -> None:
    """runc's tmpcopyup: the new tmpfs starts with a copy of what it covers."""
    import tempfile  # here, not at the top: it costs create several ms and only tmpcopyup needs it

    staging = tempfile.mkdtemp(prefix="runproc-copyup-")
    try:
        try:
            syscalls.mount(m.source, staging, m.kind, m.flags & ~MS_RDONLY, m.data or None)
        except OSError as err:
            raise _fail(m, f"mount {m.kind} {m.source} (for tmpcopyup)", err) from None
        try:
            fd = paths.open_target(ctx.root, parts)
            try:
                _copy_tree(os.open(paths.fd_path(fd), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), staging)
            finally:
                os.close(fd)
            _mount_at(ctx.root, parts, staging, None, MS_MOVE)
        except OSError as err:
            try:
                syscalls.umount2(staging, MNT_DETACH)
            except OSError:
                pass
            raise _fail(m, f"tmpcopyup to {m.destination}", err) from None
        for flag in m.propagation:
            try:
                _mount_at(ctx.root, parts, None, None, flag)
            except OSError as err:
                raise _fail(m, f"change mount propagation of {m.destination}", err) from None
    finally:
        try:
            os.rmdir(staging)
        except OSError:
            pass


def _copy_tree(src_fd: int, dest: str) -> None:
    """Copy the directory open as `src_fd` (closed here) into `dest`: modes, owners, links, nodes."""
    try:
        for entry in os.scandir(src_fd):
            info = entry.stat(follow_symlinks=False)
            target = os.path.join(dest, entry.name)
            if stat.S_ISDIR(info.st_mode):
                os.mkdir(target, 0o700)
                _copy_tree(os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                   dir_fd=src_fd), target)
            elif stat.S_ISLNK(info.st_mode):
                os.symlink(os.readlink(entry.name, dir_fd=src_fd), target)
            elif stat.S_ISREG(info.st_mode):
                fd_in = os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_fd)
                try:
                    fd_out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                    try:
                        while os.sendfile(fd_out, fd_in, None, 1 << 20):
                            pass
                    finally:
                        os.close(fd_out)
                finally:
                    os.close(fd_in)
            else:
                os.mknod(target, info.st_mode, info.st_rdev)
            os.chown(target, info.st_uid, info.st_gid, follow_symlinks=False)
            if not stat.S_ISLNK(info.st_mode):
                os.chmod(target, stat.S_IMODE(info.st_mode))
    finally:
        os.close(src_fd)


# --- cgroups -------------------------------------------------------------------------------------

def _cgroup2_unified() -> bool:
    try:
        return syscalls.statfs_type(UNIFIED_MOUNTPOINT) == CGROUP2_SUPER_MAGIC
    except OSError:
        return False


def _mount_cgroup2(m: Mount, parts: list[str], ctx: MountContext) -> None:
    """A cgroup2 mount; where the kernel refuses (EPERM, EBUSY: a user namespace without a
    cgroup namespace), a bind of the host's hierarchy, or of the container's cgroup with a cgroup namespace."""
    _make_dirs(m, ctx, parts)
    try:
        _mount_at(ctx.root, parts, m.source, "cgroup2", m.flags, m.data)
        return
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.EBUSY):
            raise _fail(m, f"mount cgroup2 on {m.destination}", err) from None
    source = ctx.cgroup2_path if ctx.cgroup_namespace and ctx.cgroup2_path else UNIFIED_MOUNTPOINT
    try:
        _mount_at(ctx.root, parts, source, None, m.flags | MS_BIND)
    except OSError as err:
        raise _fail(m, f"bind {source} on {m.destination}", err) from None


def unescape_mountinfo(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as \\ooo."""
    if "\\" not in field:
        return field
    out = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def read_mountinfo(path: str = "/proc/self/mountinfo") -> list[dict]:
    """Each mount: root, mountpoint, options, optional fields, fstype, source, super options."""
    result = []
    with open(path, encoding="utf-8", errors="surrogateescape") as stream:
        for line in stream:
            fields = line.split()
            sep = fields.index("-", 6)
            result.append({
                "root": unescape_mountinfo(fields[3]),
                "mountpoint": unescape_mountinfo(fields[4]),
                "options": fields[5],
                "optional": fields[6:sep],
                "fstype": fields[sep + 1],
                "source": unescape_mountinfo(fields[sep + 2]),
                "super": fields[sep + 3] if len(fields) > sep + 3 else "",
            })
    return result


def read_cgroup_file(path: str = "/proc/self/cgroup") -> dict[str, str]:
    """Controller (or name=...) -> cgroup path, as runc's ParseCgroupFile."""
    result = {}
    with open(path, encoding="utf-8", errors="surrogateescape") as stream:
        for line in stream:
            fields = line.rstrip("\n").split(":", 2)
            if len(fields) != 3:
                continue
            for controller in fields[1].split(","):
                result[controller] = fields[2]
    return result


def cgroup1_binds(m: Mount, mountinfo: list[dict] | None = None, cgroups: dict[str, str] | None = None) -> list[Mount]:
    """runc's getCgroupMounts: one bind per v1 hierarchy, of this process's own cgroup in it."""
    mountinfo = read_mountinfo() if mountinfo is None else mountinfo
    cgroups = read_cgroup_file() if cgroups is None else cgroups
    seen = dict.fromkeys(cgroups, False)
    found = 0
    binds = []
    for info in mountinfo:
        if info["fstype"] != "cgroup":
            continue
        subsystems = []
        for option in info["super"].split(","):
            if option not in seen or seen[option]:
                continue
            seen[option] = True
            subsystems.append(option.removeprefix("name="))
            found += 1
        if subsystems:
            own = cgroups.get(subsystems[0], cgroups.get("name=" + subsystems[0]))
            if own is None:
                raise RootfsError(f"{m.where()}: no cgroup of this process for {subsystems[0]}")
            relative = os.path.relpath(own, info["root"])
            source = os.path.normpath(os.path.join(info["mountpoint"], relative))
            options = MountOptions()
            options.flags = MS_BIND | MS_REC | m.flags
            options.propagation = list(m.propagation)
            dest = os.path.join(m.destination, os.path.basename(info["mountpoint"]))
            bind = Mount(m.index, dest, source, "bind", options)
            binds.append(bind)
        if found >= len(seen):
            break
    return binds


def _mount_cgroup1(m: Mount, ctx: MountContext) -> None:
    """runc's mountCgroupV1: a tmpfs at the destination, then each hierarchy in it."""
    try:
        binds = cgroup1_binds(m)
    except OSError as err:
        raise _fail(m, "read this process's cgroups", err) from None
    merged = [os.path.basename(b.destination) for b in binds if "," in os.path.basename(b.destination)]
    options = MountOptions()
    options.flags = DEFAULT_MOUNT_FLAGS
    options.data = "mode=755"
    options.propagation = list(m.propagation)
    tmpfs = Mount(m.index, m.destination, "tmpfs", "tmpfs", options)
    mount_entry(tmpfs, ctx)
    for bind in binds:
        if not ctx.cgroup_namespace:
            mount_entry(bind, ctx)
            continue
        parts = _resolve(bind, ctx)
        _make_dirs(bind, ctx, parts)
        flags = DEFAULT_MOUNT_FLAGS | (m.flags & MS_RDONLY)
        data = os.path.basename(bind.destination)
        source = "cgroup"
        if data == "systemd":
            data, source = "name=systemd", "systemd"
        try:
            _mount_at(ctx.root, parts, source, "cgroup", flags, data)
        except OSError as err:
            raise _fail(bind, f"mount cgroup {data} on {bind.destination}", err) from None
    if merged:
        parts = _resolve(m, ctx)
        try:
            fd = paths.open_target(ctx.root, parts)
        except OSError as err:
            raise _fail(m, f"open {m.destination}", err) from None
        try:
            for name in merged:
                for controller in name.split(","):
                    try:
                        os.symlink(name, controller, dir_fd=fd)
                    except FileExistsError:
                        pass
                    except OSError as err:
                        raise _fail(m, f"symlink {controller} -> {name}", err) from None
        finally:
            os.close(fd)
