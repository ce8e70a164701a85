"""Fixtures of the Kind-like node suite (see README.md): a booted systemd node, CRI on it,
and runproc installed into it by packaging/install.sh.

``systemd_node`` is public: tests of runproc's ``--systemd-cgroup`` can use it as "a real
systemd" (``node.run([...])``, ``node.copy_in(...)``, ``node.containerd_socket``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

NODE_DIR = Path(__file__).resolve().parent
REPO = NODE_DIR.parents[1]
# tests/cri's client, images, Pod helpers and teardown helpers are reused, not copied.
sys.path.insert(0, str(REPO / "tests" / "cri"))

from node_image import ensure_host_packages, node_rootfs  # noqa: E402
from node_install import InstallRun, run_install_sh, runproc_systemd_cgroup  # noqa: E402
from node_machine import SystemdNode, reap_stale  # noqa: E402
from runproc_testlib import runproc_path  # noqa: E402

if TYPE_CHECKING:
    from cri_client import CriClient

# Debian packages for the images tests/cri builds on the host (gcc for pause, busybox).
IMAGE_PACKAGES = ["gcc", "libc6-dev", "busybox-static"]
_NODE_KEY: pytest.StashKey[SystemdNode] = pytest.StashKey()


def node_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "node: must run as root (debootstraps and boots a systemd-nspawn machine)"
    for module in ("grpc", "grpc_tools"):
        if importlib.util.find_spec(module) is None:
            return f"node: python module {module} missing (pip install -r build/requirements-test.txt)"
    return None


def pytest_make_collect_report(collector: pytest.Collector) -> pytest.CollectReport | None:
    # Skip the whole suite up front, as ONE line, before any fixture starts anything.
    if isinstance(collector, pytest.Module) and collector.path.is_relative_to(NODE_DIR):
        reason = node_skip_reason()
        if reason is not None:
            longrepr = (str(collector.path), None, f"Skipped: {reason}")
            return pytest.CollectReport(collector.nodeid, "skipped", longrepr, [])  # type: ignore[arg-type]
    return None


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
        request.config.stash[_NODE_KEY] = node
        yield node
    finally:
        with contextlib.suppress(KeyError):
            del request.config.stash[_NODE_KEY]
        problems = node.stop()
    assert not problems, f"node teardown: {problems}"


@pytest.fixture(scope="session")
def node_cri(systemd_node: SystemdNode) -> Iterator[CriClient]:
    """A CRI client (tests/cri's) on the node's containerd, with tests/cri's images imported."""
    from cri_client import CriClient, generate_stubs
    from node_cri import import_images

    pb, pb_grpc = generate_stubs(systemd_node.scratch / "stubs")
    cri = CriClient(systemd_node.containerd_socket, pb, pb_grpc)
    try:
        cri.wait_ready()
        import_images(systemd_node, cri)
        yield cri
    finally:
        cri.close()


@pytest.fixture(scope="session")
def installed(systemd_node: SystemdNode) -> tuple[InstallRun, InstallRun]:
    """runproc installed into the node as a user would: install.sh, twice (it is idempotent)."""
    binary = runproc_path()
    if not binary.is_file():
        pytest.fail(f"runproc binary {binary} not found: run `make build` (or set RUNPROC_BIN)")
    return run_install_sh(systemd_node), run_install_sh(systemd_node)


@pytest.fixture
def use_driver(
    systemd_node: SystemdNode, installed: tuple[InstallRun, InstallRun], node_cri: CriClient
) -> Callable[[str, str], None]:
    """use_driver(handler, driver): make the handler's SystemdCgroup match kubelet's cgroup
    driver. runc keeps Kind's (systemd); runproc's is switched with install.sh's own
    --systemd-cgroup option, which restarts containerd when the config changes."""

    def use(handler: str, driver: str) -> None:
        want = driver == "systemd"
        if handler == "runc":
            assert want, "the node's runc handler is Kind's: systemd cgroup driver only"
        elif runproc_systemd_cgroup(systemd_node) != want:
            run_install_sh(systemd_node, "--systemd-cgroup", "true" if want else "false")
            node_cri.wait_ready()

    return use


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # On failure attach the node's containerd journal: shim and runtime errors show up there.
    report = yield
    node = item.config.stash.get(_NODE_KEY, None)
    if report.failed and node is not None and node.leader is not None and item.path.is_relative_to(NODE_DIR):
        journal = node.run(["journalctl", "-u", "containerd", "--no-pager", "-n", "60"], check=False)
        report.sections.append(("node containerd journal (tail)", journal.stdout + journal.stderr))
    return report
