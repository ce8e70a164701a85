"""runproc's cgroups on a unified (v2) host: limits, the device eBPF filter, freeze, cgroup.kill, OOM, events.

One boot runs every scenario (in order); each test checks one. Every scenario
ends by checking that nothing is left: no cgroup directory runproc made, no
state directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from runproc_testlib import default_process

from cgroupv2.vm import VmResult

pytestmark = pytest.mark.timeout(900)

ROOTFS = "/bundles/rootfs"


def config(args: list[str], path: str | None, resources: dict | None = None, pid_namespace: bool = True,
           dev_bind: bool = False, **linux: object) -> str:
    """A container with its own namespaces, /proc and a /dev tmpfs (runproc makes the device nodes), or
    the VM's /dev bound (`dev_bind`)."""
    kinds = ["mount", "uts", "ipc"] + (["pid"] if pid_namespace else [])
    spec: dict = {
        "ociVersion": "1.0.2",
        "process": default_process(args),
        "root": {"path": ROOTFS},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                   {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]}],
        "linux": {"namespaces": [{"type": kind} for kind in kinds], **linux},
    }
    if dev_bind:
        spec["mounts"][1] = {"destination": "/dev", "type": "bind", "source": "/dev", "options": ["rbind"]}
    if path is not None:
        spec["linux"]["cgroupsPath"] = path
    if resources is not None:
        spec["linux"]["resources"] = resources
    return json.dumps(spec, indent=1)


LIB = r"""
# pid_of ID, wait_status ID STATUS, nothing_left DIR...
pid_of() { runproc state "$1" | sed -n 's/^  "pid": \([0-9]*\),/\1/p'; }
status_of() { runproc state "$1" | sed -n 's/^  "status": "\(.*\)",/\1/p'; }
wait_status() {
  i=0; until [ "$(status_of $1)" = "$2" ]; do i=$((i+1)); [ $i -lt 200 ] || fail "$1 never $2: $(status_of $1)"; sleep 0.05; done
}
nothing_left() {
  for d in "$@"; do [ ! -e "$d" ] || fail "left behind: $d"; done
  [ -z "$(ls /run/runproc 2>/dev/null)" ] || fail "state left: $(ls /run/runproc)"
}
"""

SCENARIOS: dict[str, str] = {
    "limits": LIB + r"""
        runproc create -b /bundles/limits c-limits
        pid=$(pid_of c-limits)
        cg=/sys/fs/cgroup/rp/limits
        assert_eq "$(cat /proc/$pid/cgroup)" "0::/rp/limits" "/proc/PID/cgroup"
        for f in memory.max memory.swap.max memory.low cpu.weight cpu.max pids.max cpuset.cpus; do
          echo "$f=$(cat $cg/$f | tr '\n' ' ' | sed 's/ $//')"
        done
        echo "init.cpus_allowed=$(awk '/^Cpus_allowed_list/ {print $2}' /proc/$pid/status)"
        runproc delete c-limits
        nothing_left $cg /sys/fs/cgroup/rp
    """,
    "default_path": LIB + r"""
        runproc create -b /bundles/default c-default
        assert_eq "$(cat /proc/$(pid_of c-default)/cgroup)" "0::/c-default" "/proc/PID/cgroup"
        runproc delete c-default
        nothing_left /sys/fs/cgroup/c-default
    """,
    "devices": LIB + r"""
        rc=0; runproc run -b /bundles/devices c-devices || rc=$?
        echo "rc=$rc"
        nothing_left /sys/fs/cgroup/rp
    """,
    "freeze": LIB + r"""
        runproc create -b /bundles/loop c-freeze
        runproc start c-freeze
        cg=/sys/fs/cgroup/rp/loop
        runproc pause c-freeze
        assert_eq "$(status_of c-freeze)" paused "state while paused"
        assert_eq "$(cat $cg/cgroup.freeze)" 1 "cgroup.freeze"
        grep -qx 'frozen 1' $cg/cgroup.events || fail "cgroup.events: $(cat $cg/cgroup.events)"
        runproc pause c-freeze 2>&1 | sed 's/^/pause again: /' || true
        runproc resume c-freeze
        assert_eq "$(status_of c-freeze)" running "state after resume"
        grep -qx 'frozen 0' $cg/cgroup.events || fail "cgroup.events: $(cat $cg/cgroup.events)"
        runproc resume c-freeze 2>&1 | sed 's/^/resume again: /' || true
        runproc pause c-freeze
        runproc kill c-freeze 9
        wait_status c-freeze stopped
        runproc delete c-freeze
        nothing_left $cg /sys/fs/cgroup/rp
        echo freeze-ok
    """,
    "cgroup_kill": LIB + r"""
        runproc create -b /bundles/daemon c-kill
        runproc start c-kill
        cg=/sys/fs/cgroup/rp/daemon
        [ -f $cg/cgroup.kill ] || fail "no cgroup.kill"
        i=0; until [ "$(runproc ps -f json c-kill | tr ',' '\n' | wc -l)" = 2 ]; do
          i=$((i+1)); [ $i -lt 200 ] || fail "the daemon never showed: $(runproc ps -f json c-kill)"; sleep 0.05
        done
        pids=$(runproc ps -f json c-kill | tr -d '[]' | tr ',' ' ')
        runproc delete --force c-kill
        for p in $pids; do [ ! -e /proc/$p ] || [ "$(awk '{print $3}' /proc/$p/stat)" = Z ] || fail "$p survived"; done
        nothing_left $cg /sys/fs/cgroup/rp
        echo kill-ok
    """,
    "oom": LIB + r"""
        runproc create -b /bundles/oom c-oom
        runproc events --interval 60s c-oom > /tmp/oom-events &
        events=$!
        sleep 0.5
        runproc start c-oom
        wait_status c-oom stopped
        runproc delete c-oom
        wait $events
        cat /tmp/oom-events | cut -c1-40
        rc=0; runproc run -b /bundles/oom c-oom2 || rc=$?
        echo "rc=$rc"
        nothing_left /sys/fs/cgroup/rp
    """,
    "stats": LIB + r"""
        runproc create -b /bundles/limits c-stats
        runproc events --stats c-stats
        runproc delete c-stats
        nothing_left /sys/fs/cgroup/rp
    """,
    "update": LIB + r"""
        runproc create -b /bundles/loop c-update
        cg=/sys/fs/cgroup/rp/loop
        runproc update --memory 128M --memory-swap 192M --cpu-quota 50000 --cpu-period 200000 --cpu-share 2048 \
          --pids-limit 5 c-update
        echo '{"unified": {"pids.max": "9", "memory.high": "100000000"}}' | runproc update -r - c-update
        for f in memory.max memory.swap.max memory.high cpu.max cpu.weight pids.max; do echo "$f=$(cat $cg/$f)"; done
        echo '{"unified": {"nosuch.file": "1"}}' | runproc update -r - c-update 2>&1 | sed 's/^/bad: /' || true
        runproc delete --force c-update
        nothing_left $cg /sys/fs/cgroup/rp
    """,
    "failing_create": LIB + r"""
        rc=0; runproc create -b /bundles/badswap c-bad 2>/tmp/err || rc=$?
        echo "rc=$rc $(cat /tmp/err)"
        nothing_left /sys/fs/cgroup/rp
    """,
}


def files() -> dict[str, str]:
    limits = {"memory": {"limit": 64 << 20, "swap": 96 << 20, "reservation": 16 << 20},
              "cpu": {"shares": 512, "quota": 20000, "period": 100000, "cpus": "0"},
              "pids": {"limit": 40}}
    no_null = {"devices": [{"allow": False, "access": "rwm"}]}
    devices = ("cat /dev/null; echo null=$?; head -c 4 /dev/zero | wc -c; "
               "echo x > /dev/full; echo full=$?")
    hog = "sleep 0.5; exec awk 'BEGIN { s = \"x\"; while (length(s) < 134217728) s = s s }'"
    return {
        "/bundles/limits/config.json": config(["sleep", "1000"], "/rp/limits", limits),
        "/bundles/default/config.json": config(["sleep", "1000"], None),
        # linux.devices redefines /dev/null, so runc's default rule for it goes. /dev is the VM's, bound:
        # with a /dev of its own the init (runc's too) must open /dev/null, which this container may not.
        "/bundles/devices/config.json": config(["sh", "-c", devices], "/rp/devices", no_null, dev_bind=True,
                                               devices=[{"path": "/dev/null", "type": "c", "major": 1,
                                                         "minor": 3}]),
        "/bundles/loop/config.json": config(["sh", "-c", "while :; do sleep 0.05; done"], "/rp/loop"),
        "/bundles/daemon/config.json": config(["sh", "-c", "setsid sleep 999 & exec sleep 1000"], "/rp/daemon",
                                              pid_namespace=False),
        "/bundles/oom/config.json": config(["sh", "-c", hog], "/rp/oom",
                                           {"memory": {"limit": 32 << 20, "swap": 32 << 20}}),
        "/bundles/badswap/config.json": config(["true"], "/rp/bad", {"memory": {"limit": 0, "swap": 32 << 20}}),
    }


@pytest.fixture(scope="module")
def vm(run_v2_scenarios, busybox_rootfs: Path) -> VmResult:
    result = run_v2_scenarios(SCENARIOS, {ROOTFS: busybox_rootfs, **files()})
    print(f"\ncgroup v2 VM: {result.accel}, whole run {result.seconds:.1f}s {result.note}")
    return result


def ok(vm: VmResult, name: str) -> str:
    scenario = vm[name]
    assert scenario.exit_code == 0, scenario.report()
    return scenario.output


def values(output: str) -> dict[str, str]:
    """The `file=value` lines of a scenario's output."""
    pairs = [line.split("=", 1) for line in output.splitlines() if "=" in line]
    return {key: value for key, value in pairs if " " not in key}


def test_limits_are_written_as_runcs_fs2(vm: VmResult) -> None:
    files = values(ok(vm, "limits"))
    assert files == {
        "memory.max": str(64 << 20),
        "memory.swap.max": str(32 << 20),  # v1's memory+swap total less the memory
        "memory.low": str(16 << 20),
        "cpu.weight": "20",  # shares 512, runc's conversion
        "cpu.max": "20000 100000",
        "pids.max": "40",
        "cpuset.cpus": "0",
        "init.cpus_allowed": "0",  # in effect for the init too (clone3 into a cpuset cgroup before 6.3 was not)
    }, vm["limits"].report()


def test_default_cgroup_is_the_id_under_ours(vm: VmResult) -> None:
    ok(vm, "default_path")


def test_device_filter_denies_and_allows(vm: VmResult) -> None:
    out = ok(vm, "devices")
    assert "Operation not permitted" in out and "null=1" in out, out
    assert "\n4\n" in out and "full=1" in out and "rc=0" in out, out  # zero readable; full: ENOSPC, not EPERM
    assert out.count("Operation not permitted") == 1, out


def test_pause_resume_and_sigkill_while_paused(vm: VmResult) -> None:
    out = ok(vm, "freeze")
    assert "pause again: container not running" in out and "resume again: container not paused" in out, out
    assert "freeze-ok" in out


def test_delete_force_kills_everything_through_cgroup_kill(vm: VmResult) -> None:
    assert "kill-ok" in ok(vm, "cgroup_kill")


def test_oom_kill_exits_137_and_is_an_event(vm: VmResult) -> None:
    out = ok(vm, "oom")
    assert '{"type":"oom","id":"c-oom"}' in out, out
    assert "rc=137" in out, out


def test_events_stats(vm: VmResult) -> None:
    line = next(line for line in ok(vm, "stats").splitlines() if line.startswith("{"))
    event = json.loads(line)
    assert (event["type"], event["id"]) == ("stats", "c-stats")
    data = event["data"]
    assert data["memory"]["usage"]["limit"] == 64 << 20
    assert data["memory"]["swap"]["limit"] == 96 << 20  # reported as memory+swap, as runc does
    assert data["pids"] == {"current": 1, "limit": 40}
    assert {"cpu", "memory", "pids", "blkio", "hugetlb", "intel_rdt", "network_interfaces"} <= set(data)


def test_update(vm: VmResult) -> None:
    out = ok(vm, "update")
    assert values(out) == {"memory.max": str(128 << 20), "memory.swap.max": str(64 << 20),
                           "memory.high": "99999744", "cpu.max": "50000 200000", "cpu.weight": "79",
                           "pids.max": "9"}, out
    assert "controller 'nosuch' not available" in out, out


def test_failing_create_leaves_nothing(vm: VmResult) -> None:
    out = ok(vm, "failing_create")
    assert "rc=1" in out and "unable to set swap limit without memory limit" in out, out
