"""The `linux.seccomp` section of config.json, checked into a SeccompSpec (pure).

Only the checks live here: names of actions, architectures, operators and
flags, argument indexes, numeric ranges. Syscall names are not checked: runc
skips the ones its libseccomp does not know (a profile written for a newer
kernel must still load), and so does runproc.linux.seccomp when it compiles
the filter at create.
"""

from __future__ import annotations

from runproc.errors import RunprocError
from runproc.spec.fields import optional, os_string, string_list, want

# libseccomp's action values (seccomp.h); ERRNO and TRACE take a 16-bit datum.
ACT_KILL_THREAD = 0x00000000
ACT_KILL_PROCESS = 0x80000000
ACT_TRAP = 0x00030000
ACT_ERRNO = 0x00050000
ACT_TRACE = 0x7FF00000
ACT_LOG = 0x7FFC0000
ACT_ALLOW = 0x7FFF0000
ACTIONS: dict[str, int] = {
    "SCMP_ACT_KILL": ACT_KILL_THREAD,
    "SCMP_ACT_KILL_THREAD": ACT_KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": ACT_KILL_PROCESS,
    "SCMP_ACT_TRAP": ACT_TRAP,
    "SCMP_ACT_ERRNO": ACT_ERRNO,
    "SCMP_ACT_TRACE": ACT_TRACE,
    "SCMP_ACT_LOG": ACT_LOG,
    "SCMP_ACT_ALLOW": ACT_ALLOW,
}
EPERM = 1

# enum scmp_compare.
OPERATORS: dict[str, int] = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}

# seccomp(2) SECCOMP_SET_MODE_FILTER flags.
FLAGS: dict[str, int] = {
    "SECCOMP_FILTER_FLAG_TSYNC": 1,
    "SECCOMP_FILTER_FLAG_LOG": 2,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
}

# The spec's architecture names -> libseccomp's names (seccomp_arch_resolve_name).
ARCHITECTURES: dict[str, str] = {
    f"SCMP_ARCH_{name.upper()}": name
    for name in (
        "x86", "x86_64", "x32", "arm", "aarch64", "mips", "mips64", "mips64n32", "mipsel",
        "mipsel64", "mipsel64n32", "ppc", "ppc64", "ppc64le", "s390", "s390x", "parisc",
        "parisc64", "riscv64",
    )
}  # fmt: skip

MAX_ARGS = 6  # a syscall has at most six arguments
U64 = 2**64 - 1


class SeccompRule:
    """One `syscalls[]` entry: its names and the resolved action, with its comparisons."""

    __slots__ = ("names", "action", "args")

    def __init__(self, names: list[str], action: int, args: list[tuple[int, int, int, int]]) -> None:
        self.names = names
        self.action = action  # libseccomp action value, errno included
        self.args = args  # (index, operator, value, valueTwo)


class SeccompSpec:
    """The checked profile; runproc.linux.seccomp compiles it to a BPF program."""

    __slots__ = ("default_action", "architectures", "flags", "rules")

    def __init__(self, default_action: int, architectures: list[str], flags: int, rules: list[SeccompRule]) -> None:
        self.default_action = default_action
        self.architectures = architectures  # libseccomp names, e.g. "x86"
        self.flags = flags  # seccomp(2) flags for loading the program
        self.rules = rules


def seccomp_spec(config: dict) -> SeccompSpec | None:
    """linux.seccomp checked, or None when the spec has none."""
    linux = optional(config, "linux", dict, "linux", "an object", {})
    assert isinstance(linux, dict)
    section = optional(linux, "seccomp", dict, "linux.seccomp", "an object", None)
    if section is None:
        return None
    assert isinstance(section, dict)
    where = "linux.seccomp"
    if section.get("listenerPath") or section.get("listenerMetadata"):
        raise RunprocError(f"config.json: {where}.listenerPath: seccomp notify (SCMP_ACT_NOTIFY) is not supported")
    default_errno = _errno(section, "defaultErrnoRet", f"{where}.defaultErrnoRet")
    default = _action(section.get("defaultAction"), default_errno, f"{where}.defaultAction")
    archs = []
    for n, name in enumerate(string_list(section.get("architectures") or [], f"{where}.architectures")):
        if name not in ARCHITECTURES:
            raise RunprocError(f"config.json: {where}.architectures[{n}]: unknown architecture {name!r}")
        archs.append(ARCHITECTURES[name])
    flags = 0
    for n, name in enumerate(string_list(section.get("flags") or [], f"{where}.flags")):
        if name not in FLAGS:
            raise RunprocError(f"config.json: {where}.flags[{n}]: unknown seccomp flag {name!r}")
        flags |= FLAGS[name]
    syscalls = optional(section, "syscalls", list, f"{where}.syscalls", "a list", [])
    assert isinstance(syscalls, list)
    rules = [_rule(entry, f"{where}.syscalls[{n}]") for n, entry in enumerate(syscalls)]
    return SeccompSpec(default, archs, flags, rules)


def _errno(container: dict, key: str, where: str) -> int | None:
    value = container.get(key)
    if value is None:
        return None
    want(value, int, where, "an integer from 0 to 65535")
    if not 0 <= value <= 0xFFFF:  # SECCOMP_RET_DATA is 16 bits
        raise RunprocError(f"config.json: {where} must be an integer from 0 to 65535")
    return value


def _action(name: object, errno: int | None, where: str) -> int:
    """The libseccomp value of an action; errnoRet matters for ERRNO and TRACE only, as in runc."""
    want(name, str, where, "a string")
    if name == "SCMP_ACT_NOTIFY":
        raise RunprocError(f"config.json: {where}: SCMP_ACT_NOTIFY (seccomp notify) is not supported")
    if name not in ACTIONS:
        raise RunprocError(f"config.json: {where}: unknown seccomp action {name!r}")
    action = ACTIONS[name]
    if action in (ACT_ERRNO, ACT_TRACE):
        # runc: no errnoRet means EPERM, for TRACE as well.
        action |= EPERM if errno is None else errno
    return action


def _rule(entry: object, where: str) -> SeccompRule:
    want(entry, dict, where, "an object")
    assert isinstance(entry, dict)
    names = string_list(entry.get("names") or [], f"{where}.names")
    if entry.get("name") is not None:  # the pre-1.0 spelling, still accepted by runc
        want(entry["name"], str, f"{where}.name", "a string")
        names.append(os_string(entry["name"], f"{where}.name"))
    action = _action(entry.get("action"), _errno(entry, "errnoRet", f"{where}.errnoRet"), f"{where}.action")
    raw_args = optional(entry, "args", list, f"{where}.args", "a list", [])
    assert isinstance(raw_args, list)
    return SeccompRule(names, action, [_argument(arg, f"{where}.args[{n}]") for n, arg in enumerate(raw_args)])


def _argument(arg: object, where: str) -> tuple[int, int, int, int]:
    want(arg, dict, where, "an object")
    assert isinstance(arg, dict)
    index = arg.get("index")
    want(index, int, f"{where}.index", f"an integer from 0 to {MAX_ARGS - 1}")
    assert isinstance(index, int)
    if not 0 <= index < MAX_ARGS:
        raise RunprocError(f"config.json: {where}.index: syscalls only have up to {MAX_ARGS} arguments ({index} given)")
    values = []
    for key in ("value", "valueTwo"):
        value = arg.get(key, 0)
        want(value, int, f"{where}.{key}", "an integer from 0 to 2^64-1")
        if not 0 <= value <= U64:
            raise RunprocError(f"config.json: {where}.{key} must be an integer from 0 to 2^64-1")
        values.append(value)
    op = arg.get("op")
    want(op, str, f"{where}.op", "a string")
    if op not in OPERATORS:
        raise RunprocError(f"config.json: {where}.op: unknown seccomp operator {op!r}")
    return (index, OPERATORS[op], values[0], values[1])
