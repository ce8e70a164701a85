"""Helpers of the rootfs tests: bundles from `runc spec`, running them through runc and through
tests/linux/rootfs_harness.py, and mountinfo / `ls -l` in a form both runtimes can be compared on."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parent / "rootfs_harness.py"
REPO = HARNESS.parents[2]

# linux.namespaces type -> unshare(1) flag.
UNSHARE_FLAGS = {"pid": "--pid", "network": "--net", "ipc": "--ipc", "uts": "--uts", "mount": "--mount",
                 "cgroup": "--cgroup"}


def base_config(where: Path) -> dict:
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["runc", "spec"], cwd=where, check=True)
    config = json.loads((where / "config.json").read_text())
    (where / "config.json").unlink()
    config["process"]["terminal"] = False
    config["process"]["args"] = ["cat", "/proc/self/mountinfo"]
    return config


def make_bundle(where: Path, rootfs: Path, config: dict) -> Path:
    """A bundle in `where` with its own copy of `rootfs` (both runtimes create files in it)."""
    where.mkdir(parents=True)
    subprocess.run(["cp", "-a", str(rootfs), str(where / "rootfs")], check=True)
    config = copy.deepcopy(config)
    config["root"]["path"] = "rootfs"
    (where / "config.json").write_text(json.dumps(config, indent=1))
    return where


def run_runc(bundle: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    name = "rootfs-test-" + uuid.uuid4().hex[:12]
    root = bundle.parent / "runc-state"
    return subprocess.run(["runc", "--root", str(root), "run", *flags, "--bundle", str(bundle), name],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def run_harness(bundle: Path, *flags: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The harness in the config's namespaces (propagation unchanged: the set-up itself must protect the host)."""
    config = json.loads((bundle / "config.json").read_text())
    kinds = [ns["type"] for ns in config.get("linux", {}).get("namespaces", [])]
    unshare = ["unshare", "--propagation", "unchanged"]
    if "user" in kinds:
        unshare += ["--user", "--map-root-user"]  # first: the other namespaces are then owned by it
    unshare += [UNSHARE_FLAGS[kind] for kind in kinds if kind in UNSHARE_FLAGS]
    if "pid" in kinds:
        unshare.append("--fork")
    return subprocess.run([*unshare, sys.executable, str(HARNESS), str(bundle), *flags], capture_output=True,
                          text=True, timeout=60, cwd=REPO, stdin=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})})


PROPAGATION_FIELDS = ("shared", "master", "propagate_from", "unbindable")


def normalize_mountinfo(text: str) -> list[str]:
    """One line per mount: mount point, root, per-mount options, propagation kinds, type, source, super options.

    Ids, device numbers and peer-group numbers differ between runs; the root
    of the container's / and of cgroup binds are host paths that differ too.
    """
    result = []
    for line in text.splitlines():
        fields = line.split()
        sep = fields.index("-", 6)
        root, point, options = fields[3], fields[4], fields[5]
        propagation = ",".join(sorted(field.split(":")[0] for field in fields[6:sep])) or "private"
        fstype, source = fields[sep + 1], fields[sep + 2]
        super_options = fields[sep + 3] if len(fields) > sep + 3 else ""
        if point == "/" or fstype == "cgroup" or fstype == "cgroup2":
            root = "*"
        result.append(f"{point} root={root} {options} {propagation} {fstype} {source} {super_options}")
    return result


_LS_TIME = re.compile(r" [A-Z][a-z]{2} +\d+ +(\d\d:\d\d|\d{4}) ")


def normalize_ls(text: str) -> list[str]:
    """`ls -l` output without times and `total` lines."""
    return [re.sub(" +", " ", _LS_TIME.sub(" ", line)) for line in text.splitlines() if not line.startswith("total ")]


# Where a leak of the rootfs set-up would show: the tests' own directories (bundles,
# rootfs copies, host directories a symlink may point to) and the host's system
# directories. Other work on this machine (containerd, the binary's unpack cache)
# mounts and unmounts elsewhere meanwhile.
SYSTEM_DIRS = ("/etc", "/proc", "/sys", "/dev", "/usr", "/bin", "/sbin", "/lib", "/root", "/home")


def host_mountinfo(test_dirs: str = "/tmp/pytest-of-") -> list[str]:
    """The part of the host's mount table the rootfs set-up could leak into."""
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    kept = []
    for line in lines:
        point = line.split()[4]
        if point == "/" or point.startswith(test_dirs) or any(
                point == top or point.startswith(top + "/") for top in SYSTEM_DIRS):
            kept.append(line)
    return kept


@pytest.fixture(autouse=True)
def host_untouched() -> Iterator[None]:
    """Nothing a test does may show in the host's mount table afterwards (import it into the test module)."""
    before = host_mountinfo()
    yield
    assert host_mountinfo() == before, "the host's mount table changed"
