"""Regression tests for runc's CVE classes: each fails on a runtime that has the bug.

- CVE-2024-21626: a cwd of /proc/self/fd/N through an fd leaked into the init;
- CVE-2021-30465: a mount destination through a symlink that leads out of the rootfs;
- CVE-2019-16884: /proc mounted over a symlink;
- CVE-2022-29162: inheritable capabilities filled when the spec leaves them out;
- CVE-2019-5736: the runtime's own executable (and the libraries it maps) written
  through /proc/PID/exe or /proc/PID/map_files by a root process of a container.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

from isolation_probe import Probe, SpecBundle, mount_table, privileged_attacker
from runproc_testlib import Runproc

Probes = tuple[Probe, Probe]
SECRET = "host-secret-7c1f"


def test_cwd_through_leaked_fds(runproc: Runproc, spec_bundle: SpecBundle, tmp_path: Path) -> None:
    """Whatever fds the caller leaks, no cwd /proc/self/fd/N reaches a host directory."""
    host_dir = tmp_path / "host-dir"
    host_dir.mkdir()
    (host_dir / "secret").write_text(SECRET)
    leaked = [os.open(host_dir, os.O_RDONLY | os.O_DIRECTORY) for _ in range(4)]
    leaked.append(os.open("/", os.O_RDONLY | os.O_DIRECTORY))
    try:
        for n in range(3, 16):
            def cwd_fd(config: dict, n: int = n) -> None:
                config["process"]["cwd"] = f"/proc/self/fd/{n}"

            bundle = spec_bundle(f"cat secret ../secret ../../secret ../../../{host_dir}/secret 2>/dev/null; pwd",
                                 cwd_fd)
            result = subprocess.run(runproc.argv("run", "--bundle", str(bundle), f"leak{n}"), pass_fds=leaked,
                                    capture_output=True, text=True, timeout=60)
            assert SECRET not in result.stdout, f"fd {n}: the container read a host file: {result.stdout}"
            if result.returncode == 0:
                assert not result.stdout.strip().endswith(str(host_dir)), result.stdout
            else:
                assert "cwd" in result.stderr and "Traceback" not in result.stderr, result.stderr
    finally:
        for fd in leaked:
            os.close(fd)


def test_mount_through_symlink_stays_in_rootfs(probes: Probes, spec_bundle: SpecBundle) -> None:
    """A destination that is a symlink out of the rootfs is resolved inside it, as runc does."""

    def escape(config: dict) -> None:
        rootfs = Path(config["root"]["path"])
        config["mounts"] += [
            {"destination": "/escape-abs", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]},
            {"destination": "/escape-rel/sub", "type": "tmpfs", "source": "tmpfs", "options": ["size=2m"]},
        ]
        config["annotations"] = {"test.rootfs": str(rootfs)}

    before = Path("/proc/self/mountinfo").read_text()
    bundle = spec_bundle("cat /proc/self/mountinfo", escape)
    config = json.loads((bundle / "config.json").read_text())
    # The links are made in the shared source rootfs: each probe run copies it (symlinks kept).
    source = Path(config["root"]["path"])
    (source / "escape-abs").symlink_to("/etc")
    (source / "escape-rel").symlink_to("../../../../../../../../tmp")
    try:
        runc_out, runproc_out = probes[0].run(bundle), probes[1].run(bundle)
    finally:
        (source / "escape-abs").unlink()
        (source / "escape-rel").unlink()
    assert mount_table(runproc_out) == mount_table(runc_out)
    mounted = {row[0] for row in mount_table(runproc_out)}
    assert {"/etc", "/tmp/sub"} <= mounted, mounted
    assert Path("/proc/self/mountinfo").read_text() == before
    assert not Path("/tmp/sub").exists()


def test_proc_on_a_symlink_is_refused(runproc: Runproc, spec_bundle: SpecBundle, probe_rootfs: Path) -> None:
    bundle = spec_bundle("true")
    config = json.loads((bundle / "config.json").read_text())
    rootfs = bundle / "rootfs-proc-link"
    subprocess.run(["cp", "-a", str(probe_rootfs), str(rootfs)], check=True)
    (rootfs / "proc").rmdir()
    (rootfs / "proc").symlink_to("/tmp")
    config["root"]["path"] = str(rootfs)
    (bundle / "config.json").write_text(json.dumps(config))
    result = runproc("run", "--bundle", str(bundle), "proc-link")
    assert result.returncode == 1
    assert "must be mounted on ordinary directory" in result.stderr, result.stderr
    assert list(runproc.root.iterdir()) == [] if runproc.root.is_dir() else True


def test_inheritable_capabilities_stay_empty(probes: Probes, spec_bundle: SpecBundle) -> None:
    def many_caps(config: dict) -> None:
        names = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_NET_RAW", "CAP_SETUID", "CAP_SETGID", "CAP_KILL"]
        config["process"]["capabilities"] = {kind: names for kind in ("bounding", "effective", "permitted")}

    runc_out, runproc_out = (probe.run(spec_bundle("grep -E '^Cap(Inh|Amb)' /proc/self/status", many_caps))
                             for probe in probes)
    assert runproc_out == runc_out == "CapInh:\t0000000000000000\nCapAmb:\t0000000000000000\n"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_runtime_files_cannot_be_written_from_a_container(runproc: Runproc, spec_bundle: SpecBundle,
                                                          tmp_path: Path) -> None:
    """A privileged container in the pid namespace of a waiting (created) container goes for the
    waiting init's executable and the libraries it maps from runproc's unpacked files, through
    /proc/1/exe and /proc/1/map_files: every write fails, and the files stay as they were.

    (The init also maps two host files glibc's locale set-up loads, which a container with
    CAP_SYS_ADMIN and CAP_SYS_PTRACE in the host's user namespace could write through
    map_files; such a container can write the host's disks anyway. README, Safety.)
    """
    waiting_bundle = spec_bundle("true")
    pid_file = tmp_path / "waiting.pid"
    runproc.ok("create", "--bundle", str(waiting_bundle), "--pid-file", str(pid_file), "waiting")
    pid = int(pid_file.read_text())
    exe = os.path.realpath(f"/proc/{pid}/exe")
    unpacked = os.path.dirname(exe)  # the unpack cache entry (or per-call directory) of this call
    targets = {exe}
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith(unpacked + "/"):
            targets.add(fields[5])
    assert len(targets) > 5, targets  # libpython, libc, ... are there to attack
    before = {path: sha256(Path(path)) for path in targets}

    def privileged_in_its_pid_namespace(config: dict) -> None:
        for namespace in config["linux"]["namespaces"]:
            if namespace["type"] == "pid":
                namespace["path"] = f"/proc/{pid}/ns/pid"
        privileged_attacker(config)

    script = ("echo pwned >> /proc/1/exe && echo wrote-exe; "
              "for f in /proc/1/map_files/*; do case $(readlink $f) in *runproc*|*/_internal/*|*.so*) "
              "echo pwned >> $f && echo wrote-map $(readlink $f);; esac; done; ls /proc/1/map_files | wc -l")
    result = runproc("run", "--bundle", str(spec_bundle(script, privileged_in_its_pid_namespace)), "attacker")
    assert result.returncode == 0, result.stderr
    assert "wrote" not in result.stdout, result.stdout
    assert int(result.stdout.split()[-1]) > 5, result.stdout  # it did see the init's mappings
    assert {path: sha256(Path(path)) for path in targets} == before
    runproc.ok("delete", "--force", "waiting")
