"""Small file-system helpers shared by the state store and the commands.

Everything here works relative to an open directory fd and never follows a
symbolic link in the last component: the directories runproc writes to may sit
where others can write too (a pid file's directory), and a name checked once
must not change meaning before it is used.
"""

from __future__ import annotations

import errno
import os
import stat

_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def os_error_text(err: OSError) -> str:
    """The strerror of an OSError in lower case, as Go and runc print it."""
    text = err.strerror or str(err)
    return text[:1].lower() + text[1:]


def file_kind(mode: int) -> str:
    """What a file is, for error messages ("a regular file", "a fifo", ...)."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISREG, "a regular file"), (stat.S_ISLNK,
                       "a symbolic link"), (stat.S_ISFIFO, "a fifo"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def open_dir_nofollow(name: str, dir_fd: int | None = None) -> int:
    """Open a directory; a symbolic link in its place fails (ELOOP, or ENOTDIR for other files)."""
    return os.open(name, _NOFOLLOW_DIR, dir_fd=dir_fd)


def write_file_atomic(dir_fd: int, name: str, data: bytes, mode: int = 0o600) -> None:
    """Make (or replace) `name` in `dir_fd` so that it appears whole or not at all.

    The data goes into an unnamed file (O_TMPFILE) that gets its name only once
    complete (linkat through /proc/self/fd): a writer killed at any point leaves
    no temporary file behind, and no name is opened that someone else could
    have planted. An existing entry of that name is unlinked first (never
    followed). Without O_TMPFILE or /proc, a temporary file with a random name,
    created O_EXCL|O_NOFOLLOW, is renamed into place instead.
    """
    try:
        fd = os.open(".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    except OSError as err:
        if err.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
        _write_via_temp_name(dir_fd, name, data, mode)
        return
    try:
        _write_all(fd, data)
        if _link_unnamed(fd, dir_fd, name):
            return
    finally:
        os.close(fd)
    _write_via_temp_name(dir_fd, name, data, mode)


def _link_unnamed(fd: int, dir_fd: int, name: str) -> bool:
    """Give the O_TMPFILE file `fd` its name; False when there is no /proc to do it through."""
    for _ in range(5):
        try:
            os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=dir_fd, follow_symlinks=True)
            return True
        except FileExistsError:
            _unlink_quietly(dir_fd, name)  # a concurrent writer may put one back: try again
        except FileNotFoundError:
            return False
    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), name)


def _unlink_quietly(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def _write_via_temp_name(dir_fd: int, name: str, data: bytes, mode: int) -> None:
    tmp = f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    try:
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        _unlink_quietly(dir_fd, tmp)
        raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def remove_flat_dir(parent_fd: int, name: str) -> None:
    """Remove the directory `name` in `parent_fd` and the files in it, following no link.

    A symbolic link (or any non-directory) in its place is removed itself,
    never what it points to. Entries already gone are fine: a concurrent
    remover or sweeper may be a step ahead.
    """
    try:
        fd = open_dir_nofollow(name, parent_fd)
    except FileNotFoundError:
        return
    except OSError as err:
        if err.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        _unlink_quietly(parent_fd, name)
        return
    try:
        for entry in os.listdir(fd):
            try:
                os.unlink(entry, dir_fd=fd)
            except FileNotFoundError:
                pass
            except IsADirectoryError:
                os.rmdir(entry, dir_fd=fd)  # ours are flat: an empty one goes, anything more is an error
    finally:
        os.close(fd)
    try:
        os.rmdir(name, dir_fd=parent_fd)
    except FileNotFoundError:
        pass


def read_at_most(fd: int, limit: int) -> bytes | None:
    """The rest of the file, or None past `limit` bytes (a file may grow while it is read)."""
    chunks = []
    size = 0
    while chunk := os.read(fd, 1 << 16):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
