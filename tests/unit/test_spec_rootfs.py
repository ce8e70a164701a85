"""The rootfs spec step: mount options as runc 1.1 reads them, devices, propagation, and what is refused."""

from __future__ import annotations

import pytest

from runproc.errors import RunprocError
from runproc.spec.mounts import (
    MOUNT_ATTR__ATIME,
    MOUNT_ATTR_NOATIME,
    MOUNT_ATTR_NOSUID,
    MOUNT_ATTR_RDONLY,
    MS_BIND,
    MS_DIRSYNC,
    MS_MANDLOCK,
    MS_NOATIME,
    MS_NODEV,
    MS_NODIRATIME,
    MS_NOEXEC,
    MS_NOSUID,
    MS_NOSYMFOLLOW,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_RELATIME,
    MS_REMOUNT,
    MS_SHARED,
    MS_SLAVE,
    MS_STRICTATIME,
    MS_SYNCHRONOUS,
    MS_UNBINDABLE,
    clean_path,
    parse_options,
)
from runproc.spec.plan import ContainerPlan
from runproc.spec.rootfs import RootfsPlan, apply_rootfs, check_no_pivot

# (options, flags, data, propagation): runc's mountFlags / mountPropagationMapping tables.
OPTIONS = [
    (["ro"], MS_RDONLY, "", []),
    (["ro", "rw"], 0, "", []),
    (["nosuid", "suid"], 0, "", []),
    (["nosuid", "nodev", "noexec"], MS_NOSUID | MS_NODEV | MS_NOEXEC, "", []),
    (["nodev", "dev", "noexec", "exec"], 0, "", []),
    (["noatime"], MS_NOATIME, "", []),
    (["noatime", "atime"], 0, "", []),
    (["relatime", "norelatime"], 0, "", []),
    (["relatime"], MS_RELATIME, "", []),
    (["strictatime"], MS_STRICTATIME, "", []),
    (["strictatime", "nostrictatime"], 0, "", []),
    (["nodiratime"], MS_NODIRATIME, "", []),
    (["nodiratime", "diratime"], 0, "", []),
    (["sync"], MS_SYNCHRONOUS, "", []),
    (["sync", "async"], 0, "", []),
    (["dirsync"], MS_DIRSYNC, "", []),
    (["mand"], MS_MANDLOCK, "", []),
    (["mand", "nomand"], 0, "", []),
    (["remount"], MS_REMOUNT, "", []),
    (["bind"], MS_BIND, "", []),
    (["rbind"], MS_BIND | MS_REC, "", []),
    (["nosymfollow"], MS_NOSYMFOLLOW, "", []),
    (["mode=755", "size=65536k"], 0, "mode=755,size=65536k", []),
    (["defaults"], 0, "defaults", []),  # flag 0 in runc's table: it reaches the kernel as data
    (["newinstance", "ptmxmode=0666", "gid=5"], 0, "newinstance,ptmxmode=0666,gid=5", []),
    (["private"], 0, "", [MS_PRIVATE]),
    (["rprivate"], 0, "", [MS_PRIVATE | MS_REC]),
    (["slave", "rshared"], 0, "", [MS_SLAVE, MS_SHARED | MS_REC]),
    (["rslave"], 0, "", [MS_SLAVE | MS_REC]),
    (["shared"], 0, "", [MS_SHARED]),
    (["unbindable"], 0, "", [MS_UNBINDABLE]),
    (["runbindable"], 0, "", [MS_UNBINDABLE | MS_REC]),
    (["rbind", "ro", "nosuid", "rprivate", "uid=1"], MS_BIND | MS_REC | MS_RDONLY | MS_NOSUID, "uid=1",
     [MS_PRIVATE | MS_REC]),
]


@pytest.mark.parametrize(("options", "flags", "data", "propagation"), OPTIONS, ids=lambda v: repr(v))
def test_options(options: list[str], flags: int, data: str, propagation: list[int]) -> None:
    parsed = parse_options(options)
    assert (parsed.flags, parsed.data, parsed.propagation) == (flags, data, propagation)
    assert (parsed.attr_set, parsed.attr_clr, parsed.copy_up) == (0, 0, False)


def test_recursive_attributes_and_extensions() -> None:
    parsed = parse_options(["rro", "rnosuid", "rnoatime", "tmpcopyup"])
    assert parsed.attr_set == MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOATIME
    assert parsed.attr_clr == MOUNT_ATTR__ATIME  # an atime setting needs the whole atime mask cleared
    assert parsed.copy_up and parsed.flags == 0 and parsed.data == ""
    parsed = parse_options(["rrw", "rsuid"])
    assert (parsed.attr_set, parsed.attr_clr) == (0, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID)


@pytest.mark.parametrize(("path", "clean"), [
    ("/dev", "/dev"), ("/dev/", "/dev"), ("//dev/./x/..", "/dev"), ("dev", "dev"), ("../../dev", "dev"), ("", ""),
])
def test_clean_path(path: str, clean: str) -> None:
    assert clean_path(path) == clean


def config(**linux: object) -> dict:
    return {
        "root": {"path": "rootfs", "readonly": True},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/data", "type": "whatever", "source": "data", "options": ["rbind", "ro"]},
            {"destination": "relative", "source": "/abs", "options": ["bind"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "mode=1777"]},
        ],
        "linux": {"namespaces": [{"type": "mount"}], **linux},
    }


def plan_for(cfg: dict, host_mode: bool = False) -> RootfsPlan | None:
    plan = ContainerPlan()
    plan.bundle = "/bundle"
    plan.host_mode = host_mode
    apply_rootfs(cfg, plan)
    return plan.rootfs_setup


def test_plan() -> None:
    setup = plan_for(config(maskedPaths=["/proc/kcore"], readonlyPaths=["/proc/sys"], rootfsPropagation="rshared"))
    assert setup is not None
    kinds = [(m.destination, m.source, m.kind) for m in setup.mounts]
    # A bind's type is "bind" whatever the spec says, and its relative source is the bundle's.
    assert kinds == [("/proc", "proc", "proc"), ("/data", "/bundle/data", "bind"), ("relative", "/abs", "bind"),
                     ("/dev/shm", "shm", "tmpfs")]
    assert setup.mounts[1].flags == MS_BIND | MS_REC | MS_RDONLY
    assert setup.mounts[3].data == "mode=1777"
    assert setup.mounts[1].where() == "mounts[1] (destination /data)"
    assert setup.readonly and setup.setup_dev and not setup.cgroup_namespace
    assert setup.masked_paths == ["/proc/kcore"] and setup.readonly_paths == ["/proc/sys"]
    assert setup.propagation == MS_SHARED | MS_REC
    assert [(d.path, d.kind, d.major, d.minor, d.mode) for d in setup.devices] == [
        ("/dev/null", "c", 1, 3, 0o666), ("/dev/random", "c", 1, 8, 0o666), ("/dev/full", "c", 1, 7, 0o666),
        ("/dev/tty", "c", 5, 0, 0o666), ("/dev/zero", "c", 1, 5, 0o666), ("/dev/urandom", "c", 1, 9, 0o666)]


def test_devices() -> None:
    setup = plan_for(config(devices=[
        {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o20640, "uid": 5, "gid": 6},
        {"path": "/dev/tty", "type": "u", "major": 5, "minor": 0, "fileMode": 0o600},
        {"path": "/dev/fifo", "type": "p"},
        {"path": "/dev/sda", "type": "b", "major": 8, "minor": 0},
    ]))
    assert setup is not None
    devices = [(d.path, d.kind, d.major, d.minor, d.mode, d.uid, d.gid) for d in setup.devices]
    # The spec's /dev/tty replaces the default one; the file type bits of fileMode are dropped.
    assert devices == [
        ("/dev/null", "c", 1, 3, 0o666, 0, 0), ("/dev/random", "c", 1, 8, 0o666, 0, 0),
        ("/dev/full", "c", 1, 7, 0o666, 0, 0), ("/dev/zero", "c", 1, 5, 0o666, 0, 0),
        ("/dev/urandom", "c", 1, 9, 0o666, 0, 0), ("/dev/fuse", "c", 10, 229, 0o640, 5, 6),
        ("/dev/tty", "c", 5, 0, 0o600, 0, 0), ("/dev/fifo", "p", 0, 0, 0o666, 0, 0), ("/dev/sda", "b", 8, 0, 0o666, 0, 0)]


def test_bind_dev_means_no_devices() -> None:
    cfg = config()
    cfg["mounts"].append({"destination": "/dev/", "source": "/dev", "options": ["rbind"]})
    setup = plan_for(cfg)
    assert setup is not None and not setup.setup_dev
    cfg["mounts"][-1] = {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"}
    setup = plan_for(cfg)
    assert setup is not None and setup.setup_dev


def test_not_applied() -> None:
    assert plan_for(config(), host_mode=True) is None
    cfg = config()
    cfg["linux"]["namespaces"] = [{"type": "pid"}]
    assert plan_for(cfg) is None
    cgroup = config()
    cgroup["linux"]["namespaces"].append({"type": "cgroup"})
    setup = plan_for(cgroup)
    assert setup is not None and setup.cgroup_namespace


def test_no_pivot_and_private_propagation() -> None:
    for value in ("private", "rprivate"):
        setup = plan_for(config(rootfsPropagation=value))
        assert setup is not None
        with pytest.raises(RunprocError, match=r"^rootfsPropagation of \[r\]private is not safe without pivot_root$"):
            check_no_pivot(setup)
    setup = plan_for(config(rootfsPropagation="rslave"))
    assert setup is not None
    check_no_pivot(setup)


def mounts_config(*mounts: object) -> dict:
    cfg = config()
    cfg["mounts"] = list(mounts)
    return cfg


@pytest.mark.parametrize(("cfg", "message"), [
    (config(rootfsPropagation="bogus"), "config.json: rootfsPropagation=bogus is not supported"),
    (config(rootfsPropagation=1), "config.json: linux.rootfsPropagation must be a string"),
    ({"mounts": {}}, "config.json: mounts must be a list"),
    (mounts_config("x"), "config.json: mounts[0] must be an object"),
    (mounts_config({"type": "tmpfs"}), "config.json: mounts[0]: destination must be set"),
    (mounts_config({"destination": 5}), "config.json: mounts[0].destination must be a string"),
    (mounts_config({"destination": "/a\0b"}), "config.json: mounts[0].destination contains a NUL byte"),
    (mounts_config({"destination": "/a", "source": 1}), "config.json: mounts[0].source must be a string"),
    (mounts_config({"destination": "/a", "type": ["x"]}), "config.json: mounts[0].type must be a string"),
    (mounts_config({"destination": "/a", "options": "ro"}), "config.json: mounts[0].options must be a list of strings"),
    (mounts_config({"destination": "/a", "options": ["ro", 1]}),
     "config.json: mounts[0].options must be a list of strings"),
    (config(devices=[{"path": "/dev/x", "type": "x"}]), 'config.json: linux.devices[0] (path /dev/x): invalid device type "x"'),
    (config(devices=[{"path": "/dev/x"}]), 'config.json: linux.devices[0] (path /dev/x): invalid device type ""'),
    (config(devices=[{"type": "c"}]), "config.json: linux.devices[0].path must be a string"),
    (config(devices=[{"path": "", "type": "c"}]), "config.json: linux.devices[0].path must be set"),
    (config(devices=[{"path": "/dev/x", "type": "c", "major": "1"}]),
     "config.json: linux.devices[0] (path /dev/x).major must be an integer"),
    (config(devices=[{"path": "/dev/x", "type": "c", "minor": -1}]),
     "config.json: linux.devices[0] (path /dev/x).minor must be an integer from 0 to 4294967295"),
    (config(devices=[{"path": "/dev/x", "type": "c", "uid": -1}]),
     "config.json: linux.devices[0] (path /dev/x).uid must be an integer from 0 to 4294967294"),
    (config(devices=[{"path": "/dev/x", "type": "c", "fileMode": True}]),
     "config.json: linux.devices[0] (path /dev/x).fileMode must be an integer"),
    (config(maskedPaths="/proc"), "config.json: linux.maskedPaths must be a list of strings"),
    (config(readonlyPaths=[1]), "config.json: linux.readonlyPaths must be a list of strings"),
    ({"root": {"path": "r", "readonly": "yes"}, "linux": {"namespaces": [{"type": "mount"}]}},
     "config.json: root.readonly must be a boolean"),
    ({"linux": {"maskedPaths": ["/proc/kcore"]}},
     "config.json: unable to restrict sys entries without a private MNT namespace"),
])
def test_refused(cfg: dict, message: str) -> None:
    with pytest.raises(RunprocError) as info:
        plan_for(cfg)
    assert str(info.value) == message
