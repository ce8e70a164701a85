"""Apply a CapabilityPlan in the container init, the way runc 1.1 does.

The order matters, and is runc's (libcontainer/init_linux.go finalizeNamespace):

1. apply_bounding(): drop what is not in the bounding set (PR_CAPBSET_DROP
   needs CAP_SETPCAP, so this is done while still root), then PR_SET_KEEPCAPS
   so that the permitted set survives a setuid() to a non-root user.
2. the caller switches user (setgroups, setgid, setuid).
3. apply_after_user_switch(): clear KEEPCAPS, capset(effective, permitted,
   inheritable), then the ambient set: the only way a non-root process keeps
   capabilities across execve.

As in runc, inheritable stays empty unless the spec fills it (CVE-2022-29162),
a bounding drop the kernel rejects with EINVAL (a capability it lacks) is
skipped, and an ambient capability the kernel refuses to raise (not in both
permitted and inheritable) is silently left out: gocapability ignores those
errors. check_available() predicts, in create, the capset() failures that
runc would only report from its init ("unable to apply caps: operation not
permitted"), naming the capability.

Nothing here imports anything when called: the init may be past pivot_root.
"""

from __future__ import annotations

import errno

from runproc.errors import RunprocError
from runproc.linux import syscalls
from runproc.spec.security import CAP_SETPCAP, CapabilityPlan

PR_CAP_AMBIENT_LOWER = 3


def apply_bounding(caps: CapabilityPlan) -> None:
    """Drop the capabilities outside the bounding set and keep the rest across the user switch."""
    effective, _, _ = syscalls.capget()
    if effective >> CAP_SETPCAP & 1:  # without CAP_SETPCAP gocapability leaves the bounding set alone
        for number in range(caps.last_cap + 1):
            if caps.bounding >> number & 1:
                continue
            try:
                syscalls.prctl(syscalls.PR_CAPBSET_DROP, number)
            except OSError as err:
                if err.errno != errno.EINVAL:
                    raise OSError(err.errno, f"unable to apply bounding set: {err.strerror}") from None
    syscalls.prctl(syscalls.PR_SET_KEEPCAPS, 1)


def apply_after_user_switch(caps: CapabilityPlan) -> None:
    """Set effective, permitted and inheritable, then the ambient set; call after setuid()."""
    syscalls.prctl(syscalls.PR_SET_KEEPCAPS, 0)
    try:
        syscalls.capset(caps.effective, caps.permitted, caps.inheritable)
    except OSError as err:
        raise OSError(err.errno, f"unable to apply caps: {err.strerror}") from None
    for number in range(caps.last_cap + 1):
        action = syscalls.PR_CAP_AMBIENT_RAISE if caps.ambient >> number & 1 else PR_CAP_AMBIENT_LOWER
        try:
            syscalls.prctl(syscalls.PR_CAP_AMBIENT, action, number)
        except OSError:
            pass  # as runc: an ambient capability the kernel refuses is left out


def check_available(caps: CapabilityPlan, current: tuple[int, int, int, int] | None = None) -> None:
    """Fail now if capset() in the init would: the spec asks for what the init will not have.

    `current` is (effective, permitted, inheritable, bounding), by default this
    process's, which the init inherits. The rules are the kernel's
    (security/commoncap.c cap_capset), applied to the state the init has
    after apply_bounding() and the user switch.
    """
    if current is None:
        current = (*syscalls.capget(), _current_bounding(caps.last_cap))
    effective, permitted, inheritable, bounding = current
    new_bounding = bounding & caps.bounding if effective >> CAP_SETPCAP & 1 else bounding
    for kind, mask, allowed in (
        ("permitted", caps.permitted, permitted),
        # pI may only grow within the bounding set, and (once setuid has cleared pE) within pP.
        ("inheritable", caps.inheritable, inheritable | (new_bounding & permitted)),
    ):
        missing = mask & ~allowed
        if missing:
            name = caps.names(missing)[0]
            raise RunprocError(
                f"unable to apply caps: operation not permitted (process.capabilities.{kind}: {name} "
                "is not available to runproc on this host)"
            )


def _current_bounding(last_cap: int) -> int:
    mask = 0
    for number in range(last_cap + 1):
        if syscalls.prctl(syscalls.PR_CAPBSET_READ, number) == 1:
            mask |= 1 << number
    return mask
