"""runproc's packaging on a Kind-like node: systemd PID 1, containerd with SystemdCgroup = true.

The node boots once per session (conftest.py); install.sh runs in it as on a Kind node; Pods
are run through CRI with the runc handler (the control) and the runproc handler.

Which (handler, cgroup driver) pairs run (kubelet's driver is node-wide; the runtime's
SystemdCgroup must match it):

* ``POD_CASES``: the Pod runs, its container's log shows its own hostname, pid namespace
  and image root (no ExecSync: runproc's exec is not there yet). runproc runs with the
  systemd driver (what install.sh sets up on Kind) and with cgroupfs
  (install.sh --systemd-cgroup false).
* ``PLACEMENT_CASES``: the container is in the cgroup the driver prescribes (a systemd
  scope in the Pod's slice, active per systemctl, or the cgroupfs path), for runc and for
  runproc with either driver.
* ``test_systemd_cgroup_scope``: ``runproc --systemd-cgroup run`` straight on the node: the
  transient scope with its memory limit, the process in it, gone after delete.

``RUNPROC_NODE_CASES=runproc/systemd,runproc/cgroupfs`` adds pairs to both for one run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from node_cri import KIND_CONTAINERD_CONFIG, NodePodFactory, expected_cgroup, process_cgroups
from node_install import InstallRun, run_install_sh
from node_machine import SystemdNode
from runproc_testlib import runproc_path

if TYPE_CHECKING:
    from cri_client import CriClient

pytestmark = pytest.mark.timeout(900)  # the first test's setup may debootstrap the node

CRI_PLUGIN = "io.containerd.grpc.v1.cri"
EXTRA_CASES = [tuple(c.split("/", 1)) for c in os.environ.get("RUNPROC_NODE_CASES", "").split(",") if c]
POD_CASES = list(dict.fromkeys([("runc", "systemd"), ("runproc", "systemd"), ("runproc", "cgroupfs"), *EXTRA_CASES]))
PLACEMENT_CASES = list(dict.fromkeys([("runc", "systemd"), ("runproc", "systemd"), ("runproc", "cgroupfs"),
                                      *EXTRA_CASES]))
RUNPROC_BLOCK_HEADER = re.compile(r'^\s*\[plugins\."io\.containerd\.grpc\.v1\.cri"\.containerd\.runtimes\.runproc\]',
                                  re.M)  # fmt: skip


def runtimes_of(config_text: str) -> dict:
    return tomllib.loads(config_text)["plugins"][CRI_PLUGIN]["containerd"]["runtimes"]


@pytest.fixture
def pods(systemd_node: SystemdNode, node_cri: CriClient,
         use_driver: Callable[[str, str], None]) -> Iterator[Callable[[str, str], NodePodFactory]]:  # fmt: skip
    """pods(handler, driver) -> a Pod factory; every Pod made is stopped and removed after."""
    factories: list[NodePodFactory] = []

    def make(handler: str, driver: str) -> NodePodFactory:
        use_driver(handler, driver)
        factory = NodePodFactory(node_cri, handler, systemd_node.shared / "pods", driver)
        factories.append(factory)
        return factory

    yield make
    errors = [e for f in factories for e in f.cleanup()]
    assert not errors, f"Pod cleanup failed: {errors}"


def test_node_is_a_systemd_node_with_kinds_containerd(systemd_node: SystemdNode) -> None:
    node = systemd_node
    assert node.run(["readlink", "/proc/1/exe"]).stdout.strip() == "/usr/lib/systemd/systemd"
    assert node.run(["systemctl", "is-system-running"], check=False).stdout.strip() in ("running", "degraded")
    assert node.run(["systemctl", "is-active", "containerd", "dbus"]).stdout.split() == ["active", "active"]
    # The systemd cgroup driver's way in: systemd's manager on the system bus.
    version = node.run(["busctl", "get-property", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                        "org.freedesktop.systemd1.Manager", "Version"]).stdout  # fmt: skip
    assert version.startswith("s "), version
    # Every cgroup hierarchy is writable, as in a privileged Kind node.
    node.run(["sh", "-c", "for d in $(findmnt -rn -t cgroup,cgroup2 -o TARGET); do "
                          "mkdir $d/rw-probe && rmdir $d/rw-probe || exit 1; done"])  # fmt: skip
    dumped = runtimes_of(node.run(["containerd", "config", "dump"]).stdout)
    assert dumped["runc"]["options"]["SystemdCgroup"] is True, dumped["runc"]


def test_install_sh_twice_merges_runproc_with_the_systemd_driver(
    systemd_node: SystemdNode, installed: tuple[InstallRun, InstallRun]
) -> None:
    first, second = installed
    for run in installed:
        assert "containerd is up with the CRI plugin loaded" in run.stdout, run
    assert "SystemdCgroup=true" in first.stdout, first.stdout
    assert "already up to date" in second.stdout, second.stdout
    assert second.config == first.config, "a second run must not change the config"
    assert len(RUNPROC_BLOCK_HEADER.findall(first.config)) == 1, first.config
    # Kind's config is kept as it was, the runproc block appended after it.
    assert first.config.startswith(KIND_CONTAINERD_CONFIG), first.config
    runtimes = runtimes_of(first.config)
    assert runtimes["runc"]["options"] == {"SystemdCgroup": True}
    assert runtimes["runproc"]["runtime_type"] == "io.containerd.runc.v2"
    # Kind's runc uses the systemd driver, so runproc's options must say so too (auto).
    assert runtimes["runproc"]["options"] == {"BinaryName": "/usr/local/bin/runproc", "SystemdCgroup": True}
    assert "runproc.host" in runtimes["runproc"]["pod_annotations"]
    version = systemd_node.run(["/usr/local/bin/runproc", "--version"]).stdout
    assert "runproc" in version, version
    # install.sh warns only for a binary without the systemd driver: runproc has it now.
    features = json.loads(systemd_node.run(["/usr/local/bin/runproc", "features"]).stdout)
    assert features["linux"]["cgroup"]["systemd"] is True, features["linux"]["cgroup"]
    for run in installed:
        assert "does not implement it yet" not in run.stderr, run.stderr


def test_install_sh_restarts_containerd_past_systemds_start_limit(
    systemd_node: SystemdNode, installed: tuple[InstallRun, InstallRun], node_cri: CriClient
) -> None:
    # systemd refuses more than StartLimitBurst starts of a unit per interval (5 per 10 s by
    # default: boot plus four quick runs of install.sh). A limit of one start per hour makes
    # the second run below hit it every time, whatever the timing.
    node = systemd_node
    dropin = "/etc/systemd/system/containerd.service.d/50-runproc-test-start-limit.conf"
    node.run(["sh", "-c", f"mkdir -p {dropin.rsplit('/', 1)[0]} && "
                          f"printf '[Unit]\\nStartLimitIntervalSec=1h\\nStartLimitBurst=1\\n' > {dropin} && "
                          "systemctl daemon-reload"])  # fmt: skip
    try:
        for _ in range(2):
            run = run_install_sh(node)
            assert "containerd is up with the CRI plugin loaded" in run.stdout, run
    finally:
        node.run(["sh", "-c", f"rm -f {dropin}; systemctl daemon-reload; systemctl reset-failed containerd; "
                              "systemctl start containerd"])  # fmt: skip
        node_cri.wait_ready()


@pytest.mark.parametrize(("handler", "driver"), POD_CASES, ids=[f"{h}-{d}" for h, d in POD_CASES])
def test_pod_runs_isolated(pods: Callable[[str, str], NodePodFactory], handler: str, driver: str) -> None:
    pod = pods(handler, driver)("hello")
    script = ('echo hello-from-$0; echo hostname=$(hostname); echo pid=$$; '
              'if [ -e /etc/os-release ]; then echo rootfs=node; else echo rootfs=image; fi; exec sleep 3600')  # fmt: skip
    container = pod.container("hello", ["sh", "-c", script, handler])
    lines = [line.message for line in container.wait_log("rootfs=")]
    assert lines == [f"hello-from-{handler}", f"hostname={pod.name}", "pid=1", "rootfs=image"], lines
    assert container.status().state == pod.pb.CONTAINER_RUNNING
    assert pod.status().state == pod.pb.SANDBOX_READY


@pytest.mark.parametrize(("handler", "driver"), PLACEMENT_CASES, ids=[f"{h}-{d}" for h, d in PLACEMENT_CASES])
def test_container_in_the_drivers_cgroup(
    systemd_node: SystemdNode, pods: Callable[[str, str], NodePodFactory], handler: str, driver: str
) -> None:
    pod = pods(handler, driver)("placed")
    container = pod.container("sleeper", ["sleep", "3600"])
    container.wait_state(pod.pb.CONTAINER_RUNNING)
    want = expected_cgroup(driver, pod.config.metadata.uid, container.id)
    cgroups = process_cgroups(systemd_node, container.pid())
    # name=systemd is systemd's own hierarchy; memory and pids are controllers runc joins.
    for hierarchy in ("name=systemd", "memory", "pids"):
        assert cgroups.get(hierarchy) == want, cgroups
    if driver == "systemd":
        scope = f"cri-containerd-{container.id}.scope"
        assert systemd_node.run(["systemctl", "is-active", scope]).stdout.strip() == "active"


SCOPE = "runproc-test-x1.scope"
MEMORY_LIMIT = 64 * 1024 * 1024


def _scope_properties(node: SystemdNode) -> dict[str, str]:
    shown = node.run(["systemctl", "show", "-p", "LoadState,ActiveState,MemoryMax,MemoryLimit,Delegate", SCOPE])
    return dict(line.split("=", 1) for line in shown.stdout.splitlines() if "=" in line)


def _node_bundle(node: SystemdNode, tmp_path: Path, bundle: str) -> None:
    """A busybox bundle in the node whose cgroup is the scope runproc-test-x1 in system.slice."""
    subprocess.run([str(runproc_path()), "spec", "--bundle", str(tmp_path)], check=True, capture_output=True)
    spec = json.loads((tmp_path / "config.json").read_text())
    spec["process"].update(terminal=False, args=["/bin/busybox", "sleep", "3600"])
    spec["linux"]["cgroupsPath"] = "system.slice:runproc-test:x1"
    spec["linux"]["resources"] = {"memory": {"limit": MEMORY_LIMIT}, "pids": {"limit": 50}}
    (tmp_path / "config.json").write_text(json.dumps(spec))
    node.copy_in(tmp_path / "config.json", f"{bundle}/config.json", mode=0o644)
    node.run(["sh", "-c", f"mkdir -p {bundle}/rootfs/bin && cp /bin/busybox {bundle}/rootfs/bin/busybox"])


def _run_detached(node: SystemdNode, bundle: str, container_id: str) -> subprocess.CompletedProcess[str]:
    # The container keeps its stdio: a file, not node.run's pipes (which would wait for it).
    script = 'timeout 60 "$@" </dev/null >/tmp/runproc-sd.out 2>&1; s=$?; cat /tmp/runproc-sd.out; exit $s'
    return node.run(["sh", "-c", script, "run", "/usr/local/bin/runproc", "--systemd-cgroup", "run", "-d",
                     "--bundle", bundle, container_id], check=False)  # fmt: skip


def test_systemd_cgroup_scope(systemd_node: SystemdNode, installed: tuple[InstallRun, InstallRun],
                              tmp_path: Path) -> None:  # fmt: skip
    """runproc's systemd driver against the node's systemd: a transient scope, limited, then stopped."""
    node, bundle = systemd_node, "/tmp/runproc-sd-bundle"
    runproc = ["/usr/local/bin/runproc", "--systemd-cgroup"]
    _node_bundle(node, tmp_path, bundle)
    try:
        started = _run_detached(node, bundle, "x1")
        assert started.returncode == 0, started.stdout
        props = _scope_properties(node)
        assert props["ActiveState"] == "active", props
        assert props["Delegate"] == "yes", props
        assert str(MEMORY_LIMIT) in (props.get("MemoryMax"), props.get("MemoryLimit")), props
        pid = json.loads(node.run([*runproc, "state", "x1"]).stdout)["pid"]
        cgroups = process_cgroups(node, pid)
        for hierarchy in ("name=systemd", "memory", "pids"):
            assert cgroups.get(hierarchy) == f"/system.slice/{SCOPE}", cgroups
        limit = node.read_text(f"/sys/fs/cgroup/memory/system.slice/{SCOPE}/memory.limit_in_bytes").strip()
        assert limit == str(MEMORY_LIMIT)
        assert node.read_text(f"/sys/fs/cgroup/pids/system.slice/{SCOPE}/pids.max").strip() == "50"
    finally:
        node.run([*runproc, "delete", "--force", "x1"], check=False)
    props = _scope_properties(node)
    assert props["LoadState"] == "not-found" and props["ActiveState"] == "inactive", props
    assert node.run(["test", "-e", f"/sys/fs/cgroup/memory/system.slice/{SCOPE}"], check=False).returncode != 0


def test_systemd_cgroup_scope_that_exists_is_refused_and_kept(
    systemd_node: SystemdNode, installed: tuple[InstallRun, InstallRun], tmp_path: Path
) -> None:
    """A second container with the same scope fails as runc 1.1.x ("unit ... already exists") and
    leaves the first one's scope running; the second's delete does not stop it either."""
    node, bundle = systemd_node, "/tmp/runproc-sd-bundle2"
    runproc = ["/usr/local/bin/runproc", "--systemd-cgroup"]
    _node_bundle(node, tmp_path, bundle)
    try:
        assert _run_detached(node, bundle, "first").returncode == 0
        second = _run_detached(node, bundle, "second")
        assert second.returncode != 0 and f"unit {SCOPE} already exists" in second.stdout, second.stdout
        node.run([*runproc, "delete", "--force", "second"], check=False)
        assert _scope_properties(node)["ActiveState"] == "active"
        pid = json.loads(node.run([*runproc, "state", "first"]).stdout)["pid"]
        assert process_cgroups(node, pid)["name=systemd"] == f"/system.slice/{SCOPE}"
    finally:
        node.run([*runproc, "delete", "--force", "first"], check=False)
    assert _scope_properties(node)["LoadState"] == "not-found"
