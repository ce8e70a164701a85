"""Running OCI hooks (runtime-spec config.md "POSIX-platform Hooks"), as runc 1.1 runs them.

Each hook is fork+exec'd with its `args` (argv; [path] when none) and its
`env`, the container's state JSON on its stdin; its stdout and stderr are
captured and end up only in the error message, as runc's. A hook that exits
non-zero, is killed or runs past its `timeout` (it is then killed) has failed.

Who runs what (runc 1.1's places):
  prestart, createRuntime   create, in the runtime namespaces, while the init waits
                            between its mounts and pivot_root (see init.py);
  createContainer           the init, in the container's namespaces, before pivot_root;
  startContainer            the init, after start's go, right before exec;
  poststart                 start (or run), once the program runs: failures only warn;
  poststop                  delete (and a failed create), once the processes are gone:
                            failures only warn.

The init runs hooks after it may no longer import anything: create imports
this module before it forks the init whenever the container has hooks, and
everything it uses (os, select, _signal, fcntl, time) is loaded by then.
"""

from __future__ import annotations

import _signal
import fcntl
import os
import select
import sys
import time

from runproc import OCI_VERSION, jsonio
from runproc.errors import RunprocError
from runproc.fsutil import os_error_text
from runproc.kernel import close_fds_except
from runproc.spec.hooks import Hook, HooksPlan, parse_hooks

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn

    from runproc.log import LogSettings
    from runproc.state import ContainerRecord

# Where the init tells start why a startContainer hook failed (start cannot read the init's stderr).
START_ERRORS = "start-hooks.err"
# A hook's stdout and stderr, each, as far as the error message quotes them.
MAX_OUTPUT = 4096
# Without pidfds (kernels before 5.3), how often a hook's exit is looked for.
EXIT_POLL = 0.05
# What the frozen binary's bootloaders add to our environment: never a hook's.
_OWN_PREFIXES = ("STATICX_", "_PYI_")


class HookFailed(Exception):
    """One hook failed; the text is runc's (`error running hook: exit status 3, stdout: ..., stderr: ...`)."""


def oci_state(container_id: str, status: str, pid: int, bundle: str, annotations: dict[str, str]) -> bytes:
    """The state on a hook's stdin, in runc's shape: pid and annotations only when there are any."""
    state: dict[str, object] = {"ociVersion": OCI_VERSION, "id": container_id, "status": status}
    if pid:
        state["pid"] = pid
    state["bundle"] = bundle
    if annotations:
        state["annotations"] = annotations
    return jsonio.dumps(state).encode()


def env_dict(entries: list[str]) -> dict[str, str]:
    """KEY=value entries as execve's mapping; a later KEY wins (as Go's exec dedups)."""
    return dict(entry.partition("=")[::2] for entry in entries)


def runtime_environment() -> dict[str, str]:
    """Our caller's environment without what the frozen binary's bootloaders put in (for a hook
    without `env`, which runc runs with its own environment)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(_OWN_PREFIXES)}
    if getattr(sys, "frozen", False):
        env.pop("LD_LIBRARY_PATH", None)
        original = env.pop("LD_LIBRARY_PATH_ORIG", None)
        if original is not None:
            env["LD_LIBRARY_PATH"] = original
    return env


def run_hooks(kind: str, hooks: list[Hook], state: bytes, default_env: dict[str, str], cwd: str | None) -> None:
    """Run hooks of one kind in order; the first failure stops them with runc's message."""
    for n, hook in enumerate(hooks):
        env = env_dict(hook.env) if hook.env is not None else default_env
        try:
            run_hook(hook, state, env, cwd)
        except HookFailed as err:
            raise RunprocError(f"error running {kind} hook #{n}: {err}") from None


def run_hook(hook: Hook, state: bytes, env: dict[str, str], cwd: str | None) -> None:
    """Run one hook to its end (or its timeout); HookFailed if it fails."""
    # The init resets SIGPIPE to its default: a hook that never reads its stdin must not kill it.
    saved = _signal.signal(_signal.SIGPIPE, _signal.SIG_IGN)
    fds = [*os.pipe(), *os.pipe(), *os.pipe(), *os.pipe()]
    try:
        # Above 2, so that the child's dup2 onto 0-2 never meets one of them (stdio may be closed).
        fds = [_move_up(fd) for fd in fds]
        status_r, status_w, in_r, in_w, out_r, out_w, err_r, err_w = fds
        pid = os.fork()
        if pid == 0:
            _exec_hook(hook, env, cwd, (in_r, out_w, err_w), status_w)
        for fd in (status_w, in_r, out_w, err_w):
            os.close(fd)
            fds.remove(fd)
        failure = _read_to_end(status_r)  # EOF at the exec (close-on-exec), else why not
        if failure:
            os.waitpid(pid, 0)
            raise HookFailed(failure.decode(errors="replace"))
        fds.remove(in_w)  # _supervise closes it once the state is written
        _supervise(pid, hook.timeout, state, in_w, out_r, err_r)
    finally:
        for fd in fds:
            os.close(fd)
        _signal.signal(_signal.SIGPIPE, saved)


def _move_up(fd: int) -> int:
    if fd > 2:
        return fd
    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    finally:
        os.close(fd)


def _exec_hook(hook: Hook, env: dict[str, str], cwd: str | None, stdio: tuple[int, int, int], status: int) -> NoReturn:
    """In the forked child: stdio onto the pipes, nothing else open, default signals, exec."""
    try:
        for target, fd in enumerate(stdio):
            os.dup2(fd, target)  # inheritable
        close_fds_except({0, 1, 2, status})
        for signum in (_signal.SIGPIPE, _signal.SIGXFSZ, _signal.SIGINT, _signal.SIGTERM):
            _signal.signal(signum, _signal.SIG_DFL)  # ignored ones would stay ignored across exec
        _signal.pthread_sigmask(_signal.SIG_SETMASK, [])
        if cwd is not None:
            try:
                os.chdir(cwd)
            except OSError as err:
                raise HookFailed(f"chdir {cwd}: {os_error_text(err)}") from None
        try:
            os.execve(hook.path, hook.args, env)
        except OSError as err:
            raise HookFailed(f"fork/exec {hook.path}: {os_error_text(err)}") from None
    except BaseException as err:  # noqa: BLE001 - the parent must hear why, whatever it is
        text = str(err) or type(err).__name__
        try:
            os.write(status, text.encode(errors="replace"))
        finally:
            os._exit(127)
    os._exit(127)


def _supervise(pid: int, timeout: int | None, state: bytes, in_w: int, out_r: int, err_r: int) -> None:
    """Feed the state, collect the output, wait for the exit; kill the hook at its timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    output = {out_r: bytearray(), err_r: bytearray()}
    pending = memoryview(state)
    poller = select.epoll()
    pidfd = _pidfd(pid)
    try:
        for fd in (in_w, out_r, err_r):
            os.set_blocking(fd, False)
        poller.register(in_w, select.EPOLLOUT)
        for fd in output:
            poller.register(fd, select.EPOLLIN)
        if pidfd is not None:
            poller.register(pidfd, select.EPOLLIN)
        status = None
        while status is None:
            wait = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
            if pidfd is None:
                wait = EXIT_POLL if wait < 0 else min(wait, EXIT_POLL)
            for fd, _ in poller.poll(wait):
                if fd == in_w:
                    pending = _feed(in_w, pending)
                    if not pending:
                        poller.unregister(in_w)
                        os.close(in_w)
                        in_w = -1
                elif fd in output and not _collect(fd, output[fd]):
                    poller.unregister(fd)
            waited, status = os.waitpid(pid, os.WNOHANG)
            if not waited:
                status = None
                if deadline is not None and time.monotonic() >= deadline:
                    os.kill(pid, _signal.SIGKILL)
                    os.waitpid(pid, 0)
                    raise HookFailed(f"hook ran past specified timeout of {timeout:.1f}s")
        # Whatever it wrote before it exited; a child of its own may hold the pipes open, unwaited for.
        for fd, buffer in output.items():
            _collect(fd, buffer)
    finally:
        poller.close()
        for fd in (in_w, pidfd):
            if fd is not None and fd >= 0:
                os.close(fd)
    if status != 0:
        stdout, stderr = (bytes(buffer[:MAX_OUTPUT]).decode(errors="replace") for buffer in output.values())
        raise HookFailed(f"error running hook: {_exit_text(status)}, stdout: {stdout}, stderr: {stderr}")


def _feed(fd: int, pending: memoryview) -> memoryview:
    """Write what the pipe takes; all done (empty) when the hook closed its stdin."""
    try:
        return pending[os.write(fd, pending[:65536]):]
    except BlockingIOError:
        return pending
    except OSError:
        return pending[:0]  # EPIPE: it does not read its stdin, which is its right


def _collect(fd: int, buffer: bytearray) -> bool:
    """Read what is there (keeping the first MAX_OUTPUT bytes); False at EOF."""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not chunk:
            return False
        buffer += chunk[: max(0, MAX_OUTPUT - len(buffer))]


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _read_to_end(fd: int) -> bytes:
    data = b""
    while chunk := os.read(fd, 4096):
        data += chunk
    return data


def _exit_text(status: int) -> str:
    """Go's ExitError text: `exit status N`, or `signal: killed` (lower-case strsignal)."""
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        name = _signal.strsignal(signum) or f"signal {signum}"
        core = " (core dumped)" if os.WCOREDUMP(status) else ""
        return f"signal: {name[:1].lower()}{name[1:]}{core}"
    return f"exit status {os.WEXITSTATUS(status)}"


# --- the runtime's side: create, start and delete -------------------------------------------


def recorded_hooks(record: ContainerRecord) -> HooksPlan | None:
    """The hooks create recorded for start and delete."""
    return parse_hooks(record.hooks, "state record hooks") if record.hooks else None


def start_wait(plan: HooksPlan | None, default: float) -> float | None:
    """How long start waits for the exec: longer by the startContainer hooks' timeouts, or for
    ever if one has none (runc's start waits as long as they run)."""
    hooks = plan.of("startContainer") if plan is not None else []
    if any(hook.timeout is None for hook in hooks):
        return None
    return default + sum(hook.timeout or 0 for hook in hooks)


def run_warning_hooks(kind: str, hooks: list[Hook], state: bytes, log: LogSettings | None,
                      cwd: str | None) -> None:
    """poststart or poststop, in the runtime namespaces: a failure is a warning, never the operation's."""
    try:
        run_hooks(kind, hooks, state, runtime_environment(), cwd)
    except RunprocError as err:
        from runproc.log import report_warning

        report_warning(log, err.message)


def recorded_warning_hooks(kind: str, record: ContainerRecord, status: str, cwd: str | None) \
        -> Callable[[LogSettings | None], None]:
    """poststart or poststop as create recorded them, with the state as it is now (under the
    container's lock); run the result once the lock is released, if need be."""
    plan = recorded_hooks(record)
    hooks = plan.of(kind) if plan is not None else []
    state = oci_state(record.id, status, record.pid if status != "stopped" else 0, record.bundle,
                      record.annotations)
    return lambda log: run_warning_hooks(kind, hooks, state, log, cwd) if hooks else None


def read_start_errors(dir_fd: int) -> str:
    """What the init wrote into START_ERRORS (empty: no startContainer hook failed)."""
    try:
        fd = os.open(START_ERRORS, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return ""
    try:
        return os.read(fd, 1 << 16).decode(errors="replace")
    finally:
        os.close(fd)
