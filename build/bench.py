"""`make bench`: start-up and lifecycle cost of runproc beside runc, on this machine.

Prints, for each measurement, the median wall time of runproc and (when it is
installed) runc, and the ratio runproc/runc. The two are alternated run by run
so that machine noise falls on both; the machine's load average is printed
before and after. It also reports what a waiting (created) container pins in
memory, and, for the release binary, the cost of a first call (an empty unpack
cache) and of the per-call fallback (no cache). This is a benchmark, not a
test: it asserts nothing. Run as root (chroot bundles and a subreaper).
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNS = int(os.environ.get("BENCH_RUNS", "30"))
PR_SET_CHILD_SUBREAPER = 36
CLONE_NEWNS = 0x00020000
PROCESS = {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": ["/bin/true"], "env": ["PATH=/bin"], "cwd": "/"}


def make_rootfs(work: Path) -> Path:
    rootfs = work / "rootfs"
    subprocess.run([str(REPO / "build/make-rootfs.sh"), str(rootfs)], check=True)
    return rootfs


def make_small_bundle(work: Path, rootfs: Path) -> Path:
    """The bundle of the first benchmarks: /proc in a mount namespace, nothing else."""
    bundle = work / "bundle-small"
    bundle.mkdir()
    config = {
        "ociVersion": "1.0.2",
        "process": {**PROCESS, "noNewPrivileges": True},
        "root": {"path": str(rootfs)},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"namespaces": [{"type": "mount"}]},
    }
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def make_spec_bundle(work: Path, rootfs: Path, runc: str | None) -> Path | None:
    """`runc spec`'s default bundle (namespaces, mounts, masked paths, capabilities), running /bin/true."""
    if not runc:
        return None
    bundle = work / "bundle-spec"
    bundle.mkdir()
    subprocess.run([runc, "spec", "--bundle", str(bundle)], check=True)
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = ["/bin/true"]
    config["root"] = {"path": str(rootfs), "readonly": True}
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def quiet(argv: list[str], env: dict[str, str] | None = None) -> None:
    subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True, env=env)


class Runtime:
    def __init__(self, name: str, binary: str, work: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.binary = binary
        self.root = work / f"state-{name}"
        self.pid_file = work / f"{name}.pid"
        self.env = env
        self.counter = 0

    def cmd(self, *args: str) -> list[str]:
        return [self.binary, "--root", str(self.root), *args]

    def version(self) -> None:
        quiet(self.cmd("--version"), self.env)

    def state(self) -> None:
        quiet(self.cmd("state", "bench-state"), self.env)

    def cycle(self, bundle: Path) -> None:
        """create -> start -> wait for the exit (we are the subreaper) -> delete."""
        self.counter += 1
        cid = f"cycle{self.counter}"
        quiet(self.cmd("create", "--bundle", str(bundle), "--pid-file", str(self.pid_file), cid), self.env)
        pid = int(self.pid_file.read_text())
        quiet(self.cmd("start", cid), self.env)
        os.waitpid(pid, 0)
        quiet(self.cmd("delete", cid), self.env)


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def measure(runtimes: list[Runtime], action: Callable[[Runtime], None], runs: int = RUNS) -> list[float]:
    samples: dict[str, list[float]] = {r.name: [] for r in runtimes}
    for _ in range(runs):
        for runtime in runtimes:  # alternate, so noise lands on both
            start = time.perf_counter()
            action(runtime)
            samples[runtime.name].append(time.perf_counter() - start)
    return [median_ms(samples[r.name]) for r in runtimes]


def report(label: str, results: list[float], with_runc: bool) -> None:
    line = f"{label:<44}{results[0]:>12.1f}"
    if with_runc and len(results) > 1:
        line += f"{results[1]:>10.1f}{results[0] / results[1]:>7.1f}x"
    print(line, flush=True)


def pinned_deleted_bytes(pid: int) -> int:
    """Bytes of deleted files that `pid` keeps mapped: page cache nobody can reclaim while it waits."""
    sizes: dict[str, int] = {}
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].endswith(" (deleted)\n") and fields[5] not in sizes:
                try:
                    sizes[fields[5]] = os.stat(f"/proc/{pid}/map_files/{fields[0]}").st_size
                except OSError:  # an anonymous part of a deleted file's mapping (bss); its file comes again
                    continue
    return sum(sizes.values())


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cpus"


def main() -> int:
    if os.geteuid() != 0:
        print("bench: run as root (chroot bundles, subreaper)", file=sys.stderr)
        return 1
    libc = ctypes.CDLL(None)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # container inits come back to us
    private_mount_namespace()
    runproc = os.environ.get("RUNPROC_BIN", str(REPO / "dist" / "runproc"))
    runc = shutil.which("runc")
    with tempfile.TemporaryDirectory(prefix="runproc-bench-") as tmp:
        work = Path(tmp)
        rootfs = make_rootfs(work)
        small = make_small_bundle(work, rootfs)
        spec = make_spec_bundle(work, rootfs, runc)
        runtimes = [Runtime("runproc", runproc, work)]
        if runc:
            runtimes.append(Runtime("runc", runc, work))
        try:
            run_benchmarks(runproc, runc, runtimes, small, spec, work)
        finally:
            for runtime in runtimes:
                subprocess.run(runtime.cmd("delete", "--force", "bench-state"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    return 0


def run_benchmarks(runproc: str, runc: str | None, runtimes: list[Runtime], small: Path, spec: Path | None,
                   work: Path) -> None:
    for runtime in runtimes:
        quiet(runtime.cmd("create", "--bundle", str(small), "--pid-file", str(work / f"{runtime.name}-waiting.pid"),
                          "bench-state"))
    versions = subprocess.run([runproc, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    runc_version = (subprocess.run([runc, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
                    if runc else "runc not installed")
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cpus, "
          f"kernel {platform.release()}, Debian {Path('/etc/debian_version').read_text().strip()}")
    print(f"# {versions}; {runc_version}; median of {RUNS} runs, alternating")
    print(f"# before: {load_average()}")
    print(f"{'measurement':<44}{'runproc ms':>12}" + (f"{'runc ms':>10}{'ratio':>8}" if runc else ""))
    with_runc = runc is not None
    report("--version", measure(runtimes, Runtime.version), with_runc)
    report("state (created container)", measure(runtimes, Runtime.state), with_runc)
    report("cycle, small bundle (/proc, mount ns)", measure(runtimes, lambda r: r.cycle(small)), with_runc)
    if spec is not None:
        report("cycle, `runc spec` bundle", measure(runtimes, lambda r: r.cycle(spec)), with_runc)
    print(f"# after: {load_average()}")
    waiting = int((work / "runproc-waiting.pid").read_text())
    print(f"a waiting created container pins {pinned_deleted_bytes(waiting)} bytes of deleted files")
    report_cache_modes(runproc, work)


def report_cache_modes(runproc: str, work: Path) -> None:
    """The release binary's first call (a new, empty unpack cache) and its per-call mode (no cache).

    As root, a populate makes its cache entry a read-only bind mount: main() runs
    the bench in a private mount namespace, and each entry is unmounted here.
    """
    fallback = Runtime("fallback", runproc, work, {**os.environ, "STATICX_NO_CACHE": "1"})
    first = Runtime("first", runproc, work)
    samples = []
    for n in range(min(RUNS, 10)):
        cache = work / f"cache-{n}"
        first.env = {**os.environ, "STATICX_CACHE_DIR": str(cache)}
        start = time.perf_counter()
        first.version()
        samples.append(time.perf_counter() - start)
        unmount_below(cache)
        subprocess.run(["chmod", "-R", "u+w", str(cache)], check=True)
        shutil.rmtree(cache)
    report("--version, first call (empty cache)", [median_ms(samples)], False)
    report("--version, per-call unpack (STATICX_NO_CACHE=1)", measure([fallback], Runtime.version), False)


def unmount_below(directory: Path) -> None:
    prefix = str(directory) + "/"
    for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
        mount_point = line.split()[4]
        if mount_point.startswith(prefix):
            subprocess.run(["umount", "-l", mount_point], check=True)


def private_mount_namespace() -> None:
    """Mounts the bench's calls make (cache entries) stay in the bench's own namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)


if __name__ == "__main__":
    sys.exit(main())
