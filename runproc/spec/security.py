"""Process security from config.json: capabilities, seccomp, LSM labels, and the
small process attributes (oomScoreAdj, personality, ioPriority, scheduler,
execCPUAffinity). Pure: everything is checked here, with errors that name the
field and the value; runproc.linux.* applies the result in the init.

Host facts (the kernel's last capability, whether AppArmor or SELinux are on)
are read once through HostFacts.probe(); tests pass their own.
"""

from __future__ import annotations

from runproc.errors import RunprocError
from runproc.spec.fields import optional, os_string, string_list, want
from runproc.spec.plan import ContainerPlan
from runproc.spec.seccomp import SeccompSpec, seccomp_spec

# Linux capability numbers (include/uapi/linux/capability.h, up to Linux 6.x).
CAPABILITIES: dict[str, int] = {
    name: number
    for number, name in enumerate(
        [
            "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
            "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
            "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
            "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
            "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
            "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
            "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
            "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
            "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
        ]
    )
}  # fmt: skip
CAP_SETPCAP = CAPABILITIES["CAP_SETPCAP"]
CAP_SETS = ("bounding", "effective", "permitted", "inheritable", "ambient")

PERSONALITY_DOMAINS = {"LINUX": 0x0000, "LINUX32": 0x0008}
PERSONALITY_FLAGS = {
    "UNAME26": 0x0020000, "ADDR_NO_RANDOMIZE": 0x0040000, "FDPIC_FUNCPTRS": 0x0080000,
    "MMAP_PAGE_ZERO": 0x0100000, "ADDR_COMPAT_LAYOUT": 0x0200000, "READ_IMPLIES_EXEC": 0x0400000,
    "ADDR_LIMIT_32BIT": 0x0800000, "SHORT_INODE": 0x1000000, "WHOLE_SECONDS": 0x2000000,
    "STICKY_TIMEOUTS": 0x4000000, "ADDR_LIMIT_3GB": 0x8000000,
}  # fmt: skip
IOPRIO_CLASSES = {"IOPRIO_CLASS_RT": 1, "IOPRIO_CLASS_BE": 2, "IOPRIO_CLASS_IDLE": 3}
IOPRIO_CLASS_SHIFT = 13
SCHED_POLICIES = {
    "SCHED_OTHER": 0, "SCHED_FIFO": 1, "SCHED_RR": 2, "SCHED_BATCH": 3, "SCHED_ISO": 4,
    "SCHED_IDLE": 5, "SCHED_DEADLINE": 6,
}  # fmt: skip
SCHED_FLAGS = {
    "SCHED_FLAG_RESET_ON_FORK": 0x01, "SCHED_FLAG_RECLAIM": 0x02, "SCHED_FLAG_DL_OVERRUN": 0x04,
    "SCHED_FLAG_KEEP_POLICY": 0x08, "SCHED_FLAG_KEEP_PARAMS": 0x10,
    "SCHED_FLAG_UTIL_CLAMP_MIN": 0x20, "SCHED_FLAG_UTIL_CLAMP_MAX": 0x40,
}  # fmt: skip


class HostFacts:
    """What the spec check needs to know about the host."""

    __slots__ = ("last_cap", "apparmor_enabled", "selinux_enabled")

    def __init__(self, last_cap: int, apparmor_enabled: bool, selinux_enabled: bool) -> None:
        self.last_cap = last_cap
        self.apparmor_enabled = apparmor_enabled
        self.selinux_enabled = selinux_enabled

    @classmethod
    def probe(cls) -> HostFacts:
        return cls(_last_cap(), _read("/sys/module/apparmor/parameters/enabled").startswith("Y"),
                   bool(_read("/sys/fs/selinux/enforce")))


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as stream:
            return stream.read().strip()
    except OSError:
        return ""


def _last_cap() -> int:
    text = _read("/proc/sys/kernel/cap_last_cap")
    return int(text) if text.isdigit() else max(CAPABILITIES.values())


class CapabilityPlan:
    """The five sets as 64-bit masks, only capabilities this kernel has (runc drops the others)."""

    __slots__ = ("bounding", "effective", "permitted", "inheritable", "ambient", "last_cap", "ignored")

    def __init__(self, last_cap: int) -> None:
        # Absent sets are empty, as in runc: no process.capabilities means no capabilities at all.
        self.bounding = self.effective = self.permitted = self.inheritable = self.ambient = 0
        self.last_cap = last_cap
        self.ignored: list[str] = []  # known names this kernel lacks (runc warns and ignores them)

    def names(self, mask: int) -> list[str]:
        return [name for name, number in CAPABILITIES.items() if mask >> number & 1]


class SecurityPlan:
    """What the init applies for process security; see runproc.linux.security for the order."""

    __slots__ = (
        "capabilities", "seccomp", "seccomp_program", "oom_score_adj", "personality", "io_priority",
        "scheduler", "cpu_affinity_initial", "cpu_affinity_final", "apparmor_profile",
    )  # fmt: skip

    def __init__(self, capabilities: CapabilityPlan) -> None:
        self.capabilities = capabilities
        self.seccomp: SeccompSpec | None = None
        self.seccomp_program: bytes | None = None  # the compiled BPF, filled at create (prepare_security)
        self.oom_score_adj: int | None = None
        self.personality: int | None = None
        self.io_priority: int | None = None  # class << 13 | level, as ioprio_set takes it
        # (policy, flags, nice, priority, runtime, deadline, period), as sched_setattr takes them
        self.scheduler: tuple[int, int, int, int, int, int, int] | None = None
        self.cpu_affinity_initial: frozenset[int] | None = None
        self.cpu_affinity_final: frozenset[int] | None = None
        self.apparmor_profile = ""


def apply_security(config: dict, plan: ContainerPlan, host: HostFacts | None = None) -> None:
    """Check the security fields of config.json and set plan.security."""
    host = host or HostFacts.probe()
    process = config.get("process")
    want(process, dict, "process", "an object")
    assert isinstance(process, dict)
    security = SecurityPlan(_capabilities(process, host.last_cap))
    security.seccomp = seccomp_spec(config)
    if process.get("oomScoreAdj") is not None:
        security.oom_score_adj = _int_in(process["oomScoreAdj"], "process.oomScoreAdj", -1000, 1000)
    linux = optional(config, "linux", dict, "linux", "an object", {})
    assert isinstance(linux, dict)
    security.personality = _personality(optional(linux, "personality", dict, "linux.personality", "an object", None))
    security.io_priority = _io_priority(optional(process, "ioPriority", dict, "process.ioPriority", "an object", None))
    security.scheduler = _scheduler(optional(process, "scheduler", dict, "process.scheduler", "an object", None))
    affinity = optional(process, "execCPUAffinity", dict, "process.execCPUAffinity", "an object", {})
    assert isinstance(affinity, dict)
    security.cpu_affinity_initial = _cpu_list(affinity, "initial")
    security.cpu_affinity_final = _cpu_list(affinity, "final")
    _labels(process, host, security)
    plan.security = security


def _capabilities(process: dict, last_cap: int) -> CapabilityPlan:
    caps = CapabilityPlan(last_cap)
    section = optional(process, "capabilities", dict, "process.capabilities", "an object", {})
    assert isinstance(section, dict)
    for kind in CAP_SETS:
        where = f"process.capabilities.{kind}"
        mask = 0
        for name in string_list(section.get(kind) or [], where):
            number = CAPABILITIES.get(name)
            if number is None:
                raise RunprocError(f"config.json: {where}: unknown capability {name!r}")
            if number > last_cap:
                if name not in caps.ignored:
                    caps.ignored.append(name)
                continue
            mask |= 1 << number
        setattr(caps, kind, mask)
    # The kernel refuses an effective set beyond the permitted one (runc then fails at start).
    extra = caps.effective & ~caps.permitted
    if extra:
        raise RunprocError(f"config.json: process.capabilities.effective: {caps.names(extra)[0]} "
                           "is not in process.capabilities.permitted")
    return caps


def _int_in(value: object, where: str, low: int, high: int) -> int:
    want(value, int, where, f"an integer from {low} to {high}")
    assert isinstance(value, int)
    if not low <= value <= high:
        raise RunprocError(f"config.json: {where} must be an integer from {low} to {high} (got {value})")
    return value


def _named(table: dict[str, int], value: object, where: str, what: str) -> int:
    want(value, str, where, "a string")
    if value not in table:
        raise RunprocError(f"config.json: {where}: unknown {what} {value!r}")
    return table[value]  # type: ignore[index]


def _flag_bits(table: dict[str, int], raw: object, where: str, what: str) -> int:
    bits = 0
    for n, name in enumerate(string_list(raw or [], where)):
        bits |= _named(table, name, f"{where}[{n}]", what)
    return bits


def _personality(section: object) -> int | None:
    if section is None:
        return None
    assert isinstance(section, dict)
    domain = _named(PERSONALITY_DOMAINS, section.get("domain"), "linux.personality.domain", "personality domain")
    return domain | _flag_bits(PERSONALITY_FLAGS, section.get("flags"), "linux.personality.flags", "personality flag")


def _io_priority(section: object) -> int | None:
    if section is None:
        return None
    assert isinstance(section, dict)
    io_class = _named(IOPRIO_CLASSES, section.get("class"), "process.ioPriority.class", "I/O priority class")
    level = _int_in(section.get("priority", 0), "process.ioPriority.priority", 0, 7)
    return io_class << IOPRIO_CLASS_SHIFT | level


def _scheduler(section: object) -> tuple[int, int, int, int, int, int, int] | None:
    """process.scheduler, checked as runc 1.2 checks it, plus the kernel's priority range."""
    if section is None:
        return None
    assert isinstance(section, dict)
    where = "process.scheduler"
    if not section.get("policy"):
        raise RunprocError(f"config.json: {where}.policy is required")
    policy_name = section["policy"]
    policy = _named(SCHED_POLICIES, policy_name, f"{where}.policy", "scheduling policy")
    nice = _int_in(section.get("nice", 0), f"{where}.nice", -20, 19)
    realtime = policy_name in ("SCHED_FIFO", "SCHED_RR")
    priority = _int_in(section.get("priority", 0), f"{where}.priority", 0, 99)
    if priority and not realtime:
        raise RunprocError(f"config.json: {where}.priority ({priority}) can only be set for SCHED_FIFO or SCHED_RR")
    if realtime and not priority:
        raise RunprocError(f"config.json: {where}.priority must be from 1 to 99 for {policy_name}")
    times = [_int_in(section.get(key, 0), f"{where}.{key}", 0, 2**64 - 1) for key in ("runtime", "deadline", "period")]
    if any(times) and policy_name != "SCHED_DEADLINE":
        raise RunprocError(f"config.json: {where}.runtime/deadline/period can only be set for SCHED_DEADLINE")
    flags = _flag_bits(SCHED_FLAGS, section.get("flags"), f"{where}.flags", "scheduler flag")
    return (policy, flags, nice, priority, *times)  # type: ignore[return-value]


def _cpu_list(affinity: dict, key: str) -> frozenset[int] | None:
    """A cpu list such as "0-3,7" (the kernel's cpuset syntax); "" or absent means unset."""
    where = f"process.execCPUAffinity.{key}"
    text = optional(affinity, key, str, where, "a string", "")
    assert isinstance(text, str)
    if not text.strip():
        return None
    cpus: set[int] = set()
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        try:
            first, last = int(low), int(high if dash else low)
        except ValueError:
            raise RunprocError(f"config.json: {where}: invalid CPU list {text!r}") from None
        if first < 0 or last < first or last >= 8192:
            raise RunprocError(f"config.json: {where}: invalid CPU range {part.strip()!r} in {text!r}")
        cpus.update(range(first, last + 1))
    return frozenset(cpus)


def _labels(process: dict, host: HostFacts, security: SecurityPlan) -> None:
    """AppArmor and SELinux, as runc 1.1 treats them (both fail when the LSM is off)."""
    profile = optional(process, "apparmorProfile", str, "process.apparmorProfile", "a string", "")
    assert isinstance(profile, str)
    if profile:
        if not host.apparmor_enabled:
            # runc: "unable to apply apparmor profile: ... write /proc/self/attr/exec: invalid argument"
            raise RunprocError(f"config.json: process.apparmorProfile {profile!r}: apparmor is not enabled on this host")
        security.apparmor_profile = os_string(profile, "process.apparmorProfile")
    label = optional(process, "selinuxLabel", str, "process.selinuxLabel", "a string", "")
    if label:
        if not host.selinux_enabled:
            # runc's own message for this case.
            raise RunprocError("selinux label is specified in config, but selinux is disabled or not supported")
        raise RunprocError(f"config.json: process.selinuxLabel {label!r}: SELinux labels are not supported by runproc")
