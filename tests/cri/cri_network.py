"""The Pods' CNI network, on whichever machine a rig's containerd runs (a ``CriHost``), and the
network state the suite promises not to change there."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cri_hosts import CriHost

CNI_BIN_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
CNI_NETWORK = "runproc-cri"
CNI_LOOPBACK_NETWORK = "cni-loopback"  # the name go-cni gives the loopback network it adds
CONFLIST_NAME = "10-runproc-cri.conflist"
BRIDGE = "rpcri0"
# A private /24 for the Pods; .1 is the bridge. Checked against the host's routes at start.
SUBNET = ipaddress.ip_network("10.213.77.0/24")
BRIDGE_IP = SUBNET.network_address + 1
LIBCNI_RESULTS = Path("/var/lib/cni/results")


def conflist(ipam_dir: Path) -> dict[str, object]:
    """A bridge + host-local network on BRIDGE, leases under ``ipam_dir``.

    No default route and no routes at all (Pods reach only the subnet: each other and
    the bridge address), isGateway false (the bridge plugin would enable ip_forward),
    ipMasq false and no portmap (no iptables rules).
    """
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
                    "dataDir": str(ipam_dir),
                },
            }
        ],
    }  # fmt: skip


@dataclass
class CniNetwork:
    """The Pods' network on ``host``: our own bridge (with BRIDGE_IP, so that no plugin needs
    isGateway) and the conflist in ``conf_dir``."""

    host: CriHost
    conf_dir: Path
    ipam_dir: Path
    created_bridge: bool = False

    def setup(self) -> None:
        self.make_bridge()
        self.host.run(["mkdir", "-p", str(self.ipam_dir)])
        self.host.write_text(self.conf_dir / CONFLIST_NAME, json.dumps(conflist(self.ipam_dir), indent=1))

    def make_bridge(self) -> None:
        clash = _route_clash(self.host, SUBNET)
        if clash:
            raise RuntimeError(f"subnet {SUBNET} clashes with a route of this host: {clash}")
        if self._bridge_exists():
            self._ip("link", "del", BRIDGE)  # a previous run that died before its teardown
        self._ip("link", "add", BRIDGE, "type", "bridge")
        self.created_bridge = True
        self._ip("addr", "add", f"{BRIDGE_IP}/{SUBNET.prefixlen}", "dev", BRIDGE)
        self._ip("link", "set", BRIDGE, "up")

    def teardown(self) -> None:
        if self.created_bridge and self._bridge_exists():
            self._ip("link", "del", BRIDGE)

    def _ip(self, *args: str) -> None:
        self.host.run(["ip", *args], timeout=10)

    def _bridge_exists(self) -> bool:
        return self.host.run(["ip", "link", "show", "dev", BRIDGE], check=False, timeout=10).returncode == 0


def _route_clash(host: CriHost, net: ipaddress.IPv4Network) -> str | None:
    out = host.run(["ip", "-4", "-j", "route", "show", "table", "all"], timeout=10).stdout
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


def network_state(host: CriHost) -> dict[str, str]:
    """What the suite promises not to change on ``host``: forwarding and firewall rules."""
    state = {"ip_forward": host.read_text("/proc/sys/net/ipv4/ip_forward").strip()}
    for tool in ("iptables-save", "ip6tables-save"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = host.run([tool], check=False, timeout=10).stdout
            # Drop comments and packet counters, which change without anyone touching rules.
            state[tool] = "\n".join(
                line.split(" [", 1)[0] if line.startswith(":") else line
                for line in out.splitlines()
                if not line.startswith("#")
            )
    return state
