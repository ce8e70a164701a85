"""Hundreds of lifecycles at once, on colliding and distinct ids: only runc's outcomes, nothing left.

Random interleavings of create/start/kill/delete/state/run from several
threads, reproducible from a seed (RUNPROC_STRESS_SEED; every failure
message prints it). Each result must be a success or one of runc's
expected errors; a foreground run must return its program's exit code
unless a kill or delete of its id overlapped it; afterwards `delete --force`
leaves no entry, temporary file or process.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import uuid
from pathlib import Path

import pytest
from chaos_testlib import (
    EXPECTED_ERRORS,
    TAG_ENV,
    exception_text,
    kill_tagged,
    leftovers,
    wait_for_no_processes,
)
from runproc_testlib import MakeBundle, Runproc

WORKERS = 8
OPS_PER_WORKER = 150
# Every worker uses these: collisions all the time. Unique to this run: a container's default
# cgroup is named by its id alone (as runc's), so another run's c0 would be ours too.
RUN_TAG = uuid.uuid4().hex[:8]
SHARED_IDS = [f"c{RUN_TAG}-{n}" for n in range(5)]
EXIT_CODE = 7  # what the program exits with when nobody signals it
KILLING_OPS = ("kill", "delete", "delete-force")


class Op:
    __slots__ = ("worker", "name", "container", "argv", "start", "end", "code", "stdout", "stderr")

    def __init__(self, worker: int, name: str, container: str, argv: list[str]) -> None:
        self.worker, self.name, self.container, self.argv = worker, name, container, argv
        self.start = self.end = 0.0
        self.code = 0
        self.stdout = self.stderr = ""

    def __repr__(self) -> str:
        return f"<worker {self.worker}: {' '.join(self.argv)} -> {self.code} {self.stderr.strip()!r}>"


def plan_ops(rng: random.Random, worker: int, bundle: Path, pid_dir: Path) -> list[Op]:
    ops = []
    for n in range(OPS_PER_WORKER):
        container = rng.choice(SHARED_IDS) if rng.random() < 0.8 else f"w{RUN_TAG}-{worker}-{n}"
        name = rng.choice(["create", "create", "start", "start", "kill", "delete", "delete-force", "state",
                           "run", "run-detach"])
        argv = {
            "create": ["create", "--pid-file", str(pid_dir / f"{container}.{worker}.pid"), container, str(bundle)],
            "start": ["start", container],
            "kill": ["kill", *rng.choice([[], ["--all"]]), container, rng.choice(["TERM", "KILL"])],
            "delete": ["delete", container],
            "delete-force": ["delete", "--force", container],
            "state": ["state", container],
            "run": ["run", container, str(bundle)],
            "run-detach": ["run", "--detach", container, str(bundle)],
        }[name]
        ops.append(Op(worker, name, container, argv))
    return ops


def check(op: Op, ops: list[Op], seed: int) -> None:
    where = f"seed {seed}: {op!r}"
    assert exception_text(op.stderr) is None, where
    if op.name == "run" and op.code == EXIT_CODE:
        return
    if op.name == "run" and op.code in (128 + 9, 128 + 15):
        # Killed: only by a kill or delete of its id that overlapped it.
        assert any(other.container == op.container and other.name in KILLING_OPS and other.start < op.end
                   and other.end > op.start for other in ops), f"{where}: exit code lost"
        return
    if op.code == 0:
        assert op.name != "run", f"{where}: exit code lost"
        if op.name == "state":
            assert json.loads(op.stdout)["status"] in ("created", "running", "stopped"), where
        return
    assert op.code == 1, f"{where}: unexpected exit code"
    lines = op.stderr.splitlines()
    assert len(lines) == 1 and any(expected in lines[0] for expected in EXPECTED_ERRORS), where


def test_random_interleavings(runproc: Runproc, make_bundle: MakeBundle, state_root: Path, tmp_path: Path) -> None:
    seed = int(os.environ.get("RUNPROC_STRESS_SEED") or random.randrange(1 << 32))
    tag = uuid.uuid4().hex
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    # A short-lived program, so that runs, kills and deletes meet it running and stopped.
    bundle = make_bundle(["/bin/sh", "-c", f"sleep 0.05; exit {EXIT_CODE}"],
                         env=["PATH=/bin", f"{TAG_ENV}={tag}"])
    env = {**os.environ, TAG_ENV: tag}
    plans = [plan_ops(random.Random(seed * 1000 + worker), worker, bundle, pid_dir) for worker in range(WORKERS)]
    done: list[Op] = []
    lock = threading.Lock()

    def work(plan: list[Op]) -> None:
        for op in plan:
            op.start = time.monotonic()
            result = runproc(*op.argv, env=env, timeout=60)
            op.end = time.monotonic()
            op.code, op.stdout, op.stderr = result.returncode, result.stdout, result.stderr
            with lock:
                done.append(op)

    threads = [threading.Thread(target=work, args=(plan,)) for plan in plans]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(done) == WORKERS * OPS_PER_WORKER, f"seed {seed}: a worker died"
        for op in done:
            check(op, done, seed)
        ids = {op.container for op in done}
        for container in sorted(ids):
            cleanup = runproc("delete", "--force", container, env=env)
            assert cleanup.returncode == 0, f"seed {seed}: delete --force {container}: {cleanup.stderr}"
        assert os.listdir(state_root) == [], f"seed {seed}: entries left"
        assert leftovers(state_root, pid_dir, bundle) == [], f"seed {seed}: temporary files left"
        assert wait_for_no_processes(tag) == [], f"seed {seed}: processes left"
    finally:
        kill_tagged(tag)


@pytest.mark.parametrize("attempt", range(3))
def test_create_and_delete_race_on_one_id(runproc: Runproc, make_bundle: MakeBundle, state_root: Path,
                                          attempt: int) -> None:
    """The probe's case: delete emptied the directory and rmdir'ed it by name; a create renamed over it."""
    bundle = make_bundle(["/bin/true"])
    results: list[tuple[str, int, str]] = []

    def loop(command: list[str]) -> None:
        for _ in range(15):
            result = runproc(*command)
            results.append((command[0], result.returncode, result.stderr))

    threads = [threading.Thread(target=loop, args=(argv,)) for argv in
               (["create", "race", str(bundle)], ["delete", "--force", "race"]) * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for command, code, stderr in results:
        assert exception_text(stderr) is None, (command, stderr)
        assert code == 0 or (command == "create" and "already exists" in stderr), (command, code, stderr)
    runproc.ok("delete", "--force", "race")
    assert os.listdir(state_root) == []
