"""What `run` and `exec` do while their program runs in the foreground: pass signals on, wait, exit with its code."""

from __future__ import annotations

import _signal
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from runproc.terminal import HostTerminal

# Signals a foreground `run` or `exec` passes on to its program, as runc does.
FORWARDED = ("SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGCONT")


def forward_signals(pid: int) -> None:
    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for name in FORWARDED:
        _signal.signal(getattr(_signal, name), forward)


def exit_code(pid: int, nohang: bool = False) -> int | None:
    """Wait for our child `pid`: its exit code, or 128+N when killed by signal N (None: still running)."""
    done, wait_status = os.waitpid(pid, os.WNOHANG if nohang else 0)
    if not done:
        return None
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status)


def wait(pid: int, host_terminal: HostTerminal | None) -> int:
    """Wait for the program, joined to the caller's terminal if it has one of its own."""
    if host_terminal is not None:
        return host_terminal.relay(pid, exit_code)
    code = exit_code(pid)
    assert code is not None
    return code
