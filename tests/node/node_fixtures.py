"""Session fixtures of the Kind-like node, shared by tests/node and tests/cri (whose cases also
run on the node's containerd), so that the node boots once per session. A pytest plugin,
registered by tests/conftest.py (fixtures of tests/node/conftest.py would be visible to
tests/node only, and one defined in both conftests would boot two nodes).

* ``systemd_node``: the booted node (node_machine.SystemdNode);
* ``installed``: runproc installed into it by packaging/install.sh, twice;
* ``node_cri_rig``: tests/cri's rig on the node's containerd (node_cri_rig.NodeCriRig), with
  tests/cri's images imported and the CNI bridge made; ``node_cri`` is its CRI client.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

NODE_DIR = Path(__file__).resolve().parent
REPO = NODE_DIR.parents[1]
# tests/node's modules, and tests/cri's client, images, Pod helpers and rig, which the node's
# suite reuses, are imported by their bare names.
for _suite in (NODE_DIR, REPO / "tests" / "cri"):
    if str(_suite) not in sys.path:
        sys.path.insert(0, str(_suite))

from node_image import ensure_host_packages, node_rootfs  # noqa: E402
from node_install import InstallRun, run_install_sh  # noqa: E402
from node_machine import SystemdNode, reap_stale  # noqa: E402
from runproc_testlib import runproc_path  # noqa: E402

if TYPE_CHECKING:
    from cri_client import CriClient
    from node_cri_rig import NodeCriRig

# Debian packages for the images tests/cri builds on the host (gcc for pause, busybox).
IMAGE_PACKAGES = ["gcc", "libc6-dev", "busybox-static"]
# The running node, for failure reports (tests/node/conftest.py).
NODE_KEY: pytest.StashKey[SystemdNode] = pytest.StashKey()


@pytest.fixture(scope="session")
def systemd_node(request: pytest.FixtureRequest) -> Iterator[SystemdNode]:
    """A booted Kind-like node (systemd PID 1, containerd with Kind's config), for the session."""
    from node_cri import seed_kind_config

    ensure_host_packages()
    subprocess.run([str(REPO / "build" / "ensure-packages.sh"), *IMAGE_PACKAGES], check=True, timeout=600)
    reaped = reap_stale()
    if reaped:
        print(f"\n[node] removed what killed sessions left: {reaped}")
    node = SystemdNode(node_rootfs())
    seed_kind_config(node)
    try:
        node.boot()
        request.config.stash[NODE_KEY] = node
        yield node
    finally:
        with contextlib.suppress(KeyError):
            del request.config.stash[NODE_KEY]
        problems = node.stop()
    assert not problems, f"node teardown: {problems}"


@pytest.fixture(scope="session")
def installed(systemd_node: SystemdNode) -> tuple[InstallRun, InstallRun]:
    """runproc installed into the node as a user would: install.sh, twice (it is idempotent)."""
    binary = runproc_path()
    if not binary.is_file():
        pytest.fail(f"runproc binary {binary} not found: run `make build` (or set RUNPROC_BIN)")
    return run_install_sh(systemd_node), run_install_sh(systemd_node)


@pytest.fixture(scope="session")
def node_cri_rig(systemd_node: SystemdNode, installed: tuple[InstallRun, InstallRun]) -> Iterator[NodeCriRig]:
    """tests/cri's rig on the node's containerd (runproc installed), for the session. Its
    teardown stops and removes the Pods left, and fails if the node's forwarding or firewall
    rules changed."""
    from cri_client import CriClient, generate_stubs
    from cri_network import CniNetwork, network_state
    from cri_rig import remove_all_pods
    from node_cri import CNI_CONF_DIR, NODE_CONTAINERD_PATHS
    from node_cri_rig import NodeCriRig, NodeHost

    pb, pb_grpc = generate_stubs(systemd_node.scratch / "stubs")
    cri = CriClient(systemd_node.containerd_socket, pb, pb_grpc)
    host = NodeHost(systemd_node)
    before = network_state(host)
    problems: list[str] = []
    try:
        cri.wait_ready()
        # The conflist was seeded before boot (node_cri); the bridge gets the address the cases
        # talk to, as on the host rig.
        CniNetwork(host, CNI_CONF_DIR, NODE_CONTAINERD_PATHS.ipam_dir).make_bridge()
        rig = NodeCriRig(systemd_node.scratch, cri, host, NODE_CONTAINERD_PATHS, systemd_node.shared, before,
                         systemd_node)  # fmt: skip
        rig.add_test_images()
        yield rig
    finally:
        problems = remove_all_pods(cri)
        cri.close()
    assert not problems, f"node CRI rig teardown: {problems}"
    after = network_state(host)
    assert after == before, f"the suite changed the node's network state: {before} -> {after}"


@pytest.fixture(scope="session")
def node_cri(node_cri_rig: NodeCriRig) -> CriClient:
    """A CRI client (tests/cri's) on the node's containerd, with tests/cri's images imported."""
    return node_cri_rig.cri
