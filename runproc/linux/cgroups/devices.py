"""Device access rules: runc 1.1's devices emulator, written to v1's devices.allow/deny or compiled to eBPF for v2.

The emulator folds a rule list into what the kernel's v1 devices controller
would hold: a default (allow-all "black list" or deny-all "white list") and
exceptions keyed by (type, major, minor). From the state a cgroup is in
(devices.list) to the wanted one, `transition` gives the fewest writes, as
runc does; for v2 the same state becomes a BPF_PROG_TYPE_CGROUP_DEVICE
program, so both layouts enforce exactly the same thing.
"""

from __future__ import annotations

import os
import struct

from runproc.errors import RunprocError
from runproc.spec.resources import DeviceRule

Key = tuple[str, int, int]  # (type "c"/"b", major, minor), -1 for any number
_ORDER = "rwm"


def _perms(text: str) -> str:
    return "".join(letter for letter in _ORDER if letter in text)


class Emulator:
    """runc's devicesemulator.Emulator: a default and its exceptions."""

    __slots__ = ("default_allow", "rules")

    def __init__(self, default_allow: bool = False) -> None:
        self.default_allow = default_allow
        self.rules: dict[Key, str] = {}

    def apply(self, rule: DeviceRule) -> None:
        if rule.type == "a":  # a wildcard device resets everything, whatever its numbers say
            self.default_allow = rule.allow
            self.rules = {}
            return
        key = (rule.type, rule.major, rule.minor)
        if rule.allow == self.default_allow:
            self._remove(key, rule)
        else:
            self.rules[key] = _perms(self.rules.get(key, "") + rule.access)

    def _remove(self, key: Key, rule: DeviceRule) -> None:
        # As runc: refuse to punch a hole in a wildcard exception, which v1 would silently ignore.
        kind, major, minor = key
        for partial in ((kind, -1, minor), (kind, major, -1), (kind, -1, -1)):
            if partial != key and set(self.rules.get(partial, "")) & set(rule.access):
                raise RunprocError(
                    f"linux.resources.devices: rule {rule.cgroup_string()} is not supported by devices cgroupv1 "
                    f"(cannot punch hole in existing wildcard rule {_key_string(partial)} {self.rules[partial]})")
        left = _perms("".join(letter for letter in self.rules.get(key, "") if letter not in rule.access))
        if left:
            self.rules[key] = left
        else:
            self.rules.pop(key, None)

    def ordered(self) -> list[tuple[Key, str]]:
        """By (major, minor, type), runc's order (-1 first)."""
        return sorted(self.rules.items(), key=lambda item: (item[0][1], item[0][2], item[0][0]))

    def transition(self, target: Emulator) -> list[DeviceRule]:
        """The rules that take a cgroup from this state to `target` (runc's Emulator.Transition).

        A black list's deny exceptions cannot be read back from devices.list,
        so from one (or to another default) it starts with the reset rule.
        """
        steps: list[DeviceRule] = []
        old = self.rules
        if self.default_allow or self.default_allow != target.default_allow:
            steps.append(DeviceRule("a", -1, -1, "rwm", target.default_allow))
            old = {}
        for (kind, major, minor), perms in sorted(old.items(), key=lambda item: (item[0][1], item[0][2], item[0][0])):
            dropped = _perms("".join(p for p in perms if p not in target.rules.get((kind, major, minor), "")))
            if dropped:
                steps.append(DeviceRule(kind, major, minor, dropped, target.default_allow))
        for (kind, major, minor), perms in target.ordered():
            gained = _perms("".join(p for p in perms if p not in old.get((kind, major, minor), "")))
            if gained:
                steps.append(DeviceRule(kind, major, minor, gained, not target.default_allow))
        return steps


def _key_string(key: Key) -> str:
    kind, major, minor = key
    return f"{kind} {'*' if major < 0 else major}:{'*' if minor < 0 else minor}"


def build(rules: list[DeviceRule]) -> Emulator:
    emulator = Emulator()
    for rule in rules:
        emulator.apply(rule)
    return emulator


def parse_list(text: str) -> Emulator:
    """devices.list: `a *:* rwm` alone means allow-all; otherwise a white list of its lines."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if lines == [["a", "*:*", "rwm"]]:
        return Emulator(default_allow=True)
    emulator = Emulator()
    for kind, numbers, perms in lines:
        major, _, minor = numbers.partition(":")
        key = (kind, -1 if major == "*" else int(major), -1 if minor == "*" else int(minor))
        emulator.rules[key] = _perms(emulator.rules.get(key, "") + perms)
    return emulator


def apply_v1(path: str, rules: list[DeviceRule]) -> None:
    """Write the transition into devices.allow/devices.deny, then check the result as runc does."""
    from runproc.linux.cgroups import read_value, write_value

    target = build(rules)
    try:
        current = parse_list(read_value(path, "devices.list"))
        for step in current.transition(target):
            write_value(path, "devices.allow" if step.allow else "devices.deny", step.cgroup_string())
        after = parse_list(read_value(path, "devices.list"))
    except OSError as err:
        raise RunprocError(f"linux.resources.devices: {path}: {err.strerror}") from None
    if after.default_allow != target.default_allow or (not target.default_allow and after.rules != target.rules):
        raise RunprocError("linux.resources.devices: resulting devices cgroup doesn't precisely match target")


# eBPF for BPF_PROG_TYPE_CGROUP_DEVICE: ctx is struct bpf_cgroup_dev_ctx {u32 access_type; u32 major; u32 minor}.
_DEV_BLOCK, _DEV_CHAR = 1, 2
_ACCESS = {"m": 1, "r": 2, "w": 4}


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


# opcodes: class | size/op | source
_LDX_W = 0x61  # BPF_LDX | BPF_MEM | BPF_W
_AND_K32 = 0x54  # BPF_ALU | BPF_AND | BPF_K
_RSH_K32 = 0x74
_MOV_K32 = 0xB4
_MOV_X32 = 0xBC
_JNE_K = 0x55  # BPF_JMP | BPF_JNE | BPF_K
_JNE_X = 0x5D
_EXIT = 0x95


def bpf_program(rules: list[DeviceRule]) -> bytes:
    """runc's devicefilter.DeviceFilter: load type, access, major, minor; one block per exception; the default."""
    emulator = build(rules)
    program = [
        _insn(_LDX_W, dst=2, src=1, off=0), _insn(_AND_K32, dst=2, imm=0xFFFF),  # r2 = type
        _insn(_LDX_W, dst=3, src=1, off=0), _insn(_RSH_K32, dst=3, imm=16),  # r3 = access
        _insn(_LDX_W, dst=4, src=1, off=4),  # r4 = major
        _insn(_LDX_W, dst=5, src=1, off=8),  # r5 = minor
    ]
    allow = not emulator.default_allow  # exceptions do the opposite of the default
    for (kind, major, minor), perms in emulator.ordered():
        access = sum(_ACCESS[letter] for letter in perms)
        # (code, dst, src, imm); a jump's offset skips the rest of its block (to the next one).
        block = [(_JNE_K, 2, 0, _DEV_CHAR if kind == "c" else _DEV_BLOCK)]
        if access != 7:  # not rwm: every requested access bit must be among the allowed ones
            block += [(_MOV_X32, 1, 3, 0), (_AND_K32, 1, 0, access), (_JNE_X, 1, 3, 0)]
        if major >= 0:
            block.append((_JNE_K, 4, 0, _signed32(major)))
        if minor >= 0:
            block.append((_JNE_K, 5, 0, _signed32(minor)))
        block += [(_MOV_K32, 0, 0, int(allow)), (_EXIT, 0, 0, 0)]
        for n, (code, dst, src, imm) in enumerate(block):
            offset = len(block) - n - 1 if code in (_JNE_K, _JNE_X) else 0
            program.append(_insn(code, dst, src, offset, imm))
    program += [_insn(_MOV_K32, dst=0, imm=int(emulator.default_allow)), _insn(_EXIT)]
    return b"".join(program)


def _signed32(value: int) -> int:
    """BPF immediates are s32; device numbers above 2**31 compare as their u32 bit pattern."""
    return value - 2**32 if value >= 2**31 else value


def apply_v2(path: str, rules: list[DeviceRule]) -> None:
    """Load the program and attach it to the cgroup (BPF_F_ALLOW_MULTI), then detach older ones, as runc."""
    import resource

    from runproc.linux import syscalls

    program = bpf_program(rules)
    try:  # kernels before 5.11 charge BPF programs to RLIMIT_MEMLOCK; the init, forked already, keeps its own
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (OSError, ValueError):
        pass
    try:
        dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise RunprocError(f"linux.resources.devices: open {path}: {err.strerror}") from None
    try:
        try:
            old = syscalls.bpf_prog_query(dir_fd, syscalls.BPF_CGROUP_DEVICE)
        except OSError:
            old = []
        try:
            prog_fd = syscalls.bpf_prog_load(syscalls.BPF_PROG_TYPE_CGROUP_DEVICE, program, b"Apache")
        except OSError as err:
            raise RunprocError(f"linux.resources.devices: BPF_PROG_LOAD: {err.strerror}") from None
        try:
            syscalls.bpf_prog_attach(dir_fd, prog_fd, syscalls.BPF_CGROUP_DEVICE, syscalls.BPF_F_ALLOW_MULTI)
        except OSError as err:
            raise RunprocError(
                f"linux.resources.devices: failed to call BPF_PROG_ATTACH (BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI): "
                f"{err.strerror}") from None
        finally:
            os.close(prog_fd)
        for prog_id in old:  # runc's way without BPF_F_REPLACE: the new one is in, the old ones go
            try:
                old_fd = syscalls.bpf_prog_get_fd_by_id(prog_id)
            except OSError:
                continue  # gone already
            try:
                syscalls.bpf_prog_detach(dir_fd, old_fd, syscalls.BPF_CGROUP_DEVICE)
            except OSError:
                pass
            finally:
                os.close(old_fd)
    finally:
        os.close(dir_fd)
