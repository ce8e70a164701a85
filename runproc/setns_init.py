"""The exec'd process: exec's forked child, which joins the running container and becomes the program.

Its steps (runc's setns init), each reported to exec if it fails:

  1. default signal handling (dumpable is already off: exec turned it off
     before it forked, so no process of the container may open our /proc files);
  2. close every fd but stdio, --preserve-fds and our channels, before entering;
  3. join the namespaces, user first (exec forked us into the pid and time
     ones), and the init's root (runproc.linux.enter);
  4. process attributes (oom_score_adj, scheduler, ..., the AppArmor label);
  5. with a terminal: our own session, the pty from the container's devpts,
     its master sent over the console socket;
  6. cwd (not made when missing, unlike the init), umask, HOME, and the
     executable looked up as the container's user;
  7. rlimits, the user switch with capabilities and no_new_privs;
  8. seccomp (with no_new_privs) and execve: the report pipe closes on exec.

The steps are the container init's (runproc.init); only their order and the
way in differ.
"""

from __future__ import annotations

import os

from runproc import init
from runproc.errors import RunprocError
from runproc.fsutil import os_error_text
from runproc.linux import enter, security
from runproc.spec import ContainerPlan

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn


class ExecChannels:
    """What exec hands its child: the report pipe's write end, the console socket, the container's fds."""

    __slots__ = ("report", "console", "entry")

    def __init__(self, report: int, console: int | None, entry: enter.ContainerEntry) -> None:
        self.report = report
        self.console = console
        self.entry = entry


def exec_in_container(plan: ContainerPlan, channels: ExecChannels, preserve_fds: int, euid: int) -> NoReturn:
    """Run in exec's forked child; never returns."""
    try:
        executable, env = _prepare(plan, channels, preserve_fds, euid)
        init.exec_program(plan, executable, env)
    except (init.InitError, RunprocError) as err:
        _report_and_exit(channels.report, str(err))
    except OSError as err:
        _report_and_exit(channels.report, os_error_text(err))
    except Exception as err:  # noqa: BLE001 - whatever it is, exec must hear of it
        _report_and_exit(channels.report, str(err) or type(err).__name__)
    os._exit(1)


def _prepare(plan: ContainerPlan, channels: ExecChannels, preserve_fds: int, euid: int) -> tuple[str, dict[str, str]]:
    init.reset_signals()
    keep = {channels.report, *channels.entry.fds()}
    if channels.console is not None:
        keep.add(channels.console)
    init.keep_only_fds(keep, preserve_fds)
    enter.enter(channels.entry)
    if plan.security is not None:
        security.apply_early(plan.security)
    if channels.console is not None:
        os.setsid()  # the terminal's session (TIOCSCTTY needs a session leader)
        init.make_terminal(plan, channels.console, euid, mount_console=False)
    init.enter_cwd(plan, euid, create=False)
    os.umask(plan.umask)
    init.set_home(plan, euid)
    executable = init.find_executable_as_user(plan, euid)
    init.apply_rlimits(plan, euid)
    init.become_the_user(plan, euid)
    return executable, init.env_dict(plan.env)


def _report_and_exit(report_fd: int, message: str) -> NoReturn:
    try:
        os.write(report_fd, message.encode(errors="replace"))
    finally:
        os._exit(1)
