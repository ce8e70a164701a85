"""Where a CRI containerd (1.6) and its shims, runtimes and CNI plugins keep what a Pod
leaves, as paths on the machine that containerd runs on."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

K8S_NAMESPACE = "k8s.io"  # the containerd namespace the CRI plugin works in
CRI_PLUGIN = "io.containerd.grpc.v1.cri"
SHIM_SOCKET_DIR = Path("/run/containerd/s")  # fixed in containerd 1.6, whatever its state dir
CGROUP_ROOT = "runproc-cri"  # cgroupfs driver: the Pods' cgroup_parent is /runproc-cri/pod<uid>


@dataclass(frozen=True)
class ContainerdPaths:
    address: Path  # its gRPC socket as containerd was given it (what the shims get as -address)
    root: Path
    state: Path
    netns_dir: Path  # the Pods' network namespace files
    ipam_dir: Path  # host-local's leases (the conflist's dataDir)
    runtime_roots: Mapping[str, Path]  # handler -> the OCI runtime's --root (runc options.Root)

    @property
    def cri_root(self) -> Path:
        return self.root / CRI_PLUGIN

    @property
    def cri_state(self) -> Path:
        return self.state / CRI_PLUGIN

    def task_dir(self, cid: str) -> Path:
        """The shim's bundle dir for a container or sandbox id (the rootfs is mounted there)."""
        return self.state / "io.containerd.runtime.v2.task" / K8S_NAMESPACE / cid

    def runtime_state(self, handler: str, cid: str) -> Path:
        """The OCI runtime's state dir for the container (runc's and runproc's layout)."""
        return self.runtime_roots[handler] / K8S_NAMESPACE / cid

    def shim_socket(self, sandbox_id: str) -> Path:
        """containerd 1.6: /run/containerd/s/sha256(<address>/<namespace>/<shim id>)."""
        digest = hashlib.sha256(f"{self.address}/{K8S_NAMESPACE}/{sandbox_id}".encode()).hexdigest()
        return SHIM_SOCKET_DIR / digest


def shim_pids(processes: Iterable[tuple[int, list[bytes]]], paths: ContainerdPaths,
              sandbox_id: str | None = None) -> list[int]:  # fmt: skip
    """Pids of the shims serving that containerd (matched by its socket path in their argv),
    or only the one serving ``sandbox_id``'s Pod."""
    return [
        pid
        for pid, argv in processes
        if argv and argv[0].endswith(b"containerd-shim-runc-v2") and str(paths.address).encode() in argv
        and (sandbox_id is None or sandbox_id.encode() in argv)
    ]
