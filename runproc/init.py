"""The container init: the forked child of create that becomes the user's program.

Its steps, in runc's order (each one that fails is reported to create, which
then fails and leaves nothing behind):

  1. its own session, default signal handling, not dumpable;
  2. close every fd of the caller but stdio, --preserve-fds, its channels,
     the namespaces it joins and the bootloader's lock;
  3. enter the namespaces (create has already put it in the pid and time ones);
  4. process attributes that need root (oom_score_adj, personality, ...);
  5. the root filesystem: mounts, devices, [hooks: create runs prestart and
     createRuntime while the init waits, then the init runs createContainer],
     pivot_root (chroot without a mount namespace), the terminal
     (process.terminal), hostname, read-only root,
     sysctl, read-only and masked paths;
  6. cwd, umask, HOME, and the executable looked up as the container's user;
  7. rlimits (late: small ones must not starve the init's own work);
  8. the user switch with the capability sets, no_new_privs and seccomp;
  9. report ready; wait for create's go-ahead, then for start's go;
     [hooks: startContainer]; exec.

The report pipe carries one more message when the container has prestart or
createRuntime hooks: HOOKS_REQUEST from the init, before pivot_root; create
runs those hooks and answers HOOKS_DONE on the go pipe (or kills the init).

After the report it imports nothing and opens nothing: create, and with it the
frozen binary's unpacked files, may be gone by then, and the root has moved.

The steps that an exec'd process shares with the init (runproc.setns_init) are
the public functions here.
"""

from __future__ import annotations

import _signal
import os
import resource
import select
import stat

from runproc.fsutil import os_error_text
from runproc.kernel import boot_lock_fd, close_fds_except
from runproc import terminal
from runproc.linux import namespaces, rootfs, security, syscalls
from runproc.spec import ContainerPlan
from runproc.spec.process import RLIMITS

RLIMIT_NAMES = {number: name for name, number in RLIMITS.items()}

# The init's one question before its report (see the docstring), and create's answer.
HOOKS_REQUEST = b"\2"
HOOKS_DONE = b"\2"

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn


class InitError(Exception):
    """A failure to report to create as `unable to start container process: ...`."""


class InitChannels:
    """What create hands the init: report (to create), go (from create), exec fifo (from start),
    the fds of the namespaces it joins, where a startContainer hook's failure goes, and the
    connected console socket (process.terminal)."""

    __slots__ = ("report", "go", "exec_fifo", "joined", "start_errors", "console")

    def __init__(self, report: int, go: int, exec_fifo: int, joined: dict[str, int], start_errors: int = -1,
                 console: int | None = None) -> None:
        self.report = report
        self.go = go
        self.exec_fifo = exec_fifo  # the fifo's read end, opened by create
        self.joined = joined
        self.start_errors = start_errors  # hooks.START_ERRORS, opened by create (-1: no startContainer hooks)
        self.console = console


class InitOptions:
    """create's own flags that reach the init, and the container's id (for its hooks' state)."""

    __slots__ = ("preserve_fds", "no_pivot", "container_id")

    def __init__(self, preserve_fds: int, no_pivot: bool, container_id: str = "") -> None:
        self.preserve_fds = preserve_fds
        self.no_pivot = no_pivot
        self.container_id = container_id


class Launch:
    """What the exec needs, all built before the rlimits apply (the init allocates nothing after)."""

    __slots__ = ("executable", "args", "env", "start_poller")

    def __init__(self, executable: str, plan: ContainerPlan, exec_fifo: int) -> None:
        self.executable = executable
        self.args = plan.args
        self.env = env_dict(plan.env)
        # epoll, not poll: poll(2) fails with EINVAL under an RLIMIT_NOFILE of 0.
        self.start_poller = select.epoll(1)
        self.start_poller.register(exec_fifo, select.EPOLLIN)


def container_init(plan: ContainerPlan, channels: InitChannels, options: InitOptions) -> NoReturn:
    """Run in the forked child; never returns."""
    euid = os.geteuid()
    try:
        launch = _prepare(plan, channels, options, euid)
    except InitError as err:
        _report_and_exit(channels.report, str(err))
    except OSError as err:
        _report_and_exit(channels.report, os_error_text(err))
    except Exception as err:  # noqa: BLE001 - whatever it is, create must hear of it
        _report_and_exit(channels.report, str(err) or type(err).__name__)
    os.write(channels.report, b"\0")
    os.close(channels.report)
    # create records us, then says go; if it dies first, we end too (no orphan waiting forever).
    if os.read(channels.go, 1) != b"\1":
        os._exit(1)
    os.close(channels.go)
    _wait_for_start(channels.exec_fifo, launch)
    _exec(plan, launch, channels, options)


def _prepare(plan: ContainerPlan, channels: InitChannels, options: InitOptions, euid: int) -> Launch:
    """Steps 1 to 8 of the module docstring; each failure is reported to create."""
    os.setsid()  # the container gets its own session: `kill --all` finds its processes by it
    reset_signals()
    keep = {channels.report, channels.go, channels.exec_fifo, *channels.joined.values()}
    if channels.console is not None:
        keep.add(channels.console)
    if channels.start_errors >= 0:
        keep.add(channels.start_errors)
    keep_only_fds(keep, options.preserve_fds)
    if plan.namespaces is not None:
        namespaces.enter(plan.namespaces, channels.joined)
    namespaces.close_all(channels.joined)
    if plan.security is not None:
        security.apply_early(plan.security)
    _enter_root(plan, channels, options, euid)
    enter_cwd(plan, euid, create=True)
    os.umask(plan.umask)
    set_home(plan, euid)
    launch = Launch(find_executable_as_user(plan, euid), plan, channels.exec_fifo)
    apply_rlimits(plan, euid)
    become_the_user(plan, euid)
    # While it waits, no process of the container (or one sharing its pid namespace)
    # may ptrace it or open its /proc files (exe, fds, memory): as runc's init. (Set
    # last: the setup above reads its own /proc/self, which this would make root's.)
    syscalls.prctl(syscalls.PR_SET_DUMPABLE, 0)
    return launch


def reset_signals() -> None:
    """Default handling for what Python changed (ignored signals survive exec), nothing blocked."""
    # Python ignores SIGPIPE and SIGXFSZ and traps SIGINT; ignored signals survive exec.
    for signum in (_signal.SIGPIPE, _signal.SIGXFSZ, _signal.SIGINT, _signal.SIGTERM):
        _signal.signal(signum, _signal.SIG_DFL)
    _signal.pthread_sigmask(_signal.SIG_SETMASK, [])


def keep_only_fds(channels: set[int], preserve_fds: int) -> None:
    """Close every fd but stdio, --preserve-fds, our `channels` (joined namespaces too) and the bootloader's lock.

    The caller's other fds (a directory of the host, say) must not be open
    while we enter the container and wait: /proc/self/fd/N would lead out
    through them. The bootloader's lock (kernel.BOOT_LOCK_ENV) is a regular
    file of its cache, close-on-exec; the cwd check in enter_cwd keeps even
    a directory from being used as a way out.
    """
    preserved = range(3, 3 + preserve_fds)
    keep = {0, 1, 2, *channels, *preserved}
    boot_lock = boot_lock_fd()
    if boot_lock is not None:
        keep.add(boot_lock)
    close_fds_except(keep)
    for fd in preserved:
        try:
            os.set_inheritable(fd, True)
        except OSError:
            pass
    if boot_lock is not None:
        os.set_inheritable(boot_lock, False)  # never the program's, even if among --preserve-fds


def _enter_root(plan: ContainerPlan, channels: InitChannels, options: InitOptions, euid: int) -> None:
    """Into the container's root: its own file system tree (a mount namespace), or a chroot.

    The create-time hooks run once the mounts exist, before the root changes; the
    terminal is made in the new root, before its final touches (runc's order).
    """
    setup = plan.rootfs_setup
    hooks = None if plan.hooks is None else lambda: _create_hooks(plan, channels, options)
    if setup is not None:
        user_namespace = plan.namespaces is not None and plan.namespaces.private("user")
        rootfs.setup_rootfs(setup, plan.rootfs, user_namespace=user_namespace, no_pivot=options.no_pivot,
                            before_pivot=hooks)
        if channels.console is not None:
            make_terminal(plan, channels.console, euid, mount_console=True)
        rootfs.finalize_rootfs(setup)
    else:
        if hooks is not None:
            _run_in_rootfs(plan, hooks)  # no mount namespace: right before the chroot (none in host mode)
        if plan.contained:
            try:
                os.chroot(plan.rootfs)
                os.chdir("/")
            except OSError as err:
                raise InitError(f"chroot {plan.rootfs}: {os_error_text(err)}") from None
        if channels.console is not None:
            make_terminal(plan, channels.console, euid, mount_console=False)  # no mount namespace of its own
    if plan.namespaces is not None:
        namespaces.set_names(plan.namespaces)
        namespaces.write_sysctls(plan.namespaces)
    if setup is not None:
        rootfs.restrict_paths(setup)


def _run_in_rootfs(plan: ContainerPlan, hooks: Callable[[], None]) -> None:
    """The create-time hooks with the rootfs as cwd, as setup_rootfs runs them (in host mode,
    where the rootfs need not exist, in the caller's cwd)."""
    if plan.contained:
        try:
            os.chdir(plan.rootfs)
        except OSError as err:
            raise InitError(f"chdir {plan.rootfs}: {os_error_text(err)}") from None
    hooks()


def _create_hooks(plan: ContainerPlan, channels: InitChannels, options: InitOptions) -> None:
    """runc's order before pivot_root: create runs prestart and createRuntime in the runtime's
    namespaces while we wait, then we run createContainer in the container's."""
    if plan.hooks_of("prestart") or plan.hooks_of("createRuntime"):
        os.write(channels.report, HOOKS_REQUEST)
        if os.read(channels.go, 1) != HOOKS_DONE:
            os._exit(1)  # they failed, or create died: create (if alive) reports why
    hooks = plan.hooks_of("createContainer")
    if hooks:
        from runproc import hooks as runner  # loaded by create before the fork

        # pid as the hook sees us (1 in a new pid namespace), as runc's Getpid().
        state = runner.oci_state(options.container_id, "creating", os.getpid(), plan.bundle, plan.annotations)
        runner.run_hooks("createContainer", hooks, state, runner.env_dict(plan.env), None)


def make_terminal(plan: ContainerPlan, console: int, euid: int, mount_console: bool) -> None:
    """The pty from the container's /dev/ptmx, its master sent over `console` (see runproc.terminal)."""
    try:
        terminal.setup_console(console, plan.console_size, plan.uid if euid == 0 else euid, mount_console)
    except OSError as err:
        raise InitError(f"setting up the terminal: {os_error_text(err)}") from None


def enter_cwd(plan: ContainerPlan, euid: int, create: bool) -> None:
    """chdir to process.cwd; the init (`create`) makes it first if missing, as runc does."""
    contained = plan.contained
    if contained and create:
        _make_cwd(plan.cwd)
    try:
        os.chdir(plan.cwd)
    except OSError as err:
        raise InitError(f"chdir to cwd ({plan.cwd!r}) set in config.json failed: {os_error_text(err)}") from None
    if contained:
        # A cwd reached through an fd of the host (/proc/self/fd/N) lies outside
        # our root: getcwd fails for it (glibc: ENOENT for "(unreachable)").
        try:
            inside = os.getcwd().startswith("/")
        except OSError:
            inside = False
        if not inside:
            raise InitError(f"cwd ({plan.cwd!r}) set in config.json is outside the container's root: refused")


def _make_cwd(cwd: str) -> None:
    """runc creates a missing cwd inside the container's root. One level at a time, no recursion."""
    path = ""
    for part in cwd.split("/"):
        if part:
            path += "/" + part
            try:
                os.mkdir(path, 0o755)
            except OSError:
                pass  # there already, or the chdir that follows says what is wrong


def supplementary_groups(plan: ContainerPlan) -> list[int] | None:
    """The groups to set, or None where the kernel forbids setgroups: in a user namespace
    whose setgroups is "deny" (a rootless one). runc leaves them alone there too."""
    try:
        with open("/proc/self/setgroups", "rb") as stream:
            if stream.read().strip() == b"deny":
                return None
    except OSError:
        pass
    return plan.additional_gids


def _set_groups(groups: list[int] | None) -> None:
    if groups is not None:
        os.setgroups(groups)


def set_home(plan: ContainerPlan, euid: int) -> None:
    if not plan.has_env("HOME"):
        # As runc: HOME from the container's /etc/passwd, else "/".
        plan.env = [*plan.env, f"HOME={home_directory(plan.uid if euid == 0 else euid)}"]


def find_executable_as_user(plan: ContainerPlan, euid: int) -> str:
    """Look the program up with the container user's permissions, as runc does after switching."""
    switch_user = euid == 0 and (plan.uid or plan.gid)
    if switch_user:
        _set_groups(supplementary_groups(plan))
        os.setegid(plan.gid)
        os.seteuid(plan.uid)
    try:
        return find_executable(plan.args[0], plan.path_env())
    finally:
        if switch_user:
            os.seteuid(0)
            os.setegid(0)


def find_executable(name: str, path_env: str | None) -> str:
    """Resolve args[0] as Go's exec.LookPath does (which is what runc does), with its messages."""
    if "/" in name:
        _check_executable(name, name)
        return name
    for directory in path_env.split(":") if path_env else []:
        candidate = os.path.join(directory or ".", name)
        try:
            _check_executable(candidate, name)
            return candidate
        except InitError:
            continue
    raise InitError(f'exec: "{name}": executable file not found in $PATH')


def _check_executable(path: str, name: str) -> None:
    try:
        info = os.stat(path)
    except OSError as err:
        raise InitError(f'exec: "{name}": stat {path}: {os_error_text(err)}') from None
    # Go's LookPath (runc 1.1): a directory, or a file without an x bit, is "permission denied".
    if stat.S_ISDIR(info.st_mode) or not info.st_mode & 0o111:
        raise InitError(f'exec: "{name}": permission denied')


def apply_rlimits(plan: ContainerPlan, euid: int) -> None:
    if euid != 0:
        return
    for kind, soft, hard in plan.rlimits:
        try:
            resource.setrlimit(kind, (soft, hard))
        except (OSError, ValueError) as err:
            raise InitError(f"setrlimit {RLIMIT_NAMES.get(kind, kind)}: {err}") from None


def become_the_user(plan: ContainerPlan, euid: int) -> None:
    """The user switch, with the security plan's steps around it (runc's finalizeNamespace).

    Done before the report, as runc does, so that a refusal fails create, not
    start. Only a seccomp filter under no_new_privs waits until right before exec.
    """
    sec = plan.security
    if sec is not None:
        security.before_user_switch(sec, plan.no_new_privileges)
    if euid == 0:
        _set_groups(supplementary_groups(plan))
        os.setgid(plan.gid)
        os.setuid(plan.uid)
    if sec is not None:
        security.after_user_switch(sec, plan.no_new_privileges, load_filter=False)
    elif plan.no_new_privileges:
        syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)


def home_directory(uid: int, passwd: str = "/etc/passwd") -> str:
    """The home of `uid` in a passwd file (read directly: NSS modules are not there in a chroot).

    Only a regular file is read, and only its first MiB: the rootfs is not ours
    to trust (a fifo there would block create forever).
    """
    try:
        fd = os.open(passwd, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError:
        return "/"
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "/"
        content = os.read(fd, 1 << 20).decode("utf-8", "replace")
    except OSError:
        return "/"
    finally:
        os.close(fd)
    for line in content.splitlines():
        fields = line.split(":")
        if len(fields) >= 6 and fields[2] == str(uid) and fields[5]:
            return fields[5]
    return "/"


def _wait_for_start(exec_fifo: int, launch: Launch) -> None:
    """Block until start writes its go into the fifo; end if start vanishes without one."""
    launch.start_poller.poll(-1, 1)
    try:
        go = os.read(exec_fifo, 1)
    except OSError:
        go = b""
    if go != b"1":
        os._exit(1)  # start died before its go (the fifo is gone or not): never run the program


def _exec(plan: ContainerPlan, launch: Launch, channels: InitChannels, options: InitOptions) -> NoReturn:
    try:
        start_hooks = (lambda: _start_hooks(plan, launch, channels, options)) if plan.hooks_of("startContainer") \
            else None
        exec_program(plan, launch.executable, launch.env, before_exec=start_hooks)
    except Exception as err:  # noqa: BLE001 - past start, the container's stderr is all we have
        text = os_error_text(err) if isinstance(err, OSError) else f"{type(err).__name__}: {err}"
        os.write(2, f"runproc init: exec {plan.args[0]}: {text}\n".encode(errors="replace"))
    os._exit(127)


def _start_hooks(plan: ContainerPlan, launch: Launch, channels: InitChannels, options: InitOptions) -> None:
    """startContainer, in the container as its user; a failure goes to start (and our stderr, as runc's)."""
    from runproc import hooks as runner  # loaded by create before the fork

    state = runner.oci_state(options.container_id, "created", os.getpid(), plan.bundle, plan.annotations)
    try:
        runner.run_hooks("startContainer", plan.hooks_of("startContainer"), state, launch.env, None)
    except Exception as err:  # noqa: BLE001 - never run the program after a failed hook
        message = str(err).encode(errors="replace")
        try:
            os.write(channels.start_errors, message)
            os.write(2, message + b"\n")
        finally:
            os._exit(1)


def exec_program(plan: ContainerPlan, executable: str, env: dict[str, str],
                 before_exec: Callable[[], None] | None = None) -> NoReturn:
    """The last step: with no_new_privs the seccomp filter goes in now (it need not allow our own
    steps), then `before_exec` (the startContainer hooks, after the filter as runc), then execve.
    Raises what execve raises."""
    sec = plan.security
    if sec is not None and sec.seccomp_program is not None and plan.no_new_privileges:
        security.load_seccomp(sec)
    if before_exec is not None:
        before_exec()
    os.execve(executable, plan.args, env)


def env_dict(env: list[str]) -> dict[str, str]:
    result = {}
    for entry in env:
        key, _, value = entry.partition("=")
        result[key] = value
    return result


def _report_and_exit(report_fd: int, message: str) -> NoReturn:
    try:
        os.write(report_fd, message.encode(errors="replace"))
    finally:
        os._exit(1)
