"""The node's containerd as Kind configures it, and CRI Pods on it with either cgroup driver.

``KIND_CONTAINERD_CONFIG`` is what a Kind node image ships in /etc/containerd/config.toml
(config version 2, runc with ``SystemdCgroup = true``, the systemd cgroup driver of kubelet
since Kubernetes 1.24), adapted only where this node differs: the CNI plugins are Debian's
(/usr/lib/cni) and the sandbox image is the locally built pause image (tests/cri/cri_images).
The CRI client, images and Pod helpers are tests/cri's, pointed at the node's socket.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cri_client import CriClient
from cri_images import BUSYBOX_IMAGE, PAUSE_IMAGE, build_busybox_archive, build_pause_archive
from cri_pods import PodFactory, wait_for
from cri_rig import CNI_BIN_DIR, K8S_NAMESPACE, CniNetwork
from node_machine import SystemdNode

CONFIG_PATH = "/etc/containerd/config.toml"
CNI_CONFLIST_PATH = "/etc/cni/net.d/10-runproc-cri.conflist"

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
      conf_dir = "/etc/cni/net.d"
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
    network = CniNetwork(Path("/etc/cni/net.d"), Path("/var/lib/cni/networks"))
    node.seed(CNI_CONFLIST_PATH, json.dumps(network.conflist(), indent=1) + "\n")


def import_images(node: SystemdNode, cri: CriClient) -> None:
    """Build tests/cri's images on the host and import them with the node's own ctr."""
    for build in (build_pause_archive, build_busybox_archive):
        archive = build(node.scratch)
        node.run(["ctr", "--namespace", K8S_NAMESPACE, "images", "import", "-"], input=archive)
    for image in (PAUSE_IMAGE, BUSYBOX_IMAGE):
        # The CRI plugin learns of ctr's import through containerd's image events.
        wait_for(f"CRI to see {image}", lambda image=image: cri.image_status(image).image.id, timeout=20)


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
