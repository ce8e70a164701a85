"""Device nodes, /dev/ptmx and the /dev symlinks, made in the rootfs as runc 1.1 makes them.

Runs in the init before pivot_root, after the mounts (so into the /dev tmpfs).
"""

from __future__ import annotations

import errno
import os

from runproc.fsutil import os_error_text
from runproc.linux import paths, syscalls
from runproc.linux.mounts import RootfsError
from runproc.linux.paths import Root
from runproc.spec.mounts import MS_BIND, clean_path
from runproc.spec.rootfs import Device

DEV_SYMLINKS = (
    ("/proc/self/fd", "fd"),
    ("/proc/self/fd/0", "stdin"),
    ("/proc/self/fd/1", "stdout"),
    ("/proc/self/fd/2", "stderr"),
)


def _fail(device: Device, what: str, err: OSError) -> RootfsError:
    return RootfsError(f"{device.where}: {what}: {os_error_text(err)}")


def create_devices(devices: list[Device], root: Root, bind: bool) -> None:
    """mknod each device (uid, gid and mode as given), or bind the host's node in a user namespace."""
    old_umask = os.umask(0)
    try:
        for device in devices:
            if clean_path(device.path) == "/dev/ptmx":
                continue  # setup_ptmx makes it
            _create_device(device, root, bind)
    finally:
        os.umask(old_umask)


def _create_device(device: Device, root: Root, bind: bool) -> None:
    try:
        parts = paths.lookup(root, device.path)
        if not parts:
            raise OSError(errno.EEXIST, os.strerror(errno.EEXIST))
        paths.make_dirs(root, parts[:-1])
        parent = paths.open_in_root(root, parts[:-1])
    except OSError as err:
        raise _fail(device, f"resolve {device.path} in the rootfs", err) from None
    try:
        if not bind:
            try:
                os.mknod(parts[-1], device.mode | device.file_type(), os.makedev(device.major, device.minor),
                         dir_fd=parent)
            except FileExistsError:
                return  # as runc: an existing node stays
            except PermissionError:
                bind = True  # no CAP_MKNOD: bind the host's node instead
            except OSError as err:
                raise _fail(device, f"mknod {root.host_path(parts)}", err) from None
            else:
                try:
                    os.chmod(parts[-1], device.mode, dir_fd=parent)
                    os.chown(parts[-1], device.uid, device.gid, dir_fd=parent, follow_symlinks=False)
                except OSError as err:
                    raise _fail(device, f"chown/chmod {root.host_path(parts)}", err) from None
                return
        _bind_device(device, root, parts, parent)
    finally:
        os.close(parent)


def _bind_device(device: Device, root: Root, parts: list[str], parent: int) -> None:
    try:
        fd = os.open(parts[-1], os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644,
                     dir_fd=parent)
        os.close(fd)
    except OSError as err:
        if err.errno != errno.EEXIST:
            raise _fail(device, f"create {root.host_path(parts)}", err) from None
    try:
        target = paths.open_target(root, parts)
        try:
            syscalls.mount(device.path, paths.fd_path(target), "bind", MS_BIND)
        finally:
            os.close(target)
    except OSError as err:
        raise _fail(device, f"bind {device.path} on {root.host_path(parts)}", err) from None


def _dev_dir(root: Root) -> int:
    parts = paths.lookup(root, "/dev")
    paths.make_dirs(root, parts)
    return paths.open_target(root, parts)


def setup_ptmx(root: Root) -> None:
    """/dev/ptmx -> pts/ptmx (the container's devpts instance)."""
    try:
        fd = _dev_dir(root)
        try:
            try:
                os.unlink("ptmx", dir_fd=fd)
            except FileNotFoundError:
                pass
            except IsADirectoryError:
                os.rmdir("ptmx", dir_fd=fd)
            os.symlink("pts/ptmx", "ptmx", dir_fd=fd)
        finally:
            os.close(fd)
    except OSError as err:
        raise RootfsError(f"/dev/ptmx: symlink to pts/ptmx: {os_error_text(err)}") from None


def setup_dev_symlinks(root: Root) -> None:
    """fd, stdin, stdout, stderr, and core where the kernel has /proc/kcore."""
    links = list(DEV_SYMLINKS)
    if os.path.exists("/proc/kcore"):
        links.append(("/proc/kcore", "core"))
    try:
        fd = _dev_dir(root)
    except OSError as err:
        raise RootfsError(f"/dev: {os_error_text(err)}") from None
    try:
        for target, name in links:
            try:
                os.symlink(target, name, dir_fd=fd)
            except FileExistsError:
                pass
            except OSError as err:
                raise RootfsError(f"/dev/{name}: symlink to {target}: {os_error_text(err)}") from None
    finally:
        os.close(fd)


def reopen_dev_null() -> None:
    """After the pivot: stdio that was the host's /dev/null becomes the container's."""
    fd = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    try:
        rdev = os.fstat(fd).st_rdev
        for stdio in (0, 1, 2):
            try:
                if os.fstat(stdio).st_rdev == rdev:
                    os.dup2(fd, stdio)
            except OSError:
                continue
    finally:
        os.close(fd)
