"""Differential tests: what a container sees under runc and under runproc, from the same bundle.

Each test compares the two runtimes' probe output, normalised (see conftest).
Run against runc on both sides (RUNPROC_BIN=/usr/sbin/runc) every comparison
holds: that is how the normalisation is checked to keep only what is stable.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from isolation_probe import (
    NAMESPACE_SCRIPT,
    RUNC,
    Probe,
    SpecBundle,
    mount_table,
    namespace_view,
)
from runproc_testlib import NOBODY, Runproc

Probes = tuple[Probe, Probe]


def both(probes: Probes, bundle: Path, expect_code: int = 0) -> tuple[str, str]:
    runc, runproc = probes
    return runc.run(bundle, expect_code), runproc.run(bundle, expect_code)


def test_namespaces_are_runc_specs(probes: Probes, spec_bundle: SpecBundle) -> None:
    runc_out, runproc_out = both(probes, spec_bundle(NAMESPACE_SCRIPT))
    runc_view = namespace_view(runc_out)
    assert runc_view["pid"] == runc_view["net"] == runc_view["mnt"] == "own"
    assert namespace_view(runproc_out) == runc_view


def test_program_is_pid_one(probes: Probes, spec_bundle: SpecBundle) -> None:
    runc_out, runproc_out = both(probes, spec_bundle("echo $$; ps -o pid,comm"))
    assert runproc_out == runc_out
    assert runproc_out.splitlines()[0] == "1"


def test_mount_table(probes: Probes, spec_bundle: SpecBundle) -> None:
    runc_out, runproc_out = both(probes, spec_bundle("cat /proc/self/mountinfo"))
    assert mount_table(runproc_out) == mount_table(runc_out)


def test_dev(probes: Probes, spec_bundle: SpecBundle) -> None:
    # Names, types, modes, owners and device numbers; not times.
    script = "ls -lan /dev /dev/pts /dev/shm /dev/mqueue | awk '{print $1, $3, $4, $5, $6, $NF}'"
    runc_out, runproc_out = both(probes, spec_bundle(script))
    assert runproc_out == runc_out


def test_process_status(probes: Probes, spec_bundle: SpecBundle) -> None:
    script = "grep -E '^(Cap|NoNewPrivs|Seccomp|Uid|Gid|Groups)' /proc/self/status; umask; ulimit -n"
    runc_out, runproc_out = both(probes, spec_bundle(script))
    assert runproc_out == runc_out


def test_masked_and_readonly_paths(probes: Probes, spec_bundle: SpecBundle) -> None:
    script = (
        "wc -c /proc/kcore; ls /sys/firmware | wc -l; cat /proc/keys | wc -c;"
        "echo 1 > /proc/sysrq-trigger && echo wrote-sysrq;"
        "echo 1 > /proc/sys/kernel/ns_last_pid && echo wrote-sys;"
        "touch /new-file && echo wrote-root; true"
    )
    runc_out, runproc_out = both(probes, spec_bundle(script))
    assert runproc_out == runc_out
    assert "wrote" not in runproc_out


def set_names(config: dict) -> None:
    config["hostname"] = "probe-host"
    config["domainname"] = "probe.example"


def test_hostname_and_domainname(probes: Probes, spec_bundle: SpecBundle) -> None:
    runc_out, runproc_out = both(probes, spec_bundle("hostname; cat /proc/sys/kernel/domainname", set_names))
    runc_host, runproc_host = runc_out.splitlines()[0], runproc_out.splitlines()[0]
    assert runproc_host == runc_host == "probe-host"
    # runc 1.1 predates `domainname` (runtime-spec 1.1 added it, runc 1.2 sets it): the spec is the reference.
    assert runproc_out.splitlines()[1] == "probe.example"


def set_sysctls(config: dict) -> None:
    config["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.shmmni": "1234",
                                 "net.ipv4.ip_local_port_range": "2000 3000"}


def test_sysctl(probes: Probes, spec_bundle: SpecBundle) -> None:
    script = "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni /proc/sys/net/ipv4/ip_local_port_range"
    runc_out, runproc_out = both(probes, spec_bundle(script, set_sysctls))
    assert runproc_out == runc_out
    assert runproc_out.split() == ["1", "1234", "2000", "3000"]


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"rp-iso-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield name
    subprocess.run(["ip", "netns", "delete", name], check=True)


def test_joined_network_namespace(probes: Probes, spec_bundle: SpecBundle, netns: str) -> None:
    path = f"/run/netns/{netns}"

    def join(config: dict) -> None:
        for namespace in config["linux"]["namespaces"]:
            if namespace["type"] == "network":
                namespace["path"] = path

    runc_out, runproc_out = both(probes, spec_bundle("readlink /proc/self/ns/net; ip -o link | wc -l", join))
    assert runproc_out == runc_out
    assert runproc_out.splitlines()[0] == f"net:[{os.stat(path).st_ino}]"


def add_mounts(config: dict) -> None:
    config["mounts"] += [
        {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "noexec", "mode=1770", "size=65536k"]},
        {"destination": "/etc/hostname-copy", "type": "bind", "source": "/etc/hostname", "options": ["rbind", "ro"]},
        {"destination": "/data/deep/dir", "source": "/usr/share/doc", "options": ["rbind", "rprivate", "ro"]},
    ]


def test_extra_mounts(probes: Probes, spec_bundle: SpecBundle) -> None:
    script = "cat /proc/self/mountinfo; stat -c '%a %F' /scratch; touch /etc/hostname-copy || echo ro"
    runc_out, runproc_out = both(probes, spec_bundle(script, add_mounts))
    assert mount_table(runproc_out) == mount_table(runc_out)
    assert runproc_out.splitlines()[-2:] == runc_out.splitlines()[-2:]


def add_devices(config: dict) -> None:
    config["linux"]["devices"] = [
        {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o640, "uid": 0, "gid": 0},
        {"path": "/dev/extra/loopish", "type": "b", "major": 7, "minor": 200, "fileMode": 0o600},
    ]


def test_devices(probes: Probes, spec_bundle: SpecBundle) -> None:
    runc_out, runproc_out = both(probes, spec_bundle("ls -ln /dev/fuse /dev/extra | awk '{print $1,$3,$4,$5,$6,$NF}'",
                                                     add_devices))
    assert runproc_out == runc_out


def run_as_user(config: dict) -> None:
    config["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [5, 1001]}
    config["process"]["capabilities"]["ambient"] = ["CAP_NET_BIND_SERVICE"]


def test_non_root_user_capabilities(probes: Probes, spec_bundle: SpecBundle) -> None:
    script = "grep -E '^(Cap|NoNewPrivs|Uid|Gid|Groups)' /proc/self/status; id"
    runc_out, runproc_out = both(probes, spec_bundle(script, run_as_user))
    assert runproc_out == runc_out


def all_capabilities(config: dict) -> None:
    names = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_SYS_ADMIN", "CAP_SYS_RESOURCE", "CAP_NET_ADMIN", "CAP_KILL"]
    config["process"]["capabilities"] = {kind: names for kind in ("bounding", "effective", "permitted")}


def test_capability_the_host_lacks(probes: Probes, spec_bundle: SpecBundle) -> None:
    """This VM's bounding set has no CAP_SYS_RESOURCE: do what runc does with a spec that asks for it."""
    runc, runproc = probes
    bundle = spec_bundle("grep -E '^Cap' /proc/self/status", all_capabilities)
    runc_result = runc.side("run", "--bundle", str(bundle), "caps-runc")
    runproc_result = runproc.side("run", "--bundle", str(bundle), "caps-runproc")
    assert runproc_result.returncode == runc_result.returncode
    assert runproc_result.stdout == runc_result.stdout


def user_namespace(config: dict) -> None:
    config["linux"]["namespaces"].append({"type": "user"})
    config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]


def test_user_namespace(probes: Probes, spec_bundle: SpecBundle, probe_rootfs: Path) -> None:
    script = "cat /proc/self/uid_map /proc/self/gid_map; id; grep -E '^Cap' /proc/self/status; " + NAMESPACE_SCRIPT
    runc_out, runproc_out = both(probes, spec_bundle(script, user_namespace))
    assert runproc_out.splitlines()[:4] == runc_out.splitlines()[:4]
    assert namespace_view(runproc_out) == namespace_view(runc_out)


def deny_mkdir(config: dict) -> None:
    config["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]})
    config["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {"names": ["fchmodat"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 2, "value": 0o4000, "valueTwo": 0o4000, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["no_such_syscall_anywhere"], "action": "SCMP_ACT_ERRNO"},
        ],
    }


def test_seccomp(probes: Probes, spec_bundle: SpecBundle) -> None:
    script = ("grep Seccomp /proc/self/status; mkdir /tmp/d 2>&1; touch /tmp/f; chmod 4755 /tmp/f 2>&1;"
              "chmod 755 /tmp/f && echo plain-chmod-ok")
    runc_out, runproc_out = both(probes, spec_bundle(script, deny_mkdir))
    assert runproc_out == runc_out
    assert "Operation not permitted" in runproc_out and "plain-chmod-ok" in runproc_out


def run_rootless(runproc: Runproc, probe_rootfs: Path, world_tmp: Path, script: str,
                 edit: Callable[[dict], None] | None = None) -> tuple[str, str]:
    """(runc's, runproc's) output of `runc spec --rootless`'s bundle running `sh -c script`, as nobody."""
    outputs = []
    for binary, name in ((RUNC, "runc"), (runproc.binary, "runproc")):
        side = Runproc(binary, world_tmp / f"state-{name}", as_user=NOBODY, name=name)
        bundle = world_tmp / f"bundle-{name}"
        bundle.mkdir()
        subprocess.run(["cp", "-a", str(probe_rootfs), str(bundle / "rootfs")], check=True)
        subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(bundle)], check=True)
        side.ok("spec", "--rootless", "--bundle", str(bundle))
        config = json.loads((bundle / "config.json").read_text())
        config["process"]["terminal"] = False
        config["process"]["args"] = ["sh", "-c", script]
        if edit is not None:
            edit(config)
        (bundle / "config.json").write_text(json.dumps(config))
        result = side.ok("run", "--bundle", str(bundle), f"rootless-{name}")
        outputs.append(result.stdout.replace(str(bundle / "rootfs"), "<rootfs>"))
    return outputs[0], outputs[1]


def test_rootless_container(runproc: Runproc, probe_rootfs: Path, world_tmp: Path) -> None:
    """An unprivileged user with `runc spec --rootless`'s bundle: the same container under both."""
    script = ("id; cat /proc/self/uid_map /proc/self/gid_map; echo $$; grep -E '^Cap' /proc/self/status;"
              "hostname; touch /etc/x 2>&1; cat /proc/self/mountinfo")
    runc_out, ours = run_rootless(runproc, probe_rootfs, world_tmp, script)
    head = 10  # id, maps, pid, capabilities, hostname, the refused write
    assert ours.splitlines()[:head] == runc_out.splitlines()[:head]
    assert ours.splitlines()[2].split() == ["0", str(NOBODY), "1"]
    assert mount_table(ours) == mount_table(runc_out)


def test_no_pivot(probes: Probes, spec_bundle: SpecBundle) -> None:
    """`--no-pivot`: MS_MOVE + chroot instead of pivot_root; the container sees the same mounts."""
    bundle = spec_bundle("cat /proc/self/mountinfo; ls /")
    outputs = []
    for probe in probes:
        probe.counter += 1
        side = probe.side
        result = side("run", "--no-pivot", "--bundle", str(bundle), f"nopivot-{side.name}", timeout=60)
        assert result.returncode == 0, f"{side.name}: {result.stderr}"
        outputs.append(result.stdout.replace(str(Path(json.loads((bundle / "config.json").read_text())
                                                          ["root"]["path"])), "<rootfs>"))
    runc_out, ours = outputs
    assert mount_table(ours) == mount_table(runc_out)


def test_time_namespace(runproc: Runproc, spec_bundle: SpecBundle) -> None:
    """A new time namespace (runc 1.1 has none to compare with): the program is in its own."""
    def time_namespace(config: dict) -> None:
        config["linux"]["namespaces"].append({"type": "time"})
        config["linux"]["timeOffsets"] = {"boottime": {"secs": 86400 * 365}}

    bundle = spec_bundle("readlink /proc/self/ns/time; cut -d. -f1 /proc/uptime", time_namespace)
    result = runproc.ok("run", "--bundle", str(bundle), "timens")
    link, uptime = result.stdout.split()
    assert link.startswith("time:[") and link != os.readlink("/proc/self/ns/time")
    host_uptime = float(Path("/proc/uptime").read_text().split()[0])
    assert int(uptime) - host_uptime > 86400 * 364  # the boottime offset shows in /proc/uptime


def test_kill_all_and_delete_force_end_the_whole_pid_namespace(runproc: Runproc, spec_bundle: SpecBundle) -> None:
    """pid 1 ignores SIGTERM without a handler, and its children may make their own sessions:
    kill --all still reaches every process of the container's pid namespace, and delete --force
    leaves none."""
    bundle = spec_bundle("setsid sleep 300 & sleep 300 & exec sleep 300")
    runproc.ok("run", "--detach", "--bundle", str(bundle), "many")
    init = runproc.state("many")["pid"]
    namespace = os.readlink(f"/proc/{init}/ns/pid")

    def members() -> list[int]:
        found = []
        for name in os.listdir("/proc"):
            try:
                if name.isdigit() and os.readlink(f"/proc/{name}/ns/pid") == namespace:
                    found.append(int(name))
            except OSError:
                continue
        return found

    deadline = time.monotonic() + 10
    while len(members()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(members()) == 3, members()
    runproc.ok("kill", "many", "TERM")  # pid 1 has no handler: nothing happens, as with runc
    time.sleep(0.2)
    assert runproc.status("many") == "running"
    ps = runproc.ok("ps", "--format", "json", "many")
    assert sorted(json.loads(ps.stdout)) == sorted(members())
    runproc.ok("kill", "--all", "many", "KILL")
    deadline = time.monotonic() + 10
    while members() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert members() == []
    runproc.ok("delete", "--force", "many")
    assert not (runproc.root / "many").exists()


@pytest.fixture
def nobody_subids() -> Iterator[None]:
    """/etc/subuid and /etc/subgid ranges for nobody, for the length of a test."""
    saved = {}
    for name in ("/etc/subuid", "/etc/subgid"):
        path = Path(name)
        saved[path] = path.read_text() if path.exists() else None
        path.write_text((saved[path] or "") + "nobody:300000:65536\n")
    yield
    for path, text in saved.items():
        if text is None:
            path.unlink()
        else:
            path.write_text(text)


def test_rootless_with_a_wider_mapping(runproc: Runproc, probe_rootfs: Path, world_tmp: Path,
                                       nobody_subids: None) -> None:
    """More than the caller's own id goes through newuidmap/newgidmap (shadow's uidmap), as with runc."""
    script = "cat /proc/self/uid_map /proc/self/gid_map; id; grep -c . /proc/self/setgroups"

    def wider(config: dict) -> None:
        for key in ("uidMappings", "gidMappings"):
            config["linux"][key] = [{"containerID": 0, "hostID": NOBODY, "size": 1},
                                    {"containerID": 1, "hostID": 300000, "size": 65536}]

    runc_out, ours = run_rootless(runproc, probe_rootfs, world_tmp, script, wider)
    assert ours == runc_out
    assert ours.splitlines()[1].split() == ["1", "300000", "65536"]
