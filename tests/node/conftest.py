"""Fixtures of the Kind-like node suite (see README.md). The session fixtures (``systemd_node``,
``installed``, ``node_cri_rig``, ``node_cri``) are in node_fixtures.py, shared with tests/cri.

``systemd_node`` is public: tests of runproc's ``--systemd-cgroup`` can use it as "a real
systemd" (``node.run([...])``, ``node.copy_in(...)``, ``node.containerd_socket``).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from node_fixtures import NODE_KEY
from node_install import InstallRun, use_cgroup_driver
from node_machine import SystemdNode

if TYPE_CHECKING:
    from cri_client import CriClient

NODE_DIR = Path(__file__).resolve().parent


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


@pytest.fixture
def use_driver(
    systemd_node: SystemdNode, installed: tuple[InstallRun, InstallRun], node_cri: CriClient
) -> Callable[[str, str], None]:
    """use_driver(handler, driver): make the handler's SystemdCgroup match kubelet's cgroup
    driver (node_install.use_cgroup_driver)."""

    def use(handler: str, driver: str) -> None:
        use_cgroup_driver(systemd_node, node_cri, handler, driver)

    return use


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # On failure attach the node's containerd journal: shim and runtime errors show up there.
    from node_cri import containerd_journal

    report = yield
    node = item.config.stash.get(NODE_KEY, None)
    if report.failed and node is not None and node.leader is not None and item.path.is_relative_to(NODE_DIR):
        report.sections.append(("node containerd journal (tail)", containerd_journal(node)))
    return report
