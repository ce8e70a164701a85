"""Differential tests: the same bundle through runc and through runproc, compared.

Each runtime gets its own state root; both read one config.json. Besides
make_bundle's default, that config carries what runproc ignores but runc needs:
- a /proc mount: without /proc inside the root, runc's init fails with
  "error closing exec fds: open /proc/self/fd" (so runc cannot run the bare
  config that has no `linux` section);
- a mount namespace: without one, runc does its rootfs mounts in the host's
  namespace (it bind-mounts the rootfs onto itself and makes / rslave there);
- a cgroupsPath of its own (see dual_spec).
"""

from __future__ import annotations

import calendar
import json
import os
import re
import shutil
import stat
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runproc_testlib import MakeBundle, Runproc, default_process, error_text

RUNC = Path("/usr/sbin/runc")

pytestmark = [pytest.mark.root, pytest.mark.skipif(not RUNC.is_file() or os.geteuid() != 0, reason="needs runc, root")]

# Go's RFC3339Nano in UTC, as runc prints `created` (trailing zeros of the fraction trimmed).
CREATED_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{1,9}Z")
# The keys runc 1.1.5 prints; it adds `annotations` only when there are some.
RUNC_KEYS = {"ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "owner"}
# A long-running program that exits 0 on SIGTERM, so a test can end it normally or by a signal.
LOOP = ["sh", "-c", "trap 'exit 0' TERM; while :; do usleep 20000; done"]
SLEEP = ["sleep", "30"]


class Side(Runproc):
    """One runtime (runc or runproc) with its own state root."""

    def __repr__(self) -> str:
        return self.name

    def cleanup(self) -> None:
        if self.root.is_dir():
            for entry in self.root.iterdir():
                if entry.is_dir():
                    self("delete", "--force", entry.name, timeout=15)


Sides = tuple[Side, Side]


@pytest.fixture
def sides(runproc: Runproc, tmp_path: Path) -> Iterator[Sides]:
    """(runc, runproc); every container either left is force-deleted afterwards."""
    runc_root = tmp_path / "state-runc"
    runc_root.mkdir()
    pair = (Side(RUNC, runc_root, name="runc"), Side(runproc.binary, runproc.root, name="runproc"))
    yield pair
    for side in pair:
        side.cleanup()
    shutil.rmtree(runc_root, ignore_errors=True)


def dual_spec(args: list[str], rootfs: Path, annotations: dict[str, str] | None = None, **process: object) -> dict:
    """A config both runtimes run: make_bundle's default plus what runc needs (see the module doc)."""
    proc = default_process(args)
    proc.update(process)
    return {
        "ociVersion": "1.0.2",
        "process": proc,
        "root": {"path": str(rootfs)},
        "annotations": dict(annotations or {}),
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {
            "namespaces": [{"type": "mount"}],
            # runc's default cgroup is /<id>, shared by every runc container of that id on the
            # host, and its delete kills the whole cgroup: a unique one keeps tests apart.
            "cgroupsPath": f"/runproc-diff-{uuid.uuid4().hex[:16]}",
        },
    }


def copy_rootfs(source: Path, target: Path) -> Path:
    """copytree of a rootfs, skipping device nodes, fifos and sockets.

    runc mknods /dev/null, /dev/zero, /dev/full, ... into a rootfs it runs; a
    plain copytree would then read /dev/zero until the disk is full.
    """

    def specials(directory: str, names: list[str]) -> set[str]:
        modes = {name: os.lstat(os.path.join(directory, name)).st_mode for name in names}
        plain = (stat.S_ISREG, stat.S_ISDIR, stat.S_ISLNK)
        return {name for name, mode in modes.items() if not any(test(mode) for test in plain)}

    shutil.copytree(source, target, symlinks=True, ignore=specials)
    return target


@pytest.fixture(scope="module")
def diff_rootfs(busybox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rootfs both runtimes share here: a copy, because runc writes /dev nodes into the rootfs it
    runs, and the session's busybox_rootfs must stay safe for other suites to copy."""
    root = tmp_path_factory.mktemp("rootfs-diff")
    os.chmod(root, 0o755)
    rootfs = copy_rootfs(busybox_rootfs, root / "rootfs")
    os.chmod(rootfs, 0o755)  # a non-root process.user must reach /bin
    return rootfs


DualBundle = Callable[..., Path]


@pytest.fixture
def dual_bundle(make_bundle: MakeBundle, diff_rootfs: Path) -> DualBundle:
    """dual_bundle(args, rootfs=None, annotations=None, name=None, **process_fields) -> bundle dir."""

    def make(
        args: list[str],
        rootfs: Path | None = None,
        annotations: dict[str, str] | None = None,
        name: str | None = None,
        **process: object,
    ) -> Path:
        spec = dual_spec(args, rootfs or diff_rootfs, annotations, **process)
        return make_bundle(args, name=name, config=spec)

    return make


@pytest.fixture
def rootfs_copy(tmp_path: Path, busybox_rootfs: Path) -> Callable[[str], Path]:
    """A private rootfs, for tests that look at what the program wrote inside it."""
    return lambda name: copy_rootfs(busybox_rootfs, tmp_path / f"rootfs-{name}")


def both_fail(results: dict[str, subprocess.CompletedProcess[str]], text: str | None = None) -> None:
    """Every runtime exited non-zero and, if given, said `text` (case-insensitive: runc says `ID`)."""
    for name, result in results.items():
        assert result.returncode != 0, f"{name} succeeded: {result.stdout}"
        if text is not None:
            assert text.lower() in error_text(result.stderr), f"{name}: {text!r} not in {result.stderr!r}"


def on_both(sides: Sides, *args: str, **kwargs: object) -> dict[str, subprocess.CompletedProcess[str]]:
    return {side.name: side(*args, **kwargs) for side in sides}  # type: ignore[arg-type]


def process_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def create_and_start(sides: Sides, bundle: Path, container_id: str = "c1") -> None:
    for side in sides:
        side.ok("create", "--bundle", str(bundle), container_id)
        side.ok("start", container_id)
        side.wait_status(container_id, "running")


# --- state through the lifecycle -------------------------------------------------


def check_state_shape(states: dict[str, dict], status: str) -> None:
    """What must hold for both runtimes' state at one step, and what must be equal between them."""
    runc, ours = states["runc"], states["runproc"]
    # runproc may print `annotations` always; runc omits it when empty.
    assert set(runc) - {"annotations"} == RUNC_KEYS, runc
    assert set(ours) - {"annotations"} == RUNC_KEYS, ours
    if "annotations" in runc:
        assert ours.get("annotations") == runc["annotations"]
    else:
        assert ours.get("annotations", {}) == {}
    for name, state in states.items():
        assert state["status"] == status, f"{name}: {state}"
        assert state["ociVersion"], f"{name}: {state}"
        assert CREATED_RE.fullmatch(state["created"]), f"{name}: {state['created']}"
        assert (state["pid"] == 0) == (status == "stopped"), f"{name}: {state}"
    for key in ("id", "bundle", "rootfs", "owner"):
        assert ours[key] == runc[key], key


@pytest.mark.parametrize("ending", ["exit", "KILL"])
@pytest.mark.parametrize("annotations", [{}, {"org.example.key": "value"}], ids=["no-annotations", "annotations"])
def test_state_through_lifecycle(
    sides: Sides, dual_bundle: DualBundle, ending: str, annotations: dict[str, str]
) -> None:
    bundle = dual_bundle(LOOP, annotations=annotations)
    before = time.time()
    for side in sides:
        side.ok("create", "--bundle", str(bundle), "c1")
    created = {side.name: side.state("c1") for side in sides}
    check_state_shape(created, "created")
    for name, state in created.items():
        # `created` is this moment in UTC, not local time or the epoch.
        stamp = calendar.timegm(time.strptime(state["created"].split(".")[0], "%Y-%m-%dT%H:%M:%S"))
        assert before - 5 < stamp < time.time() + 5, f"{name}: {state['created']}"
        assert process_alive(state["pid"]), name

    for side in sides:
        side.ok("start", "c1")
    running = {side.name: side.state("c1") for side in sides}
    check_state_shape(running, "running")
    for name in running:
        # The init became the program: same pid, and the creation time does not move.
        assert running[name]["pid"] == created[name]["pid"], name
        assert running[name]["created"] == created[name]["created"], name

    for side in sides:
        # TERM makes the loop exit 0 by itself; KILL ends it by a signal.
        side.ok("kill", "c1", "TERM" if ending == "exit" else "KILL")
    stopped = {side.name: side.wait_status("c1", "stopped") for side in sides}
    check_state_shape(stopped, "stopped")
    for name in stopped:
        assert stopped[name]["created"] == created[name]["created"], name
        assert not process_alive(created[name]["pid"]), name


@pytest.mark.parametrize("annotations", [{}, {"org.example.key": "value"}], ids=["no-annotations", "annotations"])
def test_state_key_order(sides: Sides, dual_bundle: DualBundle, annotations: dict[str, str]) -> None:
    """The keys come in runc's order too (its struct's: ..., created, annotations, owner), for
    whoever reads the JSON as text; runproc's state.py says it follows that order."""
    bundle = dual_bundle(SLEEP, annotations=annotations)
    for side in sides:
        side.ok("create", "--bundle", str(bundle), "c1")
    runc, ours = (list(side.state("c1")) for side in sides)
    assert [key for key in ours if key in runc] == runc


@pytest.mark.parametrize("form", ["absolute", "relative", "cwd", "symlink"])
def test_bundle_path_in_state(sides: Sides, dual_bundle: DualBundle, tmp_path: Path, form: str) -> None:
    """However the bundle is named on the command line, `state` shows the same bundle path."""
    bundle = dual_bundle(SLEEP, name="the-bundle")
    link = tmp_path / "bundle-link"
    link.symlink_to(bundle)
    argv = {
        "absolute": (["--bundle", str(bundle)], None),
        "relative": (["--bundle", "the-bundle"], tmp_path),
        "cwd": ([], bundle),
        "symlink": (["--bundle", str(link)], None),
    }[form]
    for side in sides:
        side.ok("create", *argv[0], "c1", cwd=argv[1])
    states = {side.name: side.state("c1") for side in sides}
    assert states["runproc"]["bundle"] == states["runc"]["bundle"]
    assert states["runproc"]["rootfs"] == states["runc"]["rootfs"]


# --- run ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "code"),
    [("exit 0", 0), ("exit 3", 3), ("kill -9 $$", 137), ("kill -TERM $$", 143)],
)
def test_run_exit_code(sides: Sides, dual_bundle: DualBundle, script: str, code: int) -> None:
    bundle = dual_bundle(["sh", "-c", script])
    results = on_both(sides, "run", "--bundle", str(bundle), "r1")
    for name, result in results.items():
        assert result.returncode == code, f"{name}: {result.returncode} {result.stderr}"
    # A foreground run without --keep deletes the container.
    both_fail(on_both(sides, "state", "r1"), "does not exist")


def test_run_stdout(sides: Sides, dual_bundle: DualBundle) -> None:
    bundle = dual_bundle(["echo", "hello", "from  both"])
    results = on_both(sides, "run", "--bundle", str(bundle), "r1")
    assert results["runc"].returncode == results["runproc"].returncode == 0
    assert results["runc"].stdout == "hello from  both\n"
    assert results["runproc"].stdout == results["runc"].stdout


def test_run_keep_leaves_stopped(sides: Sides, dual_bundle: DualBundle) -> None:
    bundle = dual_bundle(["true"])
    for side in sides:
        side.ok("run", "--keep", "--bundle", str(bundle), "r1")
        state = side.state("r1")
        assert state["status"] == "stopped" and state["pid"] == 0, f"{side}: {state}"
        side.ok("delete", "r1")


# --- kill --------------------------------------------------------------------------


@pytest.mark.parametrize("signal", ["KILL", None])
def test_kill_stopped(sides: Sides, dual_bundle: DualBundle, signal: str | None) -> None:
    create_and_start(sides, dual_bundle(SLEEP))
    for side in sides:
        side.ok("kill", "c1", "KILL")
        side.wait_status("c1", "stopped")
    both_fail(on_both(sides, "kill", "c1", *([signal] if signal else [])), "container not running")


@pytest.mark.parametrize("started", [True, False], ids=["started", "created"])
def test_kill_all_after_exit(sides: Sides, dual_bundle: DualBundle, started: bool) -> None:
    """`kill --all` of a stopped container succeeds for both (containerd sends it after the init exits)."""
    bundle = dual_bundle(SLEEP)
    for side in sides:
        side.ok("create", "--bundle", str(bundle), "c1")
        if started:
            side.ok("start", "c1")
        side.ok("kill", "--all", "c1", "KILL")
        side.wait_status("c1", "stopped")
        side.ok("kill", "--all", "c1", "KILL")


@pytest.mark.parametrize("signal", ["NOSUCH", "SIGNOSUCH", "99"])
def test_kill_unknown_signal(sides: Sides, dual_bundle: DualBundle, signal: str) -> None:
    create_and_start(sides, dual_bundle(SLEEP))
    both_fail(on_both(sides, "kill", "c1", signal))
    for side in sides:
        assert side.state("c1")["status"] == "running", side


@pytest.mark.parametrize("signal", ["9", "KILL", "SIGKILL", "kill", "sigkill", None])
@pytest.mark.parametrize("started", [True, False], ids=["running", "created"])
def test_kill_forms(sides: Sides, dual_bundle: DualBundle, signal: str | None, started: bool) -> None:
    # sleep dies on the default SIGTERM too; a created container's init takes signals as well.
    bundle = dual_bundle(SLEEP)
    for side in sides:
        side.ok("create", "--bundle", str(bundle), "c1")
        if started:
            side.ok("start", "c1")
    for side in sides:
        side.ok("kill", "c1", *([signal] if signal else []))
        side.wait_status("c1", "stopped")


# --- delete ------------------------------------------------------------------------


def test_delete_running_needs_force(sides: Sides, dual_bundle: DualBundle) -> None:
    create_and_start(sides, dual_bundle(SLEEP))
    both_fail(on_both(sides, "delete", "c1"), "not stopped")
    for side in sides:
        assert side.state("c1")["status"] == "running", side


@pytest.mark.parametrize(
    ("started", "force"),
    [(True, True), (False, True), (False, False)],
    ids=["running-force", "created-force", "created"],
)
def test_delete_removes(sides: Sides, dual_bundle: DualBundle, started: bool, force: bool) -> None:
    """delete --force of a running one, and any delete of a created one, remove it and its process."""
    bundle = dual_bundle(SLEEP)
    for side in sides:
        side.ok("create", "--bundle", str(bundle), "c1")
        if started:
            side.ok("start", "c1")
        pid = side.state("c1")["pid"]
        side.ok("delete", *(["--force"] if force else []), "c1")
        assert not process_alive(pid), side
        result = side("state", "c1")
        assert result.returncode != 0 and "does not exist" in error_text(result.stderr), f"{side}: {result.stderr}"
        assert not (side.root / "c1").exists(), side


def test_delete_stopped(sides: Sides, dual_bundle: DualBundle) -> None:
    bundle = dual_bundle(["true"])
    for side in sides:
        side.ok("create", "--bundle", str(bundle), "c1")
        side.ok("start", "c1")
        side.wait_status("c1", "stopped")
        side.ok("delete", "c1")
    both_fail(on_both(sides, "state", "c1"), "does not exist")


@pytest.mark.parametrize("command", ["delete", "state", "start", "kill"])
def test_unknown_container(sides: Sides, command: str) -> None:
    both_fail(on_both(sides, command, "nosuch"), "does not exist")


def test_delete_force_unknown(sides: Sides) -> None:
    for side in sides:
        side.ok("delete", "--force", "nosuch")


# --- start -------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["killed-before-start", "exited-after-start"])
def test_start_stopped(sides: Sides, dual_bundle: DualBundle, how: str) -> None:
    bundle = dual_bundle(["true"] if how == "exited-after-start" else SLEEP)
    for side in sides:
        side.ok("create", "--bundle", str(bundle), "c1")
        if how == "exited-after-start":
            side.ok("start", "c1")
        else:
            side.ok("kill", "c1", "KILL")
        side.wait_status("c1", "stopped")
    both_fail(on_both(sides, "start", "c1"), "cannot start a container that has stopped")


def test_start_twice(sides: Sides, dual_bundle: DualBundle) -> None:
    create_and_start(sides, dual_bundle(SLEEP))
    both_fail(on_both(sides, "start", "c1"), "cannot start an already running container")
    for side in sides:
        assert side.state("c1")["status"] == "running", side


@pytest.mark.parametrize("started", [False, True], ids=["created", "running"])
def test_duplicate_create(sides: Sides, dual_bundle: DualBundle, started: bool) -> None:
    bundle = dual_bundle(SLEEP)
    first = {}
    for side in sides:
        side.ok("create", "--bundle", str(bundle), "c1")
        if started:
            side.ok("start", "c1")
        first[side.name] = side.state("c1")
    both_fail(on_both(sides, "create", "--bundle", str(bundle), "c1"), "exists")
    for side in sides:
        # The first container is untouched: same record, same live process, still usable.
        assert side.state("c1") == first[side.name], side
        assert process_alive(first[side.name]["pid"]), side
        if not started:
            side.ok("start", "c1")
            assert side.state("c1")["status"] == "running", side


# --- bad input ---------------------------------------------------------------------

# case -> text both must print (None: the wording differs, only the failure is compared)
BAD_INPUTS: dict[str, str | None] = {
    "missing-bundle": None,
    "missing-config": None,
    "malformed-json": None,
    "relative-cwd": None,
    "empty-args": None,
    "no-args": None,
    "absolute-exe": 'exec: "/no/such": stat /no/such: no such file or directory',
    "bare-exe": 'exec: "nosuch": executable file not found in $PATH',
}


def bad_bundle(case: str, dual_bundle: DualBundle, tmp_path: Path) -> Path:
    if case == "missing-bundle":
        return tmp_path / "no-such-bundle"
    if case == "relative-cwd":
        return dual_bundle(["true"], cwd="tmp")
    if case == "empty-args":
        return dual_bundle([])
    if case == "absolute-exe":
        return dual_bundle(["/no/such"])
    if case == "bare-exe":
        return dual_bundle(["nosuch"])
    bundle = dual_bundle(["true"])
    config = bundle / "config.json"
    if case == "missing-config":
        config.unlink()
    elif case == "malformed-json":
        config.write_text(config.read_text()[:-20])
    elif case == "no-args":
        spec = json.loads(config.read_text())
        del spec["process"]["args"]
        config.write_text(json.dumps(spec))
    return bundle


@pytest.mark.parametrize("command", ["create", "run"])
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input(sides: Sides, dual_bundle: DualBundle, tmp_path: Path, case: str, command: str) -> None:
    bundle = bad_bundle(case, dual_bundle, tmp_path)
    text = BAD_INPUTS[case]
    both_fail(on_both(sides, command, "--bundle", str(bundle), "bad"), text)
    # Nothing half-written: no record, no directory left in either state root.
    both_fail(on_both(sides, "state", "bad"), "does not exist")
    for side in sides:
        assert not (side.root / "bad").exists(), side


@pytest.mark.parametrize("container_id", ["a/b", "..", "a b", "a:b"])
def test_invalid_id(sides: Sides, dual_bundle: DualBundle, container_id: str) -> None:
    bundle = dual_bundle(["true"])
    both_fail(on_both(sides, "create", "--bundle", str(bundle), container_id), "invalid container id")
    for side in sides:
        assert [p.name for p in side.root.iterdir()] == [], side


@pytest.mark.parametrize("command", ["create", "start", "state", "kill", "delete", "run"])
def test_missing_cli_argument(sides: Sides, command: str) -> None:
    both_fail(on_both(sides, command))


def test_pid_file_directory_missing(sides: Sides, dual_bundle: DualBundle, tmp_path: Path) -> None:
    bundle = dual_bundle(SLEEP)
    both_fail(on_both(sides, "create", "--pid-file", str(tmp_path / "nodir" / "pid"), "--bundle", str(bundle), "p1"))
    both_fail(on_both(sides, "state", "p1"), "does not exist")


# --- pid file ----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["create", "run-detach"])
@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "relative"])
def test_pid_file(sides: Sides, dual_bundle: DualBundle, tmp_path: Path, command: str, relative: bool) -> None:
    bundle = dual_bundle(SLEEP)
    argv = ["create"] if command == "create" else ["run", "--detach"]
    for side in sides:
        pid_file = tmp_path / f"{side.name}.pid"
        # A relative --pid-file is relative to the caller's cwd, not the bundle's.
        given = pid_file.name if relative else str(pid_file)
        side.ok(*argv, "--pid-file", given, "--bundle", str(bundle), "p1", cwd=tmp_path)
        raw = pid_file.read_bytes()
        assert re.fullmatch(rb"[1-9][0-9]*", raw), f"{side}: {raw!r}"
        assert int(raw) == side.state("p1")["pid"], side
    modes = {side.name: stat.S_IMODE((tmp_path / f"{side.name}.pid").stat().st_mode) for side in sides}
    assert modes["runproc"] == modes["runc"], modes
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".")]


# --- created-before-start ----------------------------------------------------------


def test_program_waits_for_start(sides: Sides, dual_bundle: DualBundle, rootfs_copy: Callable[[str], Path]) -> None:
    """Between create and start the program has not run; after start it has. (Chrooted: the
    marker lands in each runtime's own rootfs copy.)"""
    markers: dict[str, Path] = {}
    for side in sides:
        rootfs = rootfs_copy(side.name)
        markers[side.name] = rootfs / "tmp" / "marker"
        bundle = dual_bundle(["sh", "-c", "echo ran > /tmp/marker; exec sleep 30"], rootfs=rootfs, name=side.name)
        side.ok("create", "--bundle", str(bundle), "c1")
    time.sleep(0.5)
    for side in sides:
        assert not markers[side.name].exists(), f"{side}: program ran before start"
        assert side.state("c1")["status"] == "created", side
    for side in sides:
        side.ok("start", "c1")
    deadline = time.monotonic() + 10
    for side in sides:
        while not markers[side.name].exists():
            assert time.monotonic() < deadline, f"{side}: program never ran after start"
            time.sleep(0.02)
        assert markers[side.name].read_text() == "ran\n", side


# --- the process's environment ------------------------------------------------------


@pytest.mark.parametrize(
    ("uid", "env"),
    [(0, []), (65534, []), (1000, []), (0, ["HOME=/elsewhere"])],
    ids=["root", "nobody", "not-in-passwd", "home-given"],
)
def test_run_env(sides: Sides, dual_bundle: DualBundle, uid: int, env: list[str]) -> None:
    """The program sees the same environment: runc adds HOME from the rootfs's /etc/passwd when unset."""
    process_env = ["PATH=/bin", "TERM=xterm", *env]
    bundle = dual_bundle(["env"], env=process_env, user={"uid": uid, "gid": uid})
    results = on_both(sides, "run", "--bundle", str(bundle), "e1")
    assert results["runc"].returncode == results["runproc"].returncode == 0, results
    assert sorted(results["runproc"].stdout.splitlines()) == sorted(results["runc"].stdout.splitlines())


@pytest.mark.parametrize(
    "user",
    [{"uid": 65534, "gid": 65534}, {"uid": 1000, "gid": 1000, "additionalGids": [5, 6]}],
    ids=["nobody", "additional-gids"],
)
def test_run_as_user(sides: Sides, dual_bundle: DualBundle, user: dict) -> None:
    bundle = dual_bundle(["id"], user=user)
    results = on_both(sides, "run", "--bundle", str(bundle), "u1")
    assert results["runc"].returncode == results["runproc"].returncode == 0, results
    assert results["runproc"].stdout == results["runc"].stdout


@pytest.mark.parametrize("caller_umask", [0o022, 0o077, 0o000], ids=lambda mask: f"{mask:04o}")
def test_run_umask(sides: Sides, dual_bundle: DualBundle, caller_umask: int) -> None:
    """runc sets umask 0022 for the program (the spec has no umask here), whatever the caller's is."""
    bundle = dual_bundle(["sh", "-c", "umask"])
    results = on_both(sides, "run", "--bundle", str(bundle), "m1", umask=caller_umask)
    assert results["runc"].stdout == "0022\n", results["runc"]
    assert results["runproc"].stdout == results["runc"].stdout


def test_run_creates_missing_cwd(sides: Sides, dual_bundle: DualBundle, rootfs_copy: Callable[[str], Path]) -> None:
    for side in sides:
        rootfs = rootfs_copy(side.name)
        bundle = dual_bundle(["pwd"], rootfs=rootfs, name=side.name, cwd="/new/dir")
        result = side.ok("run", "--bundle", str(bundle), "w1")
        assert result.stdout == "/new/dir\n", side
        assert (rootfs / "new" / "dir").is_dir(), side


def test_executable_looked_up_as_the_user(
    sides: Sides, dual_bundle: DualBundle, rootfs_copy: Callable[[str], Path]
) -> None:
    """runc looks args[0] up after switching to process.user: a program only root can reach fails create."""
    for side in sides:
        rootfs = rootfs_copy(side.name)
        os.chmod(rootfs, 0o700)  # nobody cannot search the root, so cannot reach /bin/id
        bundle = dual_bundle(["id"], rootfs=rootfs, name=side.name, user={"uid": 65534, "gid": 65534})
        result = side("create", "--bundle", str(bundle), "x1")
        assert result.returncode != 0, f"{side}: create succeeded"
        assert 'exec: "id": executable file not found in $path' in error_text(result.stderr), f"{side}: {result.stderr}"
        assert side("state", "x1").returncode != 0, side


def test_run_forwards_sigterm(sides: Sides, dual_bundle: DualBundle, tmp_path: Path) -> None:
    """A foreground run passes SIGTERM on to the program and exits with its status (128+15)."""
    bundle = dual_bundle(SLEEP)
    for side in sides:
        argv = side.argv("run", "--bundle", str(bundle), "t1")
        with open(tmp_path / f"{side.name}.out", "wb") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        try:
            deadline = time.monotonic() + 10
            while not is_running(side, "t1"):
                assert time.monotonic() < deadline and proc.poll() is None, f"{side}: never running"
                time.sleep(0.02)
            time.sleep(0.2)  # start has returned; give run a moment to be back in its wait
            proc.terminate()
            assert proc.wait(timeout=10) == 143, side
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def is_running(side: Side, container_id: str) -> bool:
    result = side("state", container_id)
    return result.returncode == 0 and json.loads(result.stdout)["status"] == "running"
