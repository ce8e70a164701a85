"""`make bench`: start-up and lifecycle cost of runproc beside runc, on this machine.

Prints, for each measurement, the median wall time of runproc and (when it is
installed) runc, and the ratio runproc/runc. The two are alternated run by run
so that machine noise falls on both. This is a benchmark, not a test: it
asserts nothing. Run as root (it uses a chroot bundle and a subreaper).
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


def make_bundle(root: Path) -> Path:
    """One busybox bundle for both runtimes. runc needs /proc mounted (in a mount
    namespace) to start at all; runproc ignores both, so runc does a little more work."""
    bundle = root / "bundle"
    bundle.mkdir()
    subprocess.run([str(REPO / "build/make-rootfs.sh"), str(bundle / "rootfs")], check=True)
    config = {
        "ociVersion": "1.0.2",
        "process": {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": ["/bin/true"],
                    "env": ["PATH=/bin"], "cwd": "/", "noNewPrivileges": True},
        "root": {"path": "rootfs"},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"namespaces": [{"type": "mount"}]},
    }
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def quiet(argv: list[str]) -> None:
    subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)


class Runtime:
    def __init__(self, name: str, binary: str, work: Path, bundle: Path) -> None:
        self.name = name
        self.binary = binary
        self.root = work / f"state-{name}"
        self.bundle = bundle
        self.pid_file = work / f"{name}.pid"
        self.counter = 0

    def cmd(self, *args: str) -> list[str]:
        return [self.binary, "--root", str(self.root), *args]

    def version(self) -> None:
        quiet(self.cmd("--version"))

    def state(self) -> None:
        quiet(self.cmd("state", "bench-state"))

    def cycle(self) -> None:
        """create -> start -> wait for the exit (we are the subreaper) -> delete."""
        self.counter += 1
        cid = f"cycle{self.counter}"
        quiet(self.cmd("create", "--bundle", str(self.bundle), "--pid-file", str(self.pid_file), cid))
        pid = int(self.pid_file.read_text())
        quiet(self.cmd("start", cid))
        os.waitpid(pid, 0)
        quiet(self.cmd("delete", cid))


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def measure(runtimes: list[Runtime], action: Callable[[Runtime], None]) -> list[float]:
    samples: dict[str, list[float]] = {r.name: [] for r in runtimes}
    for _ in range(RUNS):
        for runtime in runtimes:  # alternate, so noise lands on both
            start = time.perf_counter()
            action(runtime)
            samples[runtime.name].append(time.perf_counter() - start)
    return [median_ms(samples[r.name]) for r in runtimes]


def main() -> int:
    if os.geteuid() != 0:
        print("bench: run as root (chroot bundle, subreaper)", file=sys.stderr)
        return 1
    libc = ctypes.CDLL(None)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # container inits come back to us
    runproc = os.environ.get("RUNPROC_BIN", str(REPO / "dist" / "runproc"))
    runc = shutil.which("runc")
    with tempfile.TemporaryDirectory(prefix="runproc-bench-") as tmp:
        work = Path(tmp)
        bundle = make_bundle(work)
        runtimes = [Runtime("runproc", runproc, work, bundle)]
        if runc:
            runtimes.append(Runtime("runc", runc, work, bundle))
        try:
            run_benchmarks(runproc, runc, runtimes, bundle)
        finally:
            for runtime in runtimes:
                subprocess.run(runtime.cmd("delete", "--force", "bench-state"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    return 0


def run_benchmarks(runproc: str, runc: str | None, runtimes: list[Runtime], bundle: Path) -> None:
    for runtime in runtimes:
        quiet(runtime.cmd("create", "--bundle", str(bundle), "bench-state"))
    versions = subprocess.run([runproc, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    runc_version = (subprocess.run([runc, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
                    if runc else "runc not installed")
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cpus, "
          f"kernel {platform.release()}, Debian {Path('/etc/debian_version').read_text().strip()}")
    print(f"# {versions}; {runc_version}; median of {RUNS} runs, alternating")
    header = f"{'measurement':<34}{'runproc ms':>12}" + (f"{'runc ms':>10}{'ratio':>8}" if runc else "")
    print(header)
    for label, action in (
        ("--version", Runtime.version),
        ("state (created container)", Runtime.state),
        ("create+start+wait+delete /bin/true", Runtime.cycle),
    ):
        results = measure(runtimes, action)
        line = f"{label:<34}{results[0]:>12.1f}"
        if runc:
            line += f"{results[1]:>10.1f}{results[0] / results[1]:>7.1f}x"
        print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
