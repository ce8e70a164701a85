"""Paths inside the container's rootfs, resolved so that they never lead out of it.

The rootfs belongs to the image, not to us: any component may be a symlink
to /etc or to ../../.. (CVE-2021-30465 and relatives). `lookup` resolves a
path as securejoin does for runc: symlinks are followed, but against the
rootfs, and `..` stops at its top; what does not exist is kept as written.
`open_target` then opens the result with openat2(RESOLVE_IN_ROOT), or where
the kernel lacks openat2, one component at a time with O_NOFOLLOW, and checks
/proc/self/fd/N names what was resolved. Mounts go onto that /proc/self/fd/N,
so the target cannot be swapped between the check and the mount.
"""

from __future__ import annotations

import errno
import os
import stat

from runproc.linux import syscalls

O_PATH = os.O_PATH
_DIR = O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_SYMLINKS = 255

# None until the first call: does this kernel have openat2(2)?
_openat2_ok: bool | None = None


class Root:
    """The rootfs as an O_PATH descriptor (opened after its bind mount onto itself) and its real path."""

    __slots__ = ("fd", "path")

    def __init__(self, path: str) -> None:
        self.path = os.path.realpath(path)
        self.fd = os.open(self.path, _DIR)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def host_path(self, parts: list[str]) -> str:
        """The path of `parts` as the host sees it (for messages and the /proc/self/fd check)."""
        return self.path.rstrip("/") + "/" + "/".join(parts) if parts else self.path


def split(path: str) -> list[str]:
    return [part for part in path.split("/") if part and part != "."]


def lookup(root: Root, path: str) -> list[str]:
    """The components of `path` inside the rootfs, symlinks resolved within it (securejoin's rules)."""
    pending = split(path)
    pending.reverse()  # a stack: the next component is last
    parts: list[str] = []
    fds: list[int] = [os.dup(root.fd)]  # fds[i]: the directory parts[:i] (-1 once missing)
    links = 0
    try:
        while pending:
            name = pending.pop()
            if name == ".":
                continue
            if name == "..":
                if parts:
                    parts.pop()
                    fd = fds.pop()
                    if fd >= 0:
                        os.close(fd)
                continue
            parent = fds[-1]
            target = None
            if parent >= 0:
                try:
                    target = os.readlink(name, dir_fd=parent)
                except OSError as err:
                    if err.errno not in (errno.EINVAL, errno.ENOENT, errno.ENOTDIR):
                        raise
            if target is not None:
                links += 1
                if links > MAX_SYMLINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                if target.startswith("/"):
                    while parts:
                        parts.pop()
                        fd = fds.pop()
                        if fd >= 0:
                            os.close(fd)
                more = split(target)
                more.reverse()
                pending.extend(more)
                continue
            fd = -1
            if parent >= 0:
                try:
                    fd = os.open(name, _DIR, dir_fd=parent)
                except OSError as err:
                    if err.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                        raise
            parts.append(name)
            fds.append(fd)
        return parts
    finally:
        for fd in fds:
            if fd >= 0:
                os.close(fd)


def _walk(root: Root, parts: list[str], flags: int) -> int:
    """Open `parts` one component at a time, never following a symlink (the fallback for openat2)."""
    fd = os.dup(root.fd)
    try:
        for n, name in enumerate(parts):
            last = n == len(parts) - 1
            next_fd = os.open(name, (flags if last else _DIR) | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = next_fd
            if last and flags & O_PATH and stat.S_ISLNK(os.fstat(fd).st_mode):
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
        if not parts and not flags & O_PATH:
            next_fd = os.open(".", flags | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_in_root(root: Root, parts: list[str], flags: int = O_PATH) -> int:
    """Open resolved `parts` under the rootfs; symlinks that appeared since `lookup` cannot lead out."""
    global _openat2_ok
    relative = "/".join(parts) or "."
    if _openat2_ok is not False:
        try:
            return syscalls.openat2(root.fd, relative, flags,
                                    syscalls.RESOLVE_IN_ROOT | syscalls.RESOLVE_NO_MAGICLINKS)
        except OSError as err:
            if err.errno != errno.ENOSYS:
                raise
            _openat2_ok = False
    return _walk(root, parts, flags)


def open_target(root: Root, parts: list[str]) -> int:
    """An O_PATH fd of `parts` (already resolved), checked to be the very path resolved."""
    fd = open_in_root(root, parts)
    try:
        expected = root.host_path(parts)
        actual = os.readlink(f"/proc/self/fd/{fd}")
        if actual != expected:
            raise OSError(errno.EXDEV, f"possibly malicious path detected: {actual} is not {expected}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def exists(root: Root, parts: list[str]) -> os.stat_result | None:
    """stat of `parts` (following a last symlink within the rootfs), or None when missing."""
    try:
        fd = open_in_root(root, parts)
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def make_dirs(root: Root, parts: list[str], mode: int = 0o755) -> None:
    """mkdir -p of resolved `parts`, one component at a time, following no symlink."""
    fd = os.dup(root.fd)
    try:
        for name in parts:
            try:
                next_fd = os.open(name, _DIR, dir_fd=fd)
            except FileNotFoundError:
                try:
                    os.mkdir(name, mode, dir_fd=fd)
                except FileExistsError:
                    pass
                next_fd = os.open(name, _DIR, dir_fd=fd)
            os.close(fd)
            fd = next_fd
    finally:
        os.close(fd)


def make_file(root: Root, parts: list[str], mode: int = 0o755) -> None:
    """Create an empty file at resolved `parts` if nothing is there (its directories too)."""
    make_dirs(root, parts[:-1])
    parent = open_in_root(root, parts[:-1])
    try:
        fd = os.open(parts[-1], os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                     mode, dir_fd=parent)
        os.close(fd)
    finally:
        os.close(parent)


def fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"
