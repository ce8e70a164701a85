"""The container lifecycle, driving the frozen binary as containerd and people do."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
from runproc_testlib import NOBODY, MakeBundle, Runproc, require_root


def read_proc_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def test_version_and_help(runproc: Runproc) -> None:
    version = runproc.ok("--version").stdout
    assert re.match(r"runproc version \d+\.\d+\.\d+\nspec: 1\.0\.2\npython: 3\.\d+\.\d+\n$", version)
    assert runproc.ok("-v").stdout == version
    assert "usage: runproc" in runproc.ok("--help").stdout
    assert "usage: runproc create" in runproc.ok("create", "--help").stdout


def test_program_does_not_run_before_start(runproc: Runproc, make_bundle: MakeBundle, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    bundle = make_bundle(["/bin/sh", "-c", f"echo ran >> {marker}"], host=True)
    runproc.ok("create", "--bundle", str(bundle), "c1")
    time.sleep(0.3)
    assert not marker.exists()
    state = runproc.state("c1")
    assert state["status"] == "created" and state["pid"] > 0
    # The init is blocked before exec: still our frozen binary, not sh.
    assert read_proc_state(state["pid"]) == "S"
    runproc.ok("start", "c1")
    runproc.wait_status("c1", "stopped")
    assert marker.read_text() == "ran\n"
    # start on a stopped container fails and never runs the program again.
    again = runproc("start", "c1")
    assert again.returncode == 1 and "cannot start a container that has stopped" in again.stderr
    assert marker.read_text() == "ran\n"
    runproc.ok("delete", "c1")
    assert runproc("state", "c1").returncode == 1


def test_state_fields(runproc: Runproc, make_bundle: MakeBundle) -> None:
    bundle = make_bundle(["/bin/sleep", "30"], annotations={"org.example": "x"})
    runproc.ok("create", "--bundle", str(bundle), "fields")
    state = runproc.state("fields")
    assert list(state) == ["ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "annotations", "owner"]
    assert state["id"] == "fields" and state["bundle"] == str(bundle) and state["status"] == "created"
    assert state["rootfs"] == json.loads((bundle / "config.json").read_text())["root"]["path"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z", state["created"])
    assert state["annotations"]["org.example"] == "x"
    runproc.ok("start", "fields")
    assert runproc.status("fields") == "running"
    runproc.ok("kill", "fields", "KILL")
    runproc.wait_status("fields", "stopped")
    assert runproc.state("fields")["pid"] == 0


def test_pid_file_is_bare_digits(runproc: Runproc, make_bundle: MakeBundle, tmp_path: Path) -> None:
    pid_file = tmp_path / "init.pid"
    runproc.ok("create", "--pid-file", str(pid_file), "p1", str(make_bundle(["/bin/true"])))
    raw = pid_file.read_bytes()
    assert re.fullmatch(rb"[1-9][0-9]*", raw), raw
    assert int(raw) == runproc.state("p1")["pid"]
    assert sorted(os.listdir(tmp_path)) == sorted(set(os.listdir(tmp_path)) - {".init.pid.tmp"})
    assert [name for name in os.listdir(tmp_path) if name.endswith(".tmp")] == []


def test_stdio_is_inherited(runproc: Runproc, make_bundle: MakeBundle) -> None:
    bundle = make_bundle(["/bin/sh", "-c", "cat; echo to-stderr >&2"])
    result = runproc("run", "io1", str(bundle), input="piped data\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "piped data\n"
    assert result.stderr == "to-stderr\n"


def test_create_stdio_reaches_program_after_create_exits(runproc: Runproc, make_bundle: MakeBundle) -> None:
    """As with containerd: create's pipes become the program's; EOF comes only when it exits."""
    bundle = make_bundle(["/bin/sh", "-c", "read line; echo got:$line"])
    create = subprocess.Popen(
        runproc.argv("create", "--bundle", str(bundle), "io2"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    # create exits while the init keeps our pipes; wait for the exit itself, not for EOF.
    assert create.wait(timeout=30) == 0
    runproc.ok("start", "io2")
    assert create.stdin is not None and create.stdout is not None
    create.stdin.write(b"hello\n")
    create.stdin.close()
    assert create.stdout.read() == b"got:hello\n"


def test_only_stdio_and_preserved_fds_are_inherited(runproc: Runproc, make_bundle: MakeBundle) -> None:
    script = "for fd in 3 4 5 6 7 8 9 10 11 12; do [ -e /proc/$$/fd/$fd ] && echo open:$fd; done; true"
    bundle = make_bundle(["/bin/sh", "-c", script], host=True)
    # runproc starts with fds 3, 4 and 5 open, as when a caller leaks them (containerd's shim does).
    with_fds = ("/bin/sh", "-c", 'exec "$@" 3</dev/null 4</dev/null 5</dev/null', "sh")
    result = runproc("run", "fd1", str(bundle), prefix=with_fds)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    # --preserve-fds 2 passes 3 and 4 through, and only them.
    result = runproc("run", "--preserve-fds", "2", "fd2", str(bundle), prefix=with_fds)
    assert result.stdout.split() == ["open:3", "open:4"]


@pytest.mark.parametrize("script, code", [("exit 0", 0), ("exit 3", 3), ("kill -9 $$", 137), ("kill -15 $$", 143)])
def test_run_exit_codes(runproc: Runproc, make_bundle: MakeBundle, script: str, code: int) -> None:
    result = runproc("run", "ex", str(make_bundle(["/bin/sh", "-c", script])))
    assert result.returncode == code
    # run deletes the container afterwards (no --keep).
    assert runproc("state", "ex").returncode == 1


def test_run_keep_and_detach(runproc: Runproc, make_bundle: MakeBundle) -> None:
    assert runproc("run", "--keep", "k1", str(make_bundle(["/bin/true"]))).returncode == 0
    assert runproc.status("k1") == "stopped"
    runproc.ok("run", "-d", "d1", str(make_bundle(["/bin/sleep", "30"])))
    assert runproc.status("d1") == "running"
    runproc.ok("delete", "--force", "d1")
    assert runproc("state", "d1").returncode == 1


def test_run_forwards_signals(runproc: Runproc, make_bundle: MakeBundle) -> None:
    bundle = make_bundle(["/bin/sh", "-c", "trap 'exit 42' TERM; echo ready; while true; do sleep 0.05; done"])
    proc = subprocess.Popen(runproc.argv("run", "fw", str(bundle)), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    proc.terminate()
    assert proc.wait(timeout=30) == 42


@pytest.mark.parametrize("signal_arg", ["9", "KILL", "SIGKILL", "sigkill", "kill"])
def test_kill_forms(runproc: Runproc, make_bundle: MakeBundle, signal_arg: str) -> None:
    runproc.ok("run", "-d", "k", str(make_bundle(["/bin/sleep", "30"])))
    pid = runproc.state("k")["pid"]
    runproc.ok("kill", "k", signal_arg)
    runproc.wait_status("k", "stopped")
    assert read_proc_state(pid) in (None, "Z")


def test_kill_defaults_to_sigterm(runproc: Runproc, make_bundle: MakeBundle, tmp_path: Path) -> None:
    out = tmp_path / "out"
    bundle = make_bundle(["/bin/sh", "-c", f"trap 'echo term > {out}; exit 0' TERM; while true; do sleep 0.05; done"],
                         host=True)
    runproc.ok("run", "-d", "t", str(bundle))
    time.sleep(0.2)
    runproc.ok("kill", "t")
    runproc.wait_status("t", "stopped")
    assert out.read_text() == "term\n"


def test_kill_created_container_delivers_signal(runproc: Runproc, make_bundle: MakeBundle) -> None:
    runproc.ok("create", "kc", str(make_bundle(["/bin/true"])))
    runproc.ok("kill", "kc", "TERM")
    runproc.wait_status("kc", "stopped")


def test_kill_stopped_says_not_running(runproc: Runproc, make_bundle: MakeBundle) -> None:
    assert runproc("run", "--keep", "ks", str(make_bundle(["/bin/true"]))).returncode == 0
    result = runproc("kill", "ks", "9")
    assert result.returncode == 1 and "container not running" in result.stderr
    # --all on a stopped container is what containerd sends after the init exits: it succeeds.
    runproc.ok("kill", "--all", "ks", "9")


def run_with_child(runproc: Runproc, make_bundle: MakeBundle, tmp_path: Path, container_id: str) -> int:
    """Run a detached container whose shell starts a background child; return the child's pid."""
    pids = tmp_path / f"{container_id}.pids"
    script = f"sleep 30 & echo $! > {pids}; sleep 30"
    runproc.ok("run", "-d", container_id, str(make_bundle(["/bin/sh", "-c", script], host=True)))
    deadline = time.monotonic() + 10
    while not pids.exists() or not pids.read_text().strip():
        assert time.monotonic() < deadline, f"{container_id} never started its child"
        time.sleep(0.02)
    return int(pids.read_text())


def test_kill_all_reaches_every_process(runproc: Runproc, make_bundle: MakeBundle, tmp_path: Path) -> None:
    child = run_with_child(runproc, make_bundle, tmp_path, "ka")
    runproc.ok("kill", "--all", "ka", "KILL")
    runproc.wait_status("ka", "stopped")
    deadline = time.monotonic() + 5
    while read_proc_state(child) not in (None, "Z"):
        assert time.monotonic() < deadline, "a process of the container survived kill --all"
        time.sleep(0.02)


def test_delete_rules(runproc: Runproc, make_bundle: MakeBundle) -> None:
    runproc.ok("run", "-d", "dr", str(make_bundle(["/bin/sleep", "30"])))
    pid = runproc.state("dr")["pid"]
    refused = runproc("delete", "dr")
    assert refused.returncode == 1 and "cannot delete container dr that is not stopped: running" in refused.stderr
    assert runproc.status("dr") == "running"
    runproc.ok("delete", "--force", "dr")
    assert read_proc_state(pid) in (None, "Z")
    gone = runproc("state", "dr")
    assert gone.returncode == 1 and "container does not exist" in gone.stderr
    assert runproc("delete", "dr").returncode == 1
    assert runproc("delete", "--force", "never-existed").returncode == 0
    assert runproc("delete", "-f", "never-existed").returncode == 0


def test_delete_created_kills_the_init(runproc: Runproc, make_bundle: MakeBundle, state_root: Path) -> None:
    runproc.ok("create", "dc", str(make_bundle(["/bin/true"])))
    pid = runproc.state("dc")["pid"]
    runproc.ok("delete", "dc")
    assert read_proc_state(pid) in (None, "Z")
    assert not (state_root / "dc").exists()


def test_state_self_heals_when_the_process_exits(runproc: Runproc, make_bundle: MakeBundle) -> None:
    runproc.ok("run", "-d", "sh1", str(make_bundle(["/bin/sleep", "0.3"])))
    assert runproc.status("sh1") == "running"
    runproc.wait_status("sh1", "stopped")


def test_state_guards_against_pid_reuse(runproc: Runproc, make_bundle: MakeBundle, state_root: Path) -> None:
    runproc.ok("run", "-d", "reuse", str(make_bundle(["/bin/sleep", "30"])))
    record_path = state_root / "reuse" / "state.json"
    record = json.loads(record_path.read_text())
    real_pid = record["pid"]
    # Point the record at a live process that is not ours (this test's own pid).
    record["pid"] = os.getpid()
    record_path.write_text(json.dumps(record))
    assert runproc.status("reuse") == "stopped"
    record["pid"] = real_pid
    record_path.write_text(json.dumps(record))
    assert runproc.status("reuse") == "running"


def test_zombie_init_is_stopped(runproc: Runproc, make_bundle: MakeBundle) -> None:
    """Our own child (via subreaper) that exited but is not reaped yet counts as stopped."""
    import ctypes

    libc = ctypes.CDLL(None)
    PR_SET_CHILD_SUBREAPER = 36
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    try:
        runproc.ok("run", "-d", "zomb", str(make_bundle(["/bin/true"])))
        pid = json.loads(runproc.ok("state", "zomb").stdout)["pid"] or None
        deadline = time.monotonic() + 10
        while pid and read_proc_state(pid) != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert runproc.status("zomb") == "stopped"
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass


def test_env_and_cwd_exactly_as_given(runproc: Runproc, make_bundle: MakeBundle) -> None:
    env = ["PATH=/bin", "ONE=1", "SPACES=a b  c"]
    bundle = make_bundle(["/bin/sh", "-c", "pwd; env | sort"], env=env, cwd="/tmp")
    result = runproc("run", "env1", str(bundle))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "/tmp"
    # sh adds PWD (and SHLVL in busybox) itself; runproc adds HOME (from the rootfs's
    # /etc/passwd) as runc does when it is missing. Nothing else.
    assert [line for line in lines[1:] if not line.startswith(("PWD=", "SHLVL="))] == sorted([*env, "HOME=/root"])


def test_home_and_umask(runproc: Runproc, make_bundle: MakeBundle) -> None:
    script = "echo $HOME; umask"
    given = runproc.ok("run", "h1", str(make_bundle(["/bin/sh", "-c", script], env=["PATH=/bin", "HOME=/x"])))
    assert given.stdout.split() == ["/x", "0022"]
    nobody = make_bundle(["/bin/sh", "-c", script], user={"uid": 65534, "gid": 65534})
    assert runproc.ok("run", "h2", str(nobody)).stdout.split() == ["/", "0022"]
    custom = make_bundle(["/bin/sh", "-c", script], user={"uid": 0, "gid": 0, "umask": 0o077})
    assert runproc.ok("run", "h3", str(custom)).stdout.split() == ["/root", "0077"]


def test_bare_name_resolved_through_process_path(runproc: Runproc, make_bundle: MakeBundle) -> None:
    result = runproc("run", "path1", str(make_bundle(["echo", "via PATH"])))
    assert result.returncode == 0 and result.stdout == "via PATH\n"


def test_spec_is_read_once_at_create(runproc: Runproc, make_bundle: MakeBundle) -> None:
    bundle = make_bundle(["/bin/echo", "original"])
    create = subprocess.Popen(runproc.argv("create", "once", str(bundle)), stdout=subprocess.PIPE,
                              stdin=subprocess.DEVNULL)
    assert create.wait(timeout=30) == 0
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["args"] = ["/bin/echo", "changed"]
    (bundle / "config.json").write_text(json.dumps(config))
    runproc.ok("start", "once")
    assert create.stdout is not None and create.stdout.read() == b"original\n"


def test_chroot_as_root(runproc: Runproc, make_bundle: MakeBundle, busybox_rootfs: Path) -> None:
    require_root()
    result = runproc("run", "ch", str(make_bundle(["/bin/ls", "/"])))
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == set(os.listdir(busybox_rootfs))


def test_relative_root_path_is_inside_the_bundle(runproc: Runproc, make_bundle: MakeBundle,
                                                 busybox_rootfs: Path) -> None:
    require_root()
    bundle = make_bundle(["/bin/cat", "/marker"], rootfs="rootfs")
    subprocess.run(["cp", "-a", str(busybox_rootfs), str(bundle / "rootfs")], check=True)
    (bundle / "rootfs" / "marker").write_text("inside the bundle's rootfs\n")
    assert runproc.ok("run", "rel", str(bundle)).stdout == "inside the bundle's rootfs\n"
    assert runproc.ok("--version").returncode == 0


def test_host_mode_both_ways(runproc: Runproc, make_bundle: MakeBundle) -> None:
    require_root()
    host_file = "/etc/debian_version"  # on the host, not in the busybox rootfs
    expected = Path(host_file).read_text()
    chrooted = runproc("run", "h0", str(make_bundle(["/bin/cat", host_file])))
    assert chrooted.returncode != 0 and "No such file" in chrooted.stderr
    by_annotation = runproc("run", "h1", str(make_bundle(["/bin/cat", host_file], host=True)))
    assert by_annotation.stdout == expected
    by_env = runproc("run", "h2", str(make_bundle(["/bin/cat", host_file])),
                     env={**os.environ, "RUNPROC_HOST": "1"})
    assert by_env.stdout == expected


def test_user_rlimits_and_no_new_privs(runproc: Runproc, make_bundle: MakeBundle) -> None:
    require_root()
    script = "id -u; id -g; id -G; ulimit -n; grep NoNewPrivs /proc/self/status"
    bundle = make_bundle(
        ["/bin/sh", "-c", script], host=True,
        user={"uid": 1234, "gid": 2345, "additionalGids": [3456, 4567]},
        rlimits=[{"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456}],
        noNewPrivileges=True,
    )
    result = runproc("run", "usr", str(bundle))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "1234" and lines[1] == "2345"
    assert set(lines[2].split()) == {"2345", "3456", "4567"}
    assert lines[3] == "123"
    assert lines[4].split() == ["NoNewPrivs:", "1"]


def test_no_new_privs_off_when_not_asked(runproc: Runproc, make_bundle: MakeBundle) -> None:
    bundle = make_bundle(["/bin/grep", "NoNewPrivs", "/proc/self/status"], host=True, noNewPrivileges=False)
    assert runproc.ok("run", "nnp0", str(bundle)).stdout.split() == ["NoNewPrivs:", "0"]


def test_unprivileged_user(runproc_bin: Path, make_bundle: MakeBundle, world_tmp: Path) -> None:
    """As nobody: no chroot, no rootfs needed, state in a directory of its own."""
    require_root()  # to become nobody
    state = world_tmp / "nobody-state"
    bundle = world_tmp / "bundle"
    bundle.mkdir()
    config = {
        "ociVersion": "1.0.2",
        "process": {"args": ["sh", "-c", "id -u; cat /etc/debian_version"], "cwd": "/",
                    "env": ["PATH=/usr/bin:/bin"]},
        "root": {"path": "rootfs-that-does-not-exist"},
    }
    (bundle / "config.json").write_text(json.dumps(config))
    nobody = Runproc(runproc_bin, state, as_user=NOBODY)  # a copy nobody can run, if need be
    pid_file = world_tmp / "pid"
    nobody.ok("create", "--pid-file", str(pid_file), "u1", str(bundle))
    assert pid_file.stat().st_uid == NOBODY and state.stat().st_uid == NOBODY
    assert nobody.status("u1") == "created"
    nobody.ok("start", "u1")
    nobody.wait_status("u1", "stopped")
    nobody.ok("delete", "u1")
    result = nobody("run", "u2", str(bundle))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{NOBODY}\n{Path('/etc/debian_version').read_text()}"


@pytest.mark.parametrize("attempt", range(3))
def test_concurrent_creates_of_one_id(runproc: Runproc, make_bundle: MakeBundle, state_root: Path,
                                      attempt: int) -> None:
    bundle = make_bundle(["/bin/true"])
    results: list[subprocess.CompletedProcess[str]] = []

    def create() -> None:
        results.append(runproc("create", "race", str(bundle)))

    threads = [threading.Thread(target=create) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    codes = sorted(result.returncode for result in results)
    assert codes == [0, 1, 1, 1, 1, 1], [r.stderr for r in results]
    assert all("already exists" in r.stderr for r in results if r.returncode), [r.stderr for r in results]
    assert runproc.status("race") == "created"
    assert sorted(os.listdir(state_root)) == ["race"]


def test_concurrent_commands_are_serialised(runproc: Runproc, make_bundle: MakeBundle) -> None:
    runproc.ok("create", "ser", str(make_bundle(["/bin/sleep", "30"])))
    results: list[subprocess.CompletedProcess[str]] = []

    def start() -> None:
        results.append(runproc("start", "ser"))

    threads = [threading.Thread(target=start) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.returncode for r in results) == [0, 1, 1]
    assert runproc.status("ser") == "running"


def test_ps_lists_the_container_processes(runproc: Runproc, make_bundle: MakeBundle, tmp_path: Path) -> None:
    """What `ctr task ps` runs: `ps --format json ID`, a JSON array of host pids."""
    child = run_with_child(runproc, make_bundle, tmp_path, "ps1")
    init = runproc.state("ps1")["pid"]
    listed = json.loads(runproc.ok("ps", "--format", "json", "ps1").stdout)
    assert {init, child} <= set(listed)
    # Every listed process is in the container's session (sh may fork for its last command too).
    assert all(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3] == str(init) for pid in listed)
    table = runproc.ok("ps", "ps1").stdout.splitlines()  # runc's: ps -ef, filtered
    assert table[0].split() == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert sorted(int(line.split()[1]) for line in table[1:]) == sorted(listed)
    runproc.ok("kill", "--all", "ps1", "KILL")
    runproc.wait_status("ps1", "stopped")
    deadline = time.monotonic() + 5
    while runproc.ok("ps", "-f", "json", "ps1").stdout != "null\n":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    bad = runproc("ps", "--format", "xml", "ps1")
    assert bad.returncode == 1 and "invalid format option 'xml'" in bad.stderr
