"""linux.cgroupsPath and linux.resources: the pure checks and conversions (runc 1.1's specconv, fs and fs2 rules)."""

from __future__ import annotations

import struct

import pytest

from runproc.errors import RunprocError
from runproc.linux.cgroups import devices, expand_slice
from runproc.linux.cgroups.v2 import blkio_to_io_weight, shares_to_weight, swap_max
from runproc.spec.resources import (
    ALLOWED_DEVICES,
    DeviceRule,
    Resources,
    clean_path,
    parse_cgroup_plan,
    parse_resources,
    systemd_unit,
)


def resources_of(raw: dict) -> Resources:
    return parse_resources(raw, "config.json", "linux.resources")


def error_of(raw: dict) -> str:
    with pytest.raises(RunprocError) as caught:
        resources_of(raw)
    return caught.value.message


def test_nothing_given_sets_nothing() -> None:
    r = resources_of({})
    assert (r.memory, r.memory_swap, r.cpu_shares, r.cpu_quota, r.pids_limit, r.blkio_weight) == (0, 0, 0, 0, 0, 0)
    assert r.memory_swappiness is None and r.cpu_idle is None and r.cpu_burst is None and r.unified is None
    assert r.devices == [] and r.hugepage_limits == [] and r.rdma == {} and not r.oom_kill_disable


def test_every_field_is_read() -> None:
    r = resources_of({
        "memory": {"limit": 100, "reservation": 50, "swap": 200, "swappiness": 10, "disableOOMKiller": True,
                   "kernel": 5, "useHierarchy": True},
        "cpu": {"shares": 512, "quota": 20000, "period": 100000, "burst": 1000, "realtimeRuntime": 950,
                "realtimePeriod": 1000, "cpus": "0-1", "mems": "0", "idle": 1},
        "pids": {"limit": 30},
        "blockIO": {"weight": 300, "leafWeight": 200,
                    "weightDevice": [{"major": 8, "minor": 0, "weight": 500, "leafWeight": 100}],
                    "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
                    "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 10}]},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}],
        "network": {"classID": 5, "priorities": [{"name": "eth0", "priority": 3}]},
        "rdma": {"mlx5_1": {"hcaHandles": 3, "hcaObjects": 10000}, "mlx4_0": {"hcaHandles": 1}},
        "unified": {"memory.high": "1G"},
        "devices": [{"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 1, "minor": 3,
                                                          "access": "rw"}],
    })
    assert (r.memory, r.memory_reservation, r.memory_swap, r.memory_swappiness) == (100, 50, 200, 10)
    assert r.oom_kill_disable and r.kernel_memory
    assert (r.cpu_shares, r.cpu_quota, r.cpu_period, r.cpu_burst, r.cpu_rt_runtime, r.cpu_rt_period) == \
        (512, 20000, 100000, 1000, 950, 1000)
    assert (r.cpuset_cpus, r.cpuset_mems, r.cpu_idle, r.pids_limit) == ("0-1", "0", 1, 30)
    assert (r.blkio_weight, r.blkio_leaf_weight) == (300, 200)
    wd = r.blkio_weight_devices[0]
    assert (wd.major, wd.minor, wd.weight, wd.leaf_weight) == (8, 0, 500, 100)
    assert [(t.major, t.minor, t.rate) for t in r.throttle["throttleReadBpsDevice"]] == [(8, 0, 1048576)]
    assert [(t.major, t.minor, t.rate) for t in r.throttle["throttleWriteIOPSDevice"]] == [(8, 16, 10)]
    assert r.hugepage_limits == [("2MB", 4194304)]
    assert (r.net_class_id, r.net_priorities) == (5, [("eth0", 3)])
    assert list(r.rdma.items()) == [("mlx4_0", (1, None)), ("mlx5_1", (3, 10000))]  # sorted by device
    assert r.unified == {"memory.high": "1G"}
    assert [d.cgroup_string() for d in r.devices] == ["a *:* rwm", "c 1:3 rw"]
    assert [d.allow for d in r.devices] == [False, True]


@pytest.mark.parametrize(("raw", "expected"), [
    ({"memory": []}, "linux.resources.memory must be an object"),
    ({"memory": {"limit": "1G"}}, "linux.resources.memory.limit must be an integer"),
    ({"memory": {"limit": True}}, "linux.resources.memory.limit must be an integer"),
    ({"memory": {"limit": -2}}, "linux.resources.memory.limit must be -1 (unlimited) or a number of bytes, not -2"),
    ({"memory": {"swap": 2**63}}, "linux.resources.memory.swap must be an integer from"),
    ({"memory": {"reservation": 1.5}}, "linux.resources.memory.reservation must be an integer"),
    ({"memory": {"kernel": "x"}}, "linux.resources.memory.kernel must be an integer"),
    ({"memory": {"swappiness": 101}}, "linux.resources.memory.swappiness must be from 0 to 100, not 101"),
    ({"memory": {"swappiness": -1}}, "linux.resources.memory.swappiness must be an integer from 0"),
    ({"memory": {"disableOOMKiller": 1}}, "linux.resources.memory.disableOOMKiller must be true or false"),
    ({"cpu": {"shares": -1}}, "linux.resources.cpu.shares must be an integer from 0"),
    ({"cpu": {"quota": "max"}}, "linux.resources.cpu.quota must be an integer"),
    ({"cpu": {"period": -5}}, "linux.resources.cpu.period must be an integer from 0"),
    ({"cpu": {"burst": -1}}, "linux.resources.cpu.burst must be an integer from 0"),
    ({"cpu": {"realtimeRuntime": "1"}}, "linux.resources.cpu.realtimeRuntime must be an integer"),
    ({"cpu": {"realtimePeriod": -1}}, "linux.resources.cpu.realtimePeriod must be an integer from 0"),
    ({"cpu": {"cpus": 3}}, "linux.resources.cpu.cpus must be a string"),
    ({"cpu": {"mems": "0\n1"}}, "linux.resources.cpu.mems must be a string of one line"),
    ({"cpu": {"idle": "1"}}, "linux.resources.cpu.idle must be an integer"),
    ({"pids": {"limit": "10"}}, "linux.resources.pids.limit must be an integer"),
    ({"pids": 10}, "linux.resources.pids must be an object"),
    ({"blockIO": {"weight": 70000}}, "linux.resources.blockIO.weight must be an integer from 0 to 65535"),
    ({"blockIO": {"leafWeight": -1}}, "linux.resources.blockIO.leafWeight must be an integer from 0 to 65535"),
    ({"blockIO": {"weightDevice": {}}}, "linux.resources.blockIO.weightDevice must be a list"),
    ({"blockIO": {"weightDevice": [{"minor": 0}]}}, "linux.resources.blockIO.weightDevice[0].major must be given"),
    ({"blockIO": {"weightDevice": [{"major": 8, "minor": 0, "weight": -1}]}},
     "linux.resources.blockIO.weightDevice[0].weight must be an integer"),
    ({"blockIO": {"throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": -1}]}},
     "linux.resources.blockIO.throttleReadBpsDevice[0].rate must be an integer from 0"),
    ({"blockIO": {"throttleWriteBpsDevice": ["8:0 1"]}},
     "linux.resources.blockIO.throttleWriteBpsDevice[0] must be an object"),
    ({"blockIO": {"throttleReadIOPSDevice": [{"major": -1, "minor": 0, "rate": 1}]}},
     "linux.resources.blockIO.throttleReadIOPSDevice[0].major must be an integer from 0"),
    ({"hugepageLimits": [{"pageSize": "2M", "limit": 1}]},
     "linux.resources.hugepageLimits[0].pageSize must be a page size like 2MB or 1GB, not '2M'"),
    ({"hugepageLimits": [{"pageSize": "2MB", "limit": -1}]}, "linux.resources.hugepageLimits[0].limit must be"),
    ({"hugepageLimits": [3]}, "linux.resources.hugepageLimits[0] must be an object"),
    ({"network": {"classID": 2**32}}, "linux.resources.network.classID must be an integer from 0 to 4294967295"),
    ({"network": {"priorities": [{"name": "", "priority": 1}]}},
     "linux.resources.network.priorities[0].name must be an interface name"),
    ({"network": {"priorities": [{"name": "eth0", "priority": -1}]}},
     "linux.resources.network.priorities[0].priority must be an integer"),
    ({"rdma": {"mlx": 3}}, "linux.resources.rdma.mlx must be an object"),
    ({"rdma": {"mlx": {"hcaHandles": -1}}}, "linux.resources.rdma.mlx.hcaHandles must be an integer"),
    ({"unified": {"memory.max": 5}}, "linux.resources.unified.memory.max must be a string"),
    ({"unified": {"../memory.max": "5"}}, "linux.resources.unified key '../memory.max' must be a file name"),
    ({"unified": []}, "linux.resources.unified must be an object"),
    ({"devices": [{"access": "rwm"}]}, "linux.resources.devices[0].allow must be true or false"),
    ({"devices": [{"allow": True, "type": "p", "access": "rwm"}]},
     "linux.resources.devices[0].type must be a, c or b, not 'p'"),
    ({"devices": [{"allow": True, "access": ""}]}, "linux.resources.devices[0].access cannot be empty"),
    ({"devices": [{"allow": True, "access": "rwx"}]},
     "linux.resources.devices[0].access must be letters of rwm, not 'rwx'"),
    ({"devices": [{"allow": True, "major": -2, "access": "r"}]}, "linux.resources.devices[0].major must be"),
    ({"devices": [{"allow": True, "minor": "3", "access": "r"}]}, "linux.resources.devices[0].minor must be"),
    ({"devices": "all"}, "linux.resources.devices must be a list"),
])
def test_errors_name_the_field_and_value(raw: dict, expected: str) -> None:
    message = error_of(raw)
    assert message.startswith("config.json: ") and expected in message, message


def test_update_input_names_its_own_origin() -> None:
    with pytest.raises(RunprocError) as caught:
        parse_resources({"memory": {"limit": "x"}}, "update", "resources")
    assert caught.value.message.startswith("update: resources.memory.limit must be an integer")


def test_swappiness_minus_one_as_uint64_is_unset() -> None:
    assert resources_of({"memory": {"swappiness": 2**64 - 1}}).memory_swappiness is None


def test_cgroups_path_default_relative_and_cleaned() -> None:
    assert parse_cgroup_plan({}).path == ""
    assert parse_cgroup_plan({"linux": {"cgroupsPath": "/a/b"}}).path == "/a/b"
    assert clean_path("/a/../../b/./c/") == "/b/c"
    assert clean_path("../../x/y") == "x/y"  # a relative path cannot climb above its start (runc's CleanPath)
    assert clean_path("a/../..") == ""
    with pytest.raises(RunprocError, match="linux.cgroupsPath must be a string"):
        parse_cgroup_plan({"linux": {"cgroupsPath": 5}})


def test_device_rules_are_the_specs_then_runcs_defaults() -> None:
    plan = parse_cgroup_plan({"linux": {"resources": {"devices": [{"allow": False, "access": "rwm"}]}}})
    assert [r.cgroup_string() for r in plan.devices] == ["a *:* rwm"] + [r.cgroup_string() for _, r in
                                                                       ALLOWED_DEVICES]
    # A linux.devices entry at a default's path replaces that default's rule.
    plan = parse_cgroup_plan({"linux": {"devices": [{"path": "/dev/null", "type": "c", "major": 1, "minor": 3}]}})
    assert "c 1:3 rwm" not in [r.cgroup_string() for r in plan.devices]
    assert "c 1:5 rwm" in [r.cgroup_string() for r in plan.devices]


def test_systemd_path_form() -> None:
    assert systemd_unit("system.slice:docker:abc", "id") == ("system.slice", "docker", "abc")
    assert systemd_unit("", "id") == ("", "runc", "id")
    with pytest.raises(RunprocError, match='expected cgroupsPath to be of format "slice:prefix:name"'):
        systemd_unit("/a/b", "id")
    assert expand_slice("a-b-c.slice") == "/a.slice/a-b.slice/a-b-c.slice"
    assert expand_slice("-.slice") == ""
    for bad in ("a--b.slice", "-a.slice", "a.scope", "a/b.slice"):
        with pytest.raises(RunprocError, match="invalid slice name"):
            expand_slice(bad)


def test_runc_v2_conversions() -> None:
    assert [shares_to_weight(s) for s in (0, 2, 1024, 262144)] == [0, 1, 39, 10000]
    assert [blkio_to_io_weight(w) for w in (0, 10, 500, 1000)] == [0, 1, 4950, 10000]
    assert swap_max(0, 100, "r") == 0 and swap_max(-1, 100, "r") == -1 and swap_max(0, -1, "r") == -1
    assert swap_max(300, 100, "r") == 200 and swap_max(100, 100, "r") == 0
    with pytest.raises(RunprocError, match="unable to set swap limit without memory limit"):
        swap_max(300, 0, "r")
    with pytest.raises(RunprocError, match="memory\\+swap limit should be >= memory limit"):
        swap_max(50, 100, "r")


def rule(text: str, allow: bool) -> DeviceRule:
    kind, numbers, access = text.split()
    major, minor = (-1 if n == "*" else int(n) for n in numbers.split(":"))
    return DeviceRule(kind, major, minor, access, allow)


def test_emulator_transition_from_allow_all_starts_with_deny_all() -> None:
    target = devices.build([rule("a *:* rwm", False), rule("c 1:3 rw", True), rule("c 1:3 m", True)])
    steps = devices.Emulator(default_allow=True).transition(target)
    assert [(s.cgroup_string(), s.allow) for s in steps] == [("a *:* rwm", False), ("c 1:3 rwm", True)]


def test_emulator_transition_between_white_lists_is_minimal() -> None:
    current = devices.parse_list("c 1:3 rwm\nc 1:5 rwm\n")
    target = devices.build([rule("a *:* rwm", False), rule("c 1:3 r", True), rule("c 1:9 rwm", True)])
    steps = current.transition(target)
    assert [(s.cgroup_string(), s.allow) for s in steps] == [
        ("c 1:3 wm", False), ("c 1:5 rwm", False), ("c 1:9 rwm", True)]


def test_emulator_deny_after_allow_and_black_lists() -> None:
    emulator = devices.build([rule("a *:* rwm", False), rule("c 1:3 rwm", True), rule("c 1:3 w", False)])
    assert emulator.rules == {("c", 1, 3): "rm"}
    black = devices.build([rule("a *:* rwm", True), rule("c 1:3 rwm", False)])
    assert black.default_allow and black.rules == {("c", 1, 3): "rwm"}
    assert devices.parse_list("a *:* rwm\n").default_allow


def test_emulator_refuses_a_hole_in_a_wildcard() -> None:
    with pytest.raises(RunprocError, match="cannot punch hole in existing wildcard rule"):
        devices.build([rule("a *:* rwm", False), rule("c *:* m", True), rule("c 1:3 m", False)])


def decode(program: bytes) -> list[tuple[int, int, int, int, int]]:
    out = []
    for n in range(0, len(program), 8):
        code, regs, off, imm = struct.unpack_from("<BBhi", program, n)
        out.append((code, regs & 0xF, regs >> 4, off, imm))
    return out


def run_program(program: bytes, kind: int, access: int, major: int, minor: int) -> int:
    """A tiny interpreter of the instructions bpf_program emits, to check what it decides."""
    insns = decode(program)
    regs = [0] * 11
    ctx = [access << 16 | kind, major, minor]
    pc = 0
    while True:
        code, dst, src, off, imm = insns[pc]
        pc += 1
        if code == 0x61:
            regs[dst] = ctx[off // 4]
        elif code == 0x54:
            regs[dst] &= imm & 0xFFFFFFFF
        elif code == 0x74:
            regs[dst] >>= imm
        elif code == 0xB4:
            regs[dst] = imm
        elif code == 0xBC:
            regs[dst] = regs[src]
        elif code == 0x55:
            pc += off if regs[dst] != imm & 0xFFFFFFFF else 0
        elif code == 0x5D:
            pc += off if regs[dst] != regs[src] else 0
        elif code == 0x95:
            return regs[0]
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")


def test_bpf_program_decides_as_the_emulator() -> None:
    rules = [rule("a *:* rwm", False), *(r for _, r in ALLOWED_DEVICES), rule("c 1:3 rw", False),
             rule("b 8:* r", True)]
    program = devices.bpf_program(rules)
    char, block = 2, 1
    read, write, mknod = 2, 4, 1
    assert run_program(program, char, read, 1, 3) == 0  # /dev/null read: denied by the later rule
    assert run_program(program, char, mknod, 1, 3) == 1  # mknod of anything: allowed (c *:* m)
    assert run_program(program, char, read | write, 1, 5) == 1  # /dev/zero
    assert run_program(program, char, read, 4, 1) == 0  # not listed
    assert run_program(program, block, read, 8, 7) == 1
    assert run_program(program, block, write, 8, 7) == 0
    assert run_program(program, char, read, 136, 12) == 1  # pts wildcard minor
    black = devices.bpf_program([rule("a *:* rwm", True), rule("c 1:3 w", False)])
    assert run_program(black, char, read, 1, 3) == 1 and run_program(black, char, write, 1, 3) == 0
    assert run_program(black, block, write, 8, 0) == 1
