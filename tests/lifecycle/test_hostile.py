"""An unprivileged neighbour (nobody, 65534) prepares files; root's runproc must refuse them or stay harmless.

Each case is an attack that worked before runproc checked what it trusts: a
state root, a pid file's directory or a log path that nobody can write to.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from runproc_testlib import NOBODY, MakeBundle, Runproc, require_root

pytestmark = pytest.mark.root


def as_nobody(script: str) -> None:
    """Run a shell script as nobody (the neighbour preparing the trap)."""
    subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "sh", "-euc", script],
                   check=True, timeout=30)


def plant_links_for_next_pids(directory: Path, pattern: str, target: Path, count: int = 400) -> None:
    """As nobody, one process: symlinks named `pattern` % pid, for the pids the next processes will likely get."""
    last = int(Path("/proc/sys/kernel/ns_last_pid").read_text())
    code = (f"import os\nfor pid in range({last + 1}, {last + 1 + count}):\n"
            f"    os.symlink({str(target)!r}, os.path.join({str(directory)!r}, {pattern!r} % pid))")
    subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "/usr/bin/python3", "-c",
                    code], check=True, timeout=30)


@pytest.fixture
def evil(world_tmp: Path) -> Path:
    """A directory of nobody's."""
    require_root()
    as_nobody(f"mkdir -m 755 {world_tmp}/evil")
    return world_tmp / "evil"


@pytest.fixture
def victim_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory of root's with a file nobody must not be able to make runproc remove."""
    victim = tmp_path / "victim-dir"
    victim.mkdir()
    (victim / "precious").write_text("root's\n")
    yield victim
    assert (victim / "precious").read_text() == "root's\n", "runproc emptied a directory it was lured into"


@pytest.fixture
def victim_file(tmp_path: Path) -> Iterator[Path]:
    """A root-owned 0600 file nobody must not be able to make runproc write."""
    victim = tmp_path / "victim-file"
    victim.write_text("secret\n")
    victim.chmod(0o600)
    yield victim
    assert victim.read_text() == "secret\n", "runproc wrote to a file it was lured into"


@pytest.fixture
def evil_runproc(runproc_bin: Path, evil: Path) -> Iterator[Runproc]:
    """Root's runproc with its state root where nobody put it; whatever it made is cleaned up after."""
    tool = Runproc(runproc_bin, evil / "root")
    yield tool
    for entry in (evil / "root").iterdir() if (evil / "root").is_dir() else []:
        if entry.is_dir() and not entry.is_symlink() and not entry.name.startswith("@"):
            tool("delete", "--force", entry.name)


def assert_refused(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 1, result
    assert len(result.stderr.splitlines()) == 1 and "internal error" not in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def test_state_root_made_by_nobody_is_refused(evil_runproc: Runproc, evil: Path, make_bundle: MakeBundle) -> None:
    as_nobody(f"mkdir -m 700 {evil}/root")
    result = evil_runproc("create", "c1", str(make_bundle(["/bin/true"])))
    assert_refused(result, f"state directory {evil}/root is owned by uid {NOBODY}", "refused")
    assert os.listdir(evil / "root") == []


def test_planted_staging_symlink_empties_nothing(evil_runproc: Runproc, evil: Path, victim_dir: Path,
                                                 make_bundle: MakeBundle) -> None:
    """A create's staging directory used to be `@new-<pid>`, removed first in case it was left over."""
    as_nobody(f"mkdir -m 755 {evil}/root")
    plant_links_for_next_pids(evil / "root", "@new-%d", victim_dir)
    result = evil_runproc("create", "c1", str(make_bundle(["/bin/true"])))
    assert_refused(result, f"state directory {evil}/root is owned by uid {NOBODY}")


def test_symlinked_container_directory_is_not_emptied(evil_runproc: Runproc, evil: Path, victim_dir: Path) -> None:
    as_nobody(f"mkdir -m 755 {evil}/root; ln -s {victim_dir} {evil}/root/c1")
    for argv in (["delete", "--force", "c1"], ["delete", "c1"], ["state", "c1"], ["kill", "c1", "KILL"]):
        assert_refused(evil_runproc(*argv), f"state directory {evil}/root", "refused")


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """A root process in a session of its own, with a child: what a forged record names."""
    process = subprocess.Popen(["setsid", "sh", "-c", "sleep 300 & wait"])
    yield process
    alive = process.poll() is None
    process.kill()
    process.wait()
    subprocess.run(["pkill", "-KILL", "-s", str(process.pid)], check=False)
    assert alive, "runproc signalled a process because a record it did not write named it"


def forged_record(container_id: str, pid: int) -> str:
    start = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    return json.dumps({"id": container_id, "pid": pid, "start_time": start, "bundle": "/", "rootfs": "/",
                       "created": "2026-01-01T00:00:00Z", "annotations": {}, "owner": ""})


def test_forged_record_signals_nothing(evil_runproc: Runproc, evil: Path,
                                       bystander: subprocess.Popen[bytes]) -> None:
    record = shlex.quote(forged_record("c1", bystander.pid))
    as_nobody(f"mkdir -m 755 {evil}/root; mkdir -m 700 {evil}/root/c1; echo {record} > {evil}/root/c1/state.json")
    for argv in (["delete", "--force", "c1"], ["kill", "--all", "c1", "KILL"], ["kill", "c1", "KILL"]):
        assert_refused(evil_runproc(*argv), f"state directory {evil}/root is owned by uid {NOBODY}")


def test_forged_record_in_a_root_owned_root_signals_nothing(runproc: Runproc, state_root: Path,
                                                            bystander: subprocess.Popen[bytes]) -> None:
    """A record runproc did not write (not ours, or open to others) is never acted on."""
    require_root()
    (state_root / "c1").mkdir(mode=0o700)
    record = state_root / "c1" / "state.json"
    record.write_text(forged_record("c1", bystander.pid))
    os.chown(record, NOBODY, NOBODY)
    assert_refused(runproc("kill", "c1", "KILL"), f"state record {record} is owned by uid {NOBODY}")
    os.chown(record, 0, 0)
    record.chmod(0o666)
    assert_refused(runproc("kill", "--all", "c1", "KILL"), f"state record {record} is open to others")
    # --force removes what it cannot trust, and signals nothing on its word.
    runproc.ok("delete", "--force", "c1")
    assert not (state_root / "c1").exists()


def test_planted_pid_temp_symlink_overwrites_nothing(runproc: Runproc, evil: Path, victim_file: Path,
                                                    make_bundle: MakeBundle) -> None:
    """The pid file's temp used to be `.<name>.<pid>.tmp`, opened O_CREAT|O_TRUNC and followed."""
    plant_links_for_next_pids(evil, ".pid.%d.tmp", victim_file)
    planted = set(os.listdir(evil))
    runproc.ok("create", "--pid-file", str(evil / "pid"), "c1", str(make_bundle(["/bin/true"])))
    assert (evil / "pid").read_text() == str(runproc.state("c1")["pid"])
    assert set(os.listdir(evil)) == planted | {"pid"}  # no temp of ours left


def test_planted_pid_file_symlink_is_replaced_not_followed(runproc: Runproc, evil: Path, victim_file: Path,
                                                          make_bundle: MakeBundle) -> None:
    as_nobody(f"ln -s {victim_file} {evil}/pid")
    runproc.ok("create", "--pid-file", str(evil / "pid"), "c1", str(make_bundle(["/bin/true"])))
    assert not (evil / "pid").is_symlink()
    assert (evil / "pid").read_text() == str(runproc.state("c1")["pid"])


def test_log_symlink_appends_nothing(runproc: Runproc, evil: Path, victim_file: Path) -> None:
    as_nobody(f"ln -s {victim_file} {evil}/log.json")
    result = runproc("state", "ghost", global_args=("--log", str(evil / "log.json"), "--log-format", "json"))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "container does not exist",
        f"runproc: cannot write log {evil}/log.json: it is a symbolic link in a directory others can write to: "
        "refused",
    ]


def test_log_hard_link_appends_nothing(runproc: Runproc, evil: Path, tmp_path: Path) -> None:
    """A hard link planted as the log (protected_hardlinks stops only links to others' files)."""
    target = evil / "mine"
    as_nobody(f"echo nobody > {target}; ln {target} {evil}/log.json")
    result = runproc("state", "ghost", global_args=("--log", str(evil / "log.json")))
    assert result.returncode == 1 and "it is a file with other hard links: refused" in result.stderr
    assert target.read_text() == "nobody\n"


def test_legitimate_log_paths_still_work(runproc: Runproc, tmp_path: Path) -> None:
    """containerd's `--log <bundle>/log.json`, and a link in a directory only root can change."""
    log = tmp_path / "log.json"
    assert runproc("state", "ghost", global_args=("--log", str(log), "--log-format", "json")).returncode == 1
    assert json.loads(log.read_text())["msg"] == "container does not exist"
    (tmp_path / "link.json").symlink_to(log)
    assert runproc("state", "ghost", global_args=("--log", str(tmp_path / "link.json"))).returncode == 1
    assert len(log.read_text().splitlines()) == 2
