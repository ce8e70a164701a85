"""The pure spec step for process security: runproc.spec.security and runproc.spec.seccomp."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runproc.errors import RunprocError
from runproc.spec.plan import ContainerPlan
from runproc.spec.seccomp import ACT_ALLOW, ACT_ERRNO, ACT_KILL_PROCESS, ACT_KILL_THREAD, ACT_TRACE, SeccompSpec
from runproc.spec.security import CAPABILITIES, HostFacts, SecurityPlan, apply_security

DATA = Path(__file__).resolve().parents[1] / "data" / "seccomp"
HOST = HostFacts(last_cap=40, apparmor_enabled=False, selinux_enabled=False)
ALL_CAPS = sorted(CAPABILITIES, key=CAPABILITIES.__getitem__)


def plan_for(process: dict | None = None, linux: dict | None = None, host: HostFacts = HOST) -> SecurityPlan:
    config: dict = {"process": {"args": ["sh"], **(process or {})}}
    if linux is not None:
        config["linux"] = linux
    plan = ContainerPlan()
    apply_security(config, plan, host)
    assert plan.security is not None
    return plan.security


def error_for(process: dict | None = None, linux: dict | None = None, host: HostFacts = HOST) -> str:
    with pytest.raises(RunprocError) as info:
        plan_for(process, linux, host)
    return str(info.value)


def seccomp_for(profile: dict) -> SeccompSpec:
    spec = plan_for(linux={"seccomp": profile}).seccomp
    assert spec is not None
    return spec


def seccomp_error(profile: object) -> str:
    return error_for(linux={"seccomp": profile})


# ---------------------------------------------------------------- capabilities


def test_capability_table_is_the_kernels() -> None:
    assert CAPABILITIES["CAP_CHOWN"] == 0
    assert CAPABILITIES["CAP_SYS_ADMIN"] == 21
    assert CAPABILITIES["CAP_SYS_RESOURCE"] == 24
    assert CAPABILITIES["CAP_CHECKPOINT_RESTORE"] == 40
    assert len(CAPABILITIES) == 41


def test_the_five_sets_become_masks() -> None:
    caps = plan_for({"capabilities": {
        "bounding": ["CAP_KILL", "CAP_AUDIT_WRITE", "CAP_NET_BIND_SERVICE"],
        "effective": ["CAP_KILL"],
        "permitted": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "inheritable": ["CAP_NET_BIND_SERVICE"],
        "ambient": ["CAP_NET_BIND_SERVICE"],
    }}).capabilities  # fmt: skip
    assert caps.bounding == 0x20000420  # what /proc shows for runc spec's three
    assert caps.effective == 1 << 5
    assert caps.permitted == 1 << 5 | 1 << 10
    assert caps.inheritable == caps.ambient == 1 << 10
    assert caps.ignored == []


@pytest.mark.parametrize("section", [None, {}, {"bounding": None}])
def test_absent_capabilities_are_empty_sets_as_in_runc(section: dict | None) -> None:
    process = {} if section is None else {"capabilities": section}
    caps = plan_for(process).capabilities
    assert (caps.bounding, caps.effective, caps.permitted, caps.inheritable, caps.ambient) == (0, 0, 0, 0, 0)


def test_inheritable_is_never_filled_by_default() -> None:
    """CVE-2022-29162: full bounding/permitted/effective must not leak into inheritable (or ambient)."""
    caps = plan_for({"capabilities": {k: ALL_CAPS for k in ("bounding", "effective", "permitted")}}).capabilities
    assert caps.permitted == (1 << 41) - 1
    assert caps.inheritable == 0 and caps.ambient == 0


@pytest.mark.parametrize("kind", ["bounding", "effective", "permitted", "inheritable", "ambient"])
def test_unknown_capability_names_field_and_value(kind: str) -> None:
    message = error_for({"capabilities": {kind: ["CAP_KILL", "CAP_FOO"]}})
    assert message == f"config.json: process.capabilities.{kind}: unknown capability 'CAP_FOO'"


def test_capability_names_are_case_sensitive_and_prefixed() -> None:
    assert "unknown capability 'KILL'" in error_for({"capabilities": {"bounding": ["KILL"]}})
    assert "unknown capability 'cap_kill'" in error_for({"capabilities": {"bounding": ["cap_kill"]}})


def test_capabilities_beyond_the_kernels_last_are_ignored_as_runc_does() -> None:
    old_kernel = HostFacts(last_cap=37, apparmor_enabled=False, selinux_enabled=False)
    caps = plan_for({"capabilities": {"bounding": ["CAP_KILL", "CAP_BPF", "CAP_PERFMON"],
                                      "permitted": ["CAP_BPF"]}}, host=old_kernel).capabilities  # fmt: skip
    assert caps.bounding == 1 << 5 and caps.permitted == 0
    assert caps.ignored == ["CAP_BPF", "CAP_PERFMON"]
    assert caps.last_cap == 37


def test_effective_beyond_permitted_fails() -> None:
    message = error_for({"capabilities": {"effective": ["CAP_KILL", "CAP_SYS_ADMIN"], "permitted": ["CAP_KILL"]}})
    assert message == "config.json: process.capabilities.effective: CAP_SYS_ADMIN is not in process.capabilities.permitted"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ([], "config.json: process.capabilities must be an object"),
        ({"bounding": "CAP_KILL"}, "config.json: process.capabilities.bounding must be a list of strings"),
        ({"ambient": [1]}, "config.json: process.capabilities.ambient must be a list of strings"),
    ],
)
def test_capability_types(section: object, message: str) -> None:
    assert error_for({"capabilities": section}) == message


# ---------------------------------------------------------------- process attributes


def test_nothing_set_by_default() -> None:
    security = plan_for()
    assert security.seccomp is None and security.seccomp_program is None
    assert security.oom_score_adj is None and security.personality is None
    assert security.io_priority is None and security.scheduler is None
    assert security.cpu_affinity_initial is None and security.cpu_affinity_final is None
    assert security.apparmor_profile == ""


@pytest.mark.parametrize("value", [-1000, -17, 0, 500, 1000])
def test_oom_score_adj(value: int) -> None:
    assert plan_for({"oomScoreAdj": value}).oom_score_adj == value


@pytest.mark.parametrize(("value", "message"), [
    (1001, "config.json: process.oomScoreAdj must be an integer from -1000 to 1000 (got 1001)"),
    (-1001, "config.json: process.oomScoreAdj must be an integer from -1000 to 1000 (got -1001)"),
    ("5", "config.json: process.oomScoreAdj must be an integer from -1000 to 1000"),
    (True, "config.json: process.oomScoreAdj must be an integer from -1000 to 1000"),
])  # fmt: skip
def test_oom_score_adj_errors(value: object, message: str) -> None:
    assert error_for({"oomScoreAdj": value}) == message


def test_personality() -> None:
    assert plan_for(linux={"personality": {"domain": "LINUX"}}).personality == 0
    assert plan_for(linux={"personality": {"domain": "LINUX32"}}).personality == 8
    flags = {"domain": "LINUX", "flags": ["ADDR_NO_RANDOMIZE", "READ_IMPLIES_EXEC"]}
    assert plan_for(linux={"personality": flags}).personality == 0x0040000 | 0x0400000


@pytest.mark.parametrize(("section", "message"), [
    ({"domain": "LINUX64"}, "config.json: linux.personality.domain: unknown personality domain 'LINUX64'"),
    ({}, "config.json: linux.personality.domain must be a string"),
    ({"domain": "LINUX", "flags": ["NOPE"]}, "config.json: linux.personality.flags[0]: unknown personality flag 'NOPE'"),
    ({"domain": "LINUX", "flags": "ADDR_NO_RANDOMIZE"}, "config.json: linux.personality.flags must be a list of strings"),
    ("LINUX", "config.json: linux.personality must be an object"),
])  # fmt: skip
def test_personality_errors(section: object, message: str) -> None:
    assert error_for(linux={"personality": section}) == message


@pytest.mark.parametrize(("section", "value"), [
    ({"class": "IOPRIO_CLASS_RT", "priority": 3}, 1 << 13 | 3),
    ({"class": "IOPRIO_CLASS_BE", "priority": 7}, 2 << 13 | 7),
    ({"class": "IOPRIO_CLASS_IDLE"}, 3 << 13),
])  # fmt: skip
def test_io_priority(section: dict, value: int) -> None:
    assert plan_for({"ioPriority": section}).io_priority == value


@pytest.mark.parametrize(("section", "message"), [
    ({"class": "IOPRIO_CLASS_NONE"}, "config.json: process.ioPriority.class: unknown I/O priority class 'IOPRIO_CLASS_NONE'"),
    ({"priority": 1}, "config.json: process.ioPriority.class must be a string"),
    ({"class": "IOPRIO_CLASS_BE", "priority": 8}, "config.json: process.ioPriority.priority must be an integer from 0 to 7 (got 8)"),
    ({"class": "IOPRIO_CLASS_BE", "priority": -1}, "config.json: process.ioPriority.priority must be an integer from 0 to 7 (got -1)"),
])  # fmt: skip
def test_io_priority_errors(section: dict, message: str) -> None:
    assert error_for({"ioPriority": section}) == message


def test_scheduler() -> None:
    assert plan_for({"scheduler": {"policy": "SCHED_OTHER", "nice": 5}}).scheduler == (0, 0, 5, 0, 0, 0, 0)
    rr = {"policy": "SCHED_RR", "priority": 10, "flags": ["SCHED_FLAG_RESET_ON_FORK"]}
    assert plan_for({"scheduler": rr}).scheduler == (2, 1, 0, 10, 0, 0, 0)
    deadline = {"policy": "SCHED_DEADLINE", "runtime": 10_000_000, "deadline": 30_000_000, "period": 30_000_000}
    assert plan_for({"scheduler": deadline}).scheduler == (6, 0, 0, 0, 10_000_000, 30_000_000, 30_000_000)
    assert plan_for({"scheduler": {"policy": "SCHED_IDLE"}}).scheduler == (5, 0, 0, 0, 0, 0, 0)
    assert plan_for({"scheduler": {"policy": "SCHED_BATCH", "nice": -20}}).scheduler == (3, 0, -20, 0, 0, 0, 0)


@pytest.mark.parametrize(("section", "message"), [
    ({}, "config.json: process.scheduler.policy is required"),
    ({"policy": "SCHED_FOO"}, "config.json: process.scheduler.policy: unknown scheduling policy 'SCHED_FOO'"),
    ({"policy": "SCHED_OTHER", "nice": 20}, "config.json: process.scheduler.nice must be an integer from -20 to 19 (got 20)"),
    ({"policy": "SCHED_OTHER", "priority": 5},
     "config.json: process.scheduler.priority (5) can only be set for SCHED_FIFO or SCHED_RR"),
    ({"policy": "SCHED_FIFO"}, "config.json: process.scheduler.priority must be from 1 to 99 for SCHED_FIFO"),
    ({"policy": "SCHED_RR", "priority": 100}, "config.json: process.scheduler.priority must be an integer from 0 to 99 (got 100)"),
    ({"policy": "SCHED_OTHER", "runtime": 5},
     "config.json: process.scheduler.runtime/deadline/period can only be set for SCHED_DEADLINE"),
    ({"policy": "SCHED_OTHER", "flags": ["SCHED_FLAG_NOPE"]},
     "config.json: process.scheduler.flags[0]: unknown scheduler flag 'SCHED_FLAG_NOPE'"),
    ({"policy": "SCHED_DEADLINE", "period": -1},
     "config.json: process.scheduler.period must be an integer from 0 to 18446744073709551615 (got -1)"),
])  # fmt: skip
def test_scheduler_errors(section: dict, message: str) -> None:
    assert error_for({"scheduler": section}) == message


def test_exec_cpu_affinity() -> None:
    security = plan_for({"execCPUAffinity": {"initial": "0-2, 5", "final": "1"}})
    assert security.cpu_affinity_initial == {0, 1, 2, 5}
    assert security.cpu_affinity_final == {1}
    assert plan_for({"execCPUAffinity": {"initial": ""}}).cpu_affinity_initial is None


@pytest.mark.parametrize(("value", "message"), [
    ("a-b", "config.json: process.execCPUAffinity.initial: invalid CPU list 'a-b'"),
    ("3-1", "config.json: process.execCPUAffinity.initial: invalid CPU range '3-1' in '3-1'"),
    ("0,,1", "config.json: process.execCPUAffinity.initial: invalid CPU list '0,,1'"),
    ("-1", "config.json: process.execCPUAffinity.initial: invalid CPU list '-1'"),
    (3, "config.json: process.execCPUAffinity.initial must be a string"),
])  # fmt: skip
def test_exec_cpu_affinity_errors(value: object, message: str) -> None:
    assert error_for({"execCPUAffinity": {"initial": value}}) == message


def test_apparmor_profile_fails_when_apparmor_is_off_as_runc_does() -> None:
    assert error_for({"apparmorProfile": "docker-default"}) == (
        "config.json: process.apparmorProfile 'docker-default': apparmor is not enabled on this host"
    )
    assert plan_for({"apparmorProfile": ""}).apparmor_profile == ""


def test_apparmor_profile_is_kept_when_apparmor_is_on() -> None:
    host = HostFacts(last_cap=40, apparmor_enabled=True, selinux_enabled=False)
    assert plan_for({"apparmorProfile": "docker-default"}, host=host).apparmor_profile == "docker-default"


def test_selinux_label_fails_with_runcs_message_when_selinux_is_off() -> None:
    message = error_for({"selinuxLabel": "system_u:system_r:container_t:s0"})
    assert message == "selinux label is specified in config, but selinux is disabled or not supported"


def test_selinux_label_is_refused_when_selinux_is_on() -> None:
    host = HostFacts(last_cap=40, apparmor_enabled=False, selinux_enabled=True)
    message = error_for({"selinuxLabel": "system_u:system_r:container_t:s0"}, host=host)
    assert message == ("config.json: process.selinuxLabel 'system_u:system_r:container_t:s0': "
                       "SELinux labels are not supported by runproc")


def test_host_facts_probe_reads_this_host() -> None:
    facts = HostFacts.probe()
    assert facts.last_cap == int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    assert isinstance(facts.apparmor_enabled, bool) and isinstance(facts.selinux_enabled, bool)


# ---------------------------------------------------------------- seccomp


def test_seccomp_actions_and_errno() -> None:
    spec = seccomp_for({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 38,
        "syscalls": [
            {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["rmdir"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["kill"], "action": "SCMP_ACT_TRACE"},
            {"names": ["read"], "action": "SCMP_ACT_ALLOW", "errnoRet": 5},
            {"names": ["ptrace"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["reboot"], "action": "SCMP_ACT_KILL"},
        ],
    })  # fmt: skip
    assert spec.default_action == ACT_ERRNO | 38
    assert [rule.action for rule in spec.rules] == [
        ACT_ERRNO | 13, ACT_ERRNO | 1, ACT_TRACE | 1, ACT_ALLOW, ACT_KILL_PROCESS, ACT_KILL_THREAD,
    ]  # fmt: skip
    assert spec.rules[0].names == ["mkdir"] and spec.flags == 0 and spec.architectures == []


def test_seccomp_default_errno_is_eperm() -> None:
    assert seccomp_for({"defaultAction": "SCMP_ACT_ERRNO"}).default_action == ACT_ERRNO | 1


def test_seccomp_architectures_flags_and_args() -> None:
    spec = seccomp_for({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
        "syscalls": [{"names": ["clone"], "action": "SCMP_ACT_ERRNO", "args": [
            {"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"},
            {"index": 1, "value": 2**64 - 1, "op": "SCMP_CMP_NE"},
        ]}],
    })  # fmt: skip
    assert spec.architectures == ["x86_64", "x86", "x32"]
    assert spec.flags == 7
    assert spec.rules[0].args == [(0, 7, 2114060288, 0), (1, 1, 2**64 - 1, 0)]


@pytest.mark.parametrize("op", ["SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE",
                                "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ"])  # fmt: skip
def test_seccomp_operators(op: str) -> None:
    spec = seccomp_for({"defaultAction": "SCMP_ACT_ALLOW",
                        "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ERRNO",
                                      "args": [{"index": 5, "value": 1, "op": op}]}]})  # fmt: skip
    assert spec.rules[0].args[0][1] in range(1, 8)


def test_seccomp_unknown_syscall_names_are_kept_for_the_compiler_to_skip() -> None:
    spec = seccomp_for({"defaultAction": "SCMP_ACT_ALLOW",
                        "syscalls": [{"names": ["nosuchcall"], "action": "SCMP_ACT_KILL"}]})  # fmt: skip
    assert spec.rules[0].names == ["nosuchcall"]


@pytest.mark.parametrize("name", ["containerd-1.6-default.json", "containerd-1.6-default-syscaps.json"])
def test_seccomp_containerd_default_profiles_pass(name: str) -> None:
    spec = seccomp_for(json.loads((DATA / name).read_text()))
    assert spec.default_action == ACT_ERRNO | 1
    assert spec.architectures == ["x86_64", "x86", "x32"]
    assert len(spec.rules) >= 11


W = "config.json: linux.seccomp"


@pytest.mark.parametrize(("profile", "message"), [
    ([], f"{W} must be an object"),
    ({}, f"{W}.defaultAction must be a string"),
    ({"defaultAction": "SCMP_ACT_FOO"}, f"{W}.defaultAction: unknown seccomp action 'SCMP_ACT_FOO'"),
    ({"defaultAction": "SCMP_ACT_NOTIFY"},
     f"{W}.defaultAction: SCMP_ACT_NOTIFY (seccomp notify) is not supported"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock"},
     f"{W}.listenerPath: seccomp notify (SCMP_ACT_NOTIFY) is not supported"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]},
     f"{W}.syscalls[0].action: SCMP_ACT_NOTIFY (seccomp notify) is not supported"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 65536},
     f"{W}.defaultErrnoRet must be an integer from 0 to 65535"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": "1"},
     f"{W}.defaultErrnoRet must be an integer from 0 to 65535"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86", "SCMP_ARCH_FOO"]},
     f"{W}.architectures[1]: unknown architecture 'SCMP_ARCH_FOO'"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": "SCMP_ARCH_X86"},
     f"{W}.architectures must be a list of strings"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_FOO"]},
     f"{W}.flags[0]: unknown seccomp flag 'SECCOMP_FILTER_FLAG_FOO'"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": {}}, f"{W}.syscalls must be a list"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": ["mkdir"]}, f"{W}.syscalls[0] must be an object"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": "mkdir", "action": "SCMP_ACT_KILL"}]},
     f"{W}.syscalls[0].names must be a list of strings"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"]}]},
     f"{W}.syscalls[0].action must be a string"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO",
                                                       "errnoRet": -1}]},
     f"{W}.syscalls[0].errnoRet must be an integer from 0 to 65535"),
])  # fmt: skip
def test_seccomp_errors(profile: object, message: str) -> None:
    assert seccomp_error(profile) == message


def arg_error(arg: object) -> str:
    return seccomp_error({"defaultAction": "SCMP_ACT_ALLOW",
                          "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_KILL", "args": [arg]}]})


A = f"{W}.syscalls[0].args[0]"


@pytest.mark.parametrize(("arg", "message"), [
    ({"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}, f"{A}.index: syscalls only have up to 6 arguments (6 given)"),
    ({"index": -1, "value": 1, "op": "SCMP_CMP_EQ"}, f"{A}.index: syscalls only have up to 6 arguments (-1 given)"),
    ({"value": 1, "op": "SCMP_CMP_EQ"}, f"{A}.index must be an integer from 0 to 5"),
    ({"index": 0, "value": 1, "op": "SCMP_CMP_FOO"}, f"{A}.op: unknown seccomp operator 'SCMP_CMP_FOO'"),
    ({"index": 0, "value": 1}, f"{A}.op must be a string"),
    ({"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}, f"{A}.value must be an integer from 0 to 2^64-1"),
    ({"index": 0, "value": 1, "valueTwo": 2**64, "op": "SCMP_CMP_EQ"},
     f"{A}.valueTwo must be an integer from 0 to 2^64-1"),
    ({"index": 0, "value": "1", "op": "SCMP_CMP_EQ"}, f"{A}.value must be an integer from 0 to 2^64-1"),
    ("SCMP_CMP_EQ", f"{A} must be an object"),
])  # fmt: skip
def test_seccomp_argument_errors(arg: object, message: str) -> None:
    assert arg_error(arg) == message


# ---------------------------------------------------------------- what create checks against the host

HOST_PERMITTED = 0x1FFFEFFFFFF  # this VM's: everything but CAP_SYS_RESOURCE (24)


def check(process: dict, current: tuple[int, int, int, int] = (HOST_PERMITTED, HOST_PERMITTED, 0, HOST_PERMITTED)) -> None:
    from runproc.linux.capabilities import check_available

    check_available(plan_for(process).capabilities, current)


def test_check_available_passes_what_the_host_has() -> None:
    check({"capabilities": {k: [c for c in ALL_CAPS if c != "CAP_SYS_RESOURCE"]
                            for k in ("bounding", "effective", "permitted", "inheritable", "ambient")}})  # fmt: skip
    # A bounding set may name what the host lacks: dropping the rest is all that happens (as in runc).
    check({"capabilities": {"bounding": ["CAP_SYS_RESOURCE", "CAP_KILL"]}})


@pytest.mark.parametrize("kind", ["permitted", "inheritable"])
def test_check_available_names_a_capability_the_host_lacks(kind: str) -> None:
    process = {"capabilities": {"bounding": ["CAP_KILL", "CAP_SYS_RESOURCE"], kind: ["CAP_KILL", "CAP_SYS_RESOURCE"]}}
    with pytest.raises(RunprocError) as info:
        check(process)
    assert str(info.value) == (f"unable to apply caps: operation not permitted (process.capabilities.{kind}: "
                               "CAP_SYS_RESOURCE is not available to runproc on this host)")


def test_check_available_inheritable_must_stay_in_the_new_bounding_set() -> None:
    """runc fails here too: pI may not gain what the dropped bounding set no longer has."""
    with pytest.raises(RunprocError, match="process.capabilities.inheritable: CAP_SYS_ADMIN"):
        check({"capabilities": {"bounding": ["CAP_KILL"], "inheritable": ["CAP_SYS_ADMIN"]}})


def test_check_available_ambient_beyond_inheritable_is_no_error() -> None:
    """runc silently leaves out what the kernel refuses to raise (runc spec's own default has this)."""
    check({"capabilities": {"bounding": ["CAP_KILL"], "permitted": ["CAP_KILL"], "ambient": ["CAP_KILL"]}})
