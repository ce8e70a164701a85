"""What a Pod leaves on the host, captured while it runs, checked after its removal."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from cri_pods import Pod
from cri_rig import LIBCNI_RESULTS, CNI_NETWORK, CriContainerd, alive, mount_points, processes


@dataclass
class PodFootprint:
    """Everything on the host that belongs to one Pod (sandbox + containers)."""

    ids: list[str]
    pids: list[int]
    shim_pids: list[int]
    netns: Path | None
    paths: list[Path] = field(default_factory=list)  # dirs/files that must go away
    cgroups: list[Path] = field(default_factory=list)

    def leftovers(self) -> list[str]:
        """What of it still exists (empty once the Pod is fully gone)."""
        left = [f"process {pid}" for pid in self.pids + self.shim_pids if alive(pid)]
        left += [f"path {p}" for p in self.paths if os.path.lexists(p)]
        left += [f"cgroup {p}" for p in self.cgroups if p.exists()]
        mounts = mount_points()
        left += [f"mount {m}" for m in mounts if any(i in m for i in self.ids)]
        if self.netns is not None:
            left += [f"netns mount {m}" for m in mounts if m == str(self.netns)]
            if self.netns.exists():
                left.append(f"netns file {self.netns}")
        return left

    def wait_gone(self, timeout: float = 10.0) -> list[str]:
        """Leftovers after waiting up to ``timeout`` (shims exit asynchronously)."""
        deadline = time.monotonic() + timeout
        while (left := self.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.1)
        return left


def netns_path(spec: dict) -> Path | None:
    for ns in spec.get("linux", {}).get("namespaces", []):
        if ns.get("type") == "network" and ns.get("path"):
            return Path(ns["path"])
    return None


def pod_footprint(daemon: CriContainerd, pod: Pod) -> PodFootprint:
    """Capture a running Pod's footprint: processes, shim, netns, dirs, mounts, cgroups."""
    info = pod.info()
    ids = [pod.id, *(c.id for c in pod.containers)]
    pids = [int(info["pid"]), *(c.pid() for c in pod.containers)]
    shims = [
        pid
        for pid, argv in processes()
        if argv and argv[0].endswith(b"containerd-shim-runc-v2") and pod.id.encode() in argv
        and str(daemon.address).encode() in argv
    ]
    runtime_root = daemon.runtime_root(pod.handler) / "k8s.io"
    paths = [daemon.shim_socket(pod.id)]
    for cid in ids:
        paths += [daemon.task_dir(cid), runtime_root / cid]
    paths += [daemon.cri_root / "sandboxes" / pod.id, daemon.cri_state / "sandboxes" / pod.id]
    for c in pod.containers:
        paths += [daemon.cri_root / "containers" / c.id, daemon.cri_state / "containers" / c.id]
    paths += [LIBCNI_RESULTS / f"{CNI_NETWORK}-{pod.id}-eth0", daemon.ipam_dir / CNI_NETWORK / pod.ip]
    parent = pod.config.linux.cgroup_parent.strip("/")
    cgroups = [
        h / parent / cid
        for h in Path("/sys/fs/cgroup").iterdir()
        if (h / parent).is_dir()
        for cid in ids
    ]
    return PodFootprint(ids, pids, shims, netns_path(info["runtimeSpec"]), paths, cgroups)
