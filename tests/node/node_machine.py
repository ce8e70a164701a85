"""A Kind-like node: the cached Debian tree booted with ``systemd-nspawn --boot``.

One ``SystemdNode`` is a throw-away machine. Its root is an overlay of the cached tree
(node_image) with a per-session upper dir, mounted in a private mount namespace
(``unshare --mount``) that systemd-nspawn runs in, so the mount disappears with the machine
and the cache is never written. Like a Kind node container it is privileged: all
capabilities, no seccomp filter (``SYSTEMD_SECCOMP=0``), writable cgroup hierarchies; it has
its own network namespace with only ``lo`` (Pods get a CNI bridge inside it; nothing is
reachable outside).

Host paths shared with the node (all under the scratch dir, ``/tmp/runproc-node-*``):

    run-containerd/  -> /run/containerd        containerd.sock is reachable from the host
    containerd/      -> /var/lib/containerd    not on the overlay: containerd's overlayfs
                                                snapshotter cannot put its upper dirs there
    shared/          -> the same path inside   files both sides read (e.g. Pod logs)

cgroups: the machine is started in its own cgroup ``/runproc-node-<id>`` in every host
hierarchy; nspawn gives it a cgroup namespace rooted there. On a cgroup v1 (hybrid) host
nspawn mounts the v1 controller hierarchies read-only for a container without a user
namespace (only name=systemd and the unified one are writable), which would stop runc and
containerd from making any cgroup. Docker's ``--privileged`` (what Kind uses) mounts them
writable, so the unit ``runproc-node-cgroups-rw.service`` makes them writable early in the
boot (``mount -o remount,bind,rw``: a per-mount flag change; a plain remount is refused
with EBUSY because cgroup v1 does not take new superblock options).

No D-Bus connection from the host is needed (the host need not run systemd): commands run
in the node through ``nsenter -t <leader> -a`` (all of the leader's namespaces).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import shlex
import signal
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from cri_hosts import kill_tree, processes, remove_cgroups, run_captured, unmount_under

BOOT_TIMEOUT = 180.0
STOP_TIMEOUT = 60.0
RUN_TIMEOUT = 300.0
SCRATCH_BASE = Path("/tmp")  # short: the containerd socket path below it must fit 107 bytes
NAME_PREFIX = "runproc-node-"  # machine name, cgroup name and scratch dir name
NSPAWN_RUN_DIR = Path("/run/systemd/nspawn")  # nspawn's locks/propagate dirs, made on demand
NODE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
            "LANG": "C.UTF-8", "TERM": "dumb"}  # fmt: skip

CGROUPS_RW_UNIT = "runproc-node-cgroups-rw.service"
CGROUPS_RW_UNIT_TEXT = """\
[Unit]
Description=Make the cgroup hierarchies writable, as in a privileged Kind node container
DefaultDependencies=no
Before=sysinit.target containerd.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'for d in $(findmnt -rn -t cgroup,cgroup2 -o TARGET); do mount -o remount,bind,rw "$d"; done'

[Install]
WantedBy=sysinit.target
"""

# The launcher runs in the new mount namespace: join the node's cgroups, mount the overlay,
# become systemd-nspawn (same pid, so Popen.pid is nspawn's).
LAUNCHER = """\
set -e
for procs in $NODE_CGROUP_PROCS; do echo $$ > "$procs"; done
mount -t overlay overlay -o "lowerdir=$1,upperdir=$2,workdir=$3" "$4"
shift 4
exec "$@"
"""


class NodeError(RuntimeError):
    """The node failed to boot or a command in it failed; the message has the evidence."""


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM (an orderly poweroff, for nspawn) if pytest dies."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def cgroup_hierarchies() -> list[Path]:
    """Mount points of the host's cgroup hierarchies (v1 controllers, name=systemd, cgroup2)."""
    points = []
    with open("/proc/self/mountinfo") as info:
        for line in info:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            if fstype in ("cgroup", "cgroup2"):
                points.append(Path(fields[4]))
    return points


@dataclass
class SystemdNode:
    """A booted node. ``run`` and ``copy_in`` work once ``boot`` returned; ``stop`` always."""

    rootfs: Path
    name: str = field(default_factory=lambda: f"{NAME_PREFIX}{uuid.uuid4().hex[:8]}")
    env: Mapping[str, str] = field(default_factory=dict)  # extra environment for systemd-nspawn
    proc: subprocess.Popen[bytes] | None = None
    leader: int | None = None
    nspawn_dir_existed: bool = field(default_factory=NSPAWN_RUN_DIR.exists)
    scratch: Path = field(init=False)
    _lock: IO[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # /tmp/<name>, locked while this session lives: reap_stale() tells a dead one by its lock.
        self.scratch = SCRATCH_BASE / self.name
        self.scratch.mkdir(mode=0o700)
        self._lock = (self.scratch / ".lock").open("w")
        fcntl.flock(self._lock, fcntl.LOCK_EX)

    # -- paths ------------------------------------------------------------------------------

    @property
    def upper(self) -> Path:
        return self.scratch / "upper"

    @property
    def console_log(self) -> Path:
        return self.scratch / "console.log"

    @property
    def run_containerd(self) -> Path:
        return self.scratch / "run-containerd"

    @property
    def containerd_socket(self) -> Path:
        """The node's containerd socket, as a host path (what a CRI client connects to)."""
        return self.run_containerd / "containerd.sock"

    @property
    def shared(self) -> Path:
        """A dir with the same path on the host and in the node."""
        return self.scratch / "shared"

    @property
    def cgroup_name(self) -> str:
        return self.name

    # -- before boot --------------------------------------------------------------------------

    def seed(self, path: str, text: str, mode: int = 0o644) -> None:
        """Put a file into the node's upper layer before it boots (over the cached tree's)."""
        target = self.upper / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)

    def seed_symlink(self, path: str, points_to: str) -> None:
        target = self.upper / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(points_to)

    def _make_cgroups(self) -> list[str]:
        """Our cgroup in every hierarchy; the cgroup.procs files the launcher writes to."""
        procs = []
        for hierarchy in cgroup_hierarchies():
            cg = hierarchy / self.cgroup_name
            cg.mkdir(exist_ok=True)
            if (hierarchy / "cpuset.cpus").exists():
                # A new v1 cpuset has no cpus/mems and takes no task until they are set.
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    (cg / knob).write_text((hierarchy / knob).read_text())
                (cg / "cgroup.clone_children").write_text("1")
            procs.append(str(cg / "cgroup.procs"))
        return procs

    def nspawn_argv(self, merged: Path) -> list[str]:
        return [
            "systemd-nspawn", "--quiet", "--boot", f"--directory={merged}", f"--machine={self.name}",
            # No machined/systemd on the host to talk to: nspawn keeps the cgroup it runs in.
            "--register=no", "--keep-unit",
            "--private-network", "--capability=all", "--console=read-only",
            "--link-journal=no", "--resolv-conf=off", "--timezone=off",
            f"--bind={self.run_containerd}:/run/containerd",
            f"--bind={self.scratch / 'containerd'}:/var/lib/containerd",
            f"--bind={self.shared}",
        ]  # fmt: skip

    # -- boot ---------------------------------------------------------------------------------

    def boot(self, timeout: float = BOOT_TIMEOUT) -> None:
        for sub in ("upper", "work", "merged", "run-containerd", "containerd", "shared"):
            (self.scratch / sub).mkdir(exist_ok=True)
        self.seed("/etc/hostname", self.name + "\n")
        self.seed(f"/etc/systemd/system/{CGROUPS_RW_UNIT}", CGROUPS_RW_UNIT_TEXT)
        self.seed_symlink(f"/etc/systemd/system/sysinit.target.wants/{CGROUPS_RW_UNIT}",
                          f"/etc/systemd/system/{CGROUPS_RW_UNIT}")
        # Kernel modules are the host's business (trixie's containerd asks for overlay and
        # br_netfilter, and the node has no modules to load): as in Kind, never a failed unit.
        self.seed_symlink("/etc/systemd/system/systemd-modules-load.service", "/dev/null")
        procs = self._make_cgroups()
        merged = self.scratch / "merged"
        argv = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", LAUNCHER, "launcher",
                str(self.rootfs), str(self.upper), str(self.scratch / "work"), str(merged),
                *self.nspawn_argv(merged)]  # fmt: skip
        env = {**NODE_ENV, "SYSTEMD_SECCOMP": "0", "NODE_CGROUP_PROCS": " ".join(procs), **self.env}
        with self.console_log.open("wb") as console:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True, preexec_fn=_die_with_parent)  # fmt: skip
        deadline = time.monotonic() + timeout
        self.leader = self._wait(deadline, "the container's init", self._find_leader)
        state = self._wait(deadline, "systemctl is-system-running to say running or degraded", self._booted)
        if state == "degraded":
            # Kind's nodes boot degraded too at times; say which units failed in the test log.
            print(f"[node] {self.name} is degraded:\n{self.run(['systemctl', '--failed'], check=False).stdout}")

    def _wait(self, deadline: float, what: str, probe: object) -> object:
        assert callable(probe)
        while True:
            value = probe()
            if value:
                return value
            if self.proc is not None and self.proc.poll() is not None:
                raise NodeError(f"systemd-nspawn exited with {self.proc.returncode} while waiting for {what}:\n"
                                f"{self.console_tail()}")
            if time.monotonic() > deadline:
                raise NodeError(f"node {self.name}: timed out waiting for {what}:\n{self.console_tail()}")
            time.sleep(0.2)

    def _find_leader(self) -> int | None:
        """The container's PID 1, as a host pid: nspawn's child that is pid 1 in its own pid ns."""
        assert self.proc is not None
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
                for child in (task / "children").read_text().split():
                    status = Path(f"/proc/{child}/status").read_text()
                    nspid = next(line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:"))
                    if len(nspid) > 1 and nspid[-1] == "1":
                        return int(child)
        return None

    def _booted(self) -> str | None:
        proc = self.run(["systemctl", "is-system-running"], check=False, timeout=30)
        state = proc.stdout.strip()
        return state if state in ("running", "degraded") else None

    def console_tail(self, lines: int = 80) -> str:
        try:
            return "\n".join(self.console_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no console log)"

    # -- using it -----------------------------------------------------------------------------

    def run(self, argv: Sequence[str], *, input: bytes | str | None = None, check: bool = True,
            timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the node (as root, all its namespaces, a clean environment).

        ``input`` as bytes is passed raw (output is then decoded leniently)."""
        if self.leader is None:
            raise NodeError(f"node {self.name} is not running")
        env = [f"{k}={v}" for k, v in NODE_ENV.items()]
        proc = run_captured(["nsenter", "-t", str(self.leader), "-a", "--", "env", "-i", *env, *argv], input=input,
                            timeout=timeout)  # fmt: skip
        proc.args = argv
        if check and proc.returncode != 0:
            raise NodeError(f"in node {self.name}: {shlex.join(argv)} exited {proc.returncode}\n"
                            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc

    def copy_in(self, source: Path, dest: str, mode: int | None = None) -> None:
        """Copy a host file into the node at ``dest`` (parents made; mode kept unless given)."""
        self.write_bytes(dest, source.read_bytes(), source.stat().st_mode & 0o7777 if mode is None else mode)

    def write_bytes(self, dest: str, data: bytes, mode: int = 0o644) -> None:
        """Write ``data`` to ``dest`` in the node (parents made; replaced atomically).

        Streamed through a shell in the node rather than written through /proc/<pid>/root,
        where absolute symlinks would resolve against the host's root, and mounts made in
        the node would be missed."""
        script = 'mkdir -p "$(dirname "$1")" && cat > "$1.copy-in" && chmod "$2" "$1.copy-in" && mv -f "$1.copy-in" "$1"'
        self.run(["sh", "-c", script, "copy-in", dest, f"{mode:o}"], input=data)

    def read_text(self, path: str) -> str:
        return self.run(["cat", path]).stdout

    # -- teardown -----------------------------------------------------------------------------

    def stop(self, timeout: float = STOP_TIMEOUT) -> list[str]:
        """Power the node off (SIGTERM to nspawn: an orderly shutdown), kill it if it hangs,
        and remove its cgroups and scratch dir. Returns what could not be removed."""
        problems: list[str] = []
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                problems.append(f"node {self.name} did not power off within {timeout}s: killed")
                kill_tree([self.proc.pid])
                self.proc.wait(timeout=timeout)
        if self.leader is not None and Path(f"/proc/{self.leader}").exists():
            kill_tree([self.leader])  # nspawn died first (killed): its pid namespace goes with PID 1
        left_cgroups = remove_cgroups(self.cgroup_name)
        if left_cgroups:
            problems.append(f"cgroups left: {left_cgroups}")
        if not self.nspawn_dir_existed:
            _remove_nspawn_run_dir()
        left_mounts = unmount_under(self.scratch)
        if left_mounts:
            problems.append(f"mounts left (scratch dir kept): {left_mounts}")
        elif os.environ.get("RUNPROC_NODE_KEEP"):
            print(f"\n[node] kept {self.scratch}")
        else:
            subprocess.run(["rm", "-rf", "--one-file-system", str(self.scratch)], check=False, timeout=120)
        self._lock.close()
        return problems


def reap_stale() -> list[str]:
    """Remove what sessions killed outright left: their scratch dirs (unlocked: the lock died
    with the session), machines still running from them, their cgroups. Returns their names."""
    reaped = []
    for scratch in sorted(SCRATCH_BASE.glob(f"{NAME_PREFIX}*")):
        try:
            lock = (scratch / ".lock").open("r")
        except OSError:
            continue  # being created right now, or not ours
        with lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live session's
            needle = f"--machine={scratch.name}".encode()
            kill_tree([pid for pid, argv in processes() if needle in argv])
            remove_cgroups(scratch.name)
            if not unmount_under(scratch):
                subprocess.run(["rm", "-rf", "--one-file-system", str(scratch)], check=False, timeout=120)
            reaped.append(scratch.name)
    if reaped:
        _remove_nspawn_run_dir()
    return reaped


def _remove_nspawn_run_dir() -> None:
    """nspawn's /run/systemd/nspawn/{locks,propagate}, if empty (no machine is running)."""
    for sub in ("locks", "propagate", ""):
        with contextlib.suppress(OSError):
            (NSPAWN_RUN_DIR / sub).rmdir()
