"""Rig for the end-to-end suite: a private containerd driven with ``ctr``.

The runtime under test (``RUNPROC_BIN``, default ``<repo>/dist/runproc``) is handed to
containerd's runc v2 shim with ``ctr run --runc-binary``, exactly as a user would.
The session starts its own ``containerd`` with a generated config (own root, state,
gRPC and ttrpc sockets, CRI and other unneeded plugins disabled) so the system's
containerd (/run/containerd, /var/lib/containerd) is never used, and tears it down
again together with every task, container, shim and mount it left behind.

Known unavoidable footprint outside the temp dir (containerd 1.6 behaviour):
* the shim creates its ttrpc socket at /run/containerd/s/<sha256(address/ns/id)>;
  it removes it on exit, and the teardown removes any of ours that remain;
* runc-style runtimes create cgroups /<namespace>/<id> (ctr's default cgroupsPath);
  the teardown removes the empty ``runproc-e2e`` parent cgroup directories.

Set ``RUNPROC_E2E_KEEP=1`` to keep the temp dir (containerd.log, runtime root) for
debugging; the path is printed at the end of the session.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import select
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest
from runproc_testlib import alive, descendants, log_tail, runproc_path, stop_daemon

E2E_DIR = Path(__file__).resolve().parent
REPO = E2E_DIR.parents[1]
NAMESPACE = "runproc-e2e"

# Per-call ceilings. A hang must fail the test, never block CI; they are generous
# because a frozen (PyInstaller one-file) runtime pays an unpack cost on every call,
# and one `ctr run` makes 4 runtime calls (create, start, delete, delete --force).
CTR_TIMEOUT = 30.0
STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0

# The session's containerd, for the failure-report hook (set by the `containerd` fixture).
_CONTAINERD_KEY: pytest.StashKey[Containerd] = pytest.StashKey()

# Where the containerd 1.6 shim puts its ttrpc socket, whatever containerd's config says.
SHIM_SOCKET_DIR = Path("/run/containerd/s")


def runtime_binary() -> Path:
    """The runtime under test: $RUNPROC_BIN, else the repo's frozen dist/runproc."""
    return runproc_path()


def e2e_skip_reason() -> str | None:
    """Why this suite cannot run here (one line), or None when it can."""
    binary = runtime_binary()
    if not binary.is_file() or not os.access(binary, os.X_OK):
        return f"e2e: runtime binary {binary} not found or not executable (set RUNPROC_BIN)"
    if os.geteuid() != 0:
        return "e2e: must run as root (starts containerd and creates containers)"
    missing = [
        b for b in ("containerd", "ctr", "containerd-shim-runc-v2") if shutil.which(b) is None
    ]
    if missing:
        return f"e2e: containerd tooling not installed: {', '.join(missing)}"
    return None


def pytest_make_collect_report(
    collector: pytest.Collector,
) -> pytest.CollectReport | None:
    # Skip whole modules up front (before any fixture builds a rootfs or starts
    # containerd), reported as ONE line: "SKIPPED [1] tests/e2e/test_ctr.py: <reason>".
    if isinstance(collector, pytest.Module) and collector.path.is_relative_to(E2E_DIR):
        reason = e2e_skip_reason()
        if reason is not None:
            # lineno None (as pytest's own module-level skips) keeps the ":<line>" out.
            longrepr = (str(collector.path), None, f"Skipped: {reason}")
            return pytest.CollectReport(collector.nodeid, "skipped", longrepr, [])  # type: ignore[arg-type]
    return None  # default collection


def base_env() -> dict[str, str]:
    """A small, predictable environment for containerd (and so the shim and runtime) and ctr.

    Inheriting the developer's shell would leak CONTAINERD_* (ctr reads them),
    NOTIFY_SOCKET or XDG_RUNTIME_DIR into the runtime and make runs irreproducible.
    RUNPROC_* variables are passed through so runtime authors can switch on debugging.
    """
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "HOME": "/root",
    }
    env.update({k: v for k, v in os.environ.items() if k.startswith("RUNPROC_")})
    return env


def run_cmd(
    args: Sequence[str | os.PathLike[str]],
    *,
    timeout: float = CTR_TIMEOUT,
    input: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """subprocess.run with a mandatory timeout that turns a hang into a test failure."""
    argv = [str(a) for a in args]
    try:
        return subprocess.run(
            argv,
            input=input,
            # DEVNULL rather than our stdin: ctr forwards its stdin into the container.
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env if env is not None else base_env(),
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"timed out after {timeout}s: {' '.join(argv)}\n"
            f"stdout: {_text(exc.stdout)!r}\nstderr: {_text(exc.stderr)!r}",
            pytrace=False,
        )


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def describe(proc: subprocess.CompletedProcess[str]) -> str:
    """Everything needed to understand a ctr call, for assertion messages."""
    return (
        f"$ {' '.join(map(str, proc.args))}\n"
        f"exit={proc.returncode}\nstdout={proc.stdout!r}\nstderr={proc.stderr!r}"
    )


def read_until(fd: int, predicate: Callable[[bytes], bool], timeout: float) -> bytes:
    """Read from ``fd`` until ``predicate(buffer)`` holds or EOF; fail on timeout."""
    buf = b""
    deadline = time.monotonic() + timeout
    while not predicate(buf):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(
                f"timed out after {timeout}s waiting for output; got {buf!r}",
                pytrace=False,
            )
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
    return buf


# --------------------------------------------------------------------------- containerd


@dataclass
class Containerd:
    """A private containerd instance living entirely under ``workdir``."""

    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    used_ids: list[str] = field(default_factory=list)  # every container id handed out

    @property
    def address(self) -> Path:
        return self.workdir / "containerd.sock"

    @property
    def config(self) -> Path:
        return self.workdir / "containerd.toml"

    @property
    def log(self) -> Path:
        return self.workdir / "containerd.log"

    def write_config(self) -> None:
        q = _toml_str
        disabled = [
            # CRI is slow to start and wants CNI, /etc/cni, /opt/cni...
            "io.containerd.grpc.v1.cri",
            # Snapshotters we never use (--rootfs runs need none; failing ones only log noise).
            "io.containerd.snapshotter.v1.aufs",
            "io.containerd.snapshotter.v1.btrfs",
            "io.containerd.snapshotter.v1.devmapper",
            "io.containerd.snapshotter.v1.zfs",
            # Would create /opt/containerd outside our dirs.
            "io.containerd.internal.v1.opt",
            "io.containerd.tracing.processor.v1.otlp",
            "io.containerd.internal.v1.tracing",
            # NB: io.containerd.runtime.v1.linux must stay: tasks-service requires it in 1.6.
        ]
        self.config.write_text(
            "\n".join(
                [
                    "version = 2",
                    f"root = {q(self.workdir / 'root')}",
                    f"state = {q(self.workdir / 'state')}",
                    f"disabled_plugins = [{', '.join(q(p) for p in disabled)}]",
                    "",
                    "[grpc]",
                    f"  address = {q(self.address)}",
                    "",
                    "[ttrpc]",
                    f"  address = {q(str(self.address) + '.ttrpc')}",
                    "",
                    "[debug]",
                    '  level = "info"',
                    "",
                ]
            )
        )

    def start(self) -> None:
        self.write_config()
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                ["containerd", "--config", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=base_env(),
                # Own session: a Ctrl-C on pytest must not hit containerd before teardown runs.
                start_new_session=True,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"containerd exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            probe = subprocess.run(
                ["ctr", "--address", str(self.address), "version"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=5,
                env=base_env(),
            )
            if probe.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"containerd not ready after {STARTUP_TIMEOUT}s:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        stop_daemon(self.proc, STOP_TIMEOUT)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log, lines)


def _toml_str(value: object) -> str:
    # Paths here are plain ASCII; a JSON-style quoted string is a valid TOML basic string.
    text = str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --------------------------------------------------------------------------- ctr wrapper


@dataclass
class Ctr:
    """``ctr`` bound to our containerd, namespace, runtime binary and rootfs."""

    containerd: Containerd
    runtime: Path
    rootfs: Path
    runc_root: Path  # ctr --runc-root; the runtime itself gets --root <runc_root>/<namespace>
    fifo_dir: Path  # ctr's IO FIFOs (default /run/containerd/fifo would be outside our dirs)
    timeout: ClassVar[float] = CTR_TIMEOUT  # for tests' own waits

    @property
    def runtime_root(self) -> Path:
        """The --root the shim passes to every runtime call."""
        return self.runc_root / NAMESPACE

    def argv(self, *args: str | os.PathLike[str]) -> list[str]:
        return [
            "ctr",
            "--address",
            str(self.containerd.address),
            "--namespace",
            NAMESPACE,
            *map(str, args),
        ]

    def __call__(
        self,
        *args: str | os.PathLike[str],
        timeout: float = CTR_TIMEOUT,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return run_cmd(self.argv(*args), timeout=timeout, input=input)

    def run_argv(
        self, cid: str, *cmd: str, opts: Sequence[str] = (), detach: bool = False
    ) -> list[str]:
        """argv of `ctr run` of ``cmd`` in our busybox rootfs with the runtime under test."""
        return self.argv(
            "run",
            "--detach" if detach else "--rm",
            "--fifo-dir", self.fifo_dir,
            "--runc-binary", self.runtime,
            "--runc-root", self.runc_root,
            *opts,
            "--rootfs", self.rootfs,
            cid,
            *cmd,
        )  # fmt: skip

    def run(
        self,
        cid: str,
        *cmd: str,
        opts: Sequence[str] = (),
        input: str | None = None,
        timeout: float = CTR_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        """Foreground `ctr run --rm`: returns once the container exited and was removed."""
        return run_cmd(self.run_argv(cid, *cmd, opts=opts), input=input, timeout=timeout)

    def run_detached(
        self, cid: str, *cmd: str, opts: Sequence[str] = ()
    ) -> subprocess.CompletedProcess[str]:
        return run_cmd(self.run_argv(cid, *cmd, opts=opts, detach=True))

    def popen_run(self, cid: str, *cmd: str, opts: Sequence[str] = ()) -> subprocess.Popen[bytes]:
        """Foreground `ctr run --rm` with stdin/stdout/stderr pipes, for interactive tests.

        The caller must wait with a timeout and kill it on failure (see the stdin test).
        """
        return subprocess.Popen(
            self.run_argv(cid, *cmd, opts=opts),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=base_env(),
        )

    # Re-exported so test modules need nothing from conftest but the fixtures.
    describe = staticmethod(describe)
    read_until = staticmethod(read_until)
    run_cmd = staticmethod(run_cmd)

    def container_ids(self) -> list[str]:
        proc = self("container", "ls", "--quiet")
        assert proc.returncode == 0, describe(proc)
        return proc.stdout.split()

    def tasks(self) -> dict[str, tuple[int, str]]:
        """`ctr task ls` as {id: (pid, STATUS)}."""
        proc = self("task", "ls")
        assert proc.returncode == 0, describe(proc)
        out: dict[str, tuple[int, str]] = {}
        for line in proc.stdout.splitlines()[1:]:  # skip the TASK PID STATUS header
            parts = line.split()
            if len(parts) >= 3:
                out[parts[0]] = (int(parts[1]), parts[2])
        return out

    def wait_status(self, cid: str, wanted: str, timeout: float = 10.0) -> tuple[int, str]:
        """Poll `ctr task ls` until ``cid`` reports ``wanted`` (ctr 1.6 has no `task wait`)."""
        deadline = time.monotonic() + timeout
        while True:
            current = self.tasks().get(cid)
            if current is not None and current[1] == wanted:
                return current
            if time.monotonic() > deadline:
                pytest.fail(
                    f"task {cid} not {wanted} after {timeout}s; last seen: {current}",
                    pytrace=False,
                )
            time.sleep(0.05)

    def cleanup(self, cid: str) -> None:
        """Best effort removal of everything ctr knows about ``cid``; errors are ignored."""
        if cid not in self.container_ids():
            return
        if cid in self.tasks():
            self("task", "kill", "--all", "--signal", "KILL", cid)
            self("task", "delete", "--force", cid)
        self("container", "delete", cid)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def e2e_workdir() -> Iterator[Path]:
    # Short path on purpose: unix socket paths are limited to 107 bytes.
    workdir = Path(tempfile.mkdtemp(prefix="runproc-e2e-", dir="/tmp"))
    yield workdir
    if os.environ.get("RUNPROC_E2E_KEEP"):
        print(f"\n[e2e] kept {workdir}")
        return
    leftovers = _unmount_under(workdir)
    if leftovers:
        # Never rmtree through a mount (a leaked bind mount of / would be wiped).
        print(f"\n[e2e] NOT removing {workdir}: still mounted: {leftovers}")
        return
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def rootfs(e2e_workdir: Path) -> Path:
    """Static busybox rootfs from the repo's own script (shared, read-write, host dir)."""
    path = e2e_workdir / "rootfs"
    proc = run_cmd(["sh", str(REPO / "build" / "make-rootfs.sh"), str(path)], timeout=120)
    assert proc.returncode == 0, f"make-rootfs.sh failed:\n{describe(proc)}"
    assert (path / "bin" / "sh").exists()
    return path


@pytest.fixture(scope="session")
def containerd(e2e_workdir: Path, request: pytest.FixtureRequest) -> Iterator[Containerd]:
    daemon = Containerd(e2e_workdir)
    request.config.stash[_CONTAINERD_KEY] = daemon
    try:
        daemon.start()
    except Exception:
        daemon.stop()
        raise
    yield daemon
    # Containers were already removed through ctr by the `ctr` fixture's teardown (it
    # depends on this one, so it finalizes first). Shims outlive containerd by design:
    # stop the daemon, then remove whatever of ours is still around.
    daemon.stop()
    _kill_stray_shims(daemon.address)
    _remove_shim_sockets(daemon.address, daemon.used_ids)
    _remove_cgroups(daemon.used_ids)


@pytest.fixture(scope="session")
def ctr(containerd: Containerd, rootfs: Path, e2e_workdir: Path) -> Iterator[Ctr]:
    client = Ctr(
        containerd=containerd,
        runtime=runtime_binary(),
        rootfs=rootfs,
        runc_root=e2e_workdir / "runtime-root",
        fifo_dir=e2e_workdir / "fifo",
    )
    yield client
    # While containerd still runs: remove whatever the tests left in our namespace.
    try:
        for cid in client.container_ids():
            client.cleanup(cid)
    except BaseException as exc:  # pytest.fail() raises BaseException; keep tearing down
        print(f"\n[e2e] container cleanup failed: {exc}")


@pytest.fixture
def new_id(ctr: Ctr) -> Iterator[Callable[[str], str]]:
    """Factory of unique container ids; every id handed out is cleaned up afterwards."""
    made: list[str] = []
    counter = itertools.count()

    def make(label: str) -> str:
        cid = f"e2e-{label}-{uuid.uuid4().hex[:8]}{next(counter)}"
        made.append(cid)
        ctr.containerd.used_ids.append(cid)
        return cid

    yield make
    for cid in made:
        ctr.cleanup(cid)


# --------------------------------------------------------------------------- reporting


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # On failure attach containerd's log tail: shim errors (bad init.pid, log.json parse
    # errors, ...) only show up there, not in ctr's stderr.
    report = yield
    daemon = item.config.stash.get(_CONTAINERD_KEY, None)
    if report.failed and daemon is not None and item.path.is_relative_to(E2E_DIR):
        report.sections.append(("containerd log (tail)", daemon.log_tail()))
    return report


# --------------------------------------------------------------------------- teardown helpers


def _kill_stray_shims(address: Path) -> None:
    """SIGKILL shims of *our* containerd (matched by its unique socket) and their children.

    Shims outlive containerd by design; if cleanup through ctr failed they would linger.
    """
    shims: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"containerd-shim-runc-v2") and str(address).encode() in argv:
            shims.append(int(entry.name))
    # Deepest first: without a pid namespace a container's children do not die with its init.
    victims = [pid for shim in shims for pid in descendants(shim)] + shims
    for pid in victims:
        _kill(pid)
    # Wait (briefly) until they are dead, so their cgroups become removable.
    deadline = time.monotonic() + 2.0
    while any(alive(pid) for pid in victims) and time.monotonic() < deadline:
        time.sleep(0.02)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def shim_socket(address: Path, cid: str) -> Path:
    """containerd 1.6: shim socket = /run/containerd/s/sha256(<address>/<namespace>/<id>)."""
    digest = hashlib.sha256(f"{address}/{NAMESPACE}/{cid}".encode()).hexdigest()
    return SHIM_SOCKET_DIR / digest


def _remove_shim_sockets(address: Path, ids: Sequence[str]) -> None:
    for cid in ids:
        path = shim_socket(address, cid)
        try:
            if stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()
        except OSError:
            pass


def _remove_cgroups(ids: Sequence[str]) -> None:
    # ctr's default cgroupsPath is /<namespace>/<id>; rmdir only succeeds on empty cgroups,
    # so this can never disturb anything that still has processes.
    base = Path("/sys/fs/cgroup")
    hierarchies = [base, *(p for p in base.iterdir() if p.is_dir())] if base.is_dir() else []
    for hierarchy in hierarchies:
        for cid in ids:
            _rmdir(hierarchy / NAMESPACE / cid)
        _rmdir(hierarchy / NAMESPACE)


def _rmdir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not empty, still in use, or already gone
        path.rmdir()


def _unmount_under(root: Path) -> list[str]:
    """Lazily unmount every mount point below ``root`` (deepest first); return survivors."""

    def mounts() -> list[str]:
        points = []
        prefix = str(root) + "/"
        with open("/proc/self/mountinfo") as info:
            for line in info:
                point = line.split()[4].replace("\\040", " ")
                if point == str(root) or point.startswith(prefix):
                    points.append(point)
        return points

    for point in sorted(mounts(), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=10)
    return mounts()
