"""Rigs for the CRI end-to-end suite: this test process stands where kubelet stands.

Every case runs on each of ``TARGETS``: a containerd with the CRI plugin (a rig, see cri_rig)
and a CRI runtime handler (RuntimeClass handler), `runproc` and `runc` as the control:

* ``runc``, ``runproc``: the suite's private containerd on this VM (own config, root, state,
  sockets, netns dir; the cgroupfs driver), with a CNI bridge network of its own; `runproc`
  is the runc v2 shim with BinaryName = $RUNPROC_BIN, configured from
  packaging/containerd/runproc-v2.toml. Its session fixture starts it on first use;
* ``node-runc``, ``node-runproc``: the Kind-like node's containerd (tests/node: systemd PID 1,
  Kind's config, ``SystemdCgroup = true``, runproc installed by packaging/install.sh), so the
  runtime gets ``--systemd-cgroup`` and a ``slice:prefix:name`` cgroupsPath. The node boots
  once per session, shared with tests/node (tests/node/node_fixtures.py).

Both build their images themselves (busybox and a static pause program) and talk CRI
runtime.v1 over gRPC (cri_client). A case reads the machine its containerd runs on through
``cri_rig.host`` (cri_hosts), so the same assertions hold on this VM and in the node.

The host rig's teardown removes everything made (Pods, containerd, shims, mounts, netns,
bridge, cgroups, dirs) even after failures, and fails if ip_forward or the firewall rules
changed. Set ``RUNPROC_CRI_KEEP=1`` to keep its temp dir (containerd.log, Pod logs) for
debugging; ``RUNPROC_CRI_TARGETS=runproc,node-runproc`` (say) runs only those targets.
"""

from __future__ import annotations

import importlib.util
import os

# gRPC registers fork handlers that abort a forked child once its fds are closed; other
# suites in this pytest process fork (runproc's hook runner, say): keep them out of it.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
import shutil
import subprocess
import tempfile
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cri_hosts import LocalHost, kill_tree, remove_cgroups, unmount_under
from cri_network import CniNetwork, network_state
from cri_paths import CGROUP_ROOT
from cri_rig import CriContainerd, CriRig, Footprint, HostCriRig, remove_all_pods
from runproc_testlib import runproc_path

if TYPE_CHECKING:  # these import grpc, which may be missing (then the suite is skipped)
    from cri_client import CriClient
    from cri_pods import PodFactory

CRI_DIR = Path(__file__).resolve().parent
REPO = CRI_DIR.parents[1]


@dataclass(frozen=True)
class CriTarget:
    """Where a case runs: which rig's containerd ("host": this VM's, "node": the Kind-like
    node's) and which CRI runtime handler."""

    rig: str
    handler: str

    @property
    def id(self) -> str:
        return self.handler if self.rig == "host" else f"{self.rig}-{self.handler}"


TARGETS = [CriTarget(rig, handler) for rig in ("host", "node") for handler in ("runc", "runproc")]
ACTIVE_TARGETS = [t for t in TARGETS if t.id in os.environ.get("RUNPROC_CRI_TARGETS", "").split(",")] or TARGETS
# The first node case boots the node (and debootstraps it when it is not cached yet).
NODE_TIMEOUT = 900

# Debian packages the suite needs besides TEST_PACKAGES (installed if missing, idempotent).
PACKAGES = ["containernetworking-plugins", "gcc", "libc6-dev", "busybox-static", "iproute2"]

_RIG_KEY: pytest.StashKey[CriRig] = pytest.StashKey()


def cri_skip_reason() -> str | None:
    """Why this suite cannot run here (one line), or None when it can."""
    if os.geteuid() != 0:
        return "cri: must run as root (starts containerd, makes a bridge and Pods)"
    missing = [b for b in ("containerd", "ctr", "containerd-shim-runc-v2", "runc", "ip") if shutil.which(b) is None]
    if missing:
        return f"cri: not installed: {', '.join(missing)}"
    for module in ("grpc", "grpc_tools"):
        if importlib.util.find_spec(module) is None:
            return f"cri: python module {module} missing (pip install -r build/requirements-test.txt)"
    return None


def pytest_make_collect_report(collector: pytest.Collector) -> pytest.CollectReport | None:
    # Skip the whole module up front, as ONE line, before any fixture starts anything.
    if isinstance(collector, pytest.Module) and collector.path.is_relative_to(CRI_DIR):
        reason = cri_skip_reason()
        if reason is not None:
            longrepr = (str(collector.path), None, f"Skipped: {reason}")
            return pytest.CollectReport(collector.nodeid, "skipped", longrepr, [])  # type: ignore[arg-type]
    return None


@pytest.fixture(scope="session")
def host_cri_rig() -> Iterator[HostCriRig]:
    """The suite's private containerd on this VM, for the session (started on first use)."""
    from cri_client import CriClient, generate_stubs

    subprocess.run([str(REPO / "build" / "ensure-packages.sh"), *PACKAGES], check=True, timeout=600)
    # Short path on purpose: unix socket paths are limited to 107 bytes.
    workdir = Path(tempfile.mkdtemp(prefix="runproc-cri-", dir="/tmp"))
    host = LocalHost()
    host_before = network_state(host)
    daemon = CriContainerd(workdir, runproc_path())
    network = CniNetwork(host, daemon.cni_conf_dir, daemon.paths.ipam_dir)
    footprint = Footprint()
    cri: CriClient | None = None
    try:
        pb, pb_grpc = generate_stubs(workdir / "stubs")
        network.setup()
        daemon.start()
        cri = CriClient(daemon.address, pb, pb_grpc)
        cri.wait_ready()
        rig = HostCriRig(workdir, cri, host, daemon.paths, workdir, host_before, daemon, network)
        rig.add_test_images()
        yield rig
    finally:
        _teardown(workdir, daemon, cri, network, footprint)
    host_after = network_state(host)
    assert host_after == host_before, f"the suite changed the host's network state: {host_before} -> {host_after}"


def _teardown(
    workdir: Path, daemon: CriContainerd, cri: CriClient | None, network: CniNetwork, footprint: Footprint
) -> None:
    problems: list[str] = []
    if cri is not None:
        # While containerd still runs: whatever Pods remain, stopped and removed properly.
        problems += remove_all_pods(cri)
        footprint.sandbox_ids |= cri.sandbox_ids
        cri.close()
    shims = daemon.shims()
    daemon.stop()
    # Shims outlive containerd by design; after a clean removal there are none left.
    kill_tree(shims + daemon.shims())
    footprint.clean(daemon.paths)
    network.teardown()
    left_mounts = unmount_under(workdir)
    left_cgroups = remove_cgroups(CGROUP_ROOT)
    if problems or left_cgroups:
        print(f"\n[cri] teardown problems: {problems} cgroups left: {left_cgroups}")
    if os.environ.get("RUNPROC_CRI_KEEP"):
        print(f"\n[cri] kept {workdir}")
    elif left_mounts:
        # Never rmtree through a mount.
        print(f"\n[cri] NOT removing {workdir}: still mounted: {left_mounts}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(params=[
    pytest.param(t, id=t.id, marks=[pytest.mark.timeout(NODE_TIMEOUT)] if t.rig == "node" else [])
    for t in ACTIVE_TARGETS
])  # fmt: skip
def target(request: pytest.FixtureRequest) -> CriTarget:
    return request.param


@pytest.fixture
def cri_rig(request: pytest.FixtureRequest, target: CriTarget) -> CriRig:
    """The case's rig: the session's host_cri_rig or node_cri_rig (tests/node/node_fixtures.py),
    each set up on first use."""
    rig: CriRig = request.getfixturevalue(f"{target.rig}_cri_rig")
    request.node.stash[_RIG_KEY] = rig
    return rig


@pytest.fixture
def handler(target: CriTarget) -> str:
    if target.handler == "runproc":
        binary = runproc_path()
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            pytest.skip(f"runproc binary {binary} not built (make build, or set RUNPROC_BIN)")
    return target.handler


@pytest.fixture
def pods(cri_rig: CriRig, handler: str) -> Iterator[PodFactory]:
    """Factory of Pods run with the case's handler; all are stopped and removed afterwards."""
    factory = cri_rig.pod_factory(handler)
    yield factory
    errors = factory.cleanup()
    assert not errors, f"Pod cleanup failed: {errors}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # On failure attach containerd's log tail: CNI, shim and runtime errors show up there.
    report = yield
    rig = item.stash.get(_RIG_KEY, None)
    if report.failed and rig is not None:
        report.sections.append(("containerd log (tail)", rig.log_tail()))
    return report
