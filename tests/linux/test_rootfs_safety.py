"""The rootfs set-up against hostile rootfs contents, its error messages, and what runc 1.1.5 cannot do.

CVE-2021-30465 class: a mount destination through a symlink must land inside
the rootfs, and nothing may be created outside it. CVE-2019-16884 class: proc
and sysfs only on a real directory. Each is checked with openat2 and with the
component-by-component walk used where openat2 is missing.
"""

from __future__ import annotations

import copy
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from rootfs_testlib import host_untouched  # noqa: F401 - autouse fixture
from rootfs_testlib import base_config, make_bundle, normalize_ls, normalize_mountinfo, run_harness

pytestmark = pytest.mark.root
if os.geteuid() != 0:
    pytest.fail("tests/linux/test_rootfs_safety.py must run as root", pytrace=False)

WALKS = [[], ["--no-openat2"]]


@pytest.fixture(scope="module")
def spec_config(tmp_path_factory: pytest.TempPathFactory) -> dict:
    config = base_config(tmp_path_factory.mktemp("spec"))
    config["root"]["readonly"] = False
    return config


def bundle_with(tmp_path: Path, rootfs: Path, config: dict, mounts: list[dict], script: str) -> Path:
    config = copy.deepcopy(config)
    config["mounts"] += mounts
    config["process"]["args"] = ["sh", "-c", script]
    return make_bundle(tmp_path / "bundle", rootfs, config)


def mount_points(mountinfo: str) -> dict[str, str]:
    """mount point -> file system type (the last mount wins)."""
    result = {}
    for line in mountinfo.splitlines():
        fields = line.split()
        sep = fields.index("-", 6)
        result[fields[4]] = fields[sep + 1]
    return result


@pytest.mark.parametrize("walk", WALKS, ids=["openat2", "walk"])
@pytest.mark.parametrize("target", ["/etc", "../../../../../../../../etc"], ids=["absolute", "relative"])
def test_destination_through_symlink_stays_inside(tmp_path: Path, busybox_rootfs: Path, spec_config: dict,
                                                  walk: list[str], target: str) -> None:
    """rootfs/data -> /etc: a tmpfs at /data covers the rootfs's /etc, never the host's."""
    config = copy.deepcopy(spec_config)
    bundle = bundle_with(tmp_path, busybox_rootfs, config,
                         [{"destination": "/data", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]},
                          {"destination": "/data/sub", "type": "bind", "source": str(tmp_path), "options": ["bind"]}],
                         "cat /proc/self/mountinfo")
    os.symlink(target, bundle / "rootfs" / "data")
    host_etc = sorted(os.listdir("/etc"))
    result = run_harness(bundle, *walk)
    assert result.returncode == 0, result.stderr
    points = mount_points(result.stdout)
    assert points.get("/etc") == "tmpfs", result.stdout
    assert "/etc/sub" in points
    assert sorted(os.listdir("/etc")) == host_etc and not os.path.exists("/etc/sub")


@pytest.mark.parametrize("walk", WALKS, ids=["openat2", "walk"])
def test_missing_destination_through_symlink_is_made_inside(tmp_path: Path, busybox_rootfs: Path,
                                                            spec_config: dict, walk: list[str]) -> None:
    """rootfs/escape -> ../../<host dir>: directories for /escape/a/b are made in the rootfs, not on the host."""
    host_dir = tmp_path / "host-dir"
    host_dir.mkdir()
    bundle = bundle_with(tmp_path, busybox_rootfs, spec_config,
                         [{"destination": "/escape/a/b", "type": "tmpfs", "source": "tmpfs"},
                          {"destination": "/escape/file", "source": "config.json", "options": ["bind"]}],
                         "cat /proc/self/mountinfo")
    os.symlink("../" * 12 + str(host_dir).lstrip("/"), bundle / "rootfs" / "escape")
    result = run_harness(bundle, *walk)
    assert result.returncode == 0, result.stderr
    assert os.listdir(host_dir) == []
    inside = bundle / "rootfs" / str(host_dir).lstrip("/")
    assert (inside / "a" / "b").is_dir() and (inside / "file").is_file()
    points = mount_points(result.stdout)
    assert points.get(f"{host_dir}/a/b") == "tmpfs" and f"{host_dir}/file" in points


@pytest.mark.parametrize("walk", WALKS, ids=["openat2", "walk"])
@pytest.mark.parametrize("fs", ["proc", "sysfs"])
def test_proc_and_sys_only_on_a_real_directory(tmp_path: Path, busybox_rootfs: Path, spec_config: dict,
                                               walk: list[str], fs: str) -> None:
    """rootfs/proc (or sys) a symlink, even to a directory inside: refused, as runc refuses it."""
    config = copy.deepcopy(spec_config)
    bundle = bundle_with(tmp_path, busybox_rootfs, config, [], "true")
    name = "proc" if fs == "proc" else "sys"
    path = bundle / "rootfs" / name
    if path.is_dir():
        path.rmdir()
    os.symlink("/tmp", path)
    result = run_harness(bundle, *walk)
    index = next(n for n, m in enumerate(config["mounts"]) if m["type"] == fs)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"mounts[{index}] (destination /{name}): "
                                     f'filesystem "{fs}" must be mounted on ordinary directory')


@pytest.mark.parametrize(("mount", "message"), [
    ({"destination": "/data", "type": "tmpfs", "source": "tmpfs", "options": ["defaults"]},
     "mount tmpfs tmpfs on /data (data 'defaults'): invalid argument"),
    ({"destination": "/data", "source": "/nonexistent/source", "options": ["bind"]},
     "stat source /nonexistent/source: no such file or directory"),
    ({"destination": "/proc/sys/x", "source": "/etc", "options": ["bind"]},
     '"{rootfs}/proc/sys/x" cannot be mounted because it is inside /proc'),
    ({"destination": "/proc", "type": "tmpfs", "source": "/etc", "options": ["bind"]},
     '"{rootfs}/proc" cannot be mounted because it is not of type proc'),
    ({"destination": "/etc/passwd/x", "type": "tmpfs", "source": "tmpfs"},
     "mkdir {rootfs}/etc/passwd/x: not a directory"),
    ({"destination": "/data", "type": "nosuchfs", "source": "x"},
     "mount nosuchfs x on /data: no such device"),
])
def test_errors_name_the_mount(tmp_path: Path, busybox_rootfs: Path, spec_config: dict, mount: dict,
                               message: str) -> None:
    bundle = bundle_with(tmp_path, busybox_rootfs, spec_config, [mount], "true")
    result = run_harness(bundle)
    index = len(spec_config["mounts"])
    rootfs = os.path.realpath(bundle / "rootfs")
    assert result.returncode == 1
    expected = f"mounts[{index}] (destination {mount['destination']}): " + message.replace("{rootfs}", rootfs)
    assert result.stderr.strip() == expected


def test_unbindable_root(tmp_path: Path, busybox_rootfs: Path, spec_config: dict) -> None:
    """rootfsPropagation unbindable: the container's / becomes unbindable (runc 1.1.5 fails with EINVAL here)."""
    config = copy.deepcopy(spec_config)
    config["linux"]["rootfsPropagation"] = "unbindable"
    bundle = bundle_with(tmp_path, busybox_rootfs, config, [], "cat /proc/self/mountinfo")
    result = run_harness(bundle)
    assert result.returncode == 0, result.stderr
    lines = normalize_mountinfo(result.stdout)
    assert lines[0].split()[:4] == ["/", "root=*", "rw,relatime", "unbindable"]
    assert all(line.split()[3] != "unbindable" for line in lines[1:])


def test_no_pivot_refuses_private_propagation(tmp_path: Path, busybox_rootfs: Path, spec_config: dict) -> None:
    config = copy.deepcopy(spec_config)
    config["linux"]["rootfsPropagation"] = "rprivate"
    result = run_harness(bundle_with(tmp_path, busybox_rootfs, config, [], "true"), "--no-pivot")
    assert result.returncode == 1
    assert result.stderr.strip() == "rootfsPropagation of [r]private is not safe without pivot_root"


def test_devices_bound_in_a_user_namespace(tmp_path: Path, busybox_rootfs: Path, spec_config: dict) -> None:
    """user_namespace=True: the host's nodes are bind-mounted (mknod is not allowed there); same `ls -l`."""
    config = copy.deepcopy(spec_config)
    host_mode = os.stat("/dev/loop-control").st_mode & 0o777  # a bound node keeps the host's mode
    config["linux"]["devices"] = [{"path": "/dev/loop-control", "type": "c", "major": 10, "minor": 237,
                                   "fileMode": host_mode}]
    script = "ls -ln /dev; grep -E ' /dev/(null|zero|full|tty|random|urandom|loop-control) ' /proc/self/mountinfo; true"
    made = run_harness(make_bundle(tmp_path / "made", busybox_rootfs,
                                   {**config, "process": {**config["process"], "args": ["sh", "-c", script]}}))
    bound = run_harness(make_bundle(tmp_path / "bound", busybox_rootfs,
                                    {**config, "process": {**config["process"], "args": ["sh", "-c", script]}}),
                        "--bind-devices")
    assert made.returncode == 0 and bound.returncode == 0, made.stderr + bound.stderr
    made_ls = [line for line in normalize_ls(made.stdout) if not line[:1].isdigit()]
    bound_ls = [line for line in normalize_ls(bound.stdout) if not line[:1].isdigit()]
    assert made_ls == bound_ls
    assert not any(" - " in line for line in made.stdout.splitlines())
    bound_points = sorted(mount_points("\n".join(line for line in bound.stdout.splitlines() if " - " in line)))
    assert bound_points == ["/dev/full", "/dev/loop-control", "/dev/null", "/dev/random", "/dev/tty",
                            "/dev/urandom", "/dev/zero"]


@pytest.fixture
def locked_source(tmp_path: Path) -> Iterator[Path]:
    """A host mount with nosuid, nodev and noexec: locked for a user namespace that binds it."""
    where = tmp_path / "locked"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "nosuid,nodev,noexec,size=1m", "locked", str(where)], check=True)
    try:
        (where / "file").write_text("x")
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def test_user_namespace_bind_keeps_locked_flags(tmp_path: Path, busybox_rootfs: Path, spec_config: dict,
                                                locked_source: Path) -> None:
    """In a user namespace a read-only bind remount must keep the source's locked flags (else EPERM)."""
    config = copy.deepcopy(spec_config)
    config["linux"]["namespaces"].append({"type": "user"})
    # The harness runs under `unshare --map-root-user`, which writes these maps itself.
    config["linux"]["uidMappings"] = config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 0, "size": 1}]
    for m in config["mounts"]:  # gid 5 is not mapped in the test's user namespace
        m["options"] = [option for option in m.get("options", []) if option != "gid=5"]
    mounts = [{"destination": "/locked", "source": str(locked_source), "options": ["rbind", "ro"]},
              {"destination": "/locked-nosuid", "source": str(locked_source), "options": ["bind", "ro", "nosuid"]}]
    bundle = bundle_with(tmp_path, busybox_rootfs, config, mounts, "cat /proc/self/mountinfo; cat /locked/file")
    result = run_harness(bundle, "--bind-devices")
    assert result.returncode == 0, result.stderr
    options = {line.split()[4]: line.split()[5] for line in result.stdout.splitlines() if " - " in line}
    assert options["/locked"] == "ro,nosuid,nodev,noexec,relatime"
    assert options["/locked-nosuid"] == "ro,nosuid,nodev,noexec,relatime"
    assert options["/dev/null"].startswith("rw") and result.stdout.endswith("x")
