"""The order in which create and the init apply a SecurityPlan (runc 1.1's order).

    create (parent, before fork)      prepare(security, euid)
    init, before reporting to create  apply_early(security)
    init, after start, still root     before_user_switch(security, no_new_privileges)
    init                              <setgroups, setgid, setuid>
    init, right before execve         after_user_switch(security, no_new_privileges)

Import this module (it pulls in ctypes through runproc.linux.syscalls) before
fork/pivot_root; nothing here imports anything when called.
"""

from __future__ import annotations

from runproc.linux import process_attrs, syscalls
from runproc.linux.capabilities import (
    apply_after_user_switch,
    apply_bounding,
    check_available,
)
from runproc.linux.seccomp import compile_filter
from runproc.spec.security import SecurityPlan


def prepare(security: SecurityPlan, euid: int) -> None:
    """In create: compile the seccomp filter and check the capabilities against what we have.

    Raises RunprocError; afterwards only kernel refusals nobody can predict are left.
    """
    if security.seccomp is not None:
        security.seccomp_program = compile_filter(security.seccomp)
    if euid == 0:
        check_available(security.capabilities)


def apply_early(security: SecurityPlan) -> None:
    """Attributes that need privileges or must fail at create: oom_score_adj (before setuid,
    as in runc's nsexec), personality, I/O priority, scheduler, the initial CPU affinity and
    the AppArmor exec label. Call while root, before the report to create."""
    if security.cpu_affinity_initial is not None:
        process_attrs.set_cpu_affinity(security.cpu_affinity_initial, "initial")
    if security.oom_score_adj is not None:
        process_attrs.set_oom_score_adj(security.oom_score_adj)
    if security.personality is not None:
        process_attrs.set_personality(security.personality)
    if security.io_priority is not None:
        process_attrs.set_io_priority(security.io_priority)
    if security.scheduler is not None:
        process_attrs.set_scheduler(security.scheduler)
    if security.apparmor_profile:
        process_attrs.set_apparmor_exec_profile(security.apparmor_profile)


def before_user_switch(security: SecurityPlan, no_new_privileges: bool) -> None:
    """Still root: without no_new_privs the filter needs CAP_SYS_ADMIN, so it goes in now
    (runc does the same); then the bounding set, and KEEPCAPS for the switch."""
    if security.seccomp_program is not None and not no_new_privileges:
        load_seccomp(security)
    apply_bounding(security.capabilities)


def after_user_switch(security: SecurityPlan, no_new_privileges: bool, load_filter: bool = True) -> None:
    """The capability sets, no_new_privs, the final CPU affinity, and, with no_new_privs,
    the seccomp filter as the very last step before execve (`load_filter=False`: the
    caller loads it later itself, with load_seccomp)."""
    apply_after_user_switch(security.capabilities)
    if no_new_privileges:
        syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)
    if security.cpu_affinity_final is not None:
        process_attrs.set_cpu_affinity(security.cpu_affinity_final, "final")
    if security.seccomp_program is not None and no_new_privileges and load_filter:
        load_seccomp(security)


def load_seccomp(security: SecurityPlan) -> None:
    """Install the filter compiled by prepare() on this thread, with the spec's flags."""
    assert security.seccomp_program is not None and security.seccomp is not None
    try:
        syscalls.seccomp_set_mode_filter(security.seccomp_program, security.seccomp.flags)
    except OSError as err:
        raise OSError(err.errno, f"unable to init seccomp: {err.strerror}") from None
