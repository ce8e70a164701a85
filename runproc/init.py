"""The container init: the forked child of create that becomes the user's program.

It prepares everything that can fail (rlimits, chroot, cwd, finding the
executable) and reports the outcome to create over a pipe. Then it blocks
opening the exec fifo until `start` opens the other end, drops privileges and
execs. After the report it imports nothing: create, and with it the frozen
binary's unpacked files, may be gone by then.
"""

from __future__ import annotations

import _signal
import os
import resource
import stat

from runproc.fsutil import os_error_text
from runproc.kernel import close_other_fds_on_exec
from runproc.spec import ContainerPlan
from runproc.state import EXEC_FIFO

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn


class InitError(Exception):
    """A failure to report to create as `unable to start container process: ...`."""


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


def _prepare(plan: ContainerPlan, euid: int) -> tuple[str, Callable[[], None] | None]:
    """Everything that may fail before the program may run. Returns (executable, no_new_privs setter)."""
    os.setsid()  # the container gets its own session: `kill --all` finds its processes by it
    # Python ignores SIGPIPE and SIGXFSZ and traps SIGINT; ignored signals survive exec.
    for signum in (_signal.SIGPIPE, _signal.SIGXFSZ, _signal.SIGINT, _signal.SIGTERM):
        _signal.signal(signum, _signal.SIG_DFL)
    _signal.pthread_sigmask(_signal.SIG_SETMASK, [])
    no_new_privs = None
    if plan.no_new_privileges:
        # Before chroot: after it, the modules' files are out of reach.
        from runproc.kernel import no_new_privs_setter

        no_new_privs = no_new_privs_setter()
    if euid == 0:
        for kind, soft, hard in plan.rlimits:
            try:
                resource.setrlimit(kind, (soft, hard))
            except (OSError, ValueError) as err:
                raise InitError(f"setrlimit {kind}: {err}") from None
    if plan.chroots(euid):
        try:
            os.chroot(plan.rootfs)
            os.chdir("/")
        except OSError as err:
            raise InitError(f"chroot {plan.rootfs}: {os_error_text(err)}") from None
        # runc creates a missing cwd inside the container's root.
        try:
            os.makedirs(plan.cwd, 0o755, exist_ok=True)
        except OSError:
            pass
    try:
        os.chdir(plan.cwd)
    except OSError as err:
        raise InitError(f"chdir to cwd ({plan.cwd!r}) set in config.json failed: {os_error_text(err)}") from None
    os.umask(plan.umask)
    if not plan.has_env("HOME"):
        # As runc: HOME from the container's /etc/passwd, else "/".
        plan.env = [*plan.env, f"HOME={home_directory(plan.uid if euid == 0 else euid)}"]
    # Look the program up with the container user's permissions, as runc does
    # after switching. The real switch comes after start: the fifo lives in
    # root's state directory.
    switch_user = euid == 0 and (plan.uid or plan.gid)
    if switch_user:
        os.setgroups(plan.additional_gids)
        os.setegid(plan.gid)
        os.seteuid(plan.uid)
    try:
        executable = find_executable(plan.args[0], plan.path_env())
    finally:
        if switch_user:
            os.seteuid(0)
            os.setegid(0)
    return executable, no_new_privs


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


def container_init(plan: ContainerPlan, state_dir_fd: int, report_fd: int, go_fd: int,
                   preserve_fds: int) -> NoReturn:
    """Run in the forked child; never returns."""
    euid = os.geteuid()
    try:
        close_other_fds_on_exec(3 + preserve_fds)
        for fd in range(3, 3 + preserve_fds):
            try:
                os.set_inheritable(fd, True)
            except OSError:
                pass
        executable, no_new_privs = _prepare(plan, euid)
    except InitError as err:
        _report_and_exit(report_fd, str(err))
    except Exception as err:  # noqa: BLE001 - whatever it is, create must hear of it
        _report_and_exit(report_fd, f"{type(err).__name__}: {err}")
    os.write(report_fd, b"\0")
    os.close(report_fd)
    # create records us, then says go; if it dies first, we end too (no orphan waiting forever).
    if os.read(go_fd, 1) != b"\1":
        os._exit(1)
    os.close(go_fd)

    # Blocks until `start` opens the fifo for reading (openat: the fifo is outside our new root).
    fifo = os.open(EXEC_FIFO, os.O_WRONLY | os.O_CLOEXEC, dir_fd=state_dir_fd)
    os.close(state_dir_fd)
    try:
        if euid == 0:
            os.setgroups(plan.additional_gids)
            os.setgid(plan.gid)
            os.setuid(plan.uid)
        if no_new_privs is not None:
            no_new_privs()
        os.write(fifo, b"0")  # tells start that the program is about to run
        os.execve(executable, plan.args, _env_dict(plan.env))
    except Exception as err:  # noqa: BLE001 - past start, the container's stderr is all we have
        text = os_error_text(err) if isinstance(err, OSError) else f"{type(err).__name__}: {err}"
        os.write(2, f"runproc init: exec {plan.args[0]}: {text}\n".encode(errors="replace"))
    os._exit(127)


def _env_dict(env: list[str]) -> dict[str, str]:
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
