"""Bad input in the linux sections: one clear error line naming the field, exit 1, and nothing left
behind — no state, no process, no mount in the host's mount namespace. Some are refused by the spec
step, some only by the kernel inside the init (a mount that fails): both must leave nothing."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from chaos_testlib import TAG_ENV, processes_tagged, wait_for_no_processes
from isolation_probe import SpecBundle
from runproc_testlib import Runproc


def set_namespace_path(kind: str, path: str) -> Callable[[dict], None]:
    def edit(config: dict) -> None:
        for namespace in config["linux"]["namespaces"]:
            if namespace["type"] == kind:
                namespace["path"] = path
    return edit


def set_capability(name: str) -> Callable[[dict], None]:
    def edit(config: dict) -> None:
        config["process"]["capabilities"]["bounding"].append(name)
    return edit


def user_namespace_with(mapping: dict) -> Callable[[dict], None]:
    def edit(config: dict) -> None:
        config["linux"]["namespaces"].append({"type": "user"})
        config["linux"]["uidMappings"] = [mapping]
        config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    return edit


def seccomp_action(action: str) -> Callable[[dict], None]:
    def edit(config: dict) -> None:
        config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW",
                                      "syscalls": [{"names": ["mkdir"], "action": action}]}
    return edit


def extra_mount(mount: dict) -> Callable[[dict], None]:
    def edit(config: dict) -> None:
        config["mounts"].append(mount)
    return edit


def set_field(path: tuple[str, ...], value: object) -> Callable[[dict], None]:
    def edit(config: dict) -> None:
        target = config
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = value
    return edit


CASES: dict[str, tuple[Callable[[dict], None], str]] = {
    "joined path that is no namespace": (set_namespace_path("network", "/etc/hostname"),
                                         "linux.namespaces (type network): path /etc/hostname: not a namespace"),
    "joined namespace of another type": (set_namespace_path("network", f"/proc/{os.getpid()}/ns/ipc"),
                                         f"path /proc/{os.getpid()}/ns/ipc: is a namespace of type ipc, not network"),
    "joined path that does not exist": (set_namespace_path("ipc", "/run/netns/no-such-ns"),
                                        "path /run/netns/no-such-ns: no such file or directory"),
    "unknown namespace type": (lambda c: c["linux"]["namespaces"].append({"type": "bogus"}),
                               "unknown namespace type 'bogus'"),
    "unknown capability": (set_capability("CAP_FOO"), "process.capabilities.bounding: unknown capability"),
    "mapping of size 0": (user_namespace_with({"containerID": 0, "hostID": 100000, "size": 0}),
                          "linux.uidMappings[0].size must not be 0"),
    "mapping without hostID": (user_namespace_with({"containerID": 0, "size": 1}),
                               "linux.uidMappings[0].hostID must be an integer"),
    "unknown seccomp action": (seccomp_action("SCMP_ACT_BOGUS"), "SCMP_ACT_BOGUS"),
    "seccomp notify": (seccomp_action("SCMP_ACT_NOTIFY"), "not supported"),
    "sysctl outside any namespace": (set_field(("linux", "sysctl"), {"kernel.panic": "1"}),
                                     "sysctl 'kernel.panic' is not in a separate kernel namespace"),
    "mount option the kernel refuses": (extra_mount({"destination": "/data", "type": "tmpfs", "source": "tmpfs",
                                                     "options": ["size=banana"]}),
                                        "mounts[7] (destination /data)"),
    "bind of a missing source": (extra_mount({"destination": "/data", "type": "bind",
                                              "source": "/no/such/source", "options": ["rbind"]}),
                                 "mounts[7] (destination /data)"),
    "relative mount destination is fine but an empty one is not": (
        extra_mount({"destination": "", "type": "tmpfs", "source": "tmpfs"}), "mounts[7]"),
    "device of an unknown type": (set_field(("linux", "devices"), [{"path": "/dev/x", "type": "x", "major": 1,
                                                                    "minor": 3}]),
                                  "linux.devices[0] (path /dev/x): invalid device type"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refused_with_nothing_left(case: str, runproc: Runproc, spec_bundle: SpecBundle) -> None:
    edit, message = CASES[case]
    tag = uuid.uuid4().hex

    def tagged(config: dict) -> None:
        edit(config)
        config["process"]["env"].append(f"{TAG_ENV}={tag}")

    bundle = spec_bundle("true", tagged)
    mounts_before = host_mounts(bundle.parent)
    result = runproc("create", "--bundle", str(bundle), "bad", env={**_clean_env(), TAG_ENV: tag})
    assert result.returncode == 1, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0], lines[0]
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    assert list(runproc.root.iterdir()) == [] if runproc.root.exists() else True
    assert wait_for_no_processes(tag) == []
    assert processes_tagged(tag) == []
    assert host_mounts(bundle.parent) == mounts_before


def host_mounts(test_dir: Path) -> list[str]:
    """The host's mounts where a leak from this test would show: on the test's own directory (the
    rootfs is there) and on the system's top directories. (Other work on this machine mounts
    elsewhere meanwhile, so the whole table is not compared.)"""
    watched = ("/", "/etc", "/tmp", "/proc", "/sys", "/dev", "/run", "/var")
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point in watched or point.startswith(str(test_dir)):
            points.append(line.split(" - ")[0].split(maxsplit=4)[4])
    return points


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != TAG_ENV}
