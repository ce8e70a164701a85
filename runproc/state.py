"""The state store: one directory per container under the root dir, each with a JSON record.

Layout of <root>/<id>/ (mode 0700, owned by the caller):
  state.json  the record create wrote (whole or not at all: see write_file_atomic)
  exec.fifo   present from create until start; its absence is the durable
              "started" fact (start unlinks it before it lets the init go)
  spec.json   the config.json create checked (and whether it ran in host mode):
              exec plans its process from it (save_spec, load_spec)
Every command that reads or changes a container holds an exclusive flock on
its directory, so concurrent commands on one container run one after another.
Everything is opened relative to the root's fd (stateroot.py), without
following symbolic links, and checked to be ours before it is used.

A directory under a container's name is never empty: it is filled under a
staging name before it is renamed into place, and renamed aside before it is
emptied. So rename(2), which may replace an empty directory, can never put a
new container over one that a delete is removing.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time

from runproc import OCI_VERSION, jsonio
from runproc.errors import ContainerNotFound, RunprocError
from runproc.fsutil import open_dir_nofollow, os_error_text, read_at_most, remove_flat_dir, write_file_atomic
from runproc.kernel import process_alive
from runproc.stateroot import STAGING_PREFIX, check_private, open_root, staging_name, sweep_stale

TYPE_CHECKING = False
if TYPE_CHECKING:  # loaded only for a record that has a cgroup
    from runproc.linux.cgroups import Cgroup

STATE_FILE = "state.json"
EXEC_FIFO = "exec.fifo"
SPEC_FILE = "spec.json"
# The cgroup directories create is about to make, written before it makes them: a create killed
# before its record exists leaves them listed here, and removing the container removes them.
CGROUP_PLAN = "cgroup.json"
MAX_RECORD = 1 << 20  # a record is a few hundred bytes plus annotations
MAX_SPEC = 16 << 20  # config.json is at most 4 MiB (runproc.spec.MAX_CONFIG); JSON escapes may grow it

# What runc accepts: [A-Za-z0-9_+,-.] (its regexp's `+-\.` is a range that takes in the comma).
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+,-.")


def validate_id(container_id: str) -> None:
    if not container_id:
        raise RunprocError("container id cannot be empty")
    if container_id in (".", "..") or not set(container_id) <= _ID_CHARS or len(container_id) > 255:
        raise RunprocError(f"invalid container id format: {container_id!r}")


def rfc3339_nano(ns: int) -> str:
    """UTC time with nanoseconds and trailing zeros trimmed, as Go's RFC3339Nano (runc's `created`)."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    fraction = f"{nanos:09d}".rstrip("0")
    return f"{stamp}.{fraction}Z" if fraction else f"{stamp}Z"


class LockedContainer:
    """An open, flock'ed container directory; use as a context manager."""

    __slots__ = ("name", "directory", "fd")

    def __init__(self, name: str, directory: str, fd: int) -> None:
        self.name = name  # its entry in the root
        self.directory = directory  # its path, for messages
        self.fd = fd

    def __enter__(self) -> LockedContainer:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)  # closing drops the flock


# Field -> type of a record; anything else in a record makes it corrupt.
_RECORD_FIELDS: dict[str, type] = {
    "id": str, "pid": int, "start_time": int, "bundle": str, "rootfs": str, "created": str,
    "annotations": dict, "owner": str, "hooks": dict,
}
# Fields a record may lack (written by a runproc before them), with their value then.
_RECORD_DEFAULTS: dict[str, object] = {"hooks": {}}


class ContainerRecord:
    """What create recorded about a container; status is derived, never stored."""

    __slots__ = ("id", "pid", "start_time", "bundle", "rootfs", "created", "owner", "annotations", "hooks",
                 "directory", "dir_fd", "cgroup")

    def __init__(self, container_id: str, directory: str, dir_fd: int = -1) -> None:
        self.id = container_id
        self.directory = directory
        self.dir_fd = dir_fd  # the locked directory's fd, while the lock is held
        self.pid = 0
        self.start_time = 0  # the init's start time in clock ticks (/proc/PID/stat field 22)
        self.bundle = ""
        self.rootfs = ""
        self.created = ""
        self.owner = ""
        self.annotations: dict[str, str] = {}
        self.hooks: dict = {}  # config.json's hooks, as create checked them (runproc.spec.hooks)
        self.cgroup: Cgroup | None = None  # the container's cgroup, when create made or joined one

    def to_json(self) -> dict:
        # A field at its default is left out: a container without hooks has the record it always had.
        data = {name: getattr(self, name) for name in _RECORD_FIELDS
                if name not in _RECORD_DEFAULTS or getattr(self, name) != _RECORD_DEFAULTS[name]}
        if self.cgroup is not None:
            data["cgroup"] = self.cgroup.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict, locked: LockedContainer) -> ContainerRecord:
        """A record as create wrote it; ValueError for anything else (another id, wrong types)."""
        record = cls(locked.name, locked.directory, locked.fd)
        for name, kind in _RECORD_FIELDS.items():
            value = data.get(name, _RECORD_DEFAULTS.get(name, "" if kind is str else None))
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"field {name!r} is not a {kind.__name__}")
            setattr(record, name, value)
        if record.id != locked.name or record.pid <= 0 or record.start_time < 0:
            raise ValueError("id, pid or start time do not fit")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in record.annotations.items()):
            raise ValueError("annotations are not strings")
        if data.get("cgroup") is not None:  # records without one: no cgroup (or an older runproc's)
            from runproc.linux.cgroups import Cgroup

            record.cgroup = Cgroup.from_json(data["cgroup"])
        return record

    def status(self) -> str:
        """created (init waiting on the fifo), running, paused (its cgroup frozen, whether created or
        running, as runc), or stopped (init gone, a zombie, or pid reused)."""
        if not process_alive(self.pid, self.start_time):
            return "stopped"
        if self.cgroup is not None and self.cgroup.frozen():
            return "paused"
        try:
            os.stat(EXEC_FIFO, dir_fd=self.dir_fd, follow_symlinks=False)
            return "created"
        except FileNotFoundError:
            return "running"

    def oci_state(self) -> dict:
        """The `state` output, in runc's field order; pid is 0 once stopped, as runc shows it."""
        status = self.status()
        return {
            "ociVersion": OCI_VERSION,
            "id": self.id,
            "pid": self.pid if status != "stopped" else 0,
            "status": status,
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "annotations": self.annotations,
            "owner": self.owner,
        }


class StateStore:
    """Container records under one root directory, opened (and checked) on first use."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._fd: int | None = None

    def _root_fd(self, create: bool) -> int | None:
        if self._fd is None:
            self._fd = open_root(self.root, create)
        return self._fd

    def own_fds(self) -> tuple[int, ...]:
        """The store's open fds (the root's), for a forked child to close."""
        return () if self._fd is None else (self._fd,)

    def close(self) -> None:
        """Close the root's fd (exec, before it forks into a container)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def reserve(self, container_id: str) -> LockedContainer:
        """Make and lock a new container directory, with its exec fifo; one of concurrent creates wins.

        The directory is made under a staging name, locked, given its fifo and
        only then renamed into place. So a directory under a container's name is
        never empty (rename cannot replace it) and is locked until its record
        exists. One without a record whose lock is free was left by a create that
        died half-way: it is removed and the id reused.
        """
        validate_id(container_id)
        root = self._root_fd(create=True)
        assert root is not None
        sweep_stale(root)
        staging = staging_name("new")
        try:
            os.mkdir(staging, 0o700, dir_fd=root)
            fd = open_dir_nofollow(staging, root)
        except OSError as err:
            raise RunprocError(f"cannot create {self._path(staging)}: {os_error_text(err)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.mkfifo(EXEC_FIFO, 0o600, dir_fd=fd)
            for _ in range(3):
                try:
                    os.rename(staging, container_id, src_dir_fd=root, dst_dir_fd=root)
                    return LockedContainer(container_id, self._path(container_id), fd)
                except OSError as err:
                    if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise RunprocError(f"cannot create {self._path(container_id)}: {os_error_text(err)}") \
                            from None
                if not self._remove_if_abandoned(root, container_id):
                    break
            raise RunprocError(f"container with id {container_id!r} already exists")
        except BaseException:
            os.close(fd)
            remove_flat_dir(root, staging)
            raise

    def _remove_if_abandoned(self, root: int, name: str) -> bool:
        """Remove `name` if a create died before recording it; True if the name is free to try again."""
        try:
            fd = open_dir_nofollow(name, root)
        except FileNotFoundError:
            return True  # gone meanwhile
        except OSError:
            return False  # not a directory: not ours to remove
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a create or another command holds it: it is alive
            if not _is_entry(root, name, fd):
                return True  # replaced meanwhile: look again
            check_private(os.fstat(fd), self._path(name), "container directory", want_dir=True)
            try:
                os.stat(STATE_FILE, dir_fd=fd, follow_symlinks=False)
                return False
            except FileNotFoundError:
                pass
            self._remove_locked(LockedContainer(name, self._path(name), fd))
            return True
        finally:
            os.close(fd)

    def lock(self, container_id: str) -> LockedContainer:
        """Lock an existing container's directory, waiting for any other command on it.

        The lock is on the directory we opened; once we hold it, the name must
        still lead to that directory (a delete may have removed it while we
        waited, and a create may have made a new one under the same name).
        """
        validate_id(container_id)
        root = self._root_fd(create=False)
        if root is None:
            raise ContainerNotFound()
        path = self._path(container_id)
        for _ in range(10):
            fd = _open_container_dir(root, container_id, path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if _is_entry(root, container_id, fd):
                    return LockedContainer(container_id, path, fd)
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        raise ContainerNotFound()  # it keeps being replaced: as good as not there

    def peek(self, container_id: str) -> LockedContainer | None:
        """Open a container's directory without locking it, for `list` (None if it is gone).

        Records are written whole (write_file_atomic), so reading one unlocked
        sees a whole record or none. The directory is checked as lock() checks it.
        """
        root = self._root_fd(create=False)
        if root is None:
            return None
        path = self._path(container_id)
        try:
            fd = _open_container_dir(root, container_id, path)
        except ContainerNotFound:
            return None
        return LockedContainer(container_id, path, fd)

    def names(self) -> list[str]:
        """The entries of the root that may be containers, sorted (staging entries left out)."""
        root = self._root_fd(create=False)
        if root is None:
            return []
        return sorted(name for name in os.listdir(root) if not name.startswith(STAGING_PREFIX))

    def load(self, locked: LockedContainer) -> ContainerRecord:
        """The record of a locked container. A half-made one (no record yet) does not exist."""
        raw = _read_private(locked, STATE_FILE, "state record", MAX_RECORD)
        if raw is None:
            raise ContainerNotFound()
        path = os.path.join(locked.directory, STATE_FILE)
        try:
            data = jsonio.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return ContainerRecord.from_json(data, locked)
        except (ValueError, RecursionError) as err:
            raise RunprocError(f"corrupt state record {path}: {err}") from None

    def save(self, locked: LockedContainer, record: ContainerRecord) -> None:
        write_file_atomic(locked.fd, STATE_FILE, jsonio.dumps(record.to_json()).encode())

    def save_spec(self, locked: LockedContainer, config: dict, host_mode: bool) -> None:
        """Keep the checked config.json (and create's host mode) for exec: the bundle may change later."""
        data = {"host": host_mode, "config": config}
        try:
            text = jsonio.dumps(data)
        except RecursionError:
            raise RunprocError("config.json is nested too deeply to keep for exec") from None
        write_file_atomic(locked.fd, SPEC_FILE, text.encode())

    def load_spec(self, locked: LockedContainer) -> tuple[dict, bool]:
        """(config, host mode) as create saved them."""
        path = os.path.join(locked.directory, SPEC_FILE)
        raw = _read_private(locked, SPEC_FILE, "saved spec", MAX_SPEC)
        if raw is None:
            raise RunprocError(f"saved spec {path} is missing (a container made by an older runproc?)")
        try:
            data = jsonio.loads(raw)
        except (ValueError, RecursionError) as err:
            raise RunprocError(f"corrupt saved spec {path}: {err}") from None
        if not (isinstance(data, dict) and isinstance(data.get("config"), dict) and isinstance(data.get("host"), bool)):
            raise RunprocError(f"corrupt saved spec {path}: not what create wrote")
        return data["config"], data["host"]

    def remove(self, locked: LockedContainer) -> None:
        """Remove a locked container's directory (and sweep what dead commands left)."""
        root = self._root_fd(create=False)
        assert root is not None
        self._remove_locked(locked)
        sweep_stale(root)

    def _remove_locked(self, locked: LockedContainer) -> None:
        # Renamed aside first (under the lock, so nobody else moves it): the
        # name is free at once, and no create can rename a staging directory
        # over it while it is being emptied.
        root = self._root_fd(create=False)
        assert root is not None
        _remove_planned_cgroups(locked)
        aside = staging_name("del")
        try:
            os.rename(locked.name, aside, src_dir_fd=root, dst_dir_fd=root)
            remove_flat_dir(root, aside)
        except OSError as err:
            raise RunprocError(f"cannot remove {locked.directory}: {os_error_text(err)}") from None

    def sweep(self) -> None:
        """Remove what killed commands left in the root (a delete's job, besides its container)."""
        root = self._root_fd(create=False)
        if root is not None:
            sweep_stale(root)


def _open_container_dir(root: int, container_id: str, path: str) -> int:
    """A container's directory, opened without following a link and checked as the caller's
    (lock() and peek()); ContainerNotFound if there is none."""
    try:
        fd = open_dir_nofollow(container_id, root)
    except FileNotFoundError:
        raise ContainerNotFound() from None
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR):
            raise RunprocError(f"container directory {path} is not a directory: refused") from None
        raise RunprocError(f"cannot open {path}: {os_error_text(err)}") from None
    try:
        check_private(os.fstat(fd), path, "container directory", want_dir=True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_private(locked: LockedContainer, name: str, what: str, limit: int) -> bytes | None:
    """A file of a container's directory, ours and closed to others; None if there is none."""
    path = os.path.join(locked.directory, name)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=locked.fd)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise RunprocError(f"cannot read {what} {path}: {os_error_text(err)}") from None
    try:
        check_private(os.fstat(fd), path, what, want_dir=False)
        data = read_at_most(fd, limit)
    except OSError as err:
        raise RunprocError(f"cannot read {what} {path}: {os_error_text(err)}") from None
    finally:
        os.close(fd)
    if data is None:
        raise RunprocError(f"corrupt {what} {path}: too large")
    return data


def save_cgroup_plan(locked: LockedContainer, cgroup: Cgroup) -> None:
    write_file_atomic(locked.fd, CGROUP_PLAN, jsonio.dumps(cgroup.to_json()).encode())


def _remove_planned_cgroups(locked: LockedContainer) -> None:
    """rmdir what a create planned to make (only empty cgroups go; delete has removed its own already)."""
    try:
        fd = os.open(CGROUP_PLAN, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=locked.fd)
    except OSError:
        return
    try:
        from runproc.linux.cgroups import Cgroup

        check_private(os.fstat(fd), os.path.join(locked.directory, CGROUP_PLAN), "cgroup plan", want_dir=False)
        Cgroup.from_json(jsonio.loads(os.read(fd, MAX_RECORD))).remove()
    except (RunprocError, ValueError, RecursionError, OSError):
        pass  # best effort: removing the container must not fail on it
    finally:
        os.close(fd)


def _is_entry(root: int, name: str, fd: int) -> bool:
    """Does `name` in `root` still lead to the directory open as `fd`?"""
    try:
        by_name = os.stat(name, dir_fd=root, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (by_name.st_dev, by_name.st_ino) == (mine.st_dev, mine.st_ino)
