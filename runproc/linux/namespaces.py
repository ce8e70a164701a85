"""Entering the container's namespaces: joined ones by path, new ones by unshare.

Two kinds take effect only for the caller's children: pid and time. create
enters those itself just around the fork of the init (`for_children`), so
that the init is born in them (pid 1 of a new pid namespace) while create
itself, and whatever it runs later, stays in the host's. The init then
enters the others itself (`enter`): joins first, then unshares, as runc does.
Joined paths are opened and their type checked at create, before any fork.
"""

from __future__ import annotations

import fcntl
import os

from runproc.errors import RunprocError
from runproc.fsutil import os_error_text
from runproc.linux import syscalls
from runproc.spec.namespaces import IdMapping, NamespacePlan

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

# The spec's namespace names -> clone(2) flags.
CLONE_FLAGS = {
    "user": syscalls.CLONE_NEWUSER,
    "ipc": syscalls.CLONE_NEWIPC,
    "uts": syscalls.CLONE_NEWUTS,
    "network": syscalls.CLONE_NEWNET,
    "pid": syscalls.CLONE_NEWPID,
    "mount": syscalls.CLONE_NEWNS,
    "cgroup": syscalls.CLONE_NEWCGROUP,
    "time": syscalls.CLONE_NEWTIME,
}
_NAMES = {flag: name for name, flag in CLONE_FLAGS.items()}
# /proc/self/ns/<link> of each type.
PROC_LINKS = {"user": "user", "ipc": "ipc", "uts": "uts", "network": "net", "pid": "pid", "mount": "mnt",
              "cgroup": "cgroup", "time": "time"}
FOR_CHILDREN = ("pid", "time")
NS_GET_NSTYPE = 0xB703  # ioctl on an nsfs file: its CLONE_NEW* type


def open_joined(plan: NamespacePlan) -> dict[str, int]:
    """Open every namespace the spec joins by path, checking that it is one of the stated type.

    Returns type -> fd (close-on-exec). On error nothing stays open.
    """
    opened: dict[str, int] = {}
    try:
        for namespace in plan.namespaces:
            if namespace.path:
                opened[namespace.type] = _open_namespace(namespace.type, namespace.path)
    except BaseException:
        close_all(opened)
        raise
    return opened


def _open_namespace(kind: str, path: str) -> int:
    where = f"linux.namespaces (type {kind}): path {path}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as err:
        raise RunprocError(f"{where}: {os_error_text(err)}") from None
    try:
        actual = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError:
        os.close(fd)
        raise RunprocError(f"{where}: not a namespace") from None
    if actual != CLONE_FLAGS[kind]:
        os.close(fd)
        found = _NAMES.get(actual, f"0x{actual:x}")
        raise RunprocError(f"{where}: is a namespace of type {found}, not {kind}")
    return fd


def close_all(fds: dict[str, int]) -> None:
    for fd in fds.values():
        try:
            os.close(fd)
        except OSError:
            pass
    fds.clear()


def kernel_has(kind: str) -> bool:
    return os.path.exists(f"/proc/self/ns/{PROC_LINKS[kind]}")


def check_kernel_support(plan: NamespacePlan) -> None:
    for namespace in plan.namespaces:
        if not kernel_has(namespace.type):
            raise RunprocError(f"linux.namespaces: {namespace.type} namespaces aren't enabled in the kernel")


def fork_in_child_namespaces(plan: NamespacePlan, joined: dict[str, int], restore: bool = True,
                             fork: Callable[[], int] = os.fork) -> int:
    """`fork` (os.fork), the child born in the container's pid and time namespaces (new or joined).

    unshare(CLONE_NEWPID) or setns() on a pid namespace changes only where the
    caller's *children* go: the parent enters them just around the fork and
    then points its children back at its own namespaces, so nothing it forks
    later (hooks, say) lands in the container's. Returns 0 in the child.
    `restore=False`: a caller that only forks this one child (runproc.linux.spawn's
    stage, which could not go back anyway) stays pointed at them.
    """
    saved: dict[str, int] = {}
    try:
        for kind in FOR_CHILDREN:
            if plan.get(kind) is not None:
                if restore:
                    saved[kind] = os.open(f"/proc/self/ns/{PROC_LINKS[kind]}", os.O_RDONLY | os.O_CLOEXEC)
                _enter(kind, joined.get(kind))
                if kind == "time" and kind not in joined:
                    _set_time_offsets(plan)
        pid = fork()
    except BaseException:
        _restore(saved)
        raise
    if pid == 0:
        for fd in saved.values():  # the child stays where it was born
            os.close(fd)
        return 0
    _restore(saved)
    return pid


def _set_time_offsets(plan: NamespacePlan) -> None:
    """linux.timeOffsets: written after unshare(CLONE_NEWTIME), before the first child enters it."""
    text = "".join(f"{clock} {secs} {nanosecs}\n" for clock, (secs, nanosecs) in plan.time_offsets.items())
    if not text:
        return
    try:
        _write_once("/proc/self/timens_offsets", text)
    except OSError as err:
        raise RunprocError(f"linux.timeOffsets: {os_error_text(err)}") from None


def _restore(saved: dict[str, int]) -> None:
    try:
        for kind, fd in saved.items():
            syscalls.setns(fd, CLONE_FLAGS[kind])
    finally:
        for fd in saved.values():
            os.close(fd)


def join_all(plan: NamespacePlan, joined: dict[str, int]) -> None:
    """Join every namespace given by path but pid and time, user first (runc's order)."""
    for namespace in plan.namespaces:
        if namespace.path and namespace.type not in FOR_CHILDREN:
            _enter(namespace.type, joined[namespace.type])


def enter(plan: NamespacePlan, joined: dict[str, int]) -> None:
    """In the init: join the namespaces given by path (unless a stage process already did, see
    runproc.linux.spawn: `joined` is then empty), then make the new ones.

    pid and time namespaces are the parent's to enter (for its child), user
    namespaces the stage's (they need the parent to write the id maps).
    """
    new_flags = 0
    for namespace in plan.namespaces:
        if namespace.type in FOR_CHILDREN or namespace.type == "user":
            continue
        if namespace.path:
            if namespace.type in joined:
                _enter(namespace.type, joined[namespace.type])
        else:
            new_flags |= CLONE_FLAGS[namespace.type]
    if new_flags:
        try:
            syscalls.unshare(new_flags)
        except OSError as err:
            names = ", ".join(name for flag, name in _NAMES.items() if new_flags & flag)
            raise RunprocError(f"linux.namespaces: unshare ({names}): {os_error_text(err)}") from None


def _enter(kind: str, fd: int | None) -> None:
    """setns to a joined namespace (fd), or unshare a new one (fd None)."""
    try:
        if fd is None:
            syscalls.unshare(CLONE_FLAGS[kind])
        else:
            syscalls.setns(fd, CLONE_FLAGS[kind])
    except OSError as err:
        action = "unshare" if fd is None else "join"
        raise RunprocError(f"linux.namespaces: {action} {kind} namespace: {os_error_text(err)}") from None


def set_names(plan: NamespacePlan) -> None:
    """hostname and domainname, in the container's UTS namespace."""
    try:
        if plan.hostname:
            syscalls.sethostname(plan.hostname)
        if plan.domainname:
            syscalls.setdomainname(plan.domainname)
    except OSError as err:
        raise RunprocError(f"sethostname/setdomainname: {os_error_text(err)}") from None


def write_sysctls(plan: NamespacePlan) -> None:
    """linux.sysctl, written through the container's own /proc/sys (after the rootfs is set up)."""
    for key, value in plan.sysctl.items():
        path = "/proc/sys/" + key.replace(".", "/")
        try:
            _write_once(path, value, os.O_TRUNC | os.O_NOFOLLOW)
        except OSError as err:
            raise RunprocError(f"linux.sysctl: write {key}={value}: {os_error_text(err)}") from None


def write_id_maps(pid: int, plan: NamespacePlan) -> None:
    """uid_map and gid_map of a process in a new user namespace.

    Root writes them. An unprivileged caller may write one mapping of its own
    id (setgroups denied first, as the kernel requires); anything wider goes
    through newuidmap/newgidmap (shadow's setuid helpers, checked against
    /etc/subuid and /etc/subgid), as runc does where they are installed.
    """
    uid_lines = "".join(m.line() for m in plan.uid_mappings)
    gid_lines = "".join(m.line() for m in plan.gid_mappings)
    try:
        if os.geteuid() == 0:
            _write_proc(pid, "uid_map", uid_lines)
            _write_proc(pid, "gid_map", gid_lines)
        elif _only_own_id(plan):
            _write_proc(pid, "setgroups", "deny")
            _write_proc(pid, "uid_map", uid_lines)
            _write_proc(pid, "gid_map", gid_lines)
        else:
            _map_with_helper("newuidmap", pid, plan.uid_mappings)
            _map_with_helper("newgidmap", pid, plan.gid_mappings)
    except OSError as err:
        raise RunprocError(f"linux.uidMappings/gidMappings: write id maps of {pid}: {os_error_text(err)}") from None


def _only_own_id(plan: NamespacePlan) -> bool:
    """What the kernel lets an unprivileged process map itself: its own uid and gid, one each."""
    uids, gids = plan.uid_mappings, plan.gid_mappings
    return (len(uids) <= 1 and len(gids) <= 1
            and all(m.host_id == os.geteuid() and m.size == 1 for m in uids)
            and all(m.host_id == os.getegid() and m.size == 1 for m in gids))


def _map_with_helper(helper: str, pid: int, mappings: list[IdMapping]) -> None:
    if not mappings:
        return
    path = next((os.path.join(d, helper) for d in ("/usr/bin", "/bin", "/usr/local/bin")
                 if os.access(os.path.join(d, helper), os.X_OK)), None)
    what = "uidMappings" if helper == "newuidmap" else "gidMappings"
    if path is None:
        raise RunprocError(f"linux.{what}: mapping more than your own id needs {helper} (Debian: uidmap)")
    argv = [path, str(pid)] + [str(v) for m in mappings for v in (m.container_id, m.host_id, m.size)]
    # A clean environment: the helper is setuid root and needs none of ours (nor our libraries).
    errors_r, errors_w = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            null = os.open("/dev/null", os.O_RDWR)
            os.dup2(null, 0)
            os.dup2(null, 1)
            os.dup2(errors_w, 2)
            os.execve(path, argv, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        finally:
            os._exit(127)
    os.close(errors_w)
    with os.fdopen(errors_r, "rb") as stream:
        said = stream.read(4096).decode(errors="replace").strip().replace("\n", "; ")
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RunprocError(f"linux.{what}: {helper} {' '.join(argv[1:])} failed (exit {code}): "
                           f"{said or 'no reason given'}")


def _write_proc(pid: int, name: str, text: str) -> None:
    _write_once(f"/proc/{pid}/{name}", text)


def _write_once(path: str, text: str, flags: int = 0) -> None:
    """One write(2) of `text`: /proc files take their whole value in one write."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | flags)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
