"""runc's default config.json (`runc spec`), field for field, and its rootless variant.

runc 1.1.x writes exactly this (Go's struct field order, tab indentation, no
final newline); `runproc spec` writes the same bytes, so bundles made for runc's
tests and tutorials are made the same way here.
"""

from __future__ import annotations

OCI_SPEC_VERSION = "1.0.2-dev"  # what runc 1.1 writes in a new spec
DEFAULT_CAPABILITIES = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def default_spec() -> dict:
    caps = DEFAULT_CAPABILITIES
    return {
        "ociVersion": OCI_SPEC_VERSION,
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps, "ambient": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "runc",
        "mounts": [
            _mount("/proc", "proc", "proc", None),
            _mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
            _mount("/dev/pts", "devpts", "devpts",
                   ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]),
            _mount("/dev/shm", "tmpfs", "shm", ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
            _mount("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]),
            _mount("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", "ro"]),
            _mount("/sys/fs/cgroup", "cgroup", "cgroup", ["nosuid", "noexec", "nodev", "relatime", "ro"]),
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": kind} for kind in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
            ],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    }


def _mount(destination: str, kind: str, source: str, options: list[str] | None) -> dict:
    mount: dict[str, object] = {"destination": destination, "type": kind, "source": source}
    if options is not None:
        mount["options"] = options
    return mount


def to_rootless(spec: dict, uid: int, gid: int) -> dict:
    """runc's specconv.ToRootless: a user namespace mapping the caller to root, no network
    namespace, /sys bound from the host, no uid=/gid= mount options, no cgroup resources."""
    linux = spec["linux"]
    namespaces = [ns for ns in linux["namespaces"] if ns["type"] not in ("network", "user")]
    linux["namespaces"] = [*namespaces, {"type": "user"}]
    linux["uidMappings"] = [{"containerID": 0, "hostID": uid, "size": 1}]
    linux["gidMappings"] = [{"containerID": 0, "hostID": gid, "size": 1}]
    mounts = []
    for mount in spec["mounts"]:
        if mount["destination"].rstrip("/") == "/sys":
            mounts.append({"destination": "/sys", "type": "none", "source": "/sys",
                           "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
            continue
        if "options" in mount:
            mount["options"] = [o for o in mount["options"] if not o.startswith(("gid=", "uid="))]
        mounts.append(mount)
    spec["mounts"] = mounts
    del linux["resources"]
    # Go's encoder writes the struct's fields in declaration order: the mappings come first.
    spec["linux"] = {key: linux[key] for key in ("uidMappings", "gidMappings", "namespaces", "maskedPaths",
                                                 "readonlyPaths")}
    return spec
