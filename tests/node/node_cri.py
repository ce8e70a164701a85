"""The node's containerd as Kind configures it, and CRI Pods on it with either cgroup driver.

``KIND_CONTAINERD_CONFIG`` is what a Kind node image ships in /etc/containerd/config.toml
(config version 2, runc with ``SystemdCgroup = true``, the systemd cgroup driver of kubelet
since Kubernetes 1.24), adapted only where this node differs: the CNI plugins are Debian's
(/usr/lib/cni) and the sandbox image is the locally built pause image (tests/cri/cri_images).
``NODE_CONTAINERD_PATHS`` is where that containerd keeps a Pod's things (its defaults).
The CRI client, images and Pod helpers are tests/cri's, pointed at the node's socket.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cri_client import CriClient
from cri_images import PAUSE_IMAGE
from cri_network import CNI_BIN_DIR, CONFLIST_NAME, conflist
from cri_paths import ContainerdPaths
from cri_pods import PodFactory
from node_machine import SystemdNode

CONFIG_PATH = "/etc/containerd/config.toml"
CNI_CONF_DIR = Path("/etc/cni/net.d")
# containerd 1.6's defaults, which Kind's config keeps: the runc v2 shim's runtime root for
# every handler, host-local's default dataDir.
NODE_CONTAINERD_PATHS = ContainerdPaths(
    address=Path("/run/containerd/containerd.sock"),
    root=Path("/var/lib/containerd"),
    state=Path("/run/containerd"),
    netns_dir=Path("/var/run/netns"),
    ipam_dir=Path("/var/lib/cni/networks"),
    runtime_roots={handler: Path("/run/containerd/runc") for handler in ("runc", "runproc")},
)

KIND_CONTAINERD_CONFIG = f"""\
version = 2

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{PAUSE_IMAGE}"
    # Kind sets this only for rootless nodes. Here the VM's root lacks CAP_SYS_RESOURCE, so
    # the sandbox's oom_score_adj -998 could not be set and every RunPodSandbox would fail.
    restrict_oom_score_adj = true
    tolerate_missing_hugepages_controller = true
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "{CNI_BIN_DIR}"
      conf_dir = "{CNI_CONF_DIR}"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      discard_unpacked_layers = true
      snapshotter = "overlayfs"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes]
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
          runtime_type = "io.containerd.runc.v2"
          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
            SystemdCgroup = true
"""

# kubelet's cgroup driver decides the Pods' cgroup parent: a slice name for systemd (then
# containerd hands the runtime "<slice>:cri-containerd:<id>"), a path for cgroupfs.
DRIVERS = ("systemd", "cgroupfs")


def seed_kind_config(node: SystemdNode) -> None:
    """Before boot: Kind's containerd config and a CNI network (tests/cri's bridge conflist;
    the bridge lives in the node's own network namespace)."""
    node.seed(CONFIG_PATH, KIND_CONTAINERD_CONFIG)
    node.seed(str(CNI_CONF_DIR / CONFLIST_NAME), json.dumps(conflist(NODE_CONTAINERD_PATHS.ipam_dir), indent=1) + "\n")


def containerd_journal(node: SystemdNode, lines: int = 60) -> str:
    """The end of the node's containerd journal (shim and runtime errors show up there)."""
    journal = node.run(["journalctl", "-u", "containerd", "--no-pager", "-n", str(lines)], check=False)
    return journal.stdout + journal.stderr


def pod_cgroup_parent(driver: str, uid: str) -> str:
    """What kubelet sends as a BestEffort Pod's cgroup parent under ``driver``."""
    if driver == "systemd":
        return f"kubepods-besteffort-pod{uid.replace('-', '_')}.slice"
    if driver == "cgroupfs":
        return f"/kubepods/besteffort/pod{uid}"
    raise ValueError(f"unknown cgroup driver {driver!r}")


class NodePodFactory(PodFactory):
    """tests/cri's PodFactory with the cgroup parent kubelet would give under ``driver``."""

    def __init__(self, cri: CriClient, handler: str, log_root: Path, driver: str) -> None:
        super().__init__(cri, handler, log_root)
        self.driver = driver

    def sandbox_config(self, name: str, **kwargs: Any) -> Any:
        config = super().sandbox_config(name, **kwargs)
        config.linux.cgroup_parent = pod_cgroup_parent(self.driver, config.metadata.uid)
        return config


def expected_cgroup(driver: str, pod_uid: str, container_id: str) -> str:
    """The path (inside the node's cgroup namespace) runc gives a container under ``driver``."""
    if driver == "systemd":
        uid = pod_uid.replace("-", "_")
        # runc expands the parent slice to its ancestors, as systemd names slices.
        return f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid}.slice/" \
               f"cri-containerd-{container_id}.scope"  # fmt: skip
    return f"{pod_cgroup_parent(driver, pod_uid)}/{container_id}"


def process_cgroups(node: SystemdNode, pid: int) -> dict[str, str]:
    """/proc/<pid>/cgroup in the node: hierarchy (controllers or "" for v2) -> path."""
    lines = node.read_text(f"/proc/{pid}/cgroup").splitlines()
    return {controllers: path for _, controllers, path in (line.split(":", 2) for line in lines)}
