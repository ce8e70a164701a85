"""CRI cases for what a Pod spec's securityContext, sysctls, volumes and limits turn into.

Same rigs and handlers as test_pods.py (the ``pods`` fixture); what a case checks on the
machine containerd runs on it reads through ``cri_rig.host``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cri_hosts import CriHost, shared_mount
from cri_pods import Container, PodFactory
from cri_rig import CriRig

SLEEP = ["sleep", "3600"]
CAP_CHOWN, CAP_NET_ADMIN, CAP_SYS_ADMIN = 0, 12, 21
# A file on kubelet's masked list that this kernel has and that is non-empty
# (/proc/kcore, the usual probe, is not built into this VM's kernel).
MASKED_FILE = "/proc/timer_list"


def status_field(text: str, name: str) -> str:
    """A field of /proc/<pid>/status."""
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"{name} not in {text!r}")


def host_status(host: CriHost, name: str) -> str:
    """A field of the status of the process that stands for ``host`` (its capabilities)."""
    return status_field((host.proc(host.reference_pid) / "status").read_text(), name)


# --------------------------------------------------------------------------- identity


def test_run_as_user_group_and_supplemental_groups(pods: PodFactory) -> None:
    pb = pods.cri.pb
    pod = pods("ids")
    c = pod.container("main", SLEEP, security={
        "run_as_user": pb.Int64Value(value=1000),
        "run_as_group": pb.Int64Value(value=3000),
        "supplemental_groups": [4000, 5000],
    })  # fmt: skip
    assert c.exec("id", "-u").stdout == "1000\n"
    assert c.exec("id", "-g").stdout == "3000\n"
    assert {"3000", "4000", "5000"} <= set(c.exec("id", "-G").stdout.split())
    status = c.exec("cat", "/proc/self/status").stdout
    assert status_field(status, "Uid").split() == ["1000"] * 4
    assert status_field(status, "Gid").split() == ["3000"] * 4
    # ExecSync runs as the container's user too.
    assert c.exec("sh", "-c", "touch /root/x", check=False).exit_code != 0


def test_read_only_root_filesystem(pods: PodFactory) -> None:
    pod = pods("rofs")
    c = pod.container("main", SLEEP, security={"readonly_rootfs": True})
    r = c.exec("touch", "/new-file", check=False)
    assert r.exit_code != 0 and "Read-only file system" in r.stderr, r
    root = [ln.split() for ln in c.exec("cat", "/proc/mounts").stdout.splitlines() if ln.split()[1] == "/"]
    assert root and root[-1][3].split(",")[0] == "ro", root
    # Mounts of their own stay writable (the Pod's /dev/shm).
    c.exec("touch", "/dev/shm/ok")


# --------------------------------------------------------------------------- privileges


def test_capabilities_add_and_drop(pods: PodFactory) -> None:
    pb = pods.cri.pb
    pod = pods("caps")
    plain = pod.container("plain", SLEEP)
    tuned = pod.container("tuned", SLEEP, security={
        "capabilities": pb.Capability(add_capabilities=["NET_ADMIN"], drop_capabilities=["CHOWN"]),
    })  # fmt: skip
    plain_eff = int(status_field(plain.exec("cat", "/proc/self/status").stdout, "CapEff"), 16)
    tuned_eff = int(status_field(tuned.exec("cat", "/proc/self/status").stdout, "CapEff"), 16)
    assert plain_eff & (1 << CAP_CHOWN) and not plain_eff & (1 << CAP_NET_ADMIN)
    assert not tuned_eff & (1 << CAP_CHOWN) and tuned_eff & (1 << CAP_NET_ADMIN)
    assert tuned_eff | (1 << CAP_CHOWN) == plain_eff | (1 << CAP_NET_ADMIN)
    # And they act: chown fails without CHOWN, changing the Pod's lo needs NET_ADMIN.
    assert tuned.sh("touch /tmp/f && chown 1 /tmp/f", check=False).exit_code != 0
    plain.sh("touch /tmp/f && chown 1 /tmp/f")
    assert plain.exec("ip", "link", "set", "lo", "mtu", "60000", check=False).exit_code != 0
    tuned.exec("ip", "link", "set", "lo", "mtu", "60000")


def test_privileged(pods: PodFactory, cri_rig: CriRig) -> None:
    pod = pods("priv", security={"privileged": True})
    priv = pod.container("priv", SLEEP, security={"privileged": True})
    plain = pod.container("plain", SLEEP)
    status = priv.exec("cat", "/proc/self/status").stdout
    # Every capability the host has (this VM's root lacks CAP_SYS_RESOURCE, so not "all").
    assert status_field(status, "CapEff") == host_status(cri_rig.host, "CapBnd")
    assert status_field(status, "Seccomp") == "0"
    # No masked or read-only paths (containerd drops kubelet's lists), host devices, /sys rw.
    assert priv.sh(f"head -c 1 {MASKED_FILE} | wc -c").stdout.strip() == "1"
    assert plain.sh(f"head -c 1 {MASKED_FILE} | wc -c").stdout.strip() == "0"
    priv.sh("echo 0 > /proc/sys/kernel/shm_rmid_forced")  # IPC-namespaced: the Pod's own value
    host_dev, kind = _device_only_the_host_has(cri_rig.host)
    assert priv.exec("test", kind, host_dev, check=False).exit_code == 0
    assert plain.exec("test", "-e", host_dev, check=False).exit_code != 0
    # containerd asks for a writable sysfs in privileged containers only. (runc 1.1.5 on
    # this VM still shows /sys read-only in both, so the mount itself is not checked.)
    def sysfs_options(c: Container) -> list[str]:
        return next(m["options"] for m in c.info()["runtimeSpec"]["mounts"] if m["destination"] == "/sys")

    assert "rw" in sysfs_options(priv) and "ro" in sysfs_options(plain)


def test_masked_and_readonly_paths(pods: PodFactory) -> None:
    pod = pods("paths")
    default = pod.container("default", SLEEP)
    # kubelet's lists: /proc/timer_list masked (bound to /dev/null), /proc/sys read-only.
    assert default.sh(f"head -c 1 {MASKED_FILE} | wc -c").stdout.strip() == "0"
    r = default.sh("echo 1 > /proc/sys/kernel/shm_rmid_forced", check=False)
    assert r.exit_code != 0 and "Read-only file system" in r.stderr, r
    # Other lists: a masked directory is an empty read-only tmpfs, a masked file reads as
    # empty; a read-only dir refuses writes.
    custom = pod.container("custom", SLEEP, security={
        "masked_paths": ["/proc/cpuinfo", "/root"],
        "readonly_paths": ["/proc/sys", "/tmp"],
    })  # fmt: skip
    assert custom.exec("cat", "/proc/cpuinfo").stdout == ""
    assert default.exec("cat", "/proc/cpuinfo").stdout != ""
    assert custom.exec("ls", "-A", "/root").stdout == ""
    assert custom.exec("touch", "/root/x", check=False).exit_code != 0
    assert custom.exec("touch", "/tmp/x", check=False).exit_code != 0
    custom.exec("touch", "/x")  # the rest of the rootfs stays writable
    # What is no longer listed is readable / writable again.
    assert custom.sh(f"head -c 1 {MASKED_FILE} | wc -c").stdout.strip() == "1"
    none = pod.container("none", SLEEP, security={"masked_paths": [], "readonly_paths": []})
    none.sh("echo 1 > /proc/sys/kernel/shm_rmid_forced")  # the Pod's IPC namespace only


def _device_only_the_host_has(host: CriHost) -> tuple[str, str]:
    """A device node of ``host``'s /dev that runc's default set lacks, and its ``test`` flag:
    a block device on this VM; in the node, whose /dev is nspawn's (no block devices), a
    character device (/dev/net/tun)."""
    default = {f"/dev/{name}" for name in ("null", "zero", "full", "random", "urandom", "tty", "console", "ptmx")}
    for kind in ("b", "c"):
        found = host.run(["find", "/dev", "-maxdepth", "2", "-type", kind]).stdout.split()
        candidates = sorted(d for d in found if d not in default and not d.startswith("/dev/pts/"))
        if candidates:
            return candidates[0], f"-{kind}"
    raise AssertionError("no device on the host besides runc's default ones")


@pytest.fixture
def deny_mkdir_profile(cri_rig: CriRig) -> Path:
    """A Localhost seccomp profile: allow everything but mkdir/mkdirat (EPERM)."""
    profile = cri_rig.shared_dir() / "deny-mkdir.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    }))  # fmt: skip
    return profile


def test_seccomp_profiles(pods: PodFactory, deny_mkdir_profile: Path) -> None:
    pb = pods.cri.pb
    profile = pb.SecurityProfile
    pod = pods("seccomp")
    default = pod.container("default", SLEEP, security={"seccomp": profile(profile_type=profile.RuntimeDefault)})
    unconfined = pod.container("unconfined", SLEEP, security={"seccomp": profile(profile_type=profile.Unconfined)})
    local = pod.container("local", SLEEP, security={
        "seccomp": profile(profile_type=profile.Localhost, localhost_ref=str(deny_mkdir_profile)),
    })  # fmt: skip
    mode = {c.name: status_field(c.exec("cat", "/proc/self/status").stdout, "Seccomp")
            for c in (default, unconfined, local)}  # fmt: skip
    assert mode == {"default": "2", "unconfined": "0", "local": "2"}
    # RuntimeDefault allows unshare only with CAP_SYS_ADMIN; a user namespace needs no
    # capability, so only the filter can refuse it (where the kernel allows them at all).
    if unconfined.exec("unshare", "-U", "true", check=False).exit_code == 0:
        assert default.exec("unshare", "-U", "true", check=False).exit_code != 0
    r = local.exec("mkdir", "/tmp/d", check=False)
    assert r.exit_code != 0 and "Operation not permitted" in r.stderr, r
    unconfined.exec("mkdir", "/tmp/d")
    default.exec("mkdir", "/tmp/d")


# --------------------------------------------------------------------------- sysctls


def test_safe_sysctls(pods: PodFactory, cri_rig: CriRig) -> None:
    sysctls = {
        "kernel.shm_rmid_forced": "1",
        "net.ipv4.ip_unprivileged_port_start": "80",
        "net.ipv4.ping_group_range": "0 2147483647",
    }
    host_before = {k: _host_sysctl(cri_rig.host, k) for k in sysctls}
    pod = pods("sysctl", sysctls=sysctls)
    c = pod.container("main", SLEEP)
    for key, value in sysctls.items():
        assert c.exec("sysctl", "-n", key).stdout.split() == value.split(), key
    # Namespaced: the host keeps its own values.
    assert {k: _host_sysctl(cri_rig.host, k) for k in sysctls} == host_before


def _host_sysctl(host: CriHost, key: str) -> str:
    return " ".join(host.read_text(Path("/proc/sys", *key.split("."))).split())


# --------------------------------------------------------------------------- volumes


@pytest.fixture
def shared_volume(cri_rig: CriRig) -> Iterator[Path]:
    """A host dir that is its own shared mount (HostToContainer propagation needs a shared or
    slave source), reached through a symlink."""
    real = cri_rig.shared_dir() / "vol-real"
    real.mkdir()
    (real / "file").write_text("from the host\n")
    with shared_mount(cri_rig.host, real):
        link = real.parent / "vol-link"
        link.symlink_to(real)
        yield link


def test_host_path_symlink_volume_with_propagation(pods: PodFactory, cri_rig: CriRig, shared_volume: Path) -> None:
    pb = pods.cri.pb
    real = shared_volume.resolve()
    pod = pods("volume")
    c = pod.container("main", SLEEP, mounts=[
        pb.Mount(container_path="/data", host_path=str(shared_volume),
                 propagation=pb.PROPAGATION_HOST_TO_CONTAINER),
        pb.Mount(container_path="/data-ro", host_path=str(shared_volume), readonly=True),
    ])  # fmt: skip
    # The symlink was followed: the container sees the real dir, through its own mount.
    assert c.exec("cat", "/data/file").stdout == "from the host\n"
    c.sh("echo from-container > /data/back")
    assert (real / "back").read_text() == "from-container\n"
    assert c.exec("touch", "/data-ro/x", check=False).exit_code != 0
    # A mount made on the host after the start propagates into the container (rslave)...
    (real / "sub").mkdir()
    cri_rig.host.run(["mount", "-t", "tmpfs", "-o", "size=1m", "rpcri-vol", str(real / "sub")], timeout=10)
    cri_rig.host.write_text(real / "sub" / "late", "late mount\n")  # into the tmpfs, as the host sees it
    assert c.exec("cat", "/data/sub/late").stdout == "late mount\n"
    # ...but not into the private read-only one.
    assert c.exec("test", "-e", "/data-ro/sub/late", check=False).exit_code != 0


# --------------------------------------------------------------------------- limits


def test_memory_limit_overrun_is_oom_killed(pods: PodFactory) -> None:
    pb = pods.cri.pb
    pod = pods("oom")
    limit = 32 * 1024 * 1024
    # busybox tail keeps the whole (newline-free) last "line" of /dev/zero in memory.
    c = pod.container("hog", ["tail", "/dev/zero"],
                      resources=pb.LinuxContainerResources(memory_limit_in_bytes=limit))
    status = c.wait_exited(timeout=60)
    assert (status.exit_code, status.reason) == (137, "OOMKilled"), status


def test_update_container_resources(pods: PodFactory, cri_rig: CriRig) -> None:
    pb = pods.cri.pb
    pod = pods("update")
    c = pod.container("main", SLEEP, resources=pb.LinuxContainerResources(
        memory_limit_in_bytes=64 << 20, cpu_period=100000, cpu_quota=50000, cpu_shares=512))  # fmt: skip
    host = cri_rig.host
    memory = _cgroup_dir(host, c, "memory")
    cpu = _cgroup_dir(host, c, "cpu")
    assert host.read_text(memory / "memory.limit_in_bytes").strip() == str(64 << 20)
    assert host.read_text(cpu / "cpu.cfs_quota_us").strip() == "50000"
    assert host.read_text(cpu / "cpu.shares").strip() == "512"
    # The shim runs `<runtime> update --resources -`; the cgroup follows.
    pods.cri.call("runtime", "UpdateContainerResources", pb.UpdateContainerResourcesRequest(
        container_id=c.id, linux=pb.LinuxContainerResources(
            memory_limit_in_bytes=96 << 20, cpu_period=100000, cpu_quota=20000, cpu_shares=256)))  # fmt: skip
    assert host.read_text(memory / "memory.limit_in_bytes").strip() == str(96 << 20)
    assert host.read_text(cpu / "cpu.cfs_quota_us").strip() == "20000"
    assert host.read_text(cpu / "cpu.shares").strip() == "256"


def _cgroup_dir(host: CriHost, c: Container, controller: str) -> Path:
    """The container's cgroup v1 directory for ``controller`` on ``host``, from its init's
    /proc entry as read there (so in the node's cgroup namespace, on the node)."""
    for line in host.read_text(f"/proc/{c.pid()}/cgroup").splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return Path("/sys/fs/cgroup", controller, path.lstrip("/"))
    raise AssertionError(f"no {controller} cgroup for {c.name}")


# --------------------------------------------------------------------------- annotations


def test_runproc_annotation_reaches_the_spec_only_for_the_runproc_handler(pods: PodFactory, handler: str) -> None:
    """The handlers' pod_annotations/container_annotations (packaging's runproc-v2.toml):
    containerd copies runproc.host into the OCI spec only for the runproc handler."""
    pod = pods("annotations", annotations={"runproc.host": "0", "example.com/other": "x"})
    c = pod.container("main", SLEEP, annotations={"runproc.host": "0", "example.com/other": "y"})
    for spec in (pod.info()["runtimeSpec"], c.info()["runtimeSpec"]):
        annotations = spec.get("annotations", {})
        assert ("runproc.host" in annotations) == (handler == "runproc"), annotations
        assert "example.com/other" not in annotations
