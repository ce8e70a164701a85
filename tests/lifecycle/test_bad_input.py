"""Bad input: one clear error line, exit 1, no traceback, nothing left behind."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from chaos_testlib import processes_tagged
from runproc_testlib import NOBODY, MakeBundle, Runproc, require_root


def assert_clean_failure(result, message: str) -> None:  # type: ignore[no-untyped-def]
    assert result.returncode == 1, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert message in lines[0], lines[0]
    assert result.stdout == ""


def assert_nothing_left(state_root: Path, tmp_path: Path) -> None:
    leftovers = [p.name for p in state_root.iterdir()] if state_root.exists() else []
    assert leftovers == []
    assert not list(tmp_path.glob("**/*.tmp"))


Setup = Callable[[MakeBundle, Path], tuple[list[str], str]]


def bundle_with(mutate: Callable[[dict], None]) -> Setup:
    def setup(make_bundle: MakeBundle, tmp_path: Path) -> tuple[list[str], str]:
        bundle = make_bundle(["/bin/true"])
        config = json.loads((bundle / "config.json").read_text())
        mutate(config)
        (bundle / "config.json").write_text(json.dumps(config))
        return ["create", "--bundle", str(bundle), "bad"], ""

    return setup


def missing_bundle(make_bundle: MakeBundle, tmp_path: Path) -> tuple[list[str], str]:
    return ["create", "--bundle", str(tmp_path / "nope"), "bad"], f"bundle {tmp_path}/nope: no such directory"


def missing_config(make_bundle: MakeBundle, tmp_path: Path) -> tuple[list[str], str]:
    bundle = make_bundle(["/bin/true"])
    (bundle / "config.json").unlink()
    return ["create", "-b", str(bundle), "bad"], f"config.json not found in bundle {bundle}"


def malformed_config(make_bundle: MakeBundle, tmp_path: Path) -> tuple[list[str], str]:
    bundle = make_bundle(["/bin/true"])
    (bundle / "config.json").write_text('{"ociVersion": "1.0.2",\n "process": {')
    return ["create", "-b", str(bundle), "bad"], f"{bundle}/config.json: invalid JSON: "


def with_args(args: list[str], message: str, **fields: object) -> Setup:
    def setup(make_bundle: MakeBundle, tmp_path: Path) -> tuple[list[str], str]:
        return ["create", "-b", str(make_bundle(args, **fields)), "bad"], message

    return setup


def pid_file_in_missing_dir(make_bundle: MakeBundle, tmp_path: Path) -> tuple[list[str], str]:
    bundle = make_bundle(["/bin/true"])
    return (["create", "--pid-file", str(tmp_path / "no" / "pid"), "-b", str(bundle), "bad"],
            f"pid file {tmp_path}/no/pid: directory {tmp_path}/no does not exist")


def nested_config(make_bundle: MakeBundle, tmp_path: Path) -> tuple[list[str], str]:
    bundle = make_bundle(["/bin/true"])
    (bundle / "config.json").write_text("[" * 100000)
    return ["create", "-b", str(bundle), "bad"], f"{bundle}/config.json: invalid JSON: nested too deeply"


def set_process(key: str, value: object) -> Callable[[dict], None]:
    def mutate(config: dict) -> None:
        config["process"][key] = value

    return mutate


def config_replaced_by(make_target: Callable[[Path], None], kind: str) -> Setup:
    """config.json replaced by something that is not a regular file (or a link to one)."""
    def setup(make_bundle: MakeBundle, tmp_path: Path) -> tuple[list[str], str]:
        bundle = make_bundle(["/bin/true"])
        (bundle / "config.json").unlink()
        make_target(bundle / "config.json")
        return ["create", "-b", str(bundle), "bad"], f"{bundle}/config.json is {kind}, not a regular file"

    return setup


def huge_config(make_bundle: MakeBundle, tmp_path: Path) -> tuple[list[str], str]:
    bundle = make_bundle(["/bin/true"])
    with open(bundle / "config.json", "ab") as stream:
        stream.write(b" " * (4 << 20))
    return ["create", "-b", str(bundle), "bad"], f"{bundle}/config.json is larger than 4 MiB: refused"


def rootfs_replaced_by(make_target: Callable[[Path], None], kind: str) -> Setup:
    def setup(make_bundle: MakeBundle, tmp_path: Path) -> tuple[list[str], str]:
        rootfs = tmp_path / "not-a-dir"
        make_target(rootfs)
        bundle = make_bundle(["/bin/true"], rootfs=rootfs)
        return ["create", "-b", str(bundle), "bad"], f"rootfs {rootfs} is not a directory: it is {kind}"

    return setup


CREATE_CASES: dict[str, Setup] = {
    "missing bundle": missing_bundle,
    "missing config.json": missing_config,
    "malformed config.json": malformed_config,
    "missing process": lambda mb, tp: (bundle_with(lambda c: c.pop("process"))(mb, tp)[0],
                                       "process property must not be empty"),
    "missing process.args": lambda mb, tp: (bundle_with(lambda c: c["process"].pop("args"))(mb, tp)[0],
                                            "args must not be empty"),
    "relative cwd": lambda mb, tp: (bundle_with(set_process("cwd", "tmp"))(mb, tp)[0],
                                    "Cwd must be an absolute path"),
    "unknown rlimit": lambda mb, tp: (bundle_with(set_process("rlimits", [{"type": "RLIMIT_FOO", "soft": 1,
                                                                           "hard": 1}]))(mb, tp)[0],
                                      "unknown rlimit type 'RLIMIT_FOO'"),
    "nonexistent absolute executable": with_args(
        ["/no/such/cmd"], 'unable to start container process: exec: "/no/such/cmd": stat /no/such/cmd: '
                          "no such file or directory"),
    "nonexistent bare executable": with_args(
        ["no-such-cmd"], 'unable to start container process: exec: "no-such-cmd": executable file not found in $PATH'),
    "bare executable without PATH": with_args(["echo"], 'exec: "echo": executable file not found in $PATH', env=[]),
    "executable is a directory": with_args(["/bin"], 'exec: "/bin": permission denied'),
    "executable not executable": with_args(["/etc/passwd"], 'exec: "/etc/passwd": permission denied'),
    "cwd is a file": with_args(["/bin/true"], "chdir to cwd ('/etc/passwd') set in config.json failed: "
                                             "not a directory", cwd="/etc/passwd"),
    "terminal": with_args(["/bin/true"], "cannot allocate tty if runproc will detach without setting console socket",
                          terminal=True),
    "pid file in missing directory": pid_file_in_missing_dir,
    "pid file is a directory": lambda mb, tp: (["create", "--pid-file", str(tp), "-b", str(mb(["/bin/true"])), "bad"],
                                               f"pid file {tp} is a directory"),
    "NUL in env": with_args(["/bin/true"], "process.env[1] contains a NUL byte", env=["PATH=/bin", "A=\0"]),
    "env without =": with_args(["/bin/true"], "invalid environment variable 'A': missing '='", env=["A"]),
    "huge --preserve-fds": lambda mb, tp: (["create", "--preserve-fds", "100000000", "-b", str(mb(["/bin/true"])),
                                            "bad"], "--preserve-fds 100000000: invalid argument"),
    "deeply nested config": nested_config,
    "config.json links to /dev/zero": config_replaced_by(lambda p: p.symlink_to("/dev/zero"), "a character device"),
    "config.json is a fifo": config_replaced_by(os.mkfifo, "a fifo"),
    "config.json is a directory": config_replaced_by(os.mkdir, "a directory"),
    "config.json over 4 MiB": huge_config,
    "rootfs is a file": rootfs_replaced_by(lambda p: p.write_text(""), "a regular file"),
    "rootfs is a fifo": rootfs_replaced_by(os.mkfifo, "a fifo"),
    "rlimit type not a string": lambda mb, tp: (bundle_with(set_process("rlimits", [{"type": ["RLIMIT_AS"], "soft": 1,
                                                                                     "hard": 1}]))(mb, tp)[0],
                                                "config.json: process.rlimits[0].type must be a string"),
    "too many additionalGids": with_args(["/bin/true"], "process.user.additionalGids has 65537 entries; the kernel "
                                         "allows at most 65536", user={"uid": 0, "gid": 0,
                                                                       "additionalGids": [1] * 65537}),
    "cwd 3000 levels deep": with_args(["/bin/true"], "process.cwd is longer than the kernel's PATH_MAX",
                                      cwd="/a" * 3000),
}


@pytest.mark.parametrize("case", list(CREATE_CASES))
@pytest.mark.parametrize("command", ["create", "run"])
def test_bad_create(case: str, command: str, runproc: Runproc, make_bundle: MakeBundle, tmp_path: Path,
                    state_root: Path) -> None:
    argv, message = CREATE_CASES[case](make_bundle, tmp_path)
    argv[0] = command
    prefix: tuple[str, ...] = ()
    if case == "terminal" and command == "run":
        # run in the foreground attaches the caller's terminal: in a session of its own it has none.
        message, prefix = "open /dev/tty: no such device or address", ("setsid", "-w")
    tag = uuid.uuid4().hex
    result = runproc(*argv, env={**os.environ, "RUNPROC_TEST_TAG": tag}, prefix=prefix)
    assert_clean_failure(result, message)
    assert result.stderr.startswith(f"runproc {command} failed: ")
    assert_nothing_left(state_root, tmp_path)
    # The release binary's launcher removes its unpacked files in a detached
    # process that lives a few ms past exit; a leaked init would wait forever.
    deadline = time.monotonic() + 3
    while processes_tagged(tag) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert processes_tagged(tag) == []
    assert runproc("state", "bad").returncode == 1


@pytest.mark.parametrize("bad_id, message", [
    ("", "container id cannot be empty"),
    ("a/b", "invalid container id format: 'a/b'"),
    ("..", "invalid container id format: '..'"),
    ("../escape", "invalid container id format"),
    ("has space", "invalid container id format"),
    ("semi;colon", "invalid container id format"),
])
def test_bad_ids(bad_id: str, message: str, runproc: Runproc, make_bundle: MakeBundle, tmp_path: Path,
                 state_root: Path) -> None:
    bundle = make_bundle(["/bin/true"])
    assert_clean_failure(runproc("create", "-b", str(bundle), bad_id), message)
    for command in ("state", "start", "kill", "delete"):
        assert_clean_failure(runproc(command, bad_id), message)
    assert_nothing_left(state_root, tmp_path)
    assert not (tmp_path / "escape").exists()


@pytest.mark.parametrize("command", [["state"], ["start"], ["kill"], ["kill", "--all"], ["delete"]])
def test_unknown_container(command: list[str], runproc: Runproc) -> None:
    assert_clean_failure(runproc(*command, "ghost"), "container does not exist")


def test_duplicate_id_leaves_the_first_alone(runproc: Runproc, make_bundle: MakeBundle, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    runproc.ok("create", "--pid-file", str(pid_file), "dup", str(make_bundle(["/bin/sleep", "30"])))
    first = runproc.state("dup")
    second_pid = tmp_path / "pid2"
    result = runproc("create", "--pid-file", str(second_pid), "dup", str(make_bundle(["/bin/true"])))
    assert_clean_failure(result, "container with id 'dup' already exists")
    assert runproc.state("dup") == first
    assert not second_pid.exists()


def test_unknown_signal(runproc: Runproc, make_bundle: MakeBundle) -> None:
    runproc.ok("create", "sig", str(make_bundle(["/bin/true"])))
    assert_clean_failure(runproc("kill", "sig", "SIGFOO"), "unknown signal 'SIGFOO'")
    assert runproc.status("sig") == "created"


def test_start_of_running_container(runproc: Runproc, make_bundle: MakeBundle) -> None:
    runproc.ok("run", "-d", "twice", str(make_bundle(["/bin/sleep", "30"])))
    assert_clean_failure(runproc("start", "twice"), "cannot start an already running container")


@pytest.mark.parametrize("argv, message", [
    (["--bogus", "state", "x"], "flag provided but not defined: --bogus"),
    (["create"], "'create' takes arguments ID [BUNDLE], got 0"),
    (["nosuchcommand"], "no such command"),
    (["--log-format", "xml", "state", "x"], "invalid log format 'xml'"),
    (["kill", "a", "b", "c"], "'kill' takes arguments ID [SIGNAL], got 3"),
])
def test_bad_command_lines(argv: list[str], message: str, runproc: Runproc) -> None:
    assert_clean_failure(runproc(*argv), message)


def test_unwritable_state_root(runproc_bin: Path, make_bundle: MakeBundle, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    tool = Runproc(runproc_bin, blocker / "state")
    assert_clean_failure(tool("create", "x", str(make_bundle(["/bin/true"]))),
                         f"cannot create state directory {blocker}/state: not a directory")


@pytest.mark.parametrize("limits, script, output", [
    # Limits meant for the program apply after the init's own work: it never fails of them.
    ([("RLIMIT_NOFILE", 0)], "ulimit -n", "0\n"),
    ([("RLIMIT_NOFILE", 3)], "ulimit -n", "3\n"),
    ([("RLIMIT_AS", 64 << 20), ("RLIMIT_DATA", 32 << 20)], "echo small", "small\n"),
    ([("RLIMIT_STACK", 256 << 10)], "echo stack", "stack\n"),
])
def test_program_limits_do_not_starve_the_init(limits: list[tuple[str, int]], script: str, output: str,
                                               runproc: Runproc, make_bundle: MakeBundle) -> None:
    require_root()
    rlimits = [{"type": kind, "soft": value, "hard": value} for kind, value in limits]
    # The busybox rootfs's sh is static: it needs no fd to start.
    result = runproc("run", "lim", str(make_bundle(["/bin/sh", "-c", script], rlimits=rlimits)))
    assert (result.returncode, result.stdout, result.stderr) == (0, output, "")


def test_tiny_address_space_fails_in_the_program_not_the_init(runproc: Runproc, make_bundle: MakeBundle) -> None:
    """RLIMIT_AS of 1 MiB: the init still gets to exec (no MemoryError); the kernel then fails the program."""
    require_root()
    bundle = make_bundle(["/bin/true"], rlimits=[{"type": "RLIMIT_AS", "soft": 1 << 20, "hard": 1 << 20}])
    runproc.ok("create", "tiny", str(bundle))
    runproc.ok("start", "tiny")
    assert runproc.wait_status("tiny", "stopped")["status"] == "stopped"


def test_signalling_another_users_process_is_a_clear_error(runproc_bin: Path, world_tmp: Path) -> None:
    """nobody's own record naming a process of root's (as after a setuid program): one clear line."""
    require_root()
    state = world_tmp / "nobody-state"
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        start = int(Path(f"/proc/{sleeper.pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        record = {"id": "c1", "pid": sleeper.pid, "start_time": start, "bundle": "/", "rootfs": "/",
                  "created": "2026-01-01T00:00:00Z", "annotations": {}, "owner": ""}
        script = (f"mkdir -m 700 {state} {state}/c1 && umask 077 && "
                  f"echo '{json.dumps(record)}' > {state}/c1/state.json")
        subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "sh", "-c", script],
                       check=True)
        nobody = Runproc(runproc_bin, state, as_user=NOBODY)
        assert_clean_failure(nobody("kill", "c1", "KILL"),
                             f"cannot send signal 9 to process {sleeper.pid}: operation not permitted")
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()
