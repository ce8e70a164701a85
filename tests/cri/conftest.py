"""Rig for the CRI end-to-end suite: this test process stands where kubelet stands.

The session starts a private containerd with the CRI plugin (own config, root, state,
sockets, netns dir; see cri_rig), a CNI bridge network of its own, and images it builds
itself (busybox and a static pause program), then talks CRI runtime.v1 to it over gRPC
(cri_client). Every case is parametrised over ``HANDLERS``, the CRI runtime handlers
(RuntimeClass handlers) it runs with: containerd's config has `runc` (plain runc v2 shim)
and `runproc` (the runc v2 shim with BinaryName = $RUNPROC_BIN, configured from
packaging/containerd/runproc-v2.toml).

The teardown removes everything made (Pods, containerd, shims, mounts, netns, bridge,
cgroups, dirs) even after failures, and fails if ip_forward or the firewall rules changed.
Set ``RUNPROC_CRI_KEEP=1`` to keep the temp dir (containerd.log, Pod logs) for debugging.
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
from pathlib import Path
from typing import TYPE_CHECKING

import cri_images
import cri_rig as rig
import pytest
from cri_rig import CriRig
from runproc_testlib import runproc_path

if TYPE_CHECKING:  # these import grpc, which may be missing (then the suite is skipped)
    from cri_client import CriClient
    from cri_pods import PodFactory

CRI_DIR = Path(__file__).resolve().parent
REPO = CRI_DIR.parents[1]

# The CRI runtime handlers every case runs with: runproc, and runc beside it as the control.
HANDLERS = ["runc", "runproc"]
# RUNPROC_CRI_HANDLERS=runproc (say) overrides the list for one run.
ACTIVE_HANDLERS = [h for h in os.environ.get("RUNPROC_CRI_HANDLERS", "").split(",") if h] or HANDLERS

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
def cri_rig(request: pytest.FixtureRequest) -> Iterator[CriRig]:
    from cri_client import CriClient, generate_stubs
    from cri_pods import wait_for

    subprocess.run([str(REPO / "build" / "ensure-packages.sh"), *PACKAGES], check=True, timeout=600)
    # Short path on purpose: unix socket paths are limited to 107 bytes.
    workdir = Path(tempfile.mkdtemp(prefix="runproc-cri-", dir="/tmp"))
    host_before = rig.host_network_state()
    daemon = rig.CriContainerd(workdir, runproc_path())
    network = rig.CniNetwork(daemon.cni_conf_dir, daemon.ipam_dir)
    footprint = rig.Footprint()
    cri: CriClient | None = None
    try:
        pb, pb_grpc = generate_stubs(workdir / "stubs")
        network.setup()
        daemon.start()
        cri = CriClient(daemon.address, pb, pb_grpc)
        cri.wait_ready()
        for build in (cri_images.build_pause_archive, cri_images.build_busybox_archive):
            daemon.import_image(build(workdir))
        for image in (cri_images.PAUSE_IMAGE, cri_images.BUSYBOX_IMAGE):
            # The CRI plugin learns of ctr's import through containerd's image events.
            wait_for(f"CRI to see {image}", lambda image=image: cri.image_status(image).image.id, timeout=20)
        state = CriRig(workdir, daemon, cri, network, host_before)
        request.config.stash[_RIG_KEY] = state
        yield state
    finally:
        _teardown(workdir, daemon, cri, network, footprint)
    host_after = rig.host_network_state()
    assert host_after == host_before, f"the suite changed the host's network state: {host_before} -> {host_after}"


def _teardown(
    workdir: Path, daemon: rig.CriContainerd, cri: CriClient | None, network: rig.CniNetwork, footprint: rig.Footprint
) -> None:
    problems: list[str] = []
    if cri is not None:
        # While containerd still runs: whatever Pods remain, stopped and removed properly
        # (this tears down their networking through CNI, unmounts and deletes netns).
        import grpc

        try:
            sandboxes = cri.list_pod_sandbox()
        except grpc.RpcError as exc:
            sandboxes = []
            problems.append(f"ListPodSandbox: {exc}")
        for sandbox in sandboxes:
            for call in (cri.stop_pod_sandbox, cri.remove_pod_sandbox):
                try:
                    call(sandbox.id)
                except grpc.RpcError as exc:
                    problems.append(f"{call.__name__} {sandbox.id}: {exc}")
        footprint.sandbox_ids |= cri.sandbox_ids
        cri.close()
    shims = daemon.shims()
    daemon.stop()
    # Shims outlive containerd by design; after a clean removal there are none left.
    rig.kill_tree(shims + daemon.shims())
    footprint.clean(daemon)
    network.teardown()
    left_mounts = rig.unmount_under(workdir)
    left_cgroups = rig.remove_cgroups(rig.CGROUP_ROOT)
    if problems or left_cgroups:
        print(f"\n[cri] teardown problems: {problems} cgroups left: {left_cgroups}")
    if os.environ.get("RUNPROC_CRI_KEEP"):
        print(f"\n[cri] kept {workdir}")
    elif left_mounts:
        # Never rmtree through a mount.
        print(f"\n[cri] NOT removing {workdir}: still mounted: {left_mounts}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(params=ACTIVE_HANDLERS)
def handler(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == "runproc":
        binary = runproc_path()
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            pytest.skip(f"runproc binary {binary} not built (make build, or set RUNPROC_BIN)")
    return name


@pytest.fixture
def cri(cri_rig: CriRig) -> CriClient:
    return cri_rig.cri


@pytest.fixture
def pods(cri_rig: CriRig, handler: str) -> Iterator[PodFactory]:
    """Factory of Pods run with the case's handler; all are stopped and removed afterwards."""
    from cri_pods import PodFactory

    factory = PodFactory(cri_rig.cri, handler, cri_rig.workdir / "pods")
    yield factory
    errors = factory.cleanup()
    assert not errors, f"Pod cleanup failed: {errors}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # On failure attach containerd's log tail: CNI, shim and runtime errors show up there.
    report = yield
    state = item.config.stash.get(_RIG_KEY, None)
    if report.failed and state is not None and item.path.is_relative_to(CRI_DIR):
        report.sections.append(("containerd log (tail)", state.daemon.log_tail()))
    return report
