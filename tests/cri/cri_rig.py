"""The CRI suite's rigs: a containerd with the CRI plugin each, and the machine it runs on.

``CriRig`` is what a case sees (the ``cri_rig`` fixture): a CRI client, the machine containerd
runs on (``host``, see cri_hosts), where that containerd keeps a Pod's things (``paths``),
Pod factories bound to a runtime handler, image import, and ``shared``, a dir the tests and
containerd see at the same path (Pod logs, hostPath volumes, seccomp profiles). Two rigs:

* ``HostCriRig``: the suite's private containerd on this VM (``CriContainerd``), the cgroupfs
  driver (Pods under /runproc-cri), its own CNI bridge; made by tests/cri/conftest.py.
* ``NodeCriRig`` (tests/node/node_cri_rig.py): the Kind-like node's containerd, Kind's config
  with the systemd cgroup driver, runproc installed by packaging/install.sh.

The host rig lives under one short temp dir (unix socket paths are limited to 107 bytes):

    <workdir>/containerd.toml, containerd.sock(.ttrpc), containerd.log
    <workdir>/root, <workdir>/state        containerd's root and state (CRI's are inside)
    <workdir>/state/io.containerd.grpc.v1.cri/netns   the Pods' network namespaces
    <workdir>/runtime-root/<handler>       the OCI runtime's --root (runc options.Root)
    <workdir>/cni/net.d, <workdir>/cni/ipam the CNI config and host-local's leases
    <workdir>/pods/<pod>/...                Pod log directories (as kubelet's /var/log/pods)
    <workdir>/tmp/<id>                      dirs for hostPath volumes, profiles (shared_dir)

Its known footprint outside it (containerd 1.6 / CNI behaviour), removed by the teardown:
* the bridge ``rpcri0`` with its address (made here, so that no plugin needs isGateway,
  which would switch on ip_forward) and the Pods' veth peers;
* the shim's ttrpc socket /run/containerd/s/<sha256(address/k8s.io/<sandbox id>)>;
* libcni's result cache /var/lib/cni/results/<network>-<sandbox id>-<ifname> (go-cni
  offers containerd no cache-dir option);
* cgroups under /<CGROUP_ROOT>/ in every hierarchy (each Pod's cgroup_parent is there).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import tomllib
from cri_hosts import CriHost, processes
from cri_images import BUSYBOX_IMAGE, PAUSE_IMAGE, build_busybox_archive, build_pause_archive
from cri_network import CNI_BIN_DIR, CNI_LOOPBACK_NETWORK, CNI_NETWORK, LIBCNI_RESULTS, CniNetwork
from cri_paths import CRI_PLUGIN, K8S_NAMESPACE, ContainerdPaths, shim_pids
from runproc_testlib import log_tail, stop_daemon

if TYPE_CHECKING:  # these import grpc, which may be missing (then the suite is skipped)
    from cri_client import CriClient
    from cri_pods import Pod, PodFactory

CRI_DIR = Path(__file__).resolve().parent
REPO = CRI_DIR.parents[1]
PACKAGING_SNIPPET = REPO / "packaging" / "containerd" / "runproc-v2.toml"
HANDLERS = ("runc", "runproc")  # the runtime handlers the host rig's containerd has

STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def base_env() -> dict[str, str]:
    """A small, predictable environment for containerd (so the shims and runtimes) and ctr.

    The developer's shell could leak CONTAINERD_*, NOTIFY_SOCKET or XDG_RUNTIME_DIR;
    RUNPROC_* is passed through so runtime authors can switch on debugging.
    """
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "HOME": "/root",
    }
    env.update({k: v for k, v in os.environ.items() if k.startswith("RUNPROC_")})
    return env


# --------------------------------------------------------------------------- TOML


def toml_dumps(doc: Mapping[str, object]) -> str:
    """Just enough TOML for containerd's config: nested tables of strings, bools, ints, lists."""
    lines: list[str] = []

    def key(k: str) -> str:
        return k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)

    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, str):
            return json.dumps(v)  # a JSON string of plain text is a TOML basic string
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(f"no TOML for {v!r}")

    def table(path: list[str], items: Mapping[str, object]) -> None:
        scalars = [(k, v) for k, v in items.items() if not isinstance(v, Mapping)]
        tables = [(k, v) for k, v in items.items() if isinstance(v, Mapping)]
        if path and (scalars or not tables):
            lines.append("")
            lines.append("[" + ".".join(key(p) for p in path) + "]")
        lines.extend(f"{key(k)} = {value(v)}" for k, v in scalars)
        for k, v in tables:
            assert isinstance(v, Mapping)
            table([*path, k], v)

    table([], doc)
    return "\n".join(lines).lstrip("\n") + "\n"


def deep_merge(into: dict[str, object], other: Mapping[str, object]) -> dict[str, object]:
    for k, v in other.items():
        current = into.get(k)
        if isinstance(current, dict) and isinstance(v, Mapping):
            deep_merge(current, v)
        else:
            into[k] = v
    return into


# --------------------------------------------------------------------------- containerd


@dataclass
class CriContainerd:
    """A private containerd with the CRI plugin, living under ``workdir``."""

    workdir: Path
    runproc_bin: Path
    proc: subprocess.Popen[bytes] | None = None
    paths: ContainerdPaths = field(init=False)

    def __post_init__(self) -> None:
        self.paths = ContainerdPaths(
            address=self.workdir / "containerd.sock",
            root=self.workdir / "root",
            state=self.workdir / "state",
            # netns_mounts_under_state_dir = true: <CRI state dir>/netns, not /var/run/netns.
            netns_dir=self.workdir / "state" / CRI_PLUGIN / "netns",
            ipam_dir=self.workdir / "cni" / "ipam",
            runtime_roots={handler: self.workdir / "runtime-root" / handler for handler in HANDLERS},
        )

    @property
    def address(self) -> Path:
        return self.paths.address

    @property
    def config_path(self) -> Path:
        return self.workdir / "containerd.toml"

    @property
    def log(self) -> Path:
        return self.workdir / "containerd.log"

    @property
    def cni_conf_dir(self) -> Path:
        return self.workdir / "cni" / "net.d"

    def config(self) -> dict[str, object]:
        # The runproc handler exactly as packaging ships it (annotations included), with
        # BinaryName pointed at the binary under test and a private runtime root.
        shipped = tomllib.loads(PACKAGING_SNIPPET.read_text())
        runtimes = shipped["plugins"][CRI_PLUGIN]["containerd"]["runtimes"]
        assert set(runtimes) == {"runproc"}, f"unexpected tables in {PACKAGING_SNIPPET}"
        runtimes["runproc"]["options"]["BinaryName"] = str(self.runproc_bin)
        runtimes["runproc"]["options"]["Root"] = str(self.paths.runtime_roots["runproc"])
        runtimes["runc"] = {
            "runtime_type": "io.containerd.runc.v2",
            "options": {"Root": str(self.paths.runtime_roots["runc"])},
        }
        doc: dict[str, object] = {
            "version": 2,
            "root": str(self.paths.root),
            "state": str(self.paths.state),
            "disabled_plugins": [
                # Snapshotters we never use (failing ones only log noise).
                "io.containerd.snapshotter.v1.aufs",
                "io.containerd.snapshotter.v1.btrfs",
                "io.containerd.snapshotter.v1.devmapper",
                "io.containerd.snapshotter.v1.zfs",
                # Would create /opt/containerd outside our dirs.
                "io.containerd.internal.v1.opt",
                "io.containerd.tracing.processor.v1.otlp",
                "io.containerd.internal.v1.tracing",
            ],
            "grpc": {"address": str(self.address)},
            "ttrpc": {"address": f"{self.address}.ttrpc"},
            "debug": {"level": "info"},
            "plugins": {
                CRI_PLUGIN: {
                    "sandbox_image": PAUSE_IMAGE,
                    # containerd gives the sandbox oom_score_adj -998 and containers their
                    # requested value; lowering a score below the current one needs
                    # CAP_SYS_RESOURCE, which this VM's root lacks (CapBnd has no bit 24), so
                    # without this every RunPodSandbox fails. With it containerd clamps the
                    # value to its own score, as in rootless / nested setups.
                    "restrict_oom_score_adj": True,
                    "disable_apparmor": True,
                    "enable_selinux": False,
                    # The Pods' netns bind mounts go under our state dir, not /var/run/netns.
                    "netns_mounts_under_state_dir": True,
                    "disable_tcp_service": True,
                    "stream_server_address": "127.0.0.1",
                    "stream_server_port": "0",
                    "stats_collect_period": 2,
                    "cni": {
                        "bin_dir": str(CNI_BIN_DIR),
                        "conf_dir": str(self.cni_conf_dir),
                        "max_conf_num": 1,
                    },
                    "containerd": {
                        "default_runtime_name": "runc",
                        "snapshotter": "overlayfs",
                        "runtimes": runtimes,
                    },
                },
            },
        }
        return doc

    def write_config(self) -> None:
        self.config_path.write_text(toml_dumps(self.config()))

    def start(self) -> None:
        self.write_config()
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                ["containerd", "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=base_env(),
                # Own session: a Ctrl-C on pytest must not hit containerd before teardown runs.
                start_new_session=True,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self.address.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"containerd exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"containerd not ready after {STARTUP_TIMEOUT}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def ctr(self, *args: str, timeout: float = 60.0, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["ctr", "--address", str(self.address), "--namespace", K8S_NAMESPACE, *args],
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            env=base_env(),
        )

    def import_image(self, archive: bytes) -> None:
        proc = self.ctr("images", "import", "-", input=archive)
        if proc.returncode != 0:
            raise RuntimeError(f"ctr images import failed: {proc.stderr.decode(errors='replace')}")

    def stop(self) -> None:
        stop_daemon(self.proc, STOP_TIMEOUT)

    def log_tail(self, lines: int = 60) -> str:
        return log_tail(self.log, lines)

    def shims(self) -> list[int]:
        """Pids of the shims serving *this* containerd (matched by its unique socket path)."""
        return shim_pids(processes(), self.paths)


# --------------------------------------------------------------------------- rigs


@dataclass
class CriRig(ABC):
    """One containerd with the CRI plugin, as the cases use it."""

    workdir: Path  # a dir of this VM's, where images are built
    cri: CriClient
    host: CriHost
    paths: ContainerdPaths
    shared: Path
    network_state_before: dict[str, str]  # network_state(host) before the rig was set up

    def add_image(self, name: str, archive: bytes) -> None:
        """Import an OCI archive into containerd's k8s.io namespace; wait until CRI lists it."""
        from cri_pods import wait_for

        self.import_archive(archive)
        # The CRI plugin learns of ctr's import through containerd's image events.
        wait_for(f"CRI to see {name}", lambda: self.cri.image_status(name).image.id, timeout=20)

    def add_test_images(self) -> None:
        """The suite's own images (cri_images: pause and busybox), built in ``workdir``."""
        for name, build in ((PAUSE_IMAGE, build_pause_archive), (BUSYBOX_IMAGE, build_busybox_archive)):
            self.add_image(name, build(self.workdir))

    def shared_dir(self) -> Path:
        """A new dir that the tests and containerd see at the same path."""
        path = self.shared / "tmp" / uuid.uuid4().hex[:12]
        path.mkdir(parents=True)
        return path

    @abstractmethod
    def import_archive(self, archive: bytes) -> None: ...

    @abstractmethod
    def pod_factory(self, handler: str) -> PodFactory:
        """Pods run with ``handler``, with the cgroup parent kubelet gives them here."""

    @abstractmethod
    def pod_cgroups(self, pod: Pod, ids: Sequence[str]) -> list[Path]:
        """The cgroup dirs (paths on ``host``) of a running Pod's sandbox and containers ``ids``."""

    def pod_units(self, ids: Sequence[str]) -> list[str]:
        """The systemd units of a Pod's sandbox and containers ``ids`` (none without systemd)."""
        return []

    def stray_globs(self) -> list[str]:
        """Shell patterns of what no runtime call may leave on ``host`` (none where other
        sessions share the machine)."""
        return []

    @abstractmethod
    def log_tail(self) -> str:
        """The end of containerd's log, for a failure report."""


@dataclass
class HostCriRig(CriRig):
    daemon: CriContainerd
    network: CniNetwork

    def import_archive(self, archive: bytes) -> None:
        self.daemon.import_image(archive)

    def pod_factory(self, handler: str) -> PodFactory:
        from cri_pods import PodFactory

        return PodFactory(self.cri, handler, self.shared / "pods")

    def pod_cgroups(self, pod: Pod, ids: Sequence[str]) -> list[Path]:
        parent = pod.config.linux.cgroup_parent.strip("/")
        return [h / parent / cid for h in Path("/sys/fs/cgroup").iterdir() if (h / parent).is_dir() for cid in ids]

    def log_tail(self) -> str:
        return self.daemon.log_tail()


def remove_all_pods(cri: CriClient) -> list[str]:
    """Stop and remove every Pod containerd still has (its networking torn down through CNI,
    its mounts and netns removed); the errors."""
    import grpc

    problems: list[str] = []
    try:
        sandboxes = cri.list_pod_sandbox()
    except grpc.RpcError as exc:
        return [f"ListPodSandbox: {exc}"]
    for sandbox in sandboxes:
        for call in (cri.stop_pod_sandbox, cri.remove_pod_sandbox):
            try:
                call(sandbox.id)
            except grpc.RpcError as exc:
                problems.append(f"{call.__name__} {sandbox.id}: {exc}")
    return problems


@dataclass
class Footprint:
    """What the host rig touched outside its workdir, removed at the end."""

    sandbox_ids: set[str] = field(default_factory=set)
    lib_cni_existed: bool = field(default_factory=lambda: Path("/var/lib/cni").exists())

    def clean(self, paths: ContainerdPaths) -> None:
        for sid in self.sandbox_ids:
            with contextlib.suppress(OSError):
                paths.shim_socket(sid).unlink()
            for network, ifname in ((CNI_NETWORK, "eth0"), (CNI_LOOPBACK_NETWORK, "lo")):
                with contextlib.suppress(OSError):
                    (LIBCNI_RESULTS / f"{network}-{sid}-{ifname}").unlink()
        if not self.lib_cni_existed:
            # libcni made /var/lib/cni/results for us; remove it again if nothing else is there.
            for d in (LIBCNI_RESULTS, LIBCNI_RESULTS.parent):
                with contextlib.suppress(OSError):
                    d.rmdir()
