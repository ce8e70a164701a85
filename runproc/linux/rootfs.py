"""The container's root filesystem, set up in the init as runc 1.1 does it.

Three calls, in the init, in runc's order (runc's standard_init_linux.go):

    setup_rootfs(setup, rootfs, user_namespace=..., no_pivot=...)   # prepareRootfs
        # (console / setctty here)
    finalize_rootfs(setup)                                          # finalizeRootfs
        # hostname, domainname, apparmor, sysctl
    restrict_paths(setup)                                           # readonlyPaths, then maskedPaths
        # then capabilities, user switch, seccomp, exec

All three run as root of the container's user namespace (before the user
switch), in the container's mount namespace; only setup_rootfs needs the
host's /proc (it reads /proc/self/mountinfo, /proc/self/cgroup and checks
/proc/self/fd/N), the other two run inside the new root.

Everything this needs is imported here, at module level: after the pivot the
frozen binary's files are out of reach.
"""

from __future__ import annotations

import errno
import os
import time

from runproc.fsutil import os_error_text
from runproc.linux import devices, syscalls
from runproc.linux.mounts import MountContext, RootfsError, mount_entry, read_mountinfo
from runproc.linux.paths import Root
from runproc.spec.mounts import (
    MNT_DETACH,
    MS_BIND,
    MS_MOVE,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    MS_SLAVE,
    MS_UNBINDABLE,
    clean_path,
)
from runproc.spec.rootfs import RootfsPlan, check_no_pivot

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["RootfsError", "finalize_rootfs", "restrict_paths", "setup_rootfs"]


def setup_rootfs(setup: RootfsPlan, rootfs: str, *, user_namespace: bool, no_pivot: bool,
                 cgroup2_path: str = "", before_pivot: Callable[[], None] | None = None) -> None:
    """runc's prepareRootfs: mounts, devices, then into the rootfs with pivot_root (or MS_MOVE + chroot).

    Call in the init, already in its new mount namespace (and its cgroup
    namespace, if any; after joining the user namespace and being given its id
    maps), as root of that user namespace, with the host's /proc still at
    /proc, before switching user. Afterwards the process's root and cwd are
    the container's "/". `cgroup2_path` is the container's cgroup v2 directory
    on the host, bound at the cgroup mount when cgroup2 cannot be mounted in a
    cgroup namespace. `before_pivot` runs once every mount is made, in the rootfs as cwd, right
    before pivot_root: runc's place for the createRuntime and createContainer hooks.
    """
    if no_pivot:
        check_no_pivot(setup)
    rootfs = os.path.realpath(rootfs)
    prepare_root(setup, rootfs)
    try:
        root = Root(rootfs)
    except OSError as err:
        raise RootfsError(f"rootfs {rootfs}: {os_error_text(err)}") from None
    try:
        ctx = MountContext(root, setup.cgroup_namespace, cgroup2_path)
        for m in setup.mounts:
            mount_entry(m, ctx)
        if setup.setup_dev:
            devices.create_devices(setup.devices, root, user_namespace)
            devices.setup_ptmx(root)
            devices.setup_dev_symlinks(root)
    finally:
        root.close()
    try:
        os.chdir(rootfs)
    except OSError as err:
        raise RootfsError(f"chdir {rootfs}: {os_error_text(err)}") from None
    if before_pivot is not None:
        before_pivot()
    try:
        if no_pivot:
            move_root(rootfs)
        else:
            pivot_root(rootfs)
    except OSError as err:
        raise RootfsError(f"jailing process inside rootfs {rootfs}: {os_error_text(err)}") from None
    if setup.setup_dev:
        try:
            devices.reopen_dev_null()
        except OSError as err:
            raise RootfsError(f"reopening /dev/null inside container: {os_error_text(err)}") from None
    # linux.rootfsPropagation on the container's "/" mount itself (not recursively: the
    # mounts' own propagation options stay). runc 1.1.5 applies it only to the host's
    # mounts before the pivot (see prepare_root), so "/" ends up private even for shared.
    flag = setup.propagation & ~MS_REC
    if flag and not flag & MS_PRIVATE:
        try:
            syscalls.mount(None, "/", None, flag)
        except OSError as err:
            raise RootfsError(f"linux.rootfsPropagation: apply to /: {os_error_text(err)}") from None


def prepare_root(setup: RootfsPlan, rootfs: str) -> None:
    """runc's prepareRoot: no mount event may reach the host; the rootfs becomes a mount of its own."""
    flag = setup.propagation or MS_SLAVE | MS_REC
    if flag & MS_UNBINDABLE:
        # runc 1.1.5 makes / unbindable here and then cannot bind the rootfs (EINVAL);
        # unbindable is applied to the container's / after the pivot instead.
        flag = MS_SLAVE | MS_REC
    try:
        syscalls.mount(None, "/", None, flag)
    except OSError as err:
        raise RootfsError(f"linux.rootfsPropagation: apply to the host's /: {os_error_text(err)}") from None
    try:
        parent, optional = parent_mount(rootfs)
        if any(field.startswith("shared:") for field in optional):
            # pivot_root refuses a shared parent, and the bind below must not propagate to the host.
            syscalls.mount(None, parent, None, MS_PRIVATE)
        syscalls.mount(rootfs, rootfs, "bind", MS_BIND | MS_REC)
    except OSError as err:
        raise RootfsError(f"preparing rootfs {rootfs}: {os_error_text(err)}") from None


def parent_mount(path: str) -> tuple[str, list[str]]:
    """The mount point holding `path` (the longest one that is a prefix), and its optional fields."""
    best, fields = "/", []
    for info in read_mountinfo():
        point = info["mountpoint"]
        if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, fields = point, info["optional"]
    return best, fields


def pivot_root(rootfs: str) -> None:
    """runc's pivotRoot: pivot_root(".", "."), then the old root, made rslave, is detached."""
    old_root = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        new_root = os.open(rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fchdir(new_root)
            syscalls.pivot_root(".", ".")
        finally:
            os.close(new_root)
        # "." is the old root now (stacked under the new one); fchdir to be sure.
        os.fchdir(old_root)
        syscalls.mount(None, ".", None, MS_SLAVE | MS_REC)  # the unmount must not reach the host
        syscalls.umount2(".", MNT_DETACH)
    finally:
        os.close(old_root)
    os.chdir("/")


def move_root(rootfs: str) -> None:
    """runc's msMoveRoot (create --no-pivot): detach the host's full proc and sysfs mounts
    (the kernel checks them when proc or sysfs is mounted later), MS_MOVE the rootfs onto /, chroot."""
    for info in read_mountinfo():
        point = info["mountpoint"]
        if info["root"] != "/" or info["fstype"] not in ("proc", "sysfs") or point.startswith(rootfs):
            continue
        try:
            syscalls.mount(None, point, None, MS_SLAVE | MS_REC)
        except FileNotFoundError:
            continue  # under something already detached
        try:
            syscalls.umount2(point, MNT_DETACH)
        except OSError as err:
            if err.errno not in (errno.EINVAL, errno.EPERM):
                raise
            syscalls.mount("tmpfs", point, "tmpfs", 0)  # cannot unmount (user namespace): cover it
    syscalls.mount(rootfs, "/", None, MS_MOVE)
    os.chroot(".")
    os.chdir("/")


def finalize_rootfs(setup: RootfsPlan) -> None:
    """runc's finalizeRootfs: read-only tmpfs mounts and /dev, then root.readonly.

    Call after setup_rootfs (and after the console is set up), before the hostname is set.
    """
    for m in setup.mounts:
        if not m.flags & MS_RDONLY:
            continue
        if m.kind == "tmpfs" or clean_path(m.destination) == "/dev":
            try:
                remount_readonly(m.destination, m.flags)
            except OSError as err:
                raise RootfsError(f"{m.where()}: remount read-only: {os_error_text(err)}") from None
    if setup.readonly:
        try:
            set_readonly()
        except OSError as err:
            raise RootfsError(f"root.readonly: remount / read-only: {os_error_text(err)}") from None


def remount_readonly(path: str, flags: int) -> None:
    """runc's remountReadonly: MS_REMOUNT|MS_BIND|MS_RDONLY (allowed in a user namespace), retrying EBUSY."""
    for _ in range(5):
        try:
            syscalls.mount(None, path, None, flags | MS_REMOUNT | MS_BIND | MS_RDONLY)
            return
        except OSError as err:
            if err.errno != errno.EBUSY:
                raise
            time.sleep(0.1)
    raise OSError(errno.EBUSY, f"unable to mount {path} as readonly max retries reached")


def set_readonly() -> None:
    """runc's setReadonly: / read-only, keeping its locked flags if the plain remount is refused."""
    flags = MS_BIND | MS_REMOUNT | MS_RDONLY
    try:
        syscalls.mount(None, "/", None, flags)
    except OSError:
        syscalls.mount(None, "/", None, flags | _statvfs_mount_flags("/"))


def _statvfs_mount_flags(path: str) -> int:
    flag = os.statvfs(path).f_flag
    result = 0
    for st_flag, ms_flag in ((os.ST_RDONLY, MS_RDONLY), (os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV),
                             (os.ST_NOEXEC, MS_NOEXEC), (os.ST_NOATIME, 0x400), (os.ST_NODIRATIME, 0x800),
                             (os.ST_RELATIME, 0x200000)):
        if flag & st_flag:
            result |= ms_flag
    return result


def restrict_paths(setup: RootfsPlan) -> None:
    """linux.readonlyPaths, then linux.maskedPaths (runc's order), inside the container after sysctl.

    Missing paths are skipped, as runc does.
    """
    for n, path in enumerate(setup.readonly_paths):
        try:
            readonly_path(path)
        except OSError as err:
            raise RootfsError(f"linux.readonlyPaths[{n}] ({path}): make read-only: {os_error_text(err)}") from None
    for n, path in enumerate(setup.masked_paths):
        try:
            mask_path(path)
        except OSError as err:
            raise RootfsError(f"linux.maskedPaths[{n}] ({path}): mask: {os_error_text(err)}") from None


def readonly_path(path: str) -> None:
    """runc's readonlyPath: a recursive bind onto itself, remounted read-only keeping nosuid/nodev/noexec."""
    try:
        syscalls.mount(path, path, None, MS_BIND | MS_REC)
    except FileNotFoundError:
        return
    flags = _statvfs_mount_flags(path) & (MS_NOSUID | MS_NODEV | MS_NOEXEC)
    syscalls.mount(path, path, None, flags | MS_BIND | MS_REMOUNT | MS_RDONLY)


def mask_path(path: str) -> None:
    """runc's maskPath: /dev/null over a file, a read-only tmpfs over a directory."""
    try:
        syscalls.mount("/dev/null", path, None, MS_BIND)
    except FileNotFoundError:
        return
    except NotADirectoryError:
        syscalls.mount("tmpfs", path, "tmpfs", MS_RDONLY)
