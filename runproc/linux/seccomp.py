"""Seccomp: compile a SeccompSpec with libseccomp at create, load the BPF in the init.

The route. runc and crun build their filters with libseccomp, and so does
runproc, so that a profile means the same thing under all three: the same
syscall tables for every architecture (x86_64, x86, x32 and the rest, kept
current by libseccomp's maintainers), the same handling of multiplexed
syscalls (socketcall, ipc on x86) and of syscalls one architecture lacks, and
the same argument comparisons. Writing a BPF compiler with our own syscall
tables would duplicate all of that and drift from runc.

libseccomp is used only in create, in the parent, through ctypes
(libseccomp.so.2, bundled into the frozen binary by runproc.spec, so the host
needs none). compile_filter() builds the filter with seccomp_init /
seccomp_arch_add / seccomp_rule_add_array and exports the raw BPF program with
seccomp_export_bpf into a memfd: every error (an unknown architecture for this
libseccomp, a rule libseccomp refuses) is a create error with the field named.
The init then loads those bytes with the seccomp(2) system call itself
(runproc.linux.security.load_seccomp); it needs no library after fork or
pivot_root.

As runc 1.1: syscall names libseccomp does not know are skipped; a rule whose
action is the default action is skipped; conditions on the same argument
are split into one rule each; errnoRet defaults to EPERM.
"""

from __future__ import annotations

import ctypes
import os

from runproc.errors import RunprocError
from runproc.spec.seccomp import SeccompSpec

LIBSECCOMP = "libseccomp.so.2"
_NR_SCMP_ERROR = -1


class _ArgCmp(ctypes.Structure):
    """struct scmp_arg_cmp."""

    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def _library() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(LIBSECCOMP, use_errno=True)
    except OSError as err:
        raise RunprocError(f"seccomp: cannot load {LIBSECCOMP}: {err}") from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


def compile_filter(spec: SeccompSpec) -> bytes:
    """The BPF program (struct sock_filter[]) for `spec`; RunprocError if libseccomp refuses it."""
    lib = _library()
    ctx = lib.seccomp_init(spec.default_action)
    if not ctx:
        raise RunprocError("config.json: linux.seccomp.defaultAction: libseccomp refused the default action")
    try:
        for arch in spec.architectures:
            token = lib.seccomp_arch_resolve_name(arch.encode())
            if token == 0:
                raise RunprocError(f"config.json: linux.seccomp.architectures: {arch!r} is not supported by libseccomp")
            result = lib.seccomp_arch_add(ctx, token)
            if result < 0 and -result != 17:  # EEXIST: the native architecture is always there
                raise RunprocError(f"config.json: linux.seccomp.architectures: adding {arch!r}: {os.strerror(-result)}")
        for n, rule in enumerate(spec.rules):
            if rule.action == spec.default_action:
                continue  # redundant, and libseccomp refuses it
            for name in rule.names:
                number = lib.seccomp_syscall_resolve_name(name.encode("utf-8", "surrogateescape"))
                if number == _NR_SCMP_ERROR:
                    continue  # unknown to this libseccomp (a newer or foreign syscall): skipped, as runc does
                for conditions in _condition_groups(rule.args):
                    array = (_ArgCmp * max(len(conditions), 1))(*conditions)
                    result = lib.seccomp_rule_add_array(ctx, rule.action, number, len(conditions), array)
                    if result < 0:
                        raise RunprocError(f"config.json: linux.seccomp.syscalls[{n}]: error adding seccomp rule "
                                           f"for syscall {name}: {os.strerror(-result)}")
        return _export(lib, ctx)
    finally:
        lib.seccomp_release(ctx)


def _condition_groups(args: list[tuple[int, int, int, int]]) -> list[list[_ArgCmp]]:
    """One rule with all conditions (ANDed), or, as runc does when an argument index repeats, one rule per condition."""
    conditions = [_ArgCmp(index, op, value, value_two) for index, op, value, value_two in args]
    indexes = [index for index, _, _, _ in args]
    if len(set(indexes)) < len(indexes):
        return [[condition] for condition in conditions]
    return [conditions]


def _export(lib: ctypes.CDLL, ctx: int) -> bytes:
    fd = os.memfd_create("runproc-seccomp", os.MFD_CLOEXEC)
    try:
        result = lib.seccomp_export_bpf(ctx, fd)
        if result < 0:
            raise RunprocError(f"seccomp: exporting the filter: {os.strerror(-result)}")
        size = os.lseek(fd, 0, os.SEEK_END)
        os.lseek(fd, 0, os.SEEK_SET)
        program = b""
        while len(program) < size:
            chunk = os.read(fd, size - len(program))
            if not chunk:
                break
            program += chunk
    finally:
        os.close(fd)
    if not program or len(program) % 8 or len(program) // 8 > 0xFFFF:
        raise RunprocError(f"seccomp: the compiled filter has an invalid size ({len(program)} bytes)")
    return program
