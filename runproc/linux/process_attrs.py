"""The small per-process attributes the init sets: oom_score_adj, personality,
I/O priority, scheduler, CPU affinity and the AppArmor exec label.

Each takes what runproc.spec.security checked and raises OSError with a
message in runc's words. Nothing here imports anything when called.
"""

from __future__ import annotations

import os

from runproc.linux import syscalls

IOPRIO_WHO_PROCESS = 1


def _write_proc(path: str, text: str, what: str) -> None:
    """Write `text` to a /proc file; OSError "<what>: <strerror>"."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    except OSError as err:
        raise OSError(err.errno, f"{what}: {err.strerror}") from None


def set_oom_score_adj(value: int) -> None:
    """As runc (nsexec), before the user switch; lowering it needs CAP_SYS_RESOURCE, and fails without."""
    _write_proc("/proc/self/oom_score_adj", str(value), "failed to update /proc/self/oom_score_adj")


def set_personality(persona: int) -> None:
    try:
        syscalls.personality(persona)
    except OSError as err:
        raise OSError(err.errno, f"unable to set personality: {err.strerror}") from None


def set_io_priority(ioprio: int) -> None:
    try:
        syscalls.ioprio_set(IOPRIO_WHO_PROCESS, 0, ioprio)
    except OSError as err:
        raise OSError(err.errno, f"failed to set io priority: {err.strerror}") from None


def set_scheduler(attr: tuple[int, int, int, int, int, int, int]) -> None:
    policy, flags, nice, priority, runtime, deadline, period = attr
    try:
        syscalls.sched_setattr(0, policy, flags, nice, priority, runtime, deadline, period)
    except OSError as err:
        raise OSError(err.errno, f"error setting scheduler: {err.strerror}") from None


def set_cpu_affinity(cpus: frozenset[int], which: str) -> None:
    """`which` is "initial" or "final", for the message."""
    try:
        os.sched_setaffinity(0, cpus)
    except OSError as err:
        raise OSError(err.errno, f"error setting {which} CPU affinity: {err.strerror}") from None


def set_apparmor_exec_profile(profile: str) -> None:
    """Ask AppArmor to confine the next execve() with `profile` (what runc's apparmor.ApplyProfile does)."""
    path = "/proc/self/attr/apparmor/exec"
    if not os.path.exists(path):
        path = "/proc/self/attr/exec"
    _write_proc(path, f"exec {profile}", f"apparmor failed to apply profile: write {path}")
