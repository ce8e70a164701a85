"""The CRI suite's rig: a private containerd with the CRI plugin, its CNI network, cleanup.

Everything lives under one short temp dir (unix socket paths are limited to 107 bytes):

    <workdir>/containerd.toml, containerd.sock(.ttrpc), containerd.log
    <workdir>/root, <workdir>/state        containerd's root and state (CRI's are inside)
    <workdir>/state/io.containerd.grpc.v1.cri/netns   the Pods' network namespaces
    <workdir>/runtime-root/<handler>       the OCI runtime's --root (runc options.Root)
    <workdir>/cni/net.d, <workdir>/cni/ipam the CNI config and host-local's leases
    <workdir>/pods/<pod>/...                Pod log directories (as kubelet's /var/log/pods)

Known footprint outside it (containerd 1.6 / CNI behaviour), removed by the teardown:
* the bridge ``rpcri0`` with its address (made here, so that no plugin needs isGateway,
  which would switch on ip_forward) and the Pods' veth peers;
* the shim's ttrpc socket /run/containerd/s/<sha256(address/k8s.io/<sandbox id>)>;
* libcni's result cache /var/lib/cni/results/<network>-<sandbox id>-<ifname> (go-cni
  offers containerd no cache-dir option);
* cgroups under /<CGROUP_ROOT>/ in every hierarchy (each Pod's cgroup_parent is there).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import tomllib
from cri_images import PAUSE_IMAGE
from runproc_testlib import alive, descendants, log_tail, stop_daemon

if TYPE_CHECKING:
    from cri_client import CriClient

CRI_DIR = Path(__file__).resolve().parent
REPO = CRI_DIR.parents[1]
PACKAGING_SNIPPET = REPO / "packaging" / "containerd" / "runproc-v2.toml"

K8S_NAMESPACE = "k8s.io"  # the containerd namespace the CRI plugin works in
CRI_PLUGIN = "io.containerd.grpc.v1.cri"
CNI_BIN_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
CNI_NETWORK = "runproc-cri"
CNI_LOOPBACK_NETWORK = "cni-loopback"  # the name go-cni gives the loopback network it adds
BRIDGE = "rpcri0"
# A private /24 for the Pods; .1 is the bridge. Checked against the host's routes at start.
SUBNET = ipaddress.ip_network("10.213.77.0/24")
BRIDGE_IP = SUBNET.network_address + 1
CGROUP_ROOT = "runproc-cri"  # Pods' cgroup_parent is /runproc-cri/pod<uid>
SHIM_SOCKET_DIR = Path("/run/containerd/s")
LIBCNI_RESULTS = Path("/var/lib/cni/results")

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

    @property
    def address(self) -> Path:
        return self.workdir / "containerd.sock"

    @property
    def config_path(self) -> Path:
        return self.workdir / "containerd.toml"

    @property
    def log(self) -> Path:
        return self.workdir / "containerd.log"

    @property
    def root(self) -> Path:
        return self.workdir / "root"

    @property
    def state(self) -> Path:
        return self.workdir / "state"

    @property
    def cri_state(self) -> Path:
        return self.state / CRI_PLUGIN

    @property
    def cri_root(self) -> Path:
        return self.root / CRI_PLUGIN

    @property
    def netns_dir(self) -> Path:
        # netns_mounts_under_state_dir = true: <CRI state dir>/netns instead of /var/run/netns.
        return self.cri_state / "netns"

    @property
    def cni_conf_dir(self) -> Path:
        return self.workdir / "cni" / "net.d"

    @property
    def ipam_dir(self) -> Path:
        return self.workdir / "cni" / "ipam"

    def runtime_root(self, handler: str) -> Path:
        return self.workdir / "runtime-root" / handler

    def task_dir(self, cid: str) -> Path:
        """The shim's bundle dir for a container or sandbox id."""
        return self.state / "io.containerd.runtime.v2.task" / K8S_NAMESPACE / cid

    def shim_socket(self, sandbox_id: str) -> Path:
        """containerd 1.6: /run/containerd/s/sha256(<address>/<namespace>/<shim id>)."""
        digest = hashlib.sha256(f"{self.address}/{K8S_NAMESPACE}/{sandbox_id}".encode()).hexdigest()
        return SHIM_SOCKET_DIR / digest

    def config(self) -> dict[str, object]:
        # The runproc handler exactly as packaging ships it (annotations included), with
        # BinaryName pointed at the binary under test and a private runtime root.
        shipped = tomllib.loads(PACKAGING_SNIPPET.read_text())
        runtimes = shipped["plugins"][CRI_PLUGIN]["containerd"]["runtimes"]
        assert set(runtimes) == {"runproc"}, f"unexpected tables in {PACKAGING_SNIPPET}"
        runtimes["runproc"]["options"]["BinaryName"] = str(self.runproc_bin)
        runtimes["runproc"]["options"]["Root"] = str(self.runtime_root("runproc"))
        runtimes["runc"] = {
            "runtime_type": "io.containerd.runc.v2",
            "options": {"Root": str(self.runtime_root("runc"))},
        }
        doc: dict[str, object] = {
            "version": 2,
            "root": str(self.root),
            "state": str(self.state),
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
        found = []
        for pid, argv in processes():
            if argv and argv[0].endswith(b"containerd-shim-runc-v2") and str(self.address).encode() in argv:
                found.append(pid)
        return found


# --------------------------------------------------------------------------- CNI network


@dataclass
class CniNetwork:
    """The Pods' network: our own bridge and a bridge + host-local conflist.

    No default route and no routes at all (Pods reach only the subnet: each other and
    the bridge address), isGateway false (the bridge plugin would enable ip_forward),
    ipMasq false and no portmap (no iptables rules), leases under our workdir.
    """

    conf_dir: Path
    ipam_dir: Path
    created_bridge: bool = False

    def conflist(self) -> dict[str, object]:
        hosts = list(SUBNET.hosts())
        return {
            "cniVersion": "1.0.0",
            "name": CNI_NETWORK,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": False,
                    "isDefaultGateway": False,
                    "ipMasq": False,
                    "hairpinMode": False,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{
                            "subnet": str(SUBNET),
                            "rangeStart": str(hosts[9]),
                            "rangeEnd": str(hosts[-1]),
                        }]],
                        "routes": [],
                        "dataDir": str(self.ipam_dir),
                    },
                }
            ],
        }  # fmt: skip

    def setup(self) -> None:
        clash = _route_clash(SUBNET)
        if clash:
            raise RuntimeError(f"subnet {SUBNET} clashes with a route of this host: {clash}")
        if _link_exists(BRIDGE):
            _ip("link", "del", BRIDGE)  # a previous run that died before its teardown
        _ip("link", "add", BRIDGE, "type", "bridge")
        self.created_bridge = True
        _ip("addr", "add", f"{BRIDGE_IP}/{SUBNET.prefixlen}", "dev", BRIDGE)
        _ip("link", "set", BRIDGE, "up")
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.ipam_dir.mkdir(parents=True, exist_ok=True)
        (self.conf_dir / "10-runproc-cri.conflist").write_text(json.dumps(self.conflist(), indent=1))

    def teardown(self) -> None:
        if self.created_bridge and _link_exists(BRIDGE):
            _ip("link", "del", BRIDGE)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def _route_clash(net: ipaddress.IPv4Network) -> str | None:
    out = subprocess.run(["ip", "-4", "-j", "route", "show", "table", "all"], capture_output=True,
                         text=True, timeout=10, check=True).stdout
    for route in json.loads(out or "[]"):
        dst = route.get("dst", "")
        if dst in ("default", "") or route.get("dev") == BRIDGE:
            continue
        with contextlib.suppress(ValueError):
            if ipaddress.ip_network(dst, strict=False).overlaps(net) and route.get("type") != "broadcast":
                if route.get("table") == "local" and route.get("dev") == "lo":
                    continue
                return json.dumps(route)
    return None


def host_network_state() -> dict[str, str]:
    """What the suite promises not to change on the host: forwarding and firewall rules."""
    state = {"ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()}
    for tool in ("iptables-save", "ip6tables-save"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([tool], capture_output=True, text=True, timeout=10).stdout
            # Drop comments and packet counters, which change without anyone touching rules.
            state[tool] = "\n".join(
                line.split(" [", 1)[0] if line.startswith(":") else line
                for line in out.splitlines()
                if not line.startswith("#")
            )
    return state


# --------------------------------------------------------------------------- teardown helpers


def processes() -> Iterable[tuple[int, list[bytes]]]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                yield int(entry.name), (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue


def kill_tree(pids: Sequence[int]) -> None:
    """SIGKILL ``pids`` and all their descendants, children first, and wait for them briefly."""
    victims = [d for pid in pids for d in descendants(pid)] + list(pids)
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 3.0
    while any(alive(p) for p in victims) and time.monotonic() < deadline:
        time.sleep(0.02)


def mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as info:
        return [line.split()[4].replace("\\040", " ") for line in info]


def unmount_under(root: Path) -> list[str]:
    """Lazily unmount every mount point at or below ``root`` (deepest first); return survivors."""
    prefix = str(root) + "/"

    def ours() -> list[str]:
        return [p for p in mount_points() if p == str(root) or p.startswith(prefix)]

    for point in sorted(ours(), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=10)
    return ours()


def remove_cgroups(name: str) -> list[Path]:
    """rmdir the (empty) cgroup tree /<name> in every hierarchy, deepest first; the survivors."""
    base = Path("/sys/fs/cgroup")
    left = []
    for hierarchy in [base, *(p for p in base.iterdir() if p.is_dir())]:
        top = hierarchy / name
        if not top.is_dir():
            continue
        dirs = sorted((Path(d) for d, _, _ in os.walk(top)), key=lambda p: len(p.parts), reverse=True)
        for d in dirs:
            with contextlib.suppress(OSError):  # not empty / in use: never forced
                d.rmdir()
        if top.exists():
            left.append(top)
    return left


@dataclass
class Footprint:
    """What the suite touched outside its workdir, removed at the end."""

    sandbox_ids: set[str] = field(default_factory=set)
    lib_cni_existed: bool = Path("/var/lib/cni").exists()

    def clean(self, daemon: CriContainerd) -> None:
        for sid in self.sandbox_ids:
            with contextlib.suppress(OSError):
                daemon.shim_socket(sid).unlink()
            for network, ifname in ((CNI_NETWORK, "eth0"), (CNI_LOOPBACK_NETWORK, "lo")):
                with contextlib.suppress(OSError):
                    (LIBCNI_RESULTS / f"{network}-{sid}-{ifname}").unlink()
        if not self.lib_cni_existed:
            # libcni made /var/lib/cni/results for us; remove it again if nothing else is there.
            for d in (LIBCNI_RESULTS, LIBCNI_RESULTS.parent):
                with contextlib.suppress(OSError):
                    d.rmdir()


@dataclass
class CriRig:
    """What a test may need of the session: the client, the daemon and its dirs."""

    workdir: Path
    daemon: CriContainerd
    cri: CriClient
    network: CniNetwork
    host_state_before: dict[str, str]
