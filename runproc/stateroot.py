"""The state root: opened once, checked once, then used only through its fd.

What runproc trusts: a state root owned by the caller's euid, or by root, and
writable by no one else; in it, container directories and records owned by the
caller, readable by no one else. Anything else is refused with an error that
names the path and says why, before anything in it is read, removed or
signalled: a root another user can write to lets that user plant symbolic links
and forged records for root's runproc to act on.

Besides the containers (`<id>`, see state.py) the root holds short-lived
entries whose names start with "@", which no container id can: `@new-...` (a
create's staging directory) and `@del-...` (a container directory renamed
aside to be removed). Each name carries its maker's pid and start time; one
whose maker is dead and whose lock is free is removed by the next create or
delete (`sweep_stale`).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat

from runproc.errors import RunprocError
from runproc.fsutil import file_kind, open_dir_nofollow, os_error_text, remove_flat_dir
from runproc.kernel import proc_stat, process_alive

STAGING_PREFIX = "@"


def open_root(path: str, create: bool) -> int | None:
    """The state root's fd after checking who may write to it; None if it is missing and not `create`.

    A symbolic link as the root is followed once, and only when the caller or
    root owns the link (as the kernel's protected_symlinks does); what it
    leads to is checked like any root.
    """
    try:
        info = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        if not create:
            return None
        _make_root(path)
        info = os.lstat(path)
    except OSError as err:
        raise RunprocError(f"cannot use state directory {path}: {os_error_text(err)}") from None
    if stat.S_ISLNK(info.st_mode):
        if info.st_uid not in (os.geteuid(), 0):
            raise RunprocError(f"state directory {path} is a symbolic link owned by uid {info.st_uid}: refused")
        path = os.path.realpath(path)
    try:
        fd = open_dir_nofollow(path)
    except FileNotFoundError:
        if not create:
            return None
        raise RunprocError(f"cannot use state directory {path}: it vanished") from None
    except OSError as err:
        reason = "it is not a directory" if err.errno in (errno.ENOTDIR, errno.ELOOP) else os_error_text(err)
        raise RunprocError(f"cannot use state directory {path}: {reason}") from None
    try:
        check_root(os.fstat(fd), path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _make_root(path: str) -> None:
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as err:
        raise RunprocError(f"cannot create state directory {path}: {os_error_text(err)}") from None


def check_root(info: os.stat_result, path: str) -> None:
    """Owned by us or by root, and writable by no one else."""
    euid = os.geteuid()
    if info.st_uid not in (euid, 0):
        raise RunprocError(f"state directory {path} is owned by uid {info.st_uid}, not by uid {euid} or root: refused")
    if info.st_mode & 0o022:
        raise RunprocError(f"state directory {path} is writable by others (mode {info.st_mode & 0o7777:04o}): refused")


def check_private(info: os.stat_result, path: str, what: str, want_dir: bool) -> None:
    """A container directory or record: ours, of the right kind, and closed to others."""
    euid = os.geteuid()
    if stat.S_ISDIR(info.st_mode) != want_dir or not (want_dir or stat.S_ISREG(info.st_mode)):
        raise RunprocError(f"{what} {path} is {file_kind(info.st_mode)}: refused")
    if info.st_uid != euid:
        raise RunprocError(f"{what} {path} is owned by uid {info.st_uid}, not by uid {euid}: refused")
    if info.st_mode & (0o077 if want_dir else 0o022):
        raise RunprocError(f"{what} {path} is open to others (mode {info.st_mode & 0o7777:04o}): refused")


def staging_name(kind: str) -> str:
    """`@<kind>-<pid>-<start time>-<random>`: unique, and tells a sweeper whether its maker lives."""
    pid = os.getpid()
    stat_fields = proc_stat(pid)
    start = stat_fields[2] if stat_fields else 0
    return f"{STAGING_PREFIX}{kind}-{pid}-{start}-{os.urandom(4).hex()}"


def _maker_alive(name: str) -> bool:
    parts = name.split("-")
    if len(parts) != 4 or not (parts[1].isdigit() and parts[2].isdigit()):
        return True  # not one of ours: leave it alone
    return process_alive(int(parts[1]), int(parts[2]))


def sweep_stale(root_fd: int) -> None:
    """Remove staging and renamed-aside entries whose maker died (say by SIGKILL).

    The maker holds an flock on its entry while it lives; the lock must be free
    too, so an entry is never removed under a live maker (also not one in
    another pid namespace, where the pid in the name means nothing).
    """
    for name in os.listdir(root_fd):
        if name.startswith(STAGING_PREFIX) and not _maker_alive(name):
            try:
                _remove_unlocked(root_fd, name)
            except OSError:
                pass  # locked after all, being removed by another sweeper, or not ours to remove


def _remove_unlocked(root_fd: int, name: str) -> None:
    try:
        fd = open_dir_nofollow(name, root_fd)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR):
            remove_flat_dir(root_fd, name)  # not a directory: the entry itself goes, nothing it points to
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        remove_flat_dir(root_fd, name)
    finally:
        os.close(fd)
