"""create: check everything, fork the container's init into its namespaces, record it.

Imported only by the commands that create (create, run): it loads the init
and the kernel-facing code the init runs, before the fork, since the child
must not need to load anything once it has moved into the container.
"""

from __future__ import annotations

import fcntl
import os
import stat
import time

from runproc import terminal
from runproc.errors import RunprocError
from runproc.fsutil import os_error_text, write_file_atomic
from runproc.init import HOOKS_DONE, HOOKS_REQUEST, InitChannels, InitOptions, container_init
from runproc.kernel import process_start_time, signal_process
from runproc.linux import security
from runproc.linux.cgroups import entry as cgroup_entry
from runproc.linux.namespaces import check_kernel_support, open_joined
from runproc.linux.namespaces import close_all as close_namespaces
from runproc.linux.spawn import spawn_init
from runproc.spec import ContainerPlan, plan_from_config, read_config
from runproc.spec.rootfs import check_no_pivot
from runproc.state import (
    EXEC_FIFO,
    ContainerRecord,
    LockedContainer,
    StateStore,
    rfc3339_nano,
    save_cgroup_plan,
    validate_id,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn

    from runproc.linux.cgroups import Cgroup
    from runproc.linux.cgroups.entry import Entry
    from runproc.log import LogSettings


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


class Spec:
    """The checked config.json, its plan, and whether RUNPROC_HOST asked for host mode (exec needs all three)."""

    __slots__ = ("config", "plan", "host_env")

    def __init__(self, config: dict, plan: ContainerPlan, host_env: bool) -> None:
        self.config = config
        self.plan = plan
        self.host_env = host_env


def load_spec_for(values: dict) -> Spec:
    """The spec for create/run: bundle from --bundle or the positional, host mode from RUNPROC_HOST."""
    bundle = resolve_bundle(values.get("bundle"))
    host_env = os.environ.get("RUNPROC_HOST") == "1"
    config = read_config(bundle)
    return Spec(config, plan_from_config(config, bundle, host_env, os.geteuid()), host_env)


def create_from_values(store: StateStore, values: dict, log: LogSettings | None = None, detach: bool = True,
                       systemd_cgroup: bool = False) -> tuple[ContainerRecord, terminal.HostTerminal | None]:
    """create (and run) from their command-line values: check everything, then create.

    With a terminal, the init sends the master over --console-socket; a foreground
    `run` without one gets it itself: then the HostTerminal to receive it is returned.
    """
    container_id = str(values["id"])
    validate_id(container_id)
    pid_file = check_pid_file(values.get("pid_file"))
    options = InitOptions(parse_preserve_fds(values.get("preserve_fds")), bool(values.get("no_pivot")), container_id)
    spec = load_spec_for(values)
    socket_path = values.get("console_socket")
    socket_path = socket_path if isinstance(socket_path, str) and socket_path else None
    terminal.check_flags(spec.plan.terminal, detach, socket_path)
    host_terminal = None
    if socket_path is not None:
        console = terminal.connect(socket_path)
    elif spec.plan.terminal:
        host_terminal = terminal.HostTerminal()
        console = host_terminal.theirs
    else:
        return create_container(store, container_id, spec, pid_file, options, log, None, systemd_cgroup), None
    try:
        return create_container(store, container_id, spec, pid_file, options, log, console, systemd_cgroup), \
            host_terminal
    except BaseException:
        if host_terminal is not None:
            host_terminal.close()
        raise
    finally:
        if host_terminal is None:
            os.close(console)
        else:
            host_terminal.close_theirs()


def create_container(
    store: StateStore,
    container_id: str,
    spec: Spec,
    pid_file: str | None,
    options: InitOptions,
    log: LogSettings | None = None,
    console: int | None = None,
    systemd_cgroup: bool = False,
) -> ContainerRecord:
    """Fork the init, wait until it is ready and blocked before exec, record it.

    On any failure nothing is left: no directory, no process, no pid file. The
    init goes on only once create has recorded it (its go-ahead pipe): if create
    dies half-way, even by SIGKILL, the init exits instead of waiting forever.
    A failure once the init exists runs the poststop hooks, as runc's does.
    """
    plan = spec.plan
    if plan.hooks is not None:
        import runproc.hooks  # noqa: F401 - the init runs hooks where it can no longer import
    cgroup = ContainerCgroup(plan, container_id, systemd_cgroup) if plan.cgroup is not None else None
    joined = prepare_isolation(plan, options)
    try:
        lock = store.reserve(container_id)
    except BaseException:
        close_namespaces(joined)
        raise
    with lock:  # cleaning up under the lock: no other create can take the id meanwhile
        init = None
        try:
            store.save_spec(lock, spec.config, spec.host_env)  # before the record: exec relies on it
            entry = cgroup.entry(lock) if cgroup is not None else None
            init = InitProcess(plan, lock, options, joined, (lock.fd, *store.own_fds()),
                               console if plan.terminal else None, entry)
            init.wait_ready(_runtime_hooks(plan, container_id, init.pid))
            record = ContainerRecord(container_id, lock.directory, lock.fd)
            record.cgroup = cgroup.cgroup if cgroup is not None else None
            record.pid = init.pid
            record.start_time = process_start_time(init.pid)
            record.bundle = plan.bundle
            record.rootfs = plan.rootfs
            record.created = rfc3339_nano(time.time_ns())
            record.annotations = plan.annotations
            record.hooks = plan.hooks.to_json() if plan.hooks is not None else {}
            store.save(lock, record)
            if pid_file:
                write_pid_file(pid_file, init.pid)
            init.go_ahead()
            return record
        except BaseException:
            if init is not None:
                init.abort()
            if cgroup is not None:
                try:
                    cgroup.cgroup.remove()  # the init is gone (spawn_init ends it if entering failed)
                except RunprocError:
                    pass  # the error that stopped create is the one to report
            store.remove(lock)
            if init is not None and plan.hooks_of("poststop"):
                _failed_create_poststop(plan, container_id, log)
            raise


def _runtime_hooks(plan: ContainerPlan, container_id: str, pid: int) -> Callable[[], None] | None:
    """prestart then createRuntime, for when the init asks (before its pivot_root), in the bundle as runc's."""
    kinds = [kind for kind in ("prestart", "createRuntime") if plan.hooks_of(kind)]
    if not kinds:
        return None

    def run() -> None:
        from runproc import hooks

        state = hooks.oci_state(container_id, "creating", pid, plan.bundle, plan.annotations)
        env = hooks.runtime_environment()
        try:
            for kind in kinds:
                hooks.run_hooks(kind, plan.hooks_of(kind), state, env, plan.bundle)
        except RunprocError as err:
            raise RunprocError(f"unable to start container process: {err}") from None

    return run


def _failed_create_poststop(plan: ContainerPlan, container_id: str, log: LogSettings | None) -> None:
    from runproc import hooks

    state = hooks.oci_state(container_id, "stopped", 0, plan.bundle, plan.annotations)
    hooks.run_warning_hooks("poststop", plan.hooks_of("poststop"), state, log, None)


class ContainerCgroup:
    """The container's cgroup during create: placed and checked before the fork, entered by the init's
    first process before it runs (runproc.linux.spawn), removed again if create fails."""

    def __init__(self, plan: ContainerPlan, container_id: str, systemd: bool) -> None:
        assert plan.cgroup is not None
        self.plan = plan.cgroup
        self.layout, self.cgroup = cgroup_entry.prepare(plan.cgroup, container_id, systemd)

    def entry(self, locked: LockedContainer) -> Entry:
        """Made and limited now (the fs driver), or once the first process exists (systemd's unit)."""
        def record(planned: Cgroup) -> None:
            save_cgroup_plan(locked, planned)

        if self.cgroup.unit is not None:
            return cgroup_entry.systemd_entry(self.layout, self.cgroup, self.plan, record)
        return cgroup_entry.make_before_fork(self.layout, self.cgroup, self.plan, record)


def prepare_isolation(plan: ContainerPlan, options: InitOptions) -> dict[str, int]:
    """What create checks and loads before the fork: the namespaces to join (opened, types
    checked), the seccomp filter (compiled), the capabilities (against ours). Returns the
    joined namespaces' fds, which the init inherits."""
    if plan.rootfs_setup is not None and options.no_pivot:
        check_no_pivot(plan.rootfs_setup)
    if plan.security is not None:
        security.prepare(plan.security, os.geteuid())
    if plan.namespaces is None:
        return {}
    check_kernel_support(plan.namespaces)
    return open_joined(plan.namespaces)


def write_pid_file(path: str, pid: int) -> None:
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

    def __init__(self, plan: ContainerPlan, lock: LockedContainer, options: InitOptions,
                 joined: dict[str, int], own_fds: tuple[int, ...], console: int | None,
                 cgroup: Entry | None = None) -> None:
        """`own_fds`: the state store's, which the child closes: they may sit among --preserve-fds
        (runproc opened them in the caller's gaps), and the lock's would keep the container locked.
        `console`: the terminal's master side to send over --console-socket, or None.
        `cgroup`: how the init's first process gets into the container's cgroup before it runs."""
        # The init's end of the exec fifo: opened here, by create, so that the init
        # never needs a path or a directory fd of the host to reach it (a fifo fd
        # is no way out of the container: one cannot chdir or open beneath it).
        fifo = os.open(EXEC_FIFO, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=lock.fd)
        extra: dict[str, int] = {}  # the init's optional fds, by what they are
        if plan.hooks_of("startContainer"):
            from runproc.hooks import START_ERRORS

            # Where the init says why a startContainer hook failed; start reads it.
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            extra["start_errors"] = os.open(START_ERRORS, flags, 0o600, dir_fd=lock.fd)
        if console is not None:
            extra["console"] = os.dup(console)
        fds = [fifo, *os.pipe(), *os.pipe(), *extra.values()]
        # Keep our own fds above any the caller asked to pass through (--preserve-fds).
        preserve_fds = options.preserve_fds
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
        fifo, report_r, report_w, go_r, go_w = moved[:5]
        given = dict(zip(extra, moved[5:]))
        errors_fd, init_console = given.get("start_errors", -1), given.get("console")

        def run_init() -> NoReturn:  # in the child: never returns into create's code
            try:
                for fd in own_fds:
                    os.close(fd)
                channels = InitChannels(report_w, go_r, fifo, joined, errors_fd, init_console)
                container_init(plan, channels, options)
            finally:
                os._exit(1)

        try:
            self.pid = spawn_init(plan.namespaces, joined, run_init, cgroup)
        except BaseException:
            for fd in moved:
                os.close(fd)
            raise
        for fd in (fifo, report_w, go_r, *moved[5:]):
            os.close(fd)
        close_namespaces(joined)
        self.report_r: int | None = report_r
        self.go_w: int | None = go_w

    def wait_ready(self, runtime_hooks: Callable[[], None] | None = None) -> None:
        """Wait for the init's report: ready, or why it cannot start. On the way, when the init
        asks (HOOKS_REQUEST, before its pivot_root), run `runtime_hooks` and answer HOOKS_DONE."""
        assert self.report_r is not None
        while True:
            report = b""
            while report not in (b"\0", HOOKS_REQUEST):
                chunk = os.read(self.report_r, 4096)
                if not chunk:
                    break
                report += chunk
            if report != HOOKS_REQUEST or runtime_hooks is None:
                break
            runtime_hooks()
            self._tell(HOOKS_DONE)
        os.close(self.report_r)
        self.report_r = None
        if report != b"\0":
            message = report.decode(errors="replace") or "the container init exited before it was ready"
            raise RunprocError(f"unable to start container process: {message}")

    def go_ahead(self) -> None:
        """Tell the init it is recorded: it may now wait for start."""
        assert self.go_w is not None
        try:
            self._tell(b"\1")
        finally:
            os.close(self.go_w)
            self.go_w = None

    def _tell(self, message: bytes) -> None:
        assert self.go_w is not None
        try:
            os.write(self.go_w, message)
        except BrokenPipeError:
            raise RunprocError("unable to start container process: the container init exited") from None

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
