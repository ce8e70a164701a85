"""The state store: one directory per container under the root dir, each with a JSON record.

Layout of <root>/<id>/ (mode 0700):
  state.json  the record create wrote (atomically: temp file + rename)
  exec.fifo   present from create until start; the init blocks opening it
Every command that reads or changes a container holds an exclusive flock on
its directory, so concurrent commands on one container run one after another.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time

from runproc import OCI_VERSION, jsonio
from runproc.errors import ContainerNotFound, RunprocError
from runproc.fsutil import os_error_text, write_atomic
from runproc.kernel import process_alive

STATE_FILE = "state.json"
EXEC_FIFO = "exec.fifo"

# What runc accepts: [A-Za-z0-9_+,-.] (its regexp's `+-\.` is a range that takes in the comma).
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+,-.")


def validate_id(container_id: str) -> None:
    if not container_id:
        raise RunprocError("container id cannot be empty")
    if container_id in (".", "..") or not set(container_id) <= _ID_CHARS:
        raise RunprocError(f"invalid container id format: {container_id!r}")


def rfc3339_nano(ns: int) -> str:
    """UTC time with nanoseconds and trailing zeros trimmed, as Go's RFC3339Nano (runc's `created`)."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    fraction = f"{nanos:09d}".rstrip("0")
    return f"{stamp}.{fraction}Z" if fraction else f"{stamp}Z"


class ContainerRecord:
    """What create recorded about a container; status is derived, never stored."""

    __slots__ = ("id", "pid", "start_time", "bundle", "rootfs", "created", "owner", "annotations", "directory")

    def __init__(self, container_id: str, directory: str) -> None:
        self.id = container_id
        self.directory = directory
        self.pid = 0
        self.start_time = 0  # the init's start time in clock ticks (/proc/PID/stat field 22)
        self.bundle = ""
        self.rootfs = ""
        self.created = ""
        self.owner = ""
        self.annotations: dict[str, str] = {}

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "pid": self.pid,
            "start_time": self.start_time,
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "annotations": self.annotations,
            "owner": self.owner,
        }

    @classmethod
    def from_json(cls, data: dict, directory: str) -> ContainerRecord:
        record = cls(data["id"], directory)
        record.pid = int(data["pid"])
        record.start_time = int(data["start_time"])
        record.bundle = data["bundle"]
        record.rootfs = data["rootfs"]
        record.created = data["created"]
        record.owner = data.get("owner", "")
        record.annotations = data.get("annotations", {})
        return record

    @property
    def fifo_path(self) -> str:
        return os.path.join(self.directory, EXEC_FIFO)

    def status(self) -> str:
        """created (init waiting on the fifo), running, or stopped (init gone, a zombie, or pid reused)."""
        if not process_alive(self.pid, self.start_time):
            return "stopped"
        return "created" if os.path.exists(self.fifo_path) else "running"

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


class LockedContainer:
    """An open, flock'ed container directory; use as a context manager."""

    def __init__(self, directory: str, fd: int) -> None:
        self.directory = directory
        self.fd = fd

    def __enter__(self) -> LockedContainer:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)  # closing drops the flock


class StateStore:
    """Container records under one root directory."""

    def __init__(self, root: str) -> None:
        self.root = root

    def directory(self, container_id: str) -> str:
        validate_id(container_id)
        return os.path.join(self.root, container_id)

    def _ensure_root(self) -> None:
        try:
            os.makedirs(self.root, mode=0o700, exist_ok=True)
        except OSError as err:
            raise RunprocError(f"cannot create state directory {self.root}: {os_error_text(err)}") from None

    def reserve(self, container_id: str) -> LockedContainer:
        """Make and lock a new container directory, with its exec fifo; one of concurrent creates wins.

        The directory is made under a temporary name, locked, given its fifo and
        only then renamed into place. So a directory under a container's name is
        never empty (rename cannot replace it) and is locked until its record
        exists. One without a record whose lock is free was left by a create that
        died half-way: it is removed and the id reused.
        """
        directory = self.directory(container_id)
        self._ensure_root()
        # "@" is not allowed in ids, so no container's directory can have this name.
        staging = os.path.join(self.root, f"@new-{os.getpid()}")
        remove_directory(staging)  # only a dead process of our pid could have left it
        try:
            os.mkdir(staging, 0o700)
        except OSError as err:
            raise RunprocError(f"cannot create {staging}: {os_error_text(err)}") from None
        fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            os.mkfifo(os.path.join(staging, EXEC_FIFO), 0o600)
            for _ in range(3):
                try:
                    os.rename(staging, directory)
                    return LockedContainer(directory, fd)
                except OSError as err:
                    if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise RunprocError(f"cannot create {directory}: {os_error_text(err)}") from None
                if not self._remove_if_abandoned(directory):
                    break
            raise RunprocError(f"container with id {container_id!r} already exists")
        except BaseException:
            os.close(fd)
            remove_directory(staging)
            raise

    def _remove_if_abandoned(self, directory: str) -> bool:
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return True  # gone meanwhile: try again
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a create or another command holds it: it is alive
            if os.path.exists(os.path.join(directory, STATE_FILE)):
                return False
            remove_directory(directory)
            return True
        finally:
            os.close(fd)

    def lock(self, container_id: str) -> LockedContainer:
        """Lock an existing container's directory, waiting for any other command on it."""
        directory = self.directory(container_id)
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ContainerNotFound() from None
        except OSError as err:
            raise RunprocError(f"cannot open {directory}: {os_error_text(err)}") from None
        fcntl.flock(fd, fcntl.LOCK_EX)
        return LockedContainer(directory, fd)

    def load(self, container_id: str) -> ContainerRecord:
        """The record of a container (call with its lock held). A deleted or half-made one does not exist."""
        directory = self.directory(container_id)
        try:
            with open(os.path.join(directory, STATE_FILE), "rb") as stream:
                data = jsonio.loads(stream.read())
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
            return ContainerRecord.from_json(data, directory)
        except FileNotFoundError:
            raise ContainerNotFound() from None
        except (ValueError, KeyError, TypeError, RecursionError) as err:
            raise RunprocError(f"corrupt state record {directory}/{STATE_FILE}: {err}") from None

    def save(self, record: ContainerRecord) -> None:
        data = jsonio.dumps(record.to_json()).encode()
        write_atomic(os.path.join(record.directory, STATE_FILE), data)


def remove_directory(directory: str) -> None:
    """Remove a container directory (flat: the record and the fifo only)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        try:
            os.unlink(os.path.join(directory, name))
        except FileNotFoundError:
            pass
    try:
        os.rmdir(directory)
    except FileNotFoundError:
        pass
