"""tests/cri's cases on the Kind-like node: the node as the machine a CRI containerd runs on
(``NodeHost``) and the rig on the node's containerd (``NodeCriRig``).

The node's containerd runs Kind's config with the systemd cgroup driver, and runproc as
packaging/install.sh installed it (``SystemdCgroup = true``): containerd gives the runtime
``--systemd-cgroup`` and a ``<pod slice>:cri-containerd:<id>`` cgroupsPath, and every Pod
gets kubelet's systemd cgroup parent (``kubepods-besteffort-pod<uid>.slice``).

The rig points each part of tests/cri's rig at the node: the CRI client at the node's
socket (a host path), images imported with the node's own ctr, the CNI bridge (with the
bridge address the cases talk to) in the node's network namespace, Pod logs and hostPath
volumes in ``node.shared`` (the same path on both sides), and the "nothing left behind"
checks inside the node: its processes (its pid namespace, read through its PID 1's root),
its mounts, files and cgroups, and the systemd scopes of the Pod.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cri_hosts import RUN_TIMEOUT, ProcView
from cri_paths import K8S_NAMESPACE
from cri_rig import CriRig
from node_cri import NodePodFactory, containerd_journal, expected_cgroup
from node_install import use_cgroup_driver
from node_machine import SystemdNode

if TYPE_CHECKING:
    from cri_pods import Pod

CLONE_NEWNET = 0x40000000
DRIVER = "systemd"  # Kind's kubelet's cgroup driver, and so the node's runtimes'
# runproc's per-call unpack dirs (used where its cache in /var/lib/runproc cannot be), in the
# places it tries without TMPDIR (containerd sets none). The node runs nothing else that
# makes them, so any left is runproc's.
UNPACK_DIR_GLOBS = [f"{d}/staticx-lk-*" for d in ("/tmp", "/var/tmp", "/dev/shm", "/usr/local/bin")]


def _setns(fd: int, nstype: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, nstype) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


class NodeHost(ProcView):
    """The node as a cri_hosts.CriHost: its procfs read through its PID 1's root (its pids),
    commands run in all its namespaces (SystemdNode.run)."""

    def __init__(self, node: SystemdNode) -> None:
        assert node.leader is not None, "the node is not running"
        super().__init__(Path(f"/proc/{node.leader}/root/proc"), 1)
        self.node = node

    def run(self, argv: Sequence[str], *, input: bytes | str | None = None, check: bool = True,
            timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return self.node.run(argv, input=input, check=check, timeout=timeout)

    def read_text(self, path: str | Path) -> str:
        return self.node.read_text(str(path))

    def write_text(self, path: str | Path, text: str) -> None:
        self.node.write_bytes(str(path), text.encode())

    def existing(self, paths: Sequence[Path]) -> list[Path]:
        if not paths:
            return []
        script = 'for p; do if [ -e "$p" ] || [ -L "$p" ]; then echo "$p"; fi; done'
        found = set(self.run(["sh", "-c", script, "existing", *map(str, paths)]).stdout.splitlines())
        return [p for p in paths if str(p) in found]

    def resolve(self, path: Path) -> Path:
        return Path(self.run(["realpath", "-m", str(path)]).stdout.strip())

    def kill(self, pid: int, sig: signal.Signals) -> None:
        self.run(["sh", "-c", 'kill -s "$1" "$2"', "kill", sig.name.removeprefix("SIG"), str(pid)])

    @contextlib.contextmanager
    def network_namespace(self) -> Iterator[None]:
        # setns moves this thread only; sockets keep the namespace they were made in.
        with open(f"/proc/{self.node.leader}/ns/net") as node_ns, open("/proc/thread-self/ns/net") as own_ns:
            _setns(node_ns.fileno(), CLONE_NEWNET)
            try:
                yield
            finally:
                _setns(own_ns.fileno(), CLONE_NEWNET)


@dataclass
class NodeCriRig(CriRig):
    node: SystemdNode

    def import_archive(self, archive: bytes) -> None:
        self.node.run(["ctr", "--namespace", K8S_NAMESPACE, "images", "import", "-"], input=archive)

    def pod_factory(self, handler: str) -> NodePodFactory:
        # tests/node switches runproc to cgroupfs for some of its cases: back to Kind's driver.
        use_cgroup_driver(self.node, self.cri, handler, DRIVER)
        return NodePodFactory(self.cri, handler, self.shared / "pods", DRIVER)

    def pod_cgroups(self, pod: Pod, ids: Sequence[str]) -> list[Path]:
        uid = pod.config.metadata.uid
        scopes = {cid: expected_cgroup(DRIVER, uid, cid) for cid in ids}
        slice_dir = os.path.dirname(scopes[ids[0]])
        # Every hierarchy the Pod's slice is in (v1 controllers, name=systemd, unified).
        script = 'for h in /sys/fs/cgroup/*/; do if [ -d "$h$1" ]; then echo "${h%/}"; fi; done'
        hierarchies = self.host.run(["sh", "-c", script, "hierarchies", slice_dir.lstrip("/")]).stdout.split()
        return [Path(h + scope) for h in hierarchies for scope in scopes.values()]

    def pod_units(self, ids: Sequence[str]) -> list[str]:
        return [f"cri-containerd-{cid}.scope" for cid in ids]

    def stray_globs(self) -> list[str]:
        return UNPACK_DIR_GLOBS

    def log_tail(self) -> str:
        return containerd_journal(self.node)
