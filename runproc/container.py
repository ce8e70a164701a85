"""Container lifecycle operations shared by the commands: create, start, signal, destroy."""

from __future__ import annotations

import errno
import fcntl
import os
import select
import stat
import time

from runproc.errors import RunprocError
from runproc.fsutil import os_error_text, write_file_atomic
from runproc.kernel import (
    process_start_time,
    signal_all,
    signal_process,
    wait_until_gone,
)
from runproc.spec import ContainerPlan, load_plan
from runproc.state import (
    EXEC_FIFO,
    ContainerRecord,
    LockedContainer,
    StateStore,
    rfc3339_nano,
    validate_id,
)

# How long start waits for the init to exec once it has the go.
START_TIMEOUT = 10


def resolve_bundle(bundle: str | bool | None) -> str:
    """The bundle's real absolute path (runc's state shows it resolved); the current directory by default."""
    return os.path.realpath(bundle) if isinstance(bundle, str) and bundle else os.getcwd()


def check_pid_file(pid_file: str | bool | None) -> str | None:
    """An absolute --pid-file path whose directory exists, checked before anything is made."""
    if not isinstance(pid_file, str) or not pid_file:
        return None
    path = os.path.abspath(pid_file)
    directory = os.path.dirname(path)
    try:
        if not stat.S_ISDIR(os.stat(directory).st_mode):
            raise RunprocError(f"pid file {path}: {directory} is not a directory")
        if stat.S_ISDIR(os.lstat(path).st_mode):
            raise RunprocError(f"pid file {path} is a directory")
    except FileNotFoundError:
        if not os.path.isdir(directory):
            raise RunprocError(f"pid file {path}: directory {directory} does not exist") from None
    except OSError as err:
        raise RunprocError(f"pid file {path}: {os_error_text(err)}") from None
    return path


def parse_preserve_fds(raw: str | bool | None) -> int:
    if raw is None or raw is False:
        return 0
    if not isinstance(raw, str) or not (raw.isascii() and raw.isdigit()):
        raise RunprocError(f"--preserve-fds must be a non-negative integer, got {raw!r}")
    return int(raw)


def load_plan_for(values: dict[str, str | bool]) -> ContainerPlan:
    """The plan for create/run: bundle from --bundle or the positional, host mode from RUNPROC_HOST."""
    bundle = resolve_bundle(values.get("bundle"))
    host_env = os.environ.get("RUNPROC_HOST") == "1"
    return load_plan(bundle, host_env, os.geteuid())


def create_from_values(store: StateStore, values: dict[str, str | bool]) -> ContainerRecord:
    """create (and run) from their command-line values: check everything, then create."""
    container_id = str(values["id"])
    validate_id(container_id)
    pid_file = check_pid_file(values.get("pid_file"))
    preserve_fds = parse_preserve_fds(values.get("preserve_fds"))
    return create_container(store, container_id, load_plan_for(values), pid_file, preserve_fds)


def create_container(
    store: StateStore,
    container_id: str,
    plan: ContainerPlan,
    pid_file: str | None,
    preserve_fds: int,
) -> ContainerRecord:
    """Fork the init, wait until it is ready and blocked before exec, record it.

    On any failure nothing is left: no directory, no process, no pid file. The
    init goes on only once create has recorded it (its go-ahead pipe): if create
    dies half-way, even by SIGKILL, the init exits instead of waiting forever.
    """
    if plan.terminal:
        raise RunprocError("process.terminal is true, but terminals are not supported yet")
    lock = store.reserve(container_id)
    with lock:  # cleaning up under the lock: no other create can take the id meanwhile
        init = None
        try:
            init = InitProcess(plan, lock, preserve_fds)
            init.wait_ready()
            record = ContainerRecord(container_id, lock.directory, lock.fd)
            record.pid = init.pid
            record.start_time = process_start_time(init.pid)
            record.bundle = plan.bundle
            record.rootfs = plan.rootfs
            record.created = rfc3339_nano(time.time_ns())
            record.annotations = plan.annotations
            store.save(lock, record)
            if pid_file:
                _write_pid_file(pid_file, init.pid)
            init.go_ahead()
            return record
        except BaseException:
            if init is not None:
                init.abort()
            store.remove(lock)
            raise


def _write_pid_file(path: str, pid: int) -> None:
    try:
        dir_fd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            # Bare digits, no newline: containerd parses the whole file as one integer.
            write_file_atomic(dir_fd, os.path.basename(path), str(pid).encode(), 0o666)  # less the umask, as runc
        finally:
            os.close(dir_fd)
    except OSError as err:
        raise RunprocError(f"cannot write pid file {path}: {os_error_text(err)}") from None


class InitProcess:
    """The forked container init, seen from create: its pid and the two pipes to it."""

    def __init__(self, plan: ContainerPlan, lock: LockedContainer, preserve_fds: int) -> None:
        # The init's end of the exec fifo: opened here, by create, so that the init
        # never needs a path or a directory fd of the host to reach it (a fifo fd
        # is no way out of the container: one cannot chdir or open beneath it).
        fifo = os.open(EXEC_FIFO, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=lock.fd)
        fds = [fifo, *os.pipe(), *os.pipe()]
        # Keep our own fds above any the caller asked to pass through (--preserve-fds).
        low = 3 + preserve_fds
        moved: list[int] = []
        try:
            for fd in fds:
                moved.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, low))
        except OSError as err:
            for fd in moved:
                os.close(fd)
            raise RunprocError(f"--preserve-fds {preserve_fds}: {os_error_text(err)}") from None
        finally:
            for fd in fds:
                os.close(fd)
        fifo, report_r, report_w, go_r, go_w = moved
        from runproc import init  # imported before fork: the child must not need to load it

        self.pid = os.fork()
        if self.pid == 0:
            try:
                init.container_init(plan, init.InitChannels(report_w, go_r, fifo), preserve_fds)
            finally:
                os._exit(1)
        for fd in (fifo, report_w, go_r):
            os.close(fd)
        self.report_r: int | None = report_r
        self.go_w: int | None = go_w

    def wait_ready(self) -> None:
        """Wait for the init's report: ready, or why it cannot start."""
        assert self.report_r is not None
        report = b""
        while report != b"\0":
            chunk = os.read(self.report_r, 4096)
            if not chunk:
                break
            report += chunk
        os.close(self.report_r)
        self.report_r = None
        if report != b"\0":
            message = report.decode(errors="replace") or "the container init exited before it was ready"
            raise RunprocError(f"unable to start container process: {message}")

    def go_ahead(self) -> None:
        """Tell the init it is recorded: it may now wait for start."""
        assert self.go_w is not None
        try:
            os.write(self.go_w, b"\1")
        except BrokenPipeError:
            raise RunprocError("unable to start container process: the container init exited") from None
        finally:
            os.close(self.go_w)
            self.go_w = None

    def abort(self) -> None:
        """Kill the init and collect it (it is our child until create exits)."""
        signal_process(self.pid, 9)
        _reap(self.pid)
        for fd in (self.report_r, self.go_w):
            if fd is not None:
                os.close(fd)


def _reap(pid: int) -> None:
    """Collect our child's exit status so no zombie is left (it is ours until create exits)."""
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def start_container(record: ContainerRecord) -> None:
    """Release a created container's init into exec; returns once it has exec'd (or died).

    The order makes "started" durable before the program can run: open the
    fifo's write end (which fails if the init no longer waits), unlink the fifo
    (from now on the container is running, or stopped), then write the go.
    An init that sees its starter vanish without a go ends without running
    the program. So a start killed anywhere leaves a container that is
    created (killed before it opened the fifo), stopped, or running, never a
    running program reported as created; and a second start fails at once.
    """
    status = record.status()
    if status == "stopped":
        raise RunprocError("cannot start a container that has stopped")
    if status == "running":
        raise RunprocError("cannot start an already running container")
    try:
        fifo = os.open(EXEC_FIFO, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=record.dir_fd)
    except FileNotFoundError:
        raise RunprocError("cannot start an already running container") from None
    except OSError as err:
        if err.errno == errno.ENXIO:  # no reader: the init is gone, or going
            raise RunprocError("cannot start a container that has stopped") from None
        raise RunprocError(f"cannot open {record.directory}/{EXEC_FIFO}: {os_error_text(err)}") from None
    try:
        if not stat.S_ISFIFO(os.fstat(fifo).st_mode):
            raise RunprocError(f"{record.directory}/{EXEC_FIFO} is not a fifo: refused")
        os.unlink(EXEC_FIFO, dir_fd=record.dir_fd)
        try:
            os.write(fifo, b"1")
        except BrokenPipeError:
            raise RunprocError("cannot start a container that has stopped") from None
        # The init's end closes when it execs (close-on-exec) or dies.
        poller = select.poll()
        poller.register(fifo, 0)
        if not poller.poll(START_TIMEOUT * 1000):
            raise RunprocError(f"the container init did not run the program within {START_TIMEOUT} s")
    finally:
        os.close(fifo)


def kill_container(record: ContainerRecord, sig: int, all_processes: bool) -> None:
    """Signal the init, or with `all_processes` every process of the container.

    `--all` on a stopped container still reaches leftovers and succeeds, as
    runc's does: containerd sends it after an init without its own pid namespace exits.
    """
    if all_processes:
        signal_all(record.pid, record.start_time, sig)  # reaches only what is still alive
        return
    if record.status() == "stopped" or not signal_process(record.pid, sig):
        raise RunprocError("container not running")


def destroy_container(store: StateStore, locked: LockedContainer, record: ContainerRecord, force: bool) -> None:
    """Delete a locked container: kill what is left of it, then remove its directory."""
    if record.status() == "running" and not force:
        raise RunprocError(f"cannot delete container {record.id} that is not stopped: running")
    signal_all(record.pid, record.start_time, 9)
    if not wait_until_gone(record.pid, record.start_time, 5.0):
        raise RunprocError(f"container {record.id}: its process {record.pid} did not exit after SIGKILL")
    store.remove(locked)
