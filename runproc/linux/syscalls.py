"""A thin layer over the system calls Python's os module lacks (Python 3.11).

ctypes is loaded once, when this module is first imported: the container
init imports it before it forks or pivots, because the frozen binary's files
may be gone (or out of reach, past pivot_root) later. Every wrapper raises
OSError with the errno, as the os module's functions do.
"""

from __future__ import annotations

import _signal
import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

# x86_64 system call numbers (the only architecture runproc is built for).
SYS_PIVOT_ROOT = 155
SYS_CAPGET = 125
SYS_CAPSET = 126
SYS_SETNS = 308
SYS_UNSHARE = 272
SYS_IOPRIO_SET = 251
SYS_OPENAT2 = 437
SYS_MOUNT_SETATTR = 442
SYS_SCHED_SETATTR = 314
SYS_PERSONALITY = 135
SYS_SETHOSTNAME = 170
SYS_SETDOMAINNAME = 171
SYS_CLONE3 = 435
SYS_GETTID = 186

# clone(2) / unshare(2) / setns(2) namespace flags.
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080
CLONE_CHILD_SETTID = 0x01000000
CLONE_INTO_CGROUP = 0x200000000  # clone3(2) only (Linux 5.7+)

# mount(2) flags: in runproc.spec.mounts, whose option tables are made of them.

# openat2(2) resolve flags.
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

# prctl(2) options.
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4


def _check(result: int) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return result


def _path(path: str | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(_path(source), _path(target), _path(fstype), ctypes.c_ulong(flags), _path(data)))


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_path(target), flags))


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_syscall(SYS_PIVOT_ROOT, _path(new_root), _path(put_old)))


def unshare(flags: int) -> None:
    _check(_syscall(SYS_UNSHARE, ctypes.c_int(flags)))


def setns(fd: int, nstype: int = 0) -> None:
    _check(_syscall(SYS_SETNS, ctypes.c_int(fd), ctypes.c_int(nstype)))


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dir_fd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """openat2(2): open `path` relative to `dir_fd` under the `resolve` rules (Linux 5.6+)."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    return _check(_syscall(SYS_OPENAT2, ctypes.c_int(dir_fd), _path(path), ctypes.byref(how),
                           ctypes.c_size_t(ctypes.sizeof(how))))


class _CloneArgs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size", "tls", "set_tid",
        "set_tid_size", "cgroup")]


# Where glibc keeps the thread's kernel tid in its struct pthread (x86_64); checked before use.
_PTHREAD_TID_OFFSET = 0x2D0
_libc.pthread_self.restype = ctypes.c_void_p


def _own_tid_field() -> int:
    """The address of glibc's cached tid of this thread, which its fork() has the kernel set in the
    child (CLONE_CHILD_SETTID); 0 if this glibc keeps it elsewhere."""
    address = (_libc.pthread_self() or 0) + _PTHREAD_TID_OFFSET
    return address if ctypes.c_int.from_address(address).value == _check(_syscall(SYS_GETTID)) else 0


# What fork_into_cgroup calls, looked up now: a first lookup of a ctypes attribute runs Python code,
# which must not happen between the fork and Python's after-fork hooks. PyDLL keeps the GIL held
# across clone3, as os.fork does.
_before_fork = ctypes.pythonapi.PyOS_BeforeFork
_after_fork_child = ctypes.pythonapi.PyOS_AfterFork_Child
_after_fork_parent = ctypes.pythonapi.PyOS_AfterFork_Parent
_syscall_holding_gil = ctypes.PyDLL(None, use_errno=True).syscall
_syscall_holding_gil.restype = ctypes.c_long


def fork_into_cgroup(cgroup_fd: int) -> int:
    """os.fork, the child born in the cgroup v2 directory `cgroup_fd` (clone3 CLONE_INTO_CGROUP):
    no migration afterwards, so none of the global lock and RCU grace period a write to
    cgroup.procs costs. Python's own fork hooks run as around os.fork. OSError if the kernel
    (before 5.7) or a seccomp filter refuses clone3; the caller falls back to os.fork. Only
    for a process with one thread, as os.fork's child is.

    Signals are blocked around it: os.fork's child runs no Python signal handler before the
    after-fork hooks, and neither may this one (blocking runs the handlers already due, in
    the parent; the child starts with no signal pending).
    """
    tid_field = _own_tid_field()
    args = _CloneArgs(flags=CLONE_INTO_CGROUP | (CLONE_CHILD_SETTID if tid_field else 0), child_tid=tid_field,
                      exit_signal=17, cgroup=cgroup_fd)  # SIGCHLD
    mask = _signal.pthread_sigmask(_signal.SIG_BLOCK, _signal.valid_signals())
    try:
        _before_fork()
        pid = _syscall_holding_gil(SYS_CLONE3, ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args)))
        if pid == 0:
            _after_fork_child()
            return 0
        error = ctypes.get_errno()
        _after_fork_parent()
    finally:
        _signal.pthread_sigmask(_signal.SIG_SETMASK, mask)
    if pid < 0:
        raise OSError(error, os.strerror(error))
    return pid


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                              ctypes.c_ulong(arg4), ctypes.c_ulong(arg5)))


def sethostname(name: str) -> None:
    raw = os.fsencode(name)
    _check(_syscall(SYS_SETHOSTNAME, raw, ctypes.c_size_t(len(raw))))


def setdomainname(name: str) -> None:
    raw = os.fsencode(name)
    _check(_syscall(SYS_SETDOMAINNAME, raw, ctypes.c_size_t(len(raw))))


def personality(persona: int) -> int:
    return _check(_syscall(SYS_PERSONALITY, ctypes.c_ulong(persona)))


def ioprio_set(which: int, who: int, ioprio: int) -> None:
    _check(_syscall(SYS_IOPRIO_SET, ctypes.c_int(which), ctypes.c_int(who), ctypes.c_int(ioprio)))


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def capget(pid: int = 0) -> tuple[int, int, int]:
    """(effective, permitted, inheritable) of `pid` (0: this thread), as 64-bit masks."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, pid)
    data = (_CapData * 2)()
    _check(_syscall(SYS_CAPGET, ctypes.byref(header), data))
    low, high = data[0], data[1]
    return (low.effective | high.effective << 32, low.permitted | high.permitted << 32,
            low.inheritable | high.inheritable << 32)


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set this thread's effective, permitted and inheritable sets (64-bit masks)."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for n in (0, 1):
        shift = 32 * n
        data[n].effective = (effective >> shift) & 0xFFFFFFFF
        data[n].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[n].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check(_syscall(SYS_CAPSET, ctypes.byref(header), data))


# seccomp(2): load a classic BPF program as this thread's filter.
SYS_SECCOMP = 317
SECCOMP_SET_MODE_FILTER = 1


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_set_mode_filter(program: bytes, flags: int) -> int:
    """Install `program` (struct sock_filter[], 8 bytes each); returns what seccomp(2) returns."""
    buffer = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    return _check(_syscall(SYS_SECCOMP, ctypes.c_uint(SECCOMP_SET_MODE_FILTER), ctypes.c_uint(flags),
                           ctypes.byref(prog)))


class _SchedAttr(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint32), ("policy", ctypes.c_uint32), ("flags", ctypes.c_uint64),
                ("nice", ctypes.c_int32), ("priority", ctypes.c_uint32), ("runtime", ctypes.c_uint64),
                ("deadline", ctypes.c_uint64), ("period", ctypes.c_uint64)]


def sched_setattr(pid: int, policy: int, flags: int, nice: int, priority: int,
                  runtime: int = 0, deadline: int = 0, period: int = 0) -> None:
    """sched_setattr(2) with SCHED_ATTR_SIZE_VER0 (no utilization clamps)."""
    attr = _SchedAttr(ctypes.sizeof(_SchedAttr), policy, flags, nice, priority, runtime, deadline, period)
    _check(_syscall(SYS_SCHED_SETATTR, ctypes.c_int(pid), ctypes.byref(attr), ctypes.c_uint(0)))


# statfs(2) and mount_setattr(2), for the root filesystem (runproc.linux.mounts).
AT_RECURSIVE = 0x8000
AT_EMPTY_PATH = 0x1000


class _Statfs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("f_bsize", ctypes.c_long), ("f_blocks", ctypes.c_ulong),
                ("f_bfree", ctypes.c_ulong), ("f_bavail", ctypes.c_ulong), ("f_files", ctypes.c_ulong),
                ("f_ffree", ctypes.c_ulong), ("f_fsid", ctypes.c_int * 2), ("f_namelen", ctypes.c_long),
                ("f_frsize", ctypes.c_long), ("f_flags", ctypes.c_long), ("f_spare", ctypes.c_long * 4)]


def statfs_type(path: str) -> int:
    """The file system's magic number (f_type of statfs(2)); os.statvfs lacks it."""
    buf = _Statfs()
    _check(_libc.statfs(_path(path), ctypes.byref(buf)))
    return buf.f_type & 0xFFFFFFFF


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr(dir_fd: int, path: str, flags: int, attr_set: int, attr_clr: int) -> None:
    """mount_setattr(2) (Linux 5.12+) without propagation or id-mapping changes."""
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    _check(_syscall(SYS_MOUNT_SETATTR, ctypes.c_int(dir_fd), _path(path), ctypes.c_uint(flags),
                    ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))))


# bpf(2), for the v2 devices controller (runproc.linux.cgroups.devices): load, attach, query, detach.
SYS_BPF = 321
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_PROG_QUERY = 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2
_BPF_ATTR_SIZE = 128  # larger than any command's part of union bpf_attr used here; the rest stays zero


def _bpf(cmd: int, attr: ctypes.Array) -> int:
    return _check(_syscall(SYS_BPF, ctypes.c_int(cmd), attr, ctypes.c_uint(_BPF_ATTR_SIZE)))


def _bpf_attr(fmt: str, *values: object) -> ctypes.Array:
    import struct

    return ctypes.create_string_buffer(struct.pack(fmt, *values).ljust(_BPF_ATTR_SIZE, b"\0"), _BPF_ATTR_SIZE)


def bpf_prog_load(prog_type: int, instructions: bytes, license: bytes) -> int:
    """BPF_PROG_LOAD of `instructions` (struct bpf_insn[], 8 bytes each); the program's fd (close-on-exec)."""
    insns = ctypes.create_string_buffer(instructions, len(instructions))
    lic = ctypes.create_string_buffer(license)
    attr = _bpf_attr("<IIQQ", prog_type, len(instructions) // 8, ctypes.addressof(insns), ctypes.addressof(lic))
    return _bpf(BPF_PROG_LOAD, attr)


def bpf_prog_attach(target_fd: int, prog_fd: int, attach_type: int, flags: int) -> None:
    _bpf(BPF_PROG_ATTACH, _bpf_attr("<IIII", target_fd, prog_fd, attach_type, flags))


def bpf_prog_detach(target_fd: int, prog_fd: int, attach_type: int) -> None:
    _bpf(BPF_PROG_DETACH, _bpf_attr("<III", target_fd, prog_fd, attach_type))


def bpf_prog_get_fd_by_id(prog_id: int) -> int:
    return _bpf(BPF_PROG_GET_FD_BY_ID, _bpf_attr("<I", prog_id))


def bpf_prog_query(target_fd: int, attach_type: int, capacity: int = 64) -> list[int]:
    """The ids of the programs attached to `target_fd` for `attach_type`."""
    import struct

    ids = (ctypes.c_uint32 * capacity)()
    attr = _bpf_attr("<IIIIQI", target_fd, attach_type, 0, 0, ctypes.addressof(ids), capacity)
    _bpf(BPF_PROG_QUERY, attr)
    count = struct.unpack_from("<I", attr.raw, 24)[0]
    return list(ids[: min(count, capacity)])


# inotify(7), for OOM events on cgroup v2 (memory.events); Python has no binding.
IN_MODIFY = 0x2
IN_CLOEXEC = os.O_CLOEXEC
IN_NONBLOCK = os.O_NONBLOCK


def inotify_init1(flags: int) -> int:
    return _check(_libc.inotify_init1(ctypes.c_int(flags)))


def inotify_add_watch(fd: int, path: str, mask: int) -> int:
    return _check(_libc.inotify_add_watch(ctypes.c_int(fd), _path(path), ctypes.c_uint32(mask)))
