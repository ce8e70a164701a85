"""Run shell scenarios on a real cgroup v2 (unified) host: Debian's kernel under QEMU.

The host running the tests may have any cgroup layout (this project's VMs are v1
hybrid), so scenarios that need a unified hierarchy boot Debian's own kernel
(`linux-image-amd64`'s current dependency, fetched with `apt-get download`, never
installed) with an initramfs built here from scratch: static busybox, the runproc
binary under test, the scenario scripts and any extra files. One boot runs several
scenarios; their output comes back on a second serial port (ttyS1), separated by
markers, so kernel messages on the console (ttyS0) cannot interleave with it.

Nothing here needs pytest: `python -m tests.cgroupv2.vm SCRIPT` boots one scenario
by hand (see README.md).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
import textwrap
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
CACHE = Path(os.environ.get("RUNPROC_VM_CACHE", REPO / "build" / "cache" / "vm"))
BUSYBOX = Path("/bin/busybox")
# `qemu-system-x86:qemu-system-x86_64`: ensure-packages.sh skips the package when the
# command is already there (whatever package brought it).
HOST_PACKAGES = ("qemu-system-x86:qemu-system-x86_64", "busybox-static")
QEMU = "qemu-system-x86_64"
KERNEL_CMDLINE = "console=ttyS0 quiet panic=-1 cgroup_no_v1=all"
CONTROLLERS = ("cpu", "memory", "pids", "io", "cpuset")
MARK = "@@RUNPROC-VM"
RUNPROC_IN_VM = "/bin/runproc"

# The VM's own environment, shared by every scenario (they run one after another).
LIB_SH = r"""
# Sourced by every scenario (which runs under `set -eu`, cwd /tmp).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
RUNPROC=/bin/runproc

fail() { echo "FAIL: $*" >&2; exit 1; }
# assert_eq ACTUAL EXPECTED WHAT
assert_eq() { [ "$1" = "$2" ] || fail "$3: got '$1', want '$2'"; }

# mkrootfs DIR: a busybox root filesystem (build/make-rootfs.sh's layout).
mkrootfs() {
  mkdir -p "$1/bin" "$1/tmp" "$1/etc" "$1/proc" "$1/dev" "$1/root" "$1/sys" "$1/usr"
  chmod 1777 "$1/tmp"
  cp /bin/busybox "$1/bin/busybox"
  for a in $(busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$1/bin/$a"; done
  ln -sfn bin "$1/sbin"; ln -sfn ../bin "$1/usr/bin"; ln -sfn ../bin "$1/usr/sbin"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$1/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$1/etc/group"
}
"""

# Stage 1, on the initramfs: pivot_root(2) refuses the initial rootfs (EINVAL), and
# runproc pivots into container rootfs's like runc, so copy everything to a tmpfs
# and switch_root to it: the VM then looks like a host booted from a disk.
INIT = r"""#!/bin/busybox sh
export PATH=/bin
mount -t tmpfs -o mode=0755 tmpfs /newroot || exec echo "vm init: cannot mount the new root"
for entry in /*; do
  case $entry in /newroot|/init|/dev|/proc|/sys) ;; *) cp -a "$entry" /newroot/ ;; esac
done
mkdir -p /newroot/dev /newroot/proc /newroot/sys
exec switch_root /newroot /lib/vmtest/init2
"""

# Stage 2: the host-like setup, then the scenarios; results on ttyS1, progress on
# the console. Any setup problem ends the boot without the DONE marker.
INIT2 = r"""#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
die() { echo "@@RUNPROC-VM SETUP-FAILED: $*@@"; poweroff -f; }
mount -t proc proc /proc || die "mount proc"
mount -t sysfs sysfs /sys || die "mount sysfs"
mount -t devtmpfs devtmpfs /dev || die "mount devtmpfs"
mkdir -p /dev/pts /dev/shm /run /tmp /var/tmp /root
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts || die "mount devpts"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm || die "mount /dev/shm"
# As systemd mounts it on a unified host.
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup || die "mount cgroup2"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp || die "mount /tmp"
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run || die "mount /run"
chmod 1777 /var/tmp
[ "$(cat /proc/self/cgroup)" = "0::/" ] || die "not unified: $(cat /proc/self/cgroup)"
for c in @CONTROLLERS@; do
  echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control || die "cannot enable the $c controller"
done
hostname runproc-v2vm
stty -F /dev/ttyS1 raw -echo 2>/dev/null
exec 3>/dev/ttyS1
echo "@@RUNPROC-VM BOOTED uptime=$(cut -d' ' -f1 /proc/uptime)@@" >&3
for script in $(ls /lib/vmtest/scenarios/ | sort); do
  name=${script%.sh}
  echo "@@RUNPROC-VM BEGIN $name@@" >&3
  start=$(cut -d' ' -f1 /proc/uptime)
  # Own session and a hard limit: a stuck scenario must not hang the others.
  (cd /tmp && exec timeout -s KILL @TIMEOUT@ setsid sh /lib/vmtest/scenarios/$script) </dev/null >&3 2>&3
  rc=$?
  echo >&3
  echo "@@RUNPROC-VM END $name rc=$rc start=$start end=$(cut -d' ' -f1 /proc/uptime)@@" >&3
  echo "@@RUNPROC-VM scenario $name rc=$rc@@"
done
echo "@@RUNPROC-VM DONE@@" >&3
echo "@@RUNPROC-VM DONE@@"
exec 3>&-
sync
poweroff -f
"""


class VmError(Exception):
    """The VM did not boot, or did not run every scenario; the message has the console."""


@dataclass
class ScenarioResult:
    name: str
    exit_code: int
    output: str  # stdout and stderr, interleaved as written
    seconds: float  # in the VM

    def report(self) -> str:
        return f"scenario {self.name!r} exited {self.exit_code}; output:\n{self.output}"


@dataclass
class VmResult:
    accel: str  # "kvm" or "tcg"
    kernel: str  # the Debian package and version booted
    console: str  # ttyS0: kernel messages and progress markers
    results: str  # ttyS1: raw scenario output with markers
    scenarios: dict[str, ScenarioResult] = field(default_factory=dict)
    seconds: float = 0.0  # qemu's whole run, host time
    boot_seconds: float = 0.0  # guest uptime when the scenarios started
    note: str = ""  # e.g. why KVM was not used

    def __getitem__(self, name: str) -> ScenarioResult:
        if name not in self.scenarios:
            raise VmError(f"scenario {name!r} did not report\n{self.describe()}")
        return self.scenarios[name]

    # One scenario (run_in_v2_vm): its code and output.
    @property
    def exit_code(self) -> int:
        return self._only().exit_code

    @property
    def output(self) -> str:
        return self._only().output

    def _only(self) -> ScenarioResult:
        if len(self.scenarios) != 1:
            raise VmError(f"{len(self.scenarios)} scenarios: index the result by name")
        return next(iter(self.scenarios.values()))

    def describe(self) -> str:
        return (f"VM ({self.accel}, {self.kernel}) ran {self.seconds:.1f}s {self.note}\n"
                f"--- console ---\n{self.console}\n--- results ---\n{self.results}")


# ---------------------------------------------------------------- host set-up


def ensure_host_packages() -> None:
    """qemu and busybox-static (idempotent; apt-get only when something is missing)."""
    subprocess.run([str(REPO / "build" / "ensure-packages.sh"), *HOST_PACKAGES], check=True, timeout=900)


def _apt_cache(*args: str) -> str:
    return subprocess.run(["apt-cache", *args], capture_output=True, text=True, check=False).stdout


def kernel_package() -> tuple[str, str]:
    """(package, version) of the kernel `linux-image-amd64` depends on now (12: 6.1, 13: 6.12)."""
    for attempt in range(2):
        deps = re.findall(r"Depends: (linux-image-\S+)", _apt_cache("depends", "linux-image-amd64"))
        if deps:
            package = deps[0]
            version = re.search(r"^Version: (\S+)", _apt_cache("show", "--no-all-versions", package), re.M)
            if version:
                return package, version.group(1)
        if attempt == 0:  # a fresh machine may not have package lists yet
            subprocess.run(["apt-get", "update", "-qq"], check=False, timeout=600)
    raise VmError("cannot resolve linux-image-amd64's kernel package with apt-cache")


@dataclass(frozen=True)
class Kernel:
    package: str
    version: str
    vmlinuz: Path
    config: Path

    @property
    def name(self) -> str:
        return f"{self.package} {self.version}"


def fetch_kernel(cache: Path = CACHE) -> Kernel:
    """The kernel image, extracted once per package version under `cache`."""
    cache.mkdir(parents=True, exist_ok=True)
    try:
        package, version = kernel_package()
    except VmError:
        cached = sorted(cache.glob("linux-image-*/vmlinuz"), key=lambda p: p.stat().st_mtime)
        if not cached:
            raise
        package, _, version = cached[-1].parent.name.partition("_")  # offline: the newest one
    entry = cache / f"{package}_{version.replace(':', '%3a')}"
    kernel = Kernel(package, version, entry / "vmlinuz", entry / "config")
    if kernel.vmlinuz.is_file():
        return kernel
    # Concurrent sessions: one downloads, the others wait and reuse.
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if kernel.vmlinuz.is_file():
            return kernel
        with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as tmp:
            work = Path(tmp)
            os.chmod(work, 0o755)  # apt-get download as root prefers a dir _apt can write
            got = subprocess.run(["apt-get", "download", f"{package}={version}"], cwd=work,
                                 capture_output=True, text=True, timeout=900)
            debs = list(work.glob("*.deb"))
            if got.returncode != 0 or not debs:
                raise VmError(f"apt-get download {package}={version} failed:\n{got.stderr}")
            staging = work / "entry"
            staging.mkdir()
            _extract_boot_files(debs[0], staging)
            # The .deb (~70 MB) is not kept: the 8 MB vmlinuz is all a boot needs.
            staging.rename(entry)
        for old in cache.glob("linux-image-*"):  # earlier kernel versions: superseded
            if old != entry:
                shutil.rmtree(old, ignore_errors=True)
    return kernel


def _extract_boot_files(deb: Path, dest: Path) -> None:
    """vmlinuz and config from the package's data, without unpacking its ~400 MB of modules."""
    dpkg = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert dpkg.stdout is not None
    found = set()
    with tarfile.open(fileobj=dpkg.stdout, mode="r|") as tar:
        for member in tar:
            base = member.name.rsplit("/", 1)[-1]
            kind = base.split("-", 1)[0]
            if member.name.startswith("./boot/") and member.isfile() and kind in ("vmlinuz", "config"):
                source = tar.extractfile(member)
                assert source is not None
                (dest / kind).write_bytes(source.read())
                found.add(kind)
        # Drain the rest so dpkg-deb exits cleanly.
    dpkg.stdout.close()
    dpkg.wait()
    if found != {"vmlinuz", "config"}:
        raise VmError(f"{deb.name}: no ./boot/vmlinuz-* or config-* in it (found {sorted(found)})")


def kvm_usable() -> bool:
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC))
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- initramfs


class Cpio:
    """A `newc` cpio archive (what the kernel unpacks), written without the cpio tool."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.ino = 1
        self.seen: set[str] = set()

    def _entry(self, name: str, mode: int, body: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        name = name.strip("/")
        if name in self.seen:  # later entries would overwrite: keep the first (explicit files win)
            return
        self.seen.add(name)
        raw = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, 1, 0, len(body), 0, 0, rdev[0], rdev[1], len(raw), 0)
        self.ino += 1
        self.data += b"070701" + b"".join(b"%08X" % f for f in fields) + raw
        self._pad()
        self.data += body
        self._pad()

    def _pad(self) -> None:
        self.data += b"\0" * (-len(self.data) % 4)

    def dir(self, name: str, mode: int = 0o755) -> None:
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):  # parents first, as the kernel needs
            self._entry("/".join(parts[:i]), stat.S_IFDIR | mode)

    def file(self, name: str, body: bytes, mode: int = 0o644) -> None:
        self._parents(name)
        self._entry(name, stat.S_IFREG | mode, body)

    def symlink(self, name: str, target: str) -> None:
        self._parents(name)
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._parents(name)
        self._entry(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def tree(self, name: str, source: Path) -> None:
        """A host file or directory (recursively; symlinks kept as links) at `name`."""
        st = source.lstat()
        if stat.S_ISLNK(st.st_mode):
            self.symlink(name, os.readlink(source))
        elif stat.S_ISDIR(st.st_mode):
            self.dir(name, stat.S_IMODE(st.st_mode))
            for child in sorted(source.iterdir()):
                self.tree(f"{name.rstrip('/')}/{child.name}", child)
        elif stat.S_ISREG(st.st_mode):
            self.file(name, source.read_bytes(), stat.S_IMODE(st.st_mode))
        # sockets, fifos, devices of a host tree are not needed in a VM: skipped

    def _parents(self, name: str) -> None:
        parent = name.strip("/").rpartition("/")[0]
        if parent:
            self.dir(parent)

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return bytes(self.data)


Files = Mapping[str, "Path | bytes | str"]


def scenario_script(body: str) -> str:
    return "#!/bin/sh\nset -eu\n. /lib/vmtest/lib.sh\n" + textwrap.dedent(body).strip("\n") + "\n"


def build_initramfs(runproc: Path, scenarios: Mapping[str, str], files: Files | None = None,
                    scenario_timeout: int = 120) -> bytes:
    """The whole VM: busybox, runproc at /bin/runproc, the scenarios (run in order) and `files`."""
    for name in scenarios:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ValueError(f"scenario name {name!r}: use letters, digits, _ . -")
    cpio = Cpio()
    # Caller's files first: the first entry of a name wins (see Cpio._entry).
    for dest, source in (files or {}).items():
        if not dest.startswith("/"):
            raise ValueError(f"files: {dest!r} is not an absolute path in the VM")
        if isinstance(source, Path):
            cpio.tree(dest, source)
        else:
            cpio.file(dest, source.encode() if isinstance(source, str) else source, 0o755)
    cpio.file("/init", INIT.encode(), 0o755)
    for d in ("newroot", "dev", "proc", "sys", "tmp", "run", "root", "etc", "var/tmp", "sys"):
        cpio.dir(d)
    cpio.chardev("/dev/console", 5, 1)
    cpio.chardev("/dev/null", 1, 3, 0o666)
    cpio.file("/bin/busybox", BUSYBOX.read_bytes(), 0o755)
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout
    for applet in applets.split():
        if applet != "busybox":
            cpio.symlink(f"/bin/{applet}", "busybox")
    cpio.symlink("/sbin", "bin")
    cpio.symlink("/usr/bin", "../bin")
    cpio.symlink("/usr/sbin", "../bin")
    cpio.file("/etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    cpio.file("/etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    cpio.file(RUNPROC_IN_VM, runproc.read_bytes(), 0o755)
    init2 = INIT2.replace("@CONTROLLERS@", " ".join(CONTROLLERS)).replace("@TIMEOUT@", str(scenario_timeout))
    cpio.file("/lib/vmtest/init2", init2.encode(), 0o755)
    cpio.file("/lib/vmtest/lib.sh", LIB_SH.encode())
    # Numbered: init2 runs them in sorted order, which is the caller's order.
    for i, (name, body) in enumerate(scenarios.items()):
        cpio.file(f"/lib/vmtest/scenarios/{i:03d}-{name}.sh", scenario_script(body).encode(), 0o755)
    return cpio.finish()


# ---------------------------------------------------------------- running


def parse_results(text: str) -> tuple[dict[str, ScenarioResult], float | None, bool]:
    """(scenarios by name, guest uptime at the first scenario, whether DONE was reached)."""
    text = text.replace("\r\n", "\n")
    booted = re.search(rf"{MARK} BOOTED uptime=([\d.]+)@@", text)
    scenarios = {}
    pattern = re.compile(
        rf"{MARK} BEGIN \d+-(?P<name>\S+)@@\n(?P<out>.*?)\n{MARK} END \d+-(?P=name) "
        r"rc=(?P<rc>\d+) start=(?P<start>[\d.]+) end=(?P<end>[\d.]+)@@", re.S)
    for m in pattern.finditer(text):
        out = m.group("out")
        out = out[:-1] if out.endswith("\n") else out  # the newline init2 added before END
        scenarios[m.group("name")] = ScenarioResult(
            m.group("name"), int(m.group("rc")), out, float(m.group("end")) - float(m.group("start")))
    return scenarios, float(booted.group(1)) if booted else None, f"{MARK} DONE@@" in text


def default_timeout(accel: str, n_scenarios: int) -> float:
    # Boot is ~2 s with KVM on bare metal, ~4-5 s (guest) with TCG; scenarios are small.
    return (60 + 20 * n_scenarios) * (1 if accel == "kvm" else 4)


# KVM boots to the first scenario within seconds; a nested /dev/kvm that opens but
# cannot run the kernel (this project's VMs: qemu aborts on MSR 0x10a with -cpu host,
# or the decompressor never finishes) is given this long before TCG takes over.
KVM_BOOT_DEADLINE = 20.0
_kvm_broken: str | None = None  # why KVM failed in this process: later boots go straight to TCG


def qemu_argv(kernel: Kernel, initrd: Path, results: Path, accel: str, memory_mb: int, cpus: int) -> list[str]:
    return [QEMU, "-nographic", "-no-reboot", "-nodefaults", "-no-user-config",
            "-m", str(memory_mb), "-smp", str(cpus),
            *(["-enable-kvm", "-cpu", "host"] if accel == "kvm" else ["-accel", "tcg", "-cpu", "max"]),
            "-kernel", str(kernel.vmlinuz), "-initrd", str(initrd), "-append", KERNEL_CMDLINE,
            # ttyS0 (console) on stdout, ttyS1 (results) to a file, no monitor on stdio.
            "-serial", "stdio", "-serial", f"file:{results}", "-monitor", "none"]


def _boot(argv: list[str], console_path: Path, results_path: Path, timeout: float,
          boot_deadline: float | None) -> tuple[int | None, float, bool]:
    """Run qemu: (exit code or None on timeout, seconds, whether the guest reached BOOTED)."""
    results_path.write_bytes(b"")
    start = time.monotonic()
    booted = False
    with open(console_path, "wb") as console:
        # cwd: a core dump of an aborting qemu (nested KVM) lands in the scratch dir.
        qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                                cwd=console_path.parent)
        code: int | None = None
        try:
            while (code := qemu.poll()) is None:
                elapsed = time.monotonic() - start
                if not booted:
                    booted = f"{MARK} BOOTED".encode() in results_path.read_bytes()
                if elapsed > timeout or (boot_deadline is not None and not booted and elapsed > boot_deadline):
                    break  # code stays None: killed below
                time.sleep(0.05)
        finally:
            if code is None:
                qemu.kill()
                qemu.wait()
    booted = booted or f"{MARK} BOOTED".encode() in results_path.read_bytes()
    return code, time.monotonic() - start, booted


def default_runproc() -> Path:
    """$RUNPROC_BIN, else dist/runproc (as runproc_testlib.runproc_path, without pytest)."""
    return Path(os.environ.get("RUNPROC_BIN", REPO / "dist" / "runproc")).resolve()


def run_scenarios(scenarios: Mapping[str, str], files: Files | None = None, *, runproc: Path | None = None,
                  timeout: float | None = None, accel: str | None = None, memory_mb: int = 1024,
                  cpus: int = 2, scenario_timeout: int | None = None, workdir: Path | None = None) -> VmResult:
    """Boot once and run `scenarios` (name -> sh script body) in order; raises VmError unless all reported.

    accel None: KVM when /dev/kvm is usable (falling back to TCG if that boot fails),
    else TCG; RUNPROC_VM_ACCEL=kvm|tcg or `accel` force one, without fallback.
    """
    global _kvm_broken
    runproc = runproc or default_runproc()
    forced = accel or os.environ.get("RUNPROC_VM_ACCEL") or None
    accel = forced or ("kvm" if kvm_usable() and _kvm_broken is None else "tcg")
    kernel = fetch_kernel()
    owned = workdir is None
    work = Path(tempfile.mkdtemp(prefix="runproc-v2vm-")) if workdir is None else workdir
    work.mkdir(parents=True, exist_ok=True)
    note = f"KVM unusable earlier: {_kvm_broken}" if _kvm_broken and not forced else ""
    try:
        initrd = work / "initramfs.cpio"
        limit = timeout or default_timeout("tcg", len(scenarios))  # per-scenario kill switch in the guest
        initrd.write_bytes(build_initramfs(runproc, scenarios, files, scenario_timeout or int(limit)))
        console_path, results_path = work / "console.log", work / "results.log"
        while True:
            argv = qemu_argv(kernel, initrd, results_path, accel, memory_mb, cpus)
            limit = timeout or default_timeout(accel, len(scenarios))
            fallback = accel == "kvm" and not forced
            code, seconds, booted = _boot(argv, console_path, results_path, limit,
                                          KVM_BOOT_DEADLINE if fallback else None)
            if fallback and not booted:
                tail = console_path.read_bytes().decode(errors="replace").strip().splitlines()[-3:]
                _kvm_broken = (f"no boot within {seconds:.0f}s (qemu exit {code}): " + " | ".join(tail))
                note = f"KVM failed, used TCG: {_kvm_broken}"
                accel = "tcg"
                continue
            break
        console_text = console_path.read_bytes().decode(errors="replace").replace("\r\n", "\n")
        results_text = results_path.read_bytes().decode(errors="replace").replace("\r\n", "\n")
        parsed, booted_at, done = parse_results(results_text)
        result = VmResult(accel, kernel.name, console_text, results_text, parsed, seconds,
                          booted_at or 0.0, note)
        if code is None:
            raise VmError(f"qemu timed out after {limit:.0f}s\n{' '.join(argv)}\n{result.describe()}")
        if not done:
            raise VmError(f"the VM stopped (qemu exit {code}) before running every scenario\n"
                          f"{' '.join(argv)}\n{result.describe()}")
        return result
    finally:
        if owned and not os.environ.get("RUNPROC_VM_KEEP"):
            shutil.rmtree(work, ignore_errors=True)


def run_in_v2_vm(script: str, files: Files | None = None, timeout: float | None = None, *,
                 runproc: Path | None = None, **kwargs: object) -> VmResult:
    """One scenario in its own boot; `.exit_code` and `.output` are the script's."""
    return run_scenarios({"main": script}, files, runproc=runproc, timeout=timeout, **kwargs)  # type: ignore[arg-type]


def _main(argv: Iterable[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="boot the cgroup v2 VM and run one sh script in it")
    parser.add_argument("script", type=Path)
    parser.add_argument("--runproc", type=Path, default=default_runproc())
    parser.add_argument("--accel", choices=("kvm", "tcg"))
    args = parser.parse_args(list(argv))
    ensure_host_packages()
    try:
        result = run_in_v2_vm(args.script.read_text(), runproc=args.runproc, accel=args.accel)
    except VmError as err:
        print(err)
        return 2
    print(result.describe())
    print(f"exit {result.exit_code}; {result.accel}: boot {result.boot_seconds:.2f}s (guest), "
          f"qemu {result.seconds:.2f}s {result.note}")
    return result.exit_code


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1:]))
