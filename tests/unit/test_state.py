"""The state store: ids, records, atomic writes, status derivation, locking."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from runproc.errors import ContainerNotFound, RunprocError
from runproc.fsutil import write_file_atomic
from runproc.kernel import process_start_time
from runproc.state import ContainerRecord, StateStore, rfc3339_nano, validate_id


@pytest.mark.parametrize("good", ["a", "abc-123", "A_b.c+d,e", "x" * 200, "..."])
def test_valid_ids(good: str) -> None:
    validate_id(good)


@pytest.mark.parametrize("bad, message", [("", "cannot be empty"), ("a/b", "invalid"), ("..", "invalid"),
                                          (".", "invalid"), ("a b", "invalid"), ("a:b", "invalid"), ("é", "invalid")])
def test_invalid_ids(bad: str, message: str) -> None:
    with pytest.raises(RunprocError, match=message):
        validate_id(bad)


def test_rfc3339_nano_matches_go() -> None:
    assert rfc3339_nano(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456789Z"
    assert rfc3339_nano(1_700_000_000_120_000_000) == "2023-11-14T22:13:20.12Z"
    assert rfc3339_nano(1_700_000_000_000_000_000) == "2023-11-14T22:13:20Z"


def test_write_file_atomic_leaves_no_temp_and_follows_no_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "pid").symlink_to(victim)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        write_file_atomic(fd, "pid", b"123", 0o644)
        write_file_atomic(fd, "pid", b"4567", 0o644)
    finally:
        os.close(fd)
    assert (tmp_path / "pid").read_bytes() == b"4567" and not (tmp_path / "pid").is_symlink()
    assert victim.read_text() == "precious"
    assert sorted(os.listdir(tmp_path)) == ["pid", "victim"]
    assert (tmp_path / "pid").stat().st_mode & 0o777 == 0o644 & ~current_umask()


def test_write_file_atomic_without_proc_uses_an_exclusive_temp(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def no_proc(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(os, "link", no_proc)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    # A planted temp of the old fixed name must not matter either.
    (tmp_path / f".pid.{os.getpid()}.tmp").symlink_to(victim)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        write_file_atomic(fd, "pid", b"42")
    finally:
        os.close(fd)
    assert (tmp_path / "pid").read_bytes() == b"42" and victim.read_text() == "precious"
    assert sorted(os.listdir(tmp_path)) == sorted(["pid", "victim", f".pid.{os.getpid()}.tmp"])


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_record(store: StateStore, container_id: str, pid: int, start_time: int) -> ContainerRecord:
    with store.reserve(container_id) as locked:
        record = ContainerRecord(container_id, locked.directory, locked.fd)
        record.pid, record.start_time = pid, start_time
        record.bundle, record.rootfs, record.created = "/b", "/b/rootfs", rfc3339_nano(0)
        store.save(locked, record)
    return record


def load(store: StateStore, container_id: str) -> ContainerRecord:
    with store.lock(container_id) as locked:
        record = store.load(locked)
        record.status()  # usable while locked
    return record


def test_record_round_trip_and_status(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path / "root"))
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        record = make_record(store, "c1", sleeper.pid, process_start_time(sleeper.pid))
        assert oct(os.stat(tmp_path / "root" / "c1").st_mode & 0o777) == "0o700"
        with store.lock("c1") as locked:
            loaded = store.load(locked)
            assert loaded.to_json() == record.to_json()
            assert loaded.status() == "created"  # alive, fifo made by reserve
            (tmp_path / "root" / "c1" / "exec.fifo").unlink()
            assert loaded.status() == "running"  # start removed the fifo
            # Same pid, other start time: the pid was reused, so our container is gone.
            loaded.start_time += 1
            assert loaded.status() == "stopped"
            assert loaded.oci_state()["pid"] == 0
    finally:
        sleeper.kill()
        sleeper.wait()
    with store.lock("c1") as locked:
        assert store.load(locked).status() == "stopped"


def test_zombie_counts_as_stopped(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path / "root"))
    child = subprocess.Popen(["true"])
    make_record(store, "z", child.pid, process_start_time(child.pid))
    # Exited but not reaped: a zombie, which must count as stopped.
    for _ in range(500):
        if open(f"/proc/{child.pid}/stat").read().split(")")[1].split()[0] == "Z":
            break
        time.sleep(0.01)
    else:
        pytest.fail("child never became a zombie")
    with store.lock("z") as locked:
        assert store.load(locked).status() == "stopped"
    child.wait()


def test_reserve_leaves_no_staging_dirs(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path / "root"))
    make_record(store, "one", 1, 1)
    with pytest.raises(RunprocError):
        store.reserve("one")
    assert sorted(os.listdir(tmp_path / "root")) == ["one"]
    assert sorted(os.listdir(tmp_path / "root" / "one")) == ["exec.fifo", "state.json"]


def test_duplicate_reserve_fails_and_abandoned_dir_is_reused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store = StateStore(str(root))
    make_record(store, "dup", 1, 1)
    with pytest.raises(RunprocError, match="already exists"):
        store.reserve("dup")
    # A directory without a record and without a lock holder: a create that died half-way.
    (root / "half").mkdir(mode=0o700)
    with store.reserve("half") as locked:
        assert locked.directory == str(root / "half")


def test_remove_frees_the_name_at_once(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store = StateStore(str(root))
    make_record(store, "gone", 1, 1)
    with store.lock("gone") as locked:
        store.remove(locked)
        assert os.listdir(root) == []
    with pytest.raises(ContainerNotFound):
        store.lock("gone")


def test_stale_staging_entries_are_swept(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store = StateStore(str(root))
    make_record(store, "keep", 1, 1)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (root / f"@new-{dead.pid}-1-abcd").mkdir()
    (root / f"@new-{dead.pid}-1-abcd" / "exec.fifo").touch()
    (root / f"@del-{dead.pid}-1-abcd").mkdir()
    stat_fields = Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()
    alive = root / f"@new-{os.getpid()}-{stat_fields[19]}-abcd"  # our own: we live
    alive.mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "file").touch()
    (root / f"@new-{dead.pid}-2-abcd").symlink_to(victim)  # removed itself, never followed
    store.sweep()
    assert sorted(os.listdir(root)) == sorted(["keep", alive.name])
    assert (victim / "file").exists()


def test_missing_container(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    with pytest.raises(ContainerNotFound, match="container does not exist"):
        store.lock("nope")
    (tmp_path / "empty").mkdir(mode=0o700)
    with pytest.raises(ContainerNotFound):
        load(store, "empty")
    # A root that does not exist is not made by commands that only look.
    with pytest.raises(ContainerNotFound):
        StateStore(str(tmp_path / "missing")).lock("x")
    assert not (tmp_path / "missing").exists()


def test_corrupt_record_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir(mode=0o700)
    (tmp_path / "bad" / "state.json").write_text("{")
    os.chmod(tmp_path / "bad" / "state.json", 0o600)
    with pytest.raises(RunprocError, match=re.escape(f"corrupt state record {tmp_path}/bad/state.json")):
        load(StateStore(str(tmp_path)), "bad")


@pytest.mark.parametrize("data", ['{"id": "other", "pid": 1, "start_time": 1, "bundle": "", "rootfs": "", '
                                  '"created": "", "annotations": {}}',
                                  '{"id": "bad", "pid": "1", "start_time": 1}', '[]', '"x"'])
def test_record_fields_are_checked(tmp_path: Path, data: str) -> None:
    (tmp_path / "bad").mkdir(mode=0o700)
    (tmp_path / "bad" / "state.json").write_text(data)
    os.chmod(tmp_path / "bad" / "state.json", 0o600)
    with pytest.raises(RunprocError, match="corrupt state record"):
        load(StateStore(str(tmp_path)), "bad")


def test_untrusted_entries_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store = StateStore(str(root))
    make_record(store, "mode", 1, 1)
    os.chmod(root / "mode" / "state.json", 0o666)
    with pytest.raises(RunprocError, match=r"state record .*/mode/state.json is open to others \(mode 0666\)"):
        load(store, "mode")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (root / "link").symlink_to(elsewhere)
    with pytest.raises(RunprocError, match=r"container directory .*/link is not a directory: refused"):
        store.lock("link")
    (root / "open").mkdir(mode=0o755)
    os.chmod(root / "open", 0o755)
    with pytest.raises(RunprocError, match=r"container directory .*/open is open to others"):
        store.lock("open")


@pytest.mark.parametrize("mode, message", [(0o777, "is writable by others"), (0o775, "is writable by others")])
def test_root_writable_by_others_is_refused(tmp_path: Path, mode: int, message: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    os.chmod(root, mode)
    with pytest.raises(RunprocError, match=f"state directory {root} {message}"):
        StateStore(str(root)).lock("x")
    with pytest.raises(RunprocError, match=message):
        StateStore(str(root)).reserve("x")
    assert os.listdir(root) == []


def test_root_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a directory away")
    root = tmp_path / "root"
    root.mkdir(mode=0o700)
    os.chown(root, 65534, 65534)
    with pytest.raises(RunprocError, match=f"state directory {root} is owned by uid 65534, not by uid 0 or root"):
        StateStore(str(root)).reserve("x")
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    os.chown(link, 65534, 65534, follow_symlinks=False)
    with pytest.raises(RunprocError, match=f"state directory {link} is a symbolic link owned by uid 65534"):
        StateStore(str(link)).lock("x")
