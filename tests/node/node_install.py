"""packaging/install.sh run inside the node, the way `install.sh --kind-node` runs it in a
Kind node container (copy the binary, the script and its snippets in, run it there)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from node_machine import SystemdNode
from runproc_testlib import runproc_path

if TYPE_CHECKING:
    from cri_client import CriClient

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "packaging"
INSTALL_DIR = "/tmp/runproc-install"  # where install.sh --kind-node puts its files in a node
CONFIG = "/etc/containerd/config.toml"


@dataclass(frozen=True)
class InstallRun:
    stdout: str
    stderr: str
    config: str  # /etc/containerd/config.toml after the run


def run_install_sh(node: SystemdNode, *options: str) -> InstallRun:
    """Copy the binary, install.sh and its snippets into the node and run install.sh there
    in its local mode (what `install.sh --kind-node` does through docker cp / exec)."""
    node.copy_in(runproc_path(), f"{INSTALL_DIR}/runproc", mode=0o755)
    node.copy_in(PACKAGING / "install.sh", f"{INSTALL_DIR}/install.sh", mode=0o755)
    for snippet in sorted((PACKAGING / "containerd").glob("*.toml")):
        node.copy_in(snippet, f"{INSTALL_DIR}/containerd/{snippet.name}", mode=0o644)
    proc = node.run(["sh", f"{INSTALL_DIR}/install.sh", "--binary", f"{INSTALL_DIR}/runproc", *options])
    return InstallRun(proc.stdout, proc.stderr, node.read_text(CONFIG))


def runproc_systemd_cgroup(node: SystemdNode) -> bool:
    config = tomllib.loads(node.read_text(CONFIG))
    runtimes = config["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]
    return bool(runtimes["runproc"].get("options", {}).get("SystemdCgroup", False))


def use_cgroup_driver(node: SystemdNode, cri: CriClient, handler: str, driver: str) -> None:
    """Make ``handler``'s SystemdCgroup match kubelet's cgroup ``driver`` (node-wide). runc
    keeps Kind's (systemd); runproc's is switched with install.sh's own --systemd-cgroup
    option, which restarts containerd when the config changes."""
    want = driver == "systemd"
    if handler == "runc":
        assert want, "the node's runc handler is Kind's: systemd cgroup driver only"
    elif runproc_systemd_cgroup(node) != want:
        run_install_sh(node, "--systemd-cgroup", "true" if want else "false")
        cri.wait_ready()
