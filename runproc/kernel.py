"""The one place that talks to the kernel beyond plain os calls: /proc, prctl, fds, signals."""

from __future__ import annotations

import os
import time

from runproc.errors import RunprocError


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state letter, session id, start time in clock ticks) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stream:
            raw = stream.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rfind(b")") + 2 :].split()
    # fields[0] is field 3 (state); session is field 6, starttime field 22.
    return fields[0].decode(), int(fields[3]), int(fields[19])


def process_alive(pid: int, start_time: int) -> bool:
    """Is `pid` still the process we started? A zombie or a reused pid counts as gone."""
    if pid <= 0:
        return False
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X", "x") and stat[2] == start_time


def process_start_time(pid: int) -> int:
    stat = proc_stat(pid)
    if stat is None:
        raise ProcessLookupError(pid)
    return stat[2]


def session_members(session: int, not_before: int) -> list[int]:
    """Live pids in session `session` that started no earlier than `not_before` (pid-reuse guard).

    Without a pid namespace or cgroup, the container init's session (it calls
    setsid) is how we find the processes it started.
    """
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        stat = proc_stat(int(name))
        if stat and stat[1] == session and stat[2] >= not_before and stat[0] not in ("Z", "X", "x"):
            members.append(int(name))
    return members


def signal_process(pid: int, sig: int) -> bool:
    """kill(2), returning False when the process is already gone."""
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        # A process of another user (say a setuid program of an unprivileged container).
        raise RunprocError(f"cannot send signal {sig} to process {pid}: operation not permitted") from None


def container_processes(pid: int, start_time: int) -> list[int]:
    """The container's live processes: those of its own pid namespace, else its init's session.

    With its own pid namespace, the container's processes are that namespace's
    (whatever sessions they make); once its init is gone the kernel has killed
    them all. Without one, the init's session, unless that session id is no
    longer ours: once the init is gone its pid may be reused, and if a new
    session leader has it, that session belongs to someone else.
    """
    namespace = own_pid_namespace(pid, start_time)
    if namespace is not None:
        return pid_namespace_members(namespace, start_time)
    stat = proc_stat(pid)
    if stat is not None and stat[2] != start_time and stat[1] == pid:
        return []
    return session_members(pid, start_time)


def own_pid_namespace(pid: int, start_time: int) -> str | None:
    """The pid namespace of a live init (as "pid:[inode]"), if it is not ours."""
    if not process_alive(pid, start_time):
        return None
    try:
        namespace = os.readlink(f"/proc/{pid}/ns/pid")
        mine = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return namespace if namespace != mine else None


def pid_namespace_members(namespace: str, not_before: int) -> list[int]:
    """Live pids in the pid namespace `namespace`, started no earlier than `not_before`."""
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{name}/ns/pid") != namespace:
                continue
        except OSError:
            continue
        stat = proc_stat(int(name))
        if stat and stat[2] >= not_before and stat[0] not in ("Z", "X", "x"):
            members.append(int(name))
    return members


def signal_all(pid: int, start_time: int, sig: int) -> None:
    """Signal the init (if it is still ours) and every other process of its session."""
    if process_alive(pid, start_time):
        signal_process(pid, sig)
    for member in container_processes(pid, start_time):
        if member != pid:
            signal_process(member, sig)


def wait_until_gone(pid: int, start_time: int, timeout: float) -> bool:
    """Poll until the process has exited (or is a zombie); False on timeout."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while process_alive(pid, start_time):
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    return True


# The release binary's bootloader may hand over a lock on its unpacked files in
# this variable (see runproc/__main__.py): a shared flock on a regular file or
# directory of its cache, never the caller's state. The waiting init keeps it
# (close-on-exec: the user's program never gets it).
BOOT_LOCK_ENV = "STATICX_LOCK_FD"


def boot_lock_fd() -> int | None:
    """The bootloader's lock fd, if the variable names one that is open."""
    raw = os.environ.get(BOOT_LOCK_ENV, "")
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 3:
        return None
    try:
        os.fstat(int(raw))
    except (OSError, OverflowError):
        return None
    return int(raw)


def close_fds_except(keep: set[int]) -> None:
    """Close every fd not in `keep`.

    fds leak in from the caller (containerd's shim passes sockets; anyone may
    pass a directory of the host): a waiting init must hold none of them, since
    a path like /proc/self/fd/N would lead through them out of the container.
    """
    try:
        open_fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        # No /proc: every fd number up to the limit (close_range(2) when Python has it).
        limit = os.sysconf("SC_OPEN_MAX")
        low = 0
        for fd in sorted(keep) + [limit]:
            if fd > low:
                os.closerange(low, fd)
            low = fd + 1
        return
    for fd in open_fds:
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the fd listdir itself used, closed already


def fd_above(fd: int, low: int) -> int:
    """`fd` moved to a number >= `low` (close-on-exec), the old one closed: out of --preserve-fds' range."""
    import fcntl

    if fd >= low:
        return fd
    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, low)
    finally:
        os.close(fd)


def cgroup_frozen(pid: int) -> bool:
    """Is the process in a frozen cgroup (v1 freezer FROZEN/FREEZING, or v2 cgroup.freeze 1)?

    Only a cgroup of its own can be frozen (the root cgroups cannot): a process
    left in create's cgroup is frozen only if someone froze that one.
    """
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8", errors="replace") as stream:
            lines = stream.read().splitlines()
    except OSError:
        return False
    for line in lines:
        _, controllers, path = line.split(":", 2) if line.count(":") >= 2 else ("", "", "")
        if "freezer" in controllers.split(","):
            state = _read_small(f"/sys/fs/cgroup/freezer{path}/freezer.state")
            if state in ("FROZEN", "FREEZING"):
                return True
        elif controllers == "" and path:
            for base in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
                if _read_small(f"{base}{path}/cgroup.freeze") == "1":
                    return True
    return False


def _read_small(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as stream:
            return stream.read(64).strip()
    except OSError:
        return ""
