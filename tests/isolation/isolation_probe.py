"""Helpers of the isolation tests: what a container sees, under runc and under runproc, from the same bundle.

Each test builds a bundle from `runc spec`'s default config (namespaces,
mounts, masked and read-only paths, capabilities), changes what it is about,
runs a busybox probe script in it under both runtimes (`run`, foreground),
and compares the probe's normalised output. Host-specific values (mount ids,
device numbers, namespace inodes) are normalised away; whether a namespace is
the host's is kept.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from runproc_testlib import Runproc, make_reachable

RUNC = Path("/usr/sbin/runc")
NAMESPACE_LINKS = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")


def runc_spec() -> dict:
    """`runc spec`'s config, as runc 1.1 writes it."""
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run([str(RUNC), "spec", "--bundle", scratch], check=True)
        return json.loads((Path(scratch) / "config.json").read_text())


def privileged_attacker(config: dict) -> None:
    """Edit: what an attacker of the runtime's files would want inside: nothing masked or read-only,
    CAP_SYS_ADMIN, CAP_SYS_PTRACE and the file capabilities, no no_new_privs."""
    config["linux"]["maskedPaths"] = []
    config["linux"]["readonlyPaths"] = []
    config["process"]["capabilities"] = {
        kind: ["CAP_SYS_ADMIN", "CAP_DAC_OVERRIDE", "CAP_SYS_PTRACE", "CAP_FOWNER", "CAP_CHOWN"]
        for kind in ("bounding", "effective", "permitted")}
    config["process"]["noNewPrivileges"] = False


class Probe:
    """One runtime's view from inside a container: `run` a bundle, return stdout."""

    def __init__(self, side: Runproc) -> None:
        self.side = side
        self.counter = 0

    def run(self, bundle: Path, expect_code: int = 0) -> str:
        """Run the bundle's config on a fresh copy of its rootfs (a runtime may create mount points in it)."""
        self.counter += 1
        own = bundle.parent / f"{bundle.name}-{self.side.name}-{self.counter}"
        config = json.loads((bundle / "config.json").read_text())
        shutil.copytree(config["root"]["path"], own / "rootfs", symlinks=True)
        config["root"]["path"] = str(own / "rootfs")
        (own / "config.json").write_text(json.dumps(config, indent=1))
        make_reachable(own / "rootfs")  # a user namespace's root is not the host's root
        result = self.side("run", "--bundle", str(own), f"probe-{self.side.name}-{self.counter}", timeout=60)
        assert result.returncode == expect_code, f"{self.side.name}: exit {result.returncode}: {result.stderr}"
        # The rootfs's host path shows in bind mounts' roots: the same place under another name.
        return result.stdout.replace(str(own / "rootfs"), "<rootfs>")


SpecBundle = Callable[..., Path]


def host_namespaces() -> dict[str, str]:
    return {name: os.readlink(f"/proc/self/ns/{name}") for name in NAMESPACE_LINKS
            if os.path.exists(f"/proc/self/ns/{name}")}


NAMESPACE_SCRIPT = "for n in " + " ".join(NAMESPACE_LINKS) + "; do echo $n $(readlink /proc/self/ns/$n); done"


def namespace_view(output: str) -> dict[str, str]:
    """Each namespace as "host" or "own", from NAMESPACE_SCRIPT's output."""
    host = host_namespaces()
    view = {}
    for line in output.splitlines():
        name, _, link = line.partition(" ")
        if name in host:
            view[name] = "host" if link == host[name] else "own"
    return view


_PEER_GROUP = re.compile(r"(shared|master|propagate_from):\d+")


def mount_table(mountinfo: str) -> list[tuple[str, ...]]:
    """/proc/self/mountinfo without what differs between runs: ids, devices, peer group numbers.

    Kept: mount point, root within its file system, mount options, propagation
    kinds, file system type, source and super options for pseudo file systems
    (for other file systems the source is the host's device).
    """
    table = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        root, mount_point, options = fields[3], fields[4], fields[5]
        optional = tuple(sorted(_PEER_GROUP.sub(r"\1", field) for field in fields[6:dash]))
        fstype, source, super_options = fields[dash + 1], fields[dash + 2], fields[dash + 3]
        if fstype in ("ext4", "xfs", "btrfs", "overlay", "9p", "virtiofs"):
            source = "<host device>"
        if fstype == "cgroup":
            # runc binds the container's own cgroup (cgroupsPath) there; runproc makes no
            # cgroups yet (README, Limitations), so its container shows create's cgroup.
            root = "<container cgroup>"
        table.append((mount_point, root, options, " ".join(optional), fstype, source, super_options))
    return table
