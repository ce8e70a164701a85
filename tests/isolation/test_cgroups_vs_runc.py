"""Differential tests on this host's cgroups (v1 or hybrid): what runc and runproc write, and how they behave.

Each runtime runs the same `runc spec` config, each under its own cgroupsPath;
the cgroup files are read from the host and compared. Run with
RUNPROC_BIN=/usr/sbin/runc, both sides are runc and every comparison holds
(bar the tests of runproc's own choices, marked so).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from isolation_probe import Probe, SpecBundle
from runproc_testlib import Runproc, make_reachable

CGROUP = Path("/sys/fs/cgroup")
UNIFIED_ROOT = CGROUP if (CGROUP / "cgroup.controllers").exists() else None

pytestmark = pytest.mark.skipif(UNIFIED_ROOT is not None, reason="a cgroup v1 host (tests/cgroupv2 covers v2)")

Probes = tuple[Probe, Probe]


def block_device() -> str:
    """major:minor of one of the host's block devices, for the blkio throttles."""
    for entry in sorted(Path("/sys/block").iterdir()):
        if not entry.name.startswith(("loop", "ram")):
            return (entry / "dev").read_text().strip()
    pytest.fail("no block device on this host")


class Running:
    """A container of one runtime, created and started from its own copy of a bundle."""

    def __init__(self, side: Runproc, bundle: Path, path: str | None, start: bool = True) -> None:
        self.side = side
        self.id = f"cg-{side.name}-{uuid.uuid4().hex[:10]}"
        self.cgroup_path = path
        config = json.loads((bundle / "config.json").read_text())
        own = bundle.parent / self.id
        shutil.copytree(config["root"]["path"], own / "rootfs", symlinks=True)
        make_reachable(own / "rootfs")
        config["root"]["path"] = str(own / "rootfs")
        if path is None:
            config["linux"].pop("cgroupsPath", None)
        else:
            config["linux"]["cgroupsPath"] = path
        (own / "config.json").write_text(json.dumps(config))
        self.bundle = own
        result = side("create", "--bundle", str(own), self.id)
        assert result.returncode == 0, f"{side.name} create: {result.stderr}"
        if start:
            side.ok("start", self.id)

    def __call__(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return self.side(*args, **kwargs)  # type: ignore[arg-type]

    @property
    def pid(self) -> int:
        return int(self.side.state(self.id)["pid"])

    def own_cgroups(self) -> dict[str, str]:
        """The init's /proc/PID/cgroup: hierarchy -> path."""
        lines = Path(f"/proc/{self.pid}/cgroup").read_text().splitlines()
        return {line.split(":", 2)[1]: line.split(":", 2)[2] for line in lines}

    def directory(self, hierarchy: str) -> Path:
        """The container's directory in one hierarchy (as the kernel says the init is in it)."""
        key = {"systemd": "name=systemd", "unified": ""}.get(hierarchy, hierarchy)
        return CGROUP / hierarchy / self.own_cgroups()[key].lstrip("/")

    def read(self, hierarchy: str, name: str) -> str:
        return (self.directory(hierarchy) / name).read_text().strip()


Start = Callable[..., tuple[Running, Running]]


@pytest.fixture
def start_both(probes: Probes, spec_bundle: SpecBundle) -> Iterator[Start]:
    """start_both(script, resources=None, edit=None, path=True) -> (runc's, runproc's) containers."""

    def start(script: str = "sleep 1000", resources: dict | None = None, edit: Callable[[dict], None] | None = None,
              path: bool = True, started: bool = True) -> tuple[Running, Running]:
        def change(config: dict) -> None:
            if resources is not None:
                config["linux"]["resources"] = resources
            if edit is not None:
                edit(config)

        bundle = spec_bundle(script, change)
        return tuple(  # type: ignore[return-value]
            Running(probe.side, bundle, f"/runproc-cgdiff-{uuid.uuid4().hex[:12]}" if path else None, started)
            for probe in probes)

    yield start


HIERARCHIES = sorted(entry.name for entry in CGROUP.iterdir() if os.path.ismount(entry))


def made_in(container: Running) -> list[str]:
    return [name for name in HIERARCHIES if container.cgroup_path and
            (CGROUP / name / container.cgroup_path.lstrip("/")).is_dir()]


FILES = [("memory", "memory.limit_in_bytes"), ("memory", "memory.memsw.limit_in_bytes"),
         ("memory", "memory.soft_limit_in_bytes"), ("memory", "memory.swappiness"), ("memory", "memory.oom_control"),
         ("cpu", "cpu.shares"), ("cpu", "cpu.cfs_quota_us"), ("cpu", "cpu.cfs_period_us"), ("cpuset", "cpuset.cpus"),
         ("cpuset", "cpuset.mems"), ("pids", "pids.max"), ("devices", "devices.list"),
         ("blkio", "blkio.throttle.read_bps_device"), ("blkio", "blkio.throttle.write_iops_device")]


def files_of(container: Running) -> dict[str, str]:
    values = {}
    for hierarchy, name in FILES:
        text = container.read(hierarchy, name)
        # under_oom and the kill count depend on what ran; oom_kill_disable is the setting.
        values[name] = text.splitlines()[0] if name == "memory.oom_control" else text
    return values


def test_resources_are_written_as_runc_writes_them(start_both: Start) -> None:
    device = block_device()
    major, minor = (int(n) for n in device.split(":"))
    resources = {
        "memory": {"limit": 64 << 20, "reservation": 32 << 20, "swap": 128 << 20, "swappiness": 20,
                   "disableOOMKiller": False, "kernel": 1 << 30},
        "cpu": {"shares": 512, "quota": 20000, "period": 50000, "cpus": "0", "mems": "0"},
        "pids": {"limit": 40},
        "blockIO": {"throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1048576}],
                    "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 100}]},
        "devices": [{"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 1, "minor": 3,
                                                          "access": "r"},
                    {"allow": True, "type": "b", "major": major, "access": "rm"},
                    {"allow": False, "type": "c", "major": 1, "minor": 5, "access": "w"}],
    }
    runc, runproc = start_both(resources=resources)
    expected = files_of(runc)
    assert expected["memory.limit_in_bytes"] == str(64 << 20) and expected["pids.max"] == "40"
    assert files_of(runproc) == expected
    assert made_in(runproc) == made_in(runc)


def test_the_init_is_in_every_hierarchy(start_both: Start) -> None:
    """/proc/PID/cgroup of the container's process: every v1 hierarchy, name=systemd and the unified one."""
    runc, runproc = start_both()
    assert {k: v.replace(runproc.cgroup_path or "", "<path>") for k, v in runproc.own_cgroups().items()} == \
        {k: v.replace(runc.cgroup_path or "", "<path>") for k, v in runc.own_cgroups().items()}


def test_default_path_is_the_id_under_our_own_cgroup(start_both: Start) -> None:
    runc, runproc = start_both(path=False)
    views = [{k: v.replace(c.id, "<id>") for k, v in c.own_cgroups().items()} for c in (runc, runproc)]
    assert views[1] == views[0]
    assert views[0]["pids"].endswith("/<id>")


def test_cgroup_namespace_sees_its_cgroup_as_root(probes: Probes, spec_bundle: SpecBundle) -> None:
    def edit(config: dict) -> None:
        config["linux"]["namespaces"].append({"type": "cgroup"})
        config["linux"]["cgroupsPath"] = f"/runproc-cgdiff-{uuid.uuid4().hex[:12]}"

    bundle = spec_bundle("cat /proc/self/cgroup; ls /sys/fs/cgroup/pids | sort", edit)
    outputs = [probe.run(bundle) for probe in probes]
    assert outputs[1] == outputs[0]
    assert "pids:/\n" in outputs[0]


def test_update_changes_what_runc_changes(start_both: Start) -> None:
    runc, runproc = start_both(resources={"memory": {"limit": 64 << 20, "swap": 64 << 20}, "cpu": {"shares": 256}})
    flags = ["--memory", "128m", "--memory-swap", "256m", "--cpu-quota", "30000", "--cpu-period", "60000",
             "--cpu-share", "300", "--pids-limit", "25", "--memory-reservation", "50M", "--cpuset-cpus", "0"]
    for container in (runc, runproc):
        container.side.ok("update", *flags, container.id)
    assert files_of(runproc) == files_of(runc)
    assert runc.read("memory", "memory.limit_in_bytes") == str(128 << 20)
    body = json.dumps({"memory": {"limit": 32 << 20, "swap": 32 << 20}, "pids": {"limit": 7},
                       "cpu": {"quota": -1}})
    for container in (runc, runproc):
        container.side.ok("update", "--resources", "-", container.id, input=body)
    assert files_of(runproc) == files_of(runc)
    assert runc.read("pids", "pids.max") == "7"
    for container in (runc, runproc):
        assert container("update", "--memory", "12x", container.id).returncode != 0


def test_update_errors_match(start_both: Start) -> None:
    runc, runproc = start_both()
    for container in (runc, runproc):
        container("kill", container.id, "9")
        container.side.wait_status(container.id, "stopped")
    results = [c("update", "--memory", "100M", c.id) for c in (runc, runproc)]
    assert [r.returncode for r in results] == [1, 1]
    assert "container not running" in results[0].stderr and "container not running" in results[1].stderr


def stats_keys(value: object, prefix: str = "") -> set[str]:
    """The key paths of an events object (values differ from run to run; the shape must not)."""
    if isinstance(value, dict):
        keys = set()
        for key, item in value.items():
            keys.add(prefix + key)
            if key != "raw":  # memory.stat's keys are the kernel's, read as they are
                keys |= stats_keys(item, prefix + key + ".")
        return keys
    return set()


def test_events_stats_has_runcs_shape(start_both: Start) -> None:
    runc, runproc = start_both(resources={"memory": {"limit": 64 << 20}, "pids": {"limit": 50}})
    events = [json.loads(c.side.ok("events", "--stats", c.id).stdout) for c in (runc, runproc)]
    assert [e["type"] for e in events] == ["stats", "stats"]
    assert [e["id"] for e in events] == [runc.id, runproc.id]
    # Usage counters come and go with `omitempty` (a zero disappears): compare the settings' keys and values.
    stable = {key for key in stats_keys(events[0]["data"]) if not key.startswith(("cpu.", "blkio.", "memory.cache"))
              and key.rsplit(".", 1)[-1] not in ("usage", "max", "current")}
    assert stable <= stats_keys(events[1]["data"])
    assert events[1]["data"]["memory"]["usage"]["limit"] == events[0]["data"]["memory"]["usage"]["limit"] == 64 << 20
    assert events[1]["data"]["pids"]["limit"] == events[0]["data"]["pids"]["limit"] == 50
    assert set(events[1]["data"]) == set(events[0]["data"])
    assert set(events[1]["data"]["cpu"]["usage"]) >= {"total", "kernel", "user"}


def test_pause_resume_and_state(start_both: Start) -> None:
    containers = start_both()
    for container in containers:
        container.side.ok("pause", container.id)
        assert container.side.status(container.id) == "paused"
        assert container.read("freezer", "freezer.state") == "FROZEN"
    again = [c("pause", c.id) for c in containers]
    assert [r.returncode for r in again] == [1, 1] and all("container not running" in r.stderr for r in again)
    deleting = [c("delete", c.id) for c in containers]
    assert all(f"cannot delete container {c.id} that is not stopped: paused" in r.stderr
               for c, r in zip(containers, deleting))
    for container in containers:
        container.side.ok("resume", container.id)
        assert container.side.status(container.id) == "running"
        assert container.read("freezer", "freezer.state") == "THAWED"
    again = [c("resume", c.id) for c in containers]
    assert [r.returncode for r in again] == [1, 1] and all("container not paused" in r.stderr for r in again)


def test_sigkill_ends_a_paused_container(start_both: Start) -> None:
    for container in start_both():
        container.side.ok("pause", container.id)
        container.side.ok("kill", container.id, "9")
        container.side.wait_status(container.id, "stopped")


def test_a_created_container_can_be_paused(start_both: Start) -> None:
    for container in start_both(started=False):
        container.side.ok("pause", container.id)
        assert container.side.status(container.id) == "paused"
        result = container("start", container.id)
        assert result.returncode == 1 and "cannot start a container in the paused state" in result.stderr
        container.side.ok("resume", container.id)
        assert container.side.status(container.id) == "created"


def without_pid_namespace(config: dict) -> None:
    config["linux"]["namespaces"] = [ns for ns in config["linux"]["namespaces"] if ns["type"] != "pid"]


def daemon_pid(container: Running) -> int:
    """The setsid'd background sleep the script started (its own session: not the init's)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for pid in json.loads(container.side.ok("ps", "--format", "json", container.id).stdout) or []:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if cmdline == b"sleep\x00999\x00":
                return pid
        time.sleep(0.05)
    pytest.fail(f"{container.side.name}: the daemon never showed in ps")


def test_kill_all_and_ps_reach_a_daemonized_child(start_both: Start) -> None:
    script = "setsid sleep 999 & sleep 1000"
    containers = start_both(script, edit=without_pid_namespace)
    daemons = [daemon_pid(c) for c in containers]
    for container, daemon in zip(containers, daemons):
        assert os.getsid(daemon) != os.getsid(container.pid)
        container.side.ok("kill", "--all", container.id, "9")
        container.side.wait_status(container.id, "stopped")
        deadline = time.monotonic() + 10
        while Path(f"/proc/{daemon}").exists() and Path(f"/proc/{daemon}/stat").read_text().split()[2] != "Z":
            assert time.monotonic() < deadline, f"{container.side.name}: the daemon survived kill --all"
            time.sleep(0.02)


def test_delete_force_removes_every_cgroup_and_process(start_both: Start) -> None:
    containers = start_both("setsid sleep 999 & sleep 1000", edit=without_pid_namespace)
    daemons = [daemon_pid(c) for c in containers]
    made = [made_in(c) for c in containers]
    assert made[1] == made[0] and "devices" in made[0] and "systemd" in made[0]
    for container in containers:
        container.side.ok("delete", "--force", container.id)
        assert made_in(container) == []
    for daemon in daemons:
        assert not Path(f"/proc/{daemon}").exists() or Path(f"/proc/{daemon}/stat").read_text().split()[2] == "Z"


def test_a_cgroup_that_existed_before_stays(probes: Probes, spec_bundle: SpecBundle) -> None:
    """runproc's choice (runc removes it): a cgroup create did not make is not delete's to remove."""
    runproc = probes[1].side
    path = f"/runproc-cgdiff-{uuid.uuid4().hex[:12]}"
    (CGROUP / "pids" / path.lstrip("/")).mkdir()
    try:
        container = Running(runproc, spec_bundle("sleep 1000"), path)
        assert container.own_cgroups()["pids"] == path
        runproc.ok("delete", "--force", container.id)
        assert (CGROUP / "pids" / path.lstrip("/")).is_dir()
        assert not (CGROUP / "memory" / path.lstrip("/")).exists()
    finally:
        (CGROUP / "pids" / path.lstrip("/")).rmdir()


@pytest.mark.parametrize(("resources", "runc_says", "runproc_says"), [
    ({"unified": {"pids.max": "5"}}, "cannot use unified on cgroup v1",
     "linux.resources.unified: invalid configuration: cannot use unified on cgroup v1"),
    ({"cpu": {"cpus": "4095"}}, "cpuset.cpus", "linux.resources.cpu.cpus=4095: write"),
    ({"memory": {"limit": 64 << 20, "swap": 32 << 20}}, "memory.memsw.limit_in_bytes",
     "linux.resources.memory.swap=33554432: write"),
    ({"devices": [{"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "access": "m"},
                  {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "m"}]},
     "cannot punch hole in existing wildcard rule", "cannot punch hole in existing wildcard rule"),
])
def test_a_failing_create_leaves_nothing(probes: Probes, spec_bundle: SpecBundle, resources: dict, runc_says: str,
                                        runproc_says: str) -> None:
    path = f"/runproc-cgdiff-{uuid.uuid4().hex[:12]}"

    def edit(config: dict) -> None:
        config["linux"]["resources"] = resources
        config["linux"]["cgroupsPath"] = path

    bundle = spec_bundle("sleep 1000", edit)
    for probe, expected in zip(probes, (runc_says, runproc_says)):
        side = probe.side
        result = side("create", "--bundle", str(bundle), f"fail-{side.name}")
        assert result.returncode == 1 and expected in result.stderr, f"{side.name}: {result.stderr}"
        assert not any((CGROUP / name / path.lstrip("/")).exists() for name in HIERARCHIES), side.name
        assert not (side.root / f"fail-{side.name}").exists()


def test_a_failing_init_leaves_no_cgroup(probes: Probes, spec_bundle: SpecBundle) -> None:
    path = f"/runproc-cgdiff-{uuid.uuid4().hex[:12]}"

    def edit(config: dict) -> None:
        config["process"]["args"] = ["/no/such/program"]
        config["linux"]["cgroupsPath"] = path

    bundle = spec_bundle("", edit)
    for probe in probes:
        result = probe.side("create", "--bundle", str(bundle), f"noprog-{probe.side.name}")
        assert result.returncode == 1 and "/no/such/program" in result.stderr, result.stderr
        assert not any((CGROUP / name / path.lstrip("/")).exists() for name in HIERARCHIES), probe.side.name


@pytest.mark.parametrize("path", ["/not/a/slice/form", "system.slice:runproc-test:x1", ""])
def test_systemd_cgroup_flag_as_runc(probes: Probes, spec_bundle: SpecBundle, path: str) -> None:
    """runc 1.1 checks the slice:prefix:name form, then wants systemd as PID 1 (this host has none)."""
    def edit(config: dict) -> None:
        config["linux"]["cgroupsPath"] = path

    bundle = spec_bundle("sleep 1000", edit)
    results = [probe.side("create", "--bundle", str(bundle), f"sd-{probe.side.name}",
                          global_args=("--systemd-cgroup",)) for probe in probes]
    assert results[1].returncode == results[0].returncode, [r.stderr for r in results]
    if results[0].returncode:
        message = results[0].stderr.split('msg="', 1)[-1].rsplit('"', 1)[0].replace('\\"', '"')
        message = message.removeprefix("runc create failed: ")
        assert message in results[1].stderr, (message, results[1].stderr)


def test_create_killed_while_making_cgroups_leaves_nothing_after_delete_force(
        probes: Probes, spec_bundle: SpecBundle) -> None:
    """runproc's own: SIGKILL on the mkdir of the memory cgroup (cpuset and devices are made by then);
    `delete --force` of the id removes what that create made."""
    runproc = probes[1].side
    path = f"/runproc-cgdiff-{uuid.uuid4().hex[:12]}"

    def edit(config: dict) -> None:
        config["linux"]["cgroupsPath"] = path

    bundle = spec_bundle("sleep 1000", edit)
    strace = ["strace", "-f", "-qq", "-o", "/dev/null", "-P", f"/sys/fs/cgroup/memory{path}",
              "-e", "trace=mkdir,mkdirat", "-e", "inject=mkdir,mkdirat:signal=KILL:when=1"]
    killed = runproc("create", "--bundle", str(bundle), "killed", prefix=tuple(strace))
    assert killed.returncode != 0
    assert (CGROUP / "devices" / path.lstrip("/")).is_dir(), "the kill came before the devices cgroup"
    assert not (CGROUP / "memory" / path.lstrip("/")).exists()
    runproc.ok("delete", "--force", "killed")
    assert [name for name in HIERARCHIES if (CGROUP / name / path.lstrip("/")).exists()] == []
    assert not (runproc.root / "killed").exists()
