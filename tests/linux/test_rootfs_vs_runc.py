"""The container's root filesystem as runproc sets it up, compared with runc 1.1 on the same bundle.

Each test runs one config through `runc run` and through tests/linux/rootfs_harness.py
(the spec step, then setup_rootfs, finalize_rootfs and restrict_paths in the
init's order, in the config's namespaces), and compares what the container
sees: its mount table (mount points, types, options, propagation), /dev, and
what writing masked and read-only paths does.
"""

from __future__ import annotations

import copy
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from rootfs_testlib import host_untouched  # noqa: F401 - autouse fixture
from rootfs_testlib import base_config, make_bundle, normalize_ls, normalize_mountinfo, run_harness, run_runc

pytestmark = pytest.mark.root
if os.geteuid() != 0:
    pytest.fail("tests/linux/test_rootfs_vs_runc.py must run as root", pytrace=False)

WALKS = [[], ["--no-openat2"]]


@pytest.fixture(scope="module")
def spec_config(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return base_config(tmp_path_factory.mktemp("spec"))


def run_both(tmp_path: Path, rootfs: Path, config: dict, script: str | None = None,
             harness_flags: tuple[str, ...] = (), runc_flags: tuple[str, ...] = ()) -> tuple[str, str]:
    config = copy.deepcopy(config)
    if script is not None:
        config["process"]["args"] = ["sh", "-c", script]
    ours = run_harness(make_bundle(tmp_path / "ours", rootfs, config), *harness_flags)
    theirs = run_runc(make_bundle(tmp_path / "runc", rootfs, config), *runc_flags)
    assert theirs.returncode == 0, f"runc failed: {theirs.stderr}"
    assert ours.returncode == 0, f"runproc failed: {ours.stderr}"
    return (ours.stdout.replace(str(tmp_path / "ours"), "BUNDLE"),
            theirs.stdout.replace(str(tmp_path / "runc"), "BUNDLE"))


@pytest.mark.parametrize("walk", WALKS, ids=["openat2", "walk"])
def test_runc_spec_mounts(tmp_path: Path, busybox_rootfs: Path, spec_config: dict, walk: list[str]) -> None:
    """runc spec's own config: proc, /dev tmpfs, devpts, shm, mqueue, sysfs ro, cgroup v1, masked and ro paths."""
    ours, theirs = run_both(tmp_path, busybox_rootfs, spec_config, harness_flags=tuple(walk))
    assert normalize_mountinfo(ours) == normalize_mountinfo(theirs)
    assert len(normalize_mountinfo(ours)) > 10


def test_dev_listing(tmp_path: Path, busybox_rootfs: Path, spec_config: dict) -> None:
    """Default devices, ptmx, the fd/stdio (and core) symlinks, pts, shm, mqueue: the same `ls -l`."""
    ours, theirs = run_both(tmp_path, busybox_rootfs, spec_config, "ls -ln /dev /dev/pts; ls -ld /dev")
    assert normalize_ls(ours) == normalize_ls(theirs)
    assert any(line.endswith("ptmx -> pts/ptmx") for line in normalize_ls(ours))


def test_linux_devices(tmp_path: Path, busybox_rootfs: Path, spec_config: dict) -> None:
    """linux.devices: c, b, u and p nodes, fileMode (type bits dropped), uid, gid; a spec device replaces a default."""
    config = copy.deepcopy(spec_config)
    config["linux"]["devices"] = [
        {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o20640, "uid": 5, "gid": 6},
        {"path": "/dev/sda9", "type": "b", "major": 8, "minor": 9},
        {"path": "/dev/fifo", "type": "p"},
        {"path": "/dev/u0", "type": "u", "major": 1, "minor": 3},
        {"path": "/dev/full", "type": "c", "major": 1, "minor": 7, "fileMode": 0o600},  # not /dev/null: runc then drops its cgroup rule
        {"path": "/dev/sub/dir/zero", "type": "c", "major": 1, "minor": 5},
        {"path": "/opt/outside-dev", "type": "c", "major": 1, "minor": 7},
    ]
    ours, theirs = run_both(tmp_path, busybox_rootfs, config, "ls -lnR /dev /opt")
    assert normalize_ls(ours) == normalize_ls(theirs)
    assert any("10, 229" in line and line.startswith("crw-r----- 1 5 6") for line in normalize_ls(ours))


def custom_mounts(host_dir: Path) -> list[dict]:
    return [
        {"destination": "/ro-bind", "type": "bind", "source": str(host_dir), "options": ["rbind", "ro"]},
        {"destination": "/rw-bind", "source": str(host_dir), "options": ["bind", "nosuid", "nodev", "noexec"]},
        {"destination": "/deep/er/bind", "source": str(host_dir), "options": ["rbind", "private"]},
        {"destination": "/file-bind", "source": "config.json", "options": ["bind", "ro"]},
        {"destination": "data", "type": "bind", "source": str(host_dir), "options": ["bind", "slave"]},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["mode=700", "size=1m"]},
        {"destination": "/etc", "type": "tmpfs", "source": "tmpfs", "options": ["ro", "tmpcopyup"]},
        {"destination": "/t1", "type": "tmpfs", "source": "t1",
         "options": ["nosuid", "nodev", "noexec", "noatime", "nodiratime", "sync", "dirsync", "unbindable"]},
        {"destination": "/t2", "type": "tmpfs", "source": "t2", "options": ["strictatime", "exec", "suid", "rw"]},
        {"destination": "/t3", "type": "tmpfs", "source": "t3", "options": ["noatime", "atime", "norelatime"]},
        {"destination": "/t4", "type": "tmpfs", "source": "t4", "options": ["nosymfollow", "shared"]},
        {"destination": "/sysro", "type": "bind", "source": "/sys", "options": ["rbind", "rro", "rnosuid"]},
        {"destination": "/mq", "type": "mqueue", "source": "mqueue", "options": ["ro"]},
    ]


@pytest.mark.parametrize("walk", WALKS, ids=["openat2", "walk"])
def test_custom_mounts(tmp_path: Path, busybox_rootfs: Path, spec_config: dict, walk: list[str]) -> None:
    """Binds (ro, rbind, without a type, relative source, file, missing nested destination, relative
    destination), tmpfs on an existing directory (its mode wins), ro tmpfs, tmpcopyup, flag options,
    propagation options, recursive attributes, mqueue: same mount table, modes and contents."""
    host_dir = tmp_path / "host-dir"
    host_dir.mkdir()
    (host_dir / "file").write_text("from the host\n")
    config = copy.deepcopy(spec_config)
    config["mounts"] += custom_mounts(host_dir)
    script = ("cat /proc/self/mountinfo; ls -ldn /tmp /etc /t1 /t2 /deep/er/bind /data /file-bind; ls -ln /etc; "
              "cat /ro-bind/file /file-bind | head -c 40; echo; touch /ro-bind/x; touch /rw-bind/y; echo $?; "
              "touch /etc/z; echo $?; touch /z; echo $?")
    ours, theirs = run_both(tmp_path, busybox_rootfs, config, script, harness_flags=tuple(walk))
    ours_lines, theirs_lines = ours.splitlines(), theirs.splitlines()
    split = next(n for n, line in enumerate(theirs_lines) if not line[:1].isdigit())
    assert normalize_mountinfo("\n".join(ours_lines[:split])) == normalize_mountinfo("\n".join(theirs_lines[:split]))
    assert normalize_ls("\n".join(ours_lines[split:])) == normalize_ls("\n".join(theirs_lines[split:]))
    assert (host_dir / "y").exists() and not (host_dir / "x").exists()


def test_masked_and_readonly_paths(tmp_path: Path, busybox_rootfs: Path, spec_config: dict) -> None:
    """Writing masked paths, read-only paths and the read-only root fails (or not) the same way."""
    config = copy.deepcopy(spec_config)
    config["root"]["readonly"] = True
    config["linux"]["maskedPaths"] += ["/etc/passwd", "/does/not/exist", "/root"]
    config["linux"]["readonlyPaths"] += ["/sys/kernel", "/not/there", "/etc"]
    script = ("for f in /proc/keys /proc/timer_list /etc/passwd /proc/sysrq-trigger /proc/sys/kernel/hostname /x "
              "/etc/x /sys/kernel/x /proc/acpi/x; do (echo x > $f) 2>&1; echo \"$f $?\"; done; "
              "ls -A /proc/acpi /sys/firmware; wc -c < /proc/keys; ls -A /root | wc -l; "
              "grep -E ' /(proc|sys|etc|bin)' /proc/self/mountinfo")
    ours, theirs = run_both(tmp_path, busybox_rootfs, config, script)
    ours_lines = ours.splitlines()
    theirs_lines = theirs.splitlines()
    first_mount = next(n for n, line in enumerate(theirs_lines) if line[:1].isdigit() and " - " in line)
    assert ours_lines[:first_mount] == theirs_lines[:first_mount]
    assert normalize_mountinfo("\n".join(ours_lines[first_mount:])) == normalize_mountinfo(
        "\n".join(theirs_lines[first_mount:]))
    assert "/x 1" in ours_lines and "/proc/sysrq-trigger 1" in ours_lines


def test_no_pivot(tmp_path: Path, busybox_rootfs: Path, spec_config: dict) -> None:
    """create --no-pivot: MS_MOVE and chroot; the host's proc and sysfs are detached first."""
    ours, theirs = run_both(tmp_path, busybox_rootfs, spec_config, harness_flags=("--no-pivot",),
                            runc_flags=("--no-pivot",))
    assert normalize_mountinfo(ours) == normalize_mountinfo(theirs)


def test_cgroup_namespace(tmp_path: Path, busybox_rootfs: Path, spec_config: dict) -> None:
    """With a cgroup namespace, each v1 hierarchy is a cgroup mount of its own, not a bind."""
    config = copy.deepcopy(spec_config)
    config["linux"]["namespaces"].append({"type": "cgroup"})
    ours, theirs = run_both(tmp_path, busybox_rootfs, config)
    assert normalize_mountinfo(ours) == normalize_mountinfo(theirs)
    assert any(" cgroup " in line and "root=*" in line for line in normalize_mountinfo(ours))


@pytest.fixture
def shared_host_dir(tmp_path: Path) -> Iterator[Path]:
    """A host directory that is a shared mount (made after the host table is recorded, undone before it is checked)."""
    where = tmp_path / "shared"
    where.mkdir()
    subprocess.run(["mount", "--bind", str(where), str(where)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(where)], check=True)
        (where / "inside").mkdir()
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


@pytest.mark.parametrize("propagation", [None, "rslave", "rprivate", "slave", "private", "rshared", "shared"])
def test_root_propagation(tmp_path: Path, busybox_rootfs: Path, spec_config: dict, shared_host_dir: Path,
                          propagation: str | None) -> None:
    """linux.rootfsPropagation decides whether binds of a shared host mount stay peers, slaves or private."""
    config = copy.deepcopy(spec_config)
    if propagation is not None:
        config["linux"]["rootfsPropagation"] = propagation
    config["mounts"].append({"destination": "/shared", "source": str(shared_host_dir), "options": ["rbind"]})
    config["mounts"].append({"destination": "/shared2", "source": str(shared_host_dir), "options": ["rbind", "rshared"]})
    ours, theirs = run_both(tmp_path, busybox_rootfs, config)
    ours_mounts, theirs_mounts = normalize_mountinfo(ours), normalize_mountinfo(theirs)
    if propagation in ("shared", "rshared"):
        # Deliberate difference: runc 1.1.5 leaves the container's / private even then.
        assert ours_mounts[0].split()[3] == "shared" and theirs_mounts[0].split()[3] == "private"
        ours_mounts, theirs_mounts = ours_mounts[1:], theirs_mounts[1:]
    assert ours_mounts == theirs_mounts
