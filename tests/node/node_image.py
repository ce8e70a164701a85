"""The Kind-like node's root filesystem: Debian, debootstrapped once, cached, never modified.

``node_rootfs()`` returns ``build/cache/node/<release>-<key>/rootfs`` (``RUNPROC_NODE_CACHE``
moves the cache), building it on first use: ``debootstrap --variant=minbase`` of the host's
Debian release (``RUNPROC_NODE_RELEASE`` picks another: bookworm or trixie) with the packages
in ``PACKAGES``. The key hashes the release, the package list and the debootstrap recipe, so a
change to any of them builds a new entry (older entries of the release are removed).

The build runs in a temp dir beside the cache entry and is renamed into place only when
debootstrap succeeded, under an exclusive lock, so concurrent sessions build it once and no
half-built tree is ever used. Every boot runs on an overlay of this tree (node_machine), so
it stays as debootstrap left it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

NODE_DIR = Path(__file__).resolve().parent
REPO = NODE_DIR.parents[1]
CACHE = Path(os.environ.get("RUNPROC_NODE_CACHE", REPO / "build" / "cache" / "node"))
MIRROR = os.environ.get("RUNPROC_NODE_MIRROR", "http://deb.debian.org/debian")
RELEASES = ("bookworm", "trixie")

# What a Kind node has that matters here: systemd as PID 1 with D-Bus (the systemd cgroup
# driver talks to it), containerd and runc, CNI plugins, iproute2. busybox-static gives the
# node a static shell toolbox; install.sh needs only sh and coreutils, sed, grep, diffutils
# (all Essential, so in minbase), systemctl and ctr.
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "containerd",
    "runc",
    "iproute2",
    "containernetworking-plugins",
    "busybox-static",
)
# Bump when the way the tree is made changes (the cache key includes it).
RECIPE = "debootstrap --variant=minbase v1"
# Debian packages the host needs to build and boot the node.
HOST_PACKAGES = ("debootstrap", "systemd-container")
BUILD_TIMEOUT = 1800.0


def host_release() -> str:
    """The host's Debian codename (VERSION_CODENAME in /etc/os-release)."""
    for line in Path("/etc/os-release").read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "VERSION_CODENAME":
            return value.strip().strip('"')
    raise RuntimeError("/etc/os-release has no VERSION_CODENAME: not a Debian host?")


def node_release() -> str:
    release = os.environ.get("RUNPROC_NODE_RELEASE") or host_release()
    if release not in RELEASES:
        raise RuntimeError(f"node release {release!r} not supported (one of {', '.join(RELEASES)})")
    return release


def cache_key(release: str) -> str:
    digest = hashlib.sha256("\n".join([release, RECIPE, *sorted(PACKAGES)]).encode()).hexdigest()
    return f"{release}-{digest[:12]}"


def ensure_host_packages() -> None:
    subprocess.run([str(REPO / "build" / "ensure-packages.sh"), *HOST_PACKAGES], check=True, timeout=600)


def node_rootfs(release: str | None = None) -> Path:
    """The cached root filesystem for ``release`` (default: node_release()), built if missing."""
    release = release or node_release()
    entry = CACHE / cache_key(release)
    rootfs = entry / "rootfs"
    if rootfs.is_dir():
        return rootfs
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent session may be building the same entry
        if rootfs.is_dir():
            return rootfs
        _remove_stale(release, keep=entry.name)
        tmp = CACHE / f".build-{entry.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            _debootstrap(release, tmp / "rootfs", tmp / "debootstrap.log")
            # Only a complete tree gets the entry's name.
            os.rename(tmp, entry)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return rootfs


def _remove_stale(release: str, keep: str) -> None:
    """Older entries of the release and builds that died half-way (we hold the lock)."""
    for path in CACHE.iterdir():
        if path.name == keep:
            continue
        if path.name.startswith(f"{release}-") or path.name.startswith(".build-"):
            shutil.rmtree(path, ignore_errors=True)


def _debootstrap(release: str, target: Path, log: Path) -> None:
    argv = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", release, str(target), MIRROR]
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                              timeout=BUILD_TIMEOUT)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"debootstrap {release} failed (exit {proc.returncode}):\n{tail}")
    (target.parent / "built").write_text(f"{time.monotonic() - started:.0f}s {' '.join(argv)}\n")
