"""Process security applied as the init will apply it, compared with runc on the same config.

Each test builds a config from `runc spec` (busybox rootfs, no terminal),
runs it through tests/linux/security_probe.py (spec step, create's prepare,
then the init's steps in the init's order, then execve) and, where runc 1.1
supports the field, through `runc run`, and compares what the process sees
in /proc/self/status and what its system calls return.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from security_fixtures import Both, Config, assert_same, base_config, both, config  # noqa: F401 - fixtures
from security_probe import PROBE_FAILED, run_probe, status_lines

from runproc.spec.security import CAPABILITIES

pytestmark = pytest.mark.root
if os.geteuid() != 0:
    pytest.fail("tests/linux/test_security.py must run as root", pytrace=False)

DATA = Path(__file__).resolve().parents[1] / "data" / "seccomp"
STATUS = 'grep -E "^(Cap|NoNewPrivs|Seccomp)" /proc/self/status'
HOST_BOUNDING = int(next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
                         if line.startswith("CapBnd:")), 16)  # fmt: skip
HOST_CAPS = [name for name, number in CAPABILITIES.items() if HOST_BOUNDING >> number & 1]
MISSING_CAPS = [name for name, number in CAPABILITIES.items() if not HOST_BOUNDING >> number & 1]

def caps(config: Config, **sets: list[str]) -> Config:
    config["process"]["capabilities"] = sets
    return config


# ---------------------------------------------------------------- capabilities

NON_ROOT = {"uid": 1000, "gid": 1000}
SOME = ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"]


def _no_capabilities(config: Config) -> Config:
    del config["process"]["capabilities"]
    return config


CAP_CASES: dict[str, Callable[[Config], Config]] = {
    "runc-spec-default": lambda c: c,
    "no-capabilities-section": _no_capabilities,
    "all-host-caps-no-inheritable": lambda c: caps(c, bounding=HOST_CAPS, effective=HOST_CAPS, permitted=HOST_CAPS),
    "effective-smaller-than-permitted": lambda c: caps(c, bounding=SOME, effective=["CAP_KILL"], permitted=SOME),
    "inheritable-and-ambient-root": lambda c: caps(c, bounding=SOME, effective=SOME, permitted=SOME,
                                                   inheritable=SOME[:2], ambient=SOME[:2]),
    "non-root-runc-spec-default": lambda c: {**c, "process": {**c["process"], "user": NON_ROOT}},
    "non-root-with-ambient": lambda c: {**caps(c, bounding=SOME, effective=SOME, permitted=SOME, inheritable=SOME[:2],
                                              ambient=SOME[:2]), "process": {**c["process"], "user": NON_ROOT}},
    "non-root-ambient-without-inheritable": lambda c: {**caps(c, bounding=SOME, effective=SOME, permitted=SOME,
                                                             ambient=SOME), "process": {**c["process"], "user": NON_ROOT}},
    "bounding-names-a-cap-the-host-lacks": lambda c: caps(c, bounding=[*SOME, *MISSING_CAPS], effective=SOME,
                                                         permitted=SOME),
    "no-new-privileges-off": lambda c: {**c, "process": {**c["process"], "noNewPrivileges": False}},
}  # fmt: skip


@pytest.mark.parametrize("case", CAP_CASES)
def test_capabilities_match_runc(case: str, config: Config, both: Both) -> None:
    probe, runc = both(CAP_CASES[case](config), STATUS)
    assert probe.returncode == 0, probe.stderr
    assert_same(probe, runc)
    assert set(status_lines(probe.stdout)) >= {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs"}


def test_inheritable_stays_empty_unless_the_spec_fills_it(config: Config, both: Both) -> None:
    """CVE-2022-29162: a runtime that fills pI by default fails here (runc 1.1.2+ does not)."""
    probe, runc = both(caps(config, bounding=HOST_CAPS, effective=HOST_CAPS, permitted=HOST_CAPS), STATUS)
    lines = status_lines(probe.stdout)
    assert lines["CapInh"] == "0000000000000000"
    assert lines["CapAmb"] == "0000000000000000"
    assert int(lines["CapPrm"], 16) == int(lines["CapBnd"], 16) == HOST_BOUNDING
    assert status_lines(runc.stdout)["CapInh"] == "0000000000000000"


def test_a_non_root_user_gets_the_specs_capabilities_through_ambient(config: Config, both: Both) -> None:
    probe, runc = both(CAP_CASES["non-root-with-ambient"](config), STATUS)
    lines = status_lines(probe.stdout)
    wanted = f"{1 << CAPABILITIES['CAP_KILL'] | 1 << CAPABILITIES['CAP_NET_BIND_SERVICE']:016x}"
    assert lines["CapAmb"] == lines["CapPrm"] == lines["CapEff"] == lines["CapInh"] == wanted
    assert_same(probe, runc)


@pytest.mark.parametrize("kind", ["permitted", "inheritable"])
def test_a_capability_the_host_lacks_fails_create_as_in_runc(kind: str, config: Config, both: Both) -> None:
    if not MISSING_CAPS:
        pytest.skip("this host's bounding set has every capability: nothing to ask for that it lacks")
    missing = MISSING_CAPS[0]  # CAP_SYS_RESOURCE on the VM this was written on
    sets = {"bounding": [*SOME, missing], "effective": SOME, "permitted": SOME, kind: [*SOME[:1], missing]}
    if kind == "permitted":
        sets["permitted"] = [*SOME, missing]
    probe, runc = both(caps(config, **sets), STATUS)
    assert runc.returncode != 0 and "unable to apply caps: operation not permitted" in runc.stderr
    assert probe.returncode == PROBE_FAILED
    assert (f"ERROR: create: unable to apply caps: operation not permitted (process.capabilities.{kind}: "
            f"{missing} is not available") in probe.stderr


def test_the_init_side_fails_too_without_the_create_check(config: Config, tmp_path: Path) -> None:
    """If create's check were skipped, capset itself refuses (EPERM), before anything runs."""
    if not MISSING_CAPS:
        pytest.skip("this host's bounding set has every capability")
    script = f"""
import os
from runproc.linux.capabilities import apply_bounding, apply_after_user_switch
from runproc.spec.plan import ContainerPlan
from runproc.spec.security import apply_security
plan = ContainerPlan()
apply_security({{"process": {{"capabilities": {{"permitted": ["{MISSING_CAPS[0]}"]}}}}}}, plan)
apply_bounding(plan.security.capabilities)
try:
    apply_after_user_switch(plan.security.capabilities)
except OSError as err:
    print(err.errno, err.strerror)
"""
    result = subprocess.run(["python3", "-c", script], capture_output=True, text=True, check=False, timeout=30,
                            env={"PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert result.stdout == "1 unable to apply caps: Operation not permitted\n", result.stderr


def test_unknown_capability_fails_create_naming_it(config: Config, both: Both) -> None:
    """A deliberate difference: runc 1.1 only warns ("ignoring unknown or unavailable capabilities")."""
    probe, runc = both(caps(config, bounding=["CAP_KILL", "CAP_FOO"]), STATUS)
    assert probe.returncode == PROBE_FAILED
    assert "config.json: process.capabilities.bounding: unknown capability 'CAP_FOO'" in probe.stderr
    assert runc.returncode == 0 and "CAP_FOO" in runc.stderr


# ---------------------------------------------------------------- seccomp


def profile(name: str) -> dict:
    return json.loads((DATA / name).read_text())


SYSCALL_SCRIPT = (
    f"{STATUS}; mkdir /tmp; echo mkdir=$?; kill -0 $$; echo kill0=$?; kill -CONT $$; echo kill-cont=$?; "
    "unshare -m true; echo unshare=$?; linux32 uname -m; echo linux32=$?"
)


@pytest.mark.parametrize("name", ["containerd-1.6-default.json", "containerd-1.6-default-syscaps.json"])
@pytest.mark.parametrize("nnp", [True, False])
def test_containerd_default_profiles_load_and_match_runc(name: str, nnp: bool, config: Config, both: Both) -> None:
    config["linux"]["seccomp"] = profile(name)
    config["process"]["noNewPrivileges"] = nnp
    probe, runc = both(config, SYSCALL_SCRIPT)
    assert_same(probe, runc)
    assert status_lines(probe.stdout)["Seccomp"] == "2"
    assert "linux32=0" in probe.stdout and "i686" in probe.stdout  # personality(PER_LINUX32): an args rule allows it
    if name == "containerd-1.6-default.json":
        assert "unshare=1" in probe.stdout and "Operation not permitted" in probe.stderr + runc.stderr


def test_default_profile_as_a_non_root_user_without_no_new_privs(config: Config, both: Both) -> None:
    """Without no_new_privs the filter goes in before the user switch, while CAP_SYS_ADMIN is there."""
    config["linux"]["seccomp"] = profile("containerd-1.6-default.json")
    config["process"]["noNewPrivileges"] = False
    config["process"]["user"] = NON_ROOT
    probe, runc = both(config, STATUS)
    assert probe.returncode == 0, probe.stderr
    assert_same(probe, runc)
    assert status_lines(probe.stdout)["Seccomp"] == "2"
    assert status_lines(probe.stdout)["NoNewPrivs"] == "0"


def test_a_denied_syscall_returns_the_rules_errno(config: Config, both: Both) -> None:
    config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat", "no_such_syscall"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
        {"names": ["rmdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 95},
    ]}  # fmt: skip
    probe, runc = both(config, f"{STATUS}; mkdir /tmp/x; echo mkdir=$?; rmdir /tmp; echo rmdir=$?")
    assert_same(probe, runc)
    assert "mkdir=1" in probe.stdout
    assert "can't create directory '/tmp/x': Operation not permitted" in probe.stderr
    assert "'/tmp': Operation not supported" in probe.stderr  # errno 95, not the "Directory not empty" of a real rmdir
    assert probe.stderr.count("\n") == runc.stderr.count("\n")


def test_default_errno_ret_with_an_allow_list(config: Config, both: Both) -> None:
    allow = profile("containerd-1.6-default.json")
    allow["defaultErrnoRet"] = 95
    for rule in allow["syscalls"]:
        rule["names"] = [name for name in rule["names"] if name not in ("mkdir", "mkdirat")]
    config["linux"]["seccomp"] = allow
    probe, runc = both(config, "mkdir /tmp/x; echo mkdir=$?")
    assert_same(probe, runc)
    assert "mkdir=1" in probe.stdout and "Operation not supported" in probe.stderr


@pytest.mark.parametrize(("args", "denied"), [
    # kill(pid, sig): arg 1 is the signal; ash's kill builtin calls kill(2) itself.
    ([{"index": 1, "value": 0, "op": "SCMP_CMP_EQ"}], {"kill0"}),
    ([{"index": 1, "value": 0, "op": "SCMP_CMP_NE"}], {"kill-cont"}),
    ([{"index": 1, "value": 18, "op": "SCMP_CMP_GE"}], {"kill-cont"}),
    ([{"index": 1, "value": 18, "op": "SCMP_CMP_LT"}], {"kill0"}),
    ([{"index": 1, "value": 0xFF, "valueTwo": 0x12, "op": "SCMP_CMP_MASKED_EQ"}], {"kill-cont"}),
    ([{"index": 1, "value": 0xF0, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}], {"kill0"}),
    # Two conditions on one argument: runc adds one rule per condition (either one denies).
    ([{"index": 1, "value": 0, "op": "SCMP_CMP_EQ"}, {"index": 1, "value": 18, "op": "SCMP_CMP_EQ"}],
     {"kill0", "kill-cont"}),
    # Conditions on different arguments are ANDed: no pid is that large, so nothing is denied...
    ([{"index": 0, "value": 2**31 - 1, "op": "SCMP_CMP_EQ"}, {"index": 1, "value": 0, "op": "SCMP_CMP_EQ"}], set()),
    # ...and with a pid condition every pid meets, only signal 0 is.
    ([{"index": 0, "value": 2**31 - 1, "op": "SCMP_CMP_LT"}, {"index": 1, "value": 0, "op": "SCMP_CMP_EQ"}],
     {"kill0"}),
])  # fmt: skip
def test_argument_comparisons_match_runc(args: list[dict], denied: set[str], config: Config, both: Both) -> None:
    config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "args": args}]}  # fmt: skip
    script = "kill -0 $$; echo kill0=$?; kill -CONT $$; echo kill-cont=$?"
    probe, runc = both(config, script)
    assert_same(probe, runc)
    for name in ("kill0", "kill-cont"):
        assert f"{name}={1 if name in denied else 0}" in probe.stdout


def test_rules_for_other_architectures_and_flags(config: Config, tmp_path: Path) -> None:
    """x86/x32 rules and the seccomp(2) flags (runc 1.1.5 rejects any flags; runc 1.2 takes these)."""
    config["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
        "syscalls": [{"names": ["mkdir", "socketcall", "stime"], "action": "SCMP_ACT_ERRNO", "errnoRet": 95}],
    }
    config["process"]["args"] = ["/bin/sh", "-c", f"{STATUS}; mkdir /tmp"]
    result = run_probe(config)
    assert result.returncode == 1, result.stderr
    assert status_lines(result.stdout)["Seccomp"] == "2"
    assert "Operation not supported" in result.stderr


def test_seccomp_notify_is_refused(config: Config) -> None:
    config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW",
                                  "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}  # fmt: skip
    result = run_probe(config)
    assert result.returncode == PROBE_FAILED
    assert "SCMP_ACT_NOTIFY (seccomp notify) is not supported" in result.stderr


def test_compiled_filters_are_bpf_programs() -> None:
    from runproc.linux.seccomp import compile_filter
    from runproc.spec.seccomp import seccomp_spec

    for name in ("containerd-1.6-default.json", "containerd-1.6-default-syscaps.json"):
        spec = seccomp_spec({"linux": {"seccomp": profile(name)}})
        assert spec is not None
        program = compile_filter(spec)
        assert len(program) % 8 == 0 and 100 < len(program) // 8 < 4096
