"""What a Pod leaves on the machine its containerd runs on, captured while it runs, checked
after its removal."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from cri_hosts import CriHost
from cri_network import CNI_NETWORK, LIBCNI_RESULTS
from cri_pods import Pod
from cri_paths import shim_pids
from cri_rig import CriRig


@dataclass
class PodFootprint:
    """Everything on ``host`` that belongs to one Pod (sandbox + containers); paths are host's."""

    host: CriHost
    ids: list[str]
    pids: list[int]
    shim_pids: list[int]
    netns: Path | None  # as the runtime spec names it
    netns_mount: Path | None  # where it is mounted (symlinks resolved, as mountinfo shows it)
    paths: list[Path] = field(default_factory=list)  # dirs/files that must go away
    cgroups: list[Path] = field(default_factory=list)
    units: list[str] = field(default_factory=list)  # systemd units (the systemd cgroup driver's scopes)
    stray_globs: list[str] = field(default_factory=list)  # what no call may leave (shell patterns)

    def leftovers(self) -> list[str]:
        """What of it still exists (empty once the Pod is fully gone)."""
        host = self.host
        left = [f"process {pid}" for pid in self.pids + self.shim_pids if host.alive(pid)]
        netns = [self.netns] if self.netns is not None else []
        existing = set(host.existing([*self.paths, *self.cgroups, *netns]))  # one look on the node
        left += [f"path {p}" for p in self.paths if p in existing]
        left += [f"cgroup {p}" for p in self.cgroups if p in existing]
        mounts = host.mount_points()
        left += [f"mount {m}" for m in mounts if any(i in m for i in self.ids)]
        if self.netns is not None:
            left += [f"netns mount {m}" for m in mounts if m == str(self.netns_mount)]
            if self.netns in existing:
                left.append(f"netns file {self.netns}")
        left += [f"unit {u}" for u in loaded_units(host, self.units)]
        left += [f"stray {p}" for p in glob_matches(host, self.stray_globs)]
        return left

    def wait_gone(self, timeout: float = 10.0) -> list[str]:
        """Leftovers after waiting up to ``timeout`` (shims exit asynchronously)."""
        deadline = time.monotonic() + timeout
        while (left := self.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.1)
        return left


def loaded_units(host: CriHost, units: list[str]) -> list[str]:
    """Those of ``units`` systemd on ``host`` still has loaded (a stopped transient unit is gone)."""
    if not units:
        return []
    shown = host.run(["systemctl", "show", "--property=Id,LoadState", *units]).stdout
    records = [dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
               for block in shown.strip().split("\n\n")]  # fmt: skip
    return [unit for unit, record in zip(units, records, strict=True) if record.get("LoadState") != "not-found"]


def glob_matches(host: CriHost, patterns: list[str]) -> list[str]:
    """What exists on ``host`` that matches the shell ``patterns``."""
    if not patterns:
        return []
    script = 'for p in "$@"; do for f in $p; do if [ -e "$f" ]; then echo "$f"; fi; done; done'
    return host.run(["sh", "-c", script, "glob", *patterns]).stdout.split()


def netns_path(spec: dict) -> Path | None:
    for ns in spec.get("linux", {}).get("namespaces", []):
        if ns.get("type") == "network" and ns.get("path"):
            return Path(ns["path"])
    return None


def pod_footprint(rig: CriRig, pod: Pod) -> PodFootprint:
    """Capture a running Pod's footprint: processes, shim, netns, dirs, mounts, cgroups, units."""
    host, paths = rig.host, rig.paths
    info = pod.info()
    ids = [pod.id, *(c.id for c in pod.containers)]
    pids = [int(info["pid"]), *(c.pid() for c in pod.containers)]
    shims = shim_pids(host.processes(), paths, pod.id)
    files = [paths.shim_socket(pod.id)]
    for cid in ids:
        files += [paths.task_dir(cid), paths.runtime_state(pod.handler, cid)]
    files += [paths.cri_root / "sandboxes" / pod.id, paths.cri_state / "sandboxes" / pod.id]
    for c in pod.containers:
        files += [paths.cri_root / "containers" / c.id, paths.cri_state / "containers" / c.id]
    files += [LIBCNI_RESULTS / f"{CNI_NETWORK}-{pod.id}-eth0", paths.ipam_dir / CNI_NETWORK / pod.ip]
    netns = netns_path(info["runtimeSpec"])
    netns_mount = host.resolve(netns) if netns is not None else None
    return PodFootprint(host, ids, pids, shims, netns, netns_mount, files, rig.pod_cgroups(pod, ids),
                        rig.pod_units(ids), rig.stray_globs())  # fmt: skip
