"""The state store: ids, records, atomic writes, status derivation, locking."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from runproc.errors import ContainerNotFound, RunprocError
from runproc.fsutil import write_atomic
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


def test_write_atomic_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "pid"
    write_atomic(str(target), b"123", 0o644)
    write_atomic(str(target), b"4567", 0o644)
    assert target.read_bytes() == b"4567"
    assert os.listdir(tmp_path) == ["pid"]
    assert target.stat().st_mode & 0o777 == 0o644


def make_record(store: StateStore, container_id: str, pid: int, start_time: int) -> ContainerRecord:
    with store.reserve(container_id) as locked:
        record = ContainerRecord(container_id, locked.directory)
        record.pid, record.start_time = pid, start_time
        record.bundle, record.rootfs, record.created = "/b", "/b/rootfs", rfc3339_nano(0)
        store.save(record)
    return record


def test_record_round_trip_and_status(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path / "root"))
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        record = make_record(store, "c1", sleeper.pid, process_start_time(sleeper.pid))
        assert oct(os.stat(tmp_path / "root" / "c1").st_mode & 0o777) == "0o700"
        loaded = store.load("c1")
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
    assert store.load("c1").status() == "stopped"


def test_zombie_counts_as_stopped(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    child = subprocess.Popen(["true"])
    record = make_record(store, "z", child.pid, process_start_time(child.pid))
    # Exited but not reaped: a zombie, which must count as stopped.
    for _ in range(500):
        if open(f"/proc/{child.pid}/stat").read().split(")")[1].split()[0] == "Z":
            break
        time.sleep(0.01)
    else:
        pytest.fail("child never became a zombie")
    assert record.status() == "stopped"
    child.wait()


def test_reserve_leaves_no_staging_dirs(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    make_record(store, "one", 1, 1)
    with pytest.raises(RunprocError):
        store.reserve("one")
    assert sorted(os.listdir(tmp_path)) == ["one"]
    assert sorted(os.listdir(tmp_path / "one")) == ["exec.fifo", "state.json"]


def test_duplicate_reserve_fails_and_abandoned_dir_is_reused(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    make_record(store, "dup", 1, 1)
    with pytest.raises(RunprocError, match="already exists"):
        store.reserve("dup")
    # A directory without a record and without a lock holder: a create that died half-way.
    (tmp_path / "half").mkdir()
    with store.reserve("half") as locked:
        assert locked.directory == str(tmp_path / "half")


def test_missing_container(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    with pytest.raises(ContainerNotFound, match="container does not exist"):
        store.lock("nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ContainerNotFound):
        store.load("empty")


def test_corrupt_record_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "state.json").write_text("{")
    with pytest.raises(RunprocError, match=re.escape(f"corrupt state record {tmp_path}/bad/state.json")):
        StateStore(str(tmp_path)).load("bad")
