"""oomScoreAdj, personality, ioPriority, scheduler, execCPUAffinity and the LSM labels,
applied as the init will (security_probe); compared with runc where runc 1.1 has the field."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from security_fixtures import Both, Config, assert_same, base_config, both, config  # noqa: F401 - fixtures
from security_probe import PROBE_FAILED, run_probe

pytestmark = pytest.mark.root
if os.geteuid() != 0:
    pytest.fail("tests/linux/test_security_attrs.py must run as root", pytrace=False)

HOST_HAS_SYS_RESOURCE = bool(
    int(next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
             if line.startswith("CapEff:")), 16) >> 24 & 1  # fmt: skip
)


def probe(config: Config, script: str) -> tuple[int, str, str]:
    config["process"]["args"] = ["/bin/sh", "-c", script]
    result = run_probe(config)
    return result.returncode, result.stdout, result.stderr


@pytest.mark.parametrize("value", [500, 0, 1000])
def test_oom_score_adj_raised_matches_runc(value: int, config: Config, both: Both) -> None:
    config["process"]["oomScoreAdj"] = value
    probe_result, runc = both(config, "cat /proc/self/oom_score_adj")
    assert_same(probe_result, runc)
    assert probe_result.stdout == f"{value}\n"


def test_oom_score_adj_lowered_needs_cap_sys_resource_as_in_runc(config: Config, both: Both) -> None:
    """Lowering below 0 needs CAP_SYS_RESOURCE: without it runc fails ("failed to update
    /proc/self/oom_score_adj: Permission denied"), and so does the init, before create returns."""
    config["process"]["oomScoreAdj"] = -500
    probe_result, runc = both(config, "cat /proc/self/oom_score_adj")
    if HOST_HAS_SYS_RESOURCE:
        assert_same(probe_result, runc)
        assert probe_result.stdout == "-500\n"
    else:
        assert runc.returncode != 0 and "failed to update /proc/self/oom_score_adj: Permission denied" in runc.stderr
        assert probe_result.returncode == PROBE_FAILED
        assert "ERROR: init: [Errno 13] failed to update /proc/self/oom_score_adj: Permission denied" in (
            probe_result.stderr
        )


@pytest.mark.parametrize(("personality", "machine", "persona"), [
    ({"domain": "LINUX32"}, "i686", "00000008"),
    ({"domain": "LINUX"}, "x86_64", "00000000"),
    ({"domain": "LINUX", "flags": ["ADDR_NO_RANDOMIZE"]}, "x86_64", "00040000"),
])  # fmt: skip
def test_personality(personality: dict, machine: str, persona: str, config: Config) -> None:
    config["linux"]["personality"] = personality
    code, out, err = probe(config, "uname -m; cat /proc/self/personality")
    assert code == 0, err
    assert out == f"{machine}\n{persona}\n"


@pytest.mark.parametrize(("io_priority", "shown"), [
    ({"class": "IOPRIO_CLASS_BE", "priority": 6}, "best-effort: prio 6"),
    ({"class": "IOPRIO_CLASS_RT", "priority": 2}, "realtime: prio 2"),
    ({"class": "IOPRIO_CLASS_IDLE"}, "idle"),  # busybox prints no level for idle
])  # fmt: skip
def test_io_priority(io_priority: dict, shown: str, config: Config) -> None:
    config["process"]["ioPriority"] = io_priority
    code, out, err = probe(config, "ionice -p $$")
    assert code == 0, err
    assert out == f"{shown}\n"


def sched_fields(out: str) -> tuple[int, int, int]:
    """(nice, rt_priority, policy) from /proc/self/stat (fields 19, 40, 41)."""
    fields = out.rsplit(")", 1)[1].split()  # after the command name, field 3 is fields[0]
    return int(fields[16]), int(fields[37]), int(fields[38])


@pytest.mark.parametrize(("scheduler", "expected"), [
    ({"policy": "SCHED_OTHER", "nice": 7}, (7, 0, 0)),
    ({"policy": "SCHED_BATCH", "nice": -5}, (-5, 0, 3)),
    ({"policy": "SCHED_IDLE"}, (0, 0, 5)),
    ({"policy": "SCHED_RR", "priority": 10}, (0, 10, 2)),
    ({"policy": "SCHED_FIFO", "priority": 1, "flags": ["SCHED_FLAG_RESET_ON_FORK"]}, (0, 1, 1)),
])  # fmt: skip
def test_scheduler(scheduler: dict, expected: tuple[int, int, int], config: Config) -> None:
    config["process"]["scheduler"] = scheduler
    # exec keeps the policy; `exec cat` so that the process read is the one that was set (no fork:
    # SCHED_FLAG_RESET_ON_FORK would reset a child).
    code, out, err = probe(config, "exec cat /proc/self/stat")
    assert code == 0, err
    assert sched_fields(out) == expected


def test_scheduler_the_kernel_refuses_fails_before_start(config: Config) -> None:
    config["process"]["scheduler"] = {"policy": "SCHED_ISO"}  # named by the spec, not in Linux
    code, _, err = probe(config, "true")
    assert code == PROBE_FAILED
    assert "ERROR: init: [Errno 22] error setting scheduler: Invalid argument" in err


@pytest.mark.parametrize(("affinity", "allowed"), [
    ({"initial": "0"}, "0"),
    ({"initial": "0", "final": "1"}, "1"),
    ({"final": "0-1"}, "0-1"),
])  # fmt: skip
def test_exec_cpu_affinity(affinity: dict, allowed: str, config: Config) -> None:
    if os.cpu_count() is None or os.cpu_count() < 2:  # type: ignore[operator]
        pytest.skip("needs two CPUs")
    config["process"]["execCPUAffinity"] = affinity
    code, out, err = probe(config, "exec grep Cpus_allowed_list /proc/self/status")
    assert code == 0, err
    assert out.split() == ["Cpus_allowed_list:", allowed]


def test_exec_cpu_affinity_on_a_cpu_not_there_fails(config: Config) -> None:
    config["process"]["execCPUAffinity"] = {"initial": "4000"}
    code, _, err = probe(config, "true")
    assert code == PROBE_FAILED and "error setting initial CPU affinity: Invalid argument" in err


def test_apparmor_profile_without_apparmor_fails_as_in_runc(config: Config, both: Both) -> None:
    if Path("/sys/module/apparmor/parameters/enabled").exists():
        pytest.skip("AppArmor is present on this host")
    config["process"]["apparmorProfile"] = "docker-default"
    probe_result, runc = both(config, "true")
    assert runc.returncode != 0 and "unable to apply apparmor profile" in runc.stderr
    assert probe_result.returncode == PROBE_FAILED
    assert "process.apparmorProfile 'docker-default': apparmor is not enabled on this host" in probe_result.stderr


def test_selinux_label_without_selinux_fails_with_runcs_message(config: Config, both: Both) -> None:
    if Path("/sys/fs/selinux/enforce").exists():
        pytest.skip("SELinux is on here")
    config["process"]["selinuxLabel"] = "system_u:system_r:container_t:s0"
    probe_result, runc = both(config, "true")
    message = "selinux label is specified in config, but selinux is disabled or not supported"
    assert runc.returncode != 0 and message in runc.stderr
    assert probe_result.returncode == PROBE_FAILED and message in probe_result.stderr
