"""End-to-end cgroups: what containerd's shim does with the runtime's cgroups (limits, metrics, OOM, pause).

The shim reads the container's cgroup itself (metrics, OOM events) after
finding it through /proc/<init pid>/cgroup, and runs the runtime's pause,
resume, ps and kill --all. The same tests pass with RUNPROC_BIN=/usr/sbin/runc.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from test_ctr import assert_gone, exit_code_from_delete

if TYPE_CHECKING:
    from conftest import Ctr

NewId = Callable[[str], str]
CGROUP = Path("/sys/fs/cgroup")
V2 = (CGROUP / "cgroup.controllers").exists()
# Allocates (and touches) 128 MiB at once: far over the limits below.
HOG = ("/bin/sh", "-c", "exec /bin/dd if=/dev/zero of=/dev/null bs=128M count=1")


def cgroup_dirs(pid: int) -> list[Path]:
    """The container's directories in every hierarchy, from the init's /proc/PID/cgroup."""
    dirs = []
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if V2:
            dirs.append(CGROUP / path.lstrip("/"))
            continue
        name = {"": "unified", "name=systemd": "systemd"}.get(controllers, controllers)
        dirs.append(CGROUP / name / path.lstrip("/"))
    return dirs


def controller_dir(pid: int, controller: str) -> Path:
    if V2:
        return cgroup_dirs(pid)[0]
    return next(d for d in cgroup_dirs(pid) if d.relative_to(CGROUP).parts[0] == controller)


def stop_and_remove(ctr: Ctr, cid: str, dirs: list[Path]) -> None:
    assert ctr("task", "kill", "--signal", "KILL", cid).returncode == 0
    ctr.wait_status(cid, "STOPPED")
    assert ctr("task", "delete", cid).returncode == 0
    assert ctr("container", "delete", cid).returncode == 0
    assert_gone(ctr, cid)
    assert [d for d in dirs if d.exists()] == [], "cgroup directories left"


def test_memory_limit_overrun_exits_137_with_an_oom_event(ctr: Ctr, new_id: NewId) -> None:
    cid = new_id("oom")
    events = subprocess.Popen(ctr.argv("events"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(events.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        proc = ctr.run(cid, *HOG, opts=["--memory-limit", str(32 << 20)])
        assert proc.returncode == 137, ctr.describe(proc)
        deadline = time.monotonic() + 10
        while not any("/tasks/oom" in line and cid in line for line in lines):
            assert time.monotonic() < deadline, f"no /tasks/oom event from the shim: {lines}"
            time.sleep(0.05)
    finally:
        events.kill()
        events.wait()
    assert_gone(ctr, cid)


def test_limits_and_metrics(ctr: Ctr, new_id: NewId) -> None:
    cid = new_id("metrics")
    proc = ctr.run_detached(cid, "/bin/sleep", "1000", opts=[
        "--memory-limit", str(64 << 20), "--cpu-quota", "20000", "--cpu-period", "100000", "--cpu-shares", "512"])
    assert proc.returncode == 0, ctr.describe(proc)
    pid, _ = ctr.tasks()[cid]
    dirs = cgroup_dirs(pid)
    if V2:
        assert (dirs[0] / "memory.max").read_text().strip() == str(64 << 20)
        assert (dirs[0] / "cpu.max").read_text().split() == ["20000", "100000"]
    else:
        assert (controller_dir(pid, "memory") / "memory.limit_in_bytes").read_text().strip() == str(64 << 20)
        assert (controller_dir(pid, "cpu") / "cpu.cfs_quota_us").read_text().strip() == "20000"
        assert (controller_dir(pid, "cpu") / "cpu.shares").read_text().strip() == "512"
    metrics = ctr("task", "metrics", cid)
    assert metrics.returncode == 0, ctr.describe(metrics)
    rows = dict(line.split(None, 1) for line in metrics.stdout.splitlines()[1:] if len(line.split(None, 1)) == 2)
    limit_key = "memory.limit" if V2 else "memory.limit_in_bytes"
    assert rows.get(limit_key, "").strip() == str(64 << 20), metrics.stdout
    assert int(rows.get("memory.usage" if V2 else "memory.usage_in_bytes", "0")) > 0, metrics.stdout
    stop_and_remove(ctr, cid, dirs)


def test_pause_resume_and_kill_while_paused(ctr: Ctr, new_id: NewId) -> None:
    cid = new_id("pause")
    proc = ctr.run_detached(cid, "/bin/sh", "-c", "while :; do /bin/sleep 0.05; done")
    assert proc.returncode == 0, ctr.describe(proc)
    pid, _ = ctr.tasks()[cid]
    dirs = cgroup_dirs(pid)
    assert ctr("task", "pause", cid).returncode == 0
    ctr.wait_status(cid, "PAUSED")
    state = (controller_dir(pid, "freezer") / ("cgroup.freeze" if V2 else "freezer.state")).read_text().strip()
    assert state == ("1" if V2 else "FROZEN")
    assert ctr("task", "resume", cid).returncode == 0
    ctr.wait_status(cid, "RUNNING")
    assert ctr("task", "pause", cid).returncode == 0
    ctr.wait_status(cid, "PAUSED")
    kill = ctr("task", "kill", "--signal", "KILL", cid)
    assert kill.returncode == 0, ctr.describe(kill)
    ctr.wait_status(cid, "STOPPED")
    delete = ctr("task", "delete", cid)
    assert delete.returncode == 0 and exit_code_from_delete(delete) == 137, ctr.describe(delete)
    assert ctr("container", "delete", cid).returncode == 0
    assert_gone(ctr, cid)
    assert [d for d in dirs if d.exists()] == []


def test_task_ps_and_kill_all_reach_a_daemonized_child(ctr: Ctr, new_id: NewId) -> None:
    cid = new_id("daemon")
    proc = ctr.run_detached(cid, "/bin/sh", "-c", "/bin/setsid /bin/sleep 999 & exec /bin/sleep 1000")
    assert proc.returncode == 0, ctr.describe(proc)
    pid, _ = ctr.tasks()[cid]
    dirs = cgroup_dirs(pid)
    deadline = time.monotonic() + 10
    while True:
        ps = ctr("task", "ps", cid)
        assert ps.returncode == 0, ctr.describe(ps)
        pids = [int(line.split()[0]) for line in ps.stdout.splitlines()[1:] if line.split()]
        if len(pids) == 2:
            break
        assert time.monotonic() < deadline, ps.stdout
        time.sleep(0.05)
    daemon = next(p for p in pids if p != pid)
    kill = ctr("task", "kill", "--all", "--signal", "KILL", cid)
    assert kill.returncode == 0, ctr.describe(kill)
    ctr.wait_status(cid, "STOPPED")
    assert not Path(f"/proc/{daemon}").exists() or "Z" in Path(f"/proc/{daemon}/stat").read_text().split()[2]
    assert ctr("task", "delete", cid).returncode == 0
    assert ctr("container", "delete", cid).returncode == 0
    assert_gone(ctr, cid)
    assert [d for d in dirs if d.exists()] == []


@pytest.mark.parametrize("limit", [str(48 << 20)])
def test_cpu_quota_and_memory_limit_under_load(ctr: Ctr, new_id: NewId, limit: str) -> None:
    """A busy loop under --cpus 0.2 is throttled (the kernel counts it), and exits normally."""
    cid = new_id("quota")
    proc = ctr.run_detached(cid, "/bin/sh", "-c", "while :; do :; done", opts=["--cpus", "0.2", "--memory-limit",
                                                                                limit])
    assert proc.returncode == 0, ctr.describe(proc)
    pid, _ = ctr.tasks()[cid]
    dirs = cgroup_dirs(pid)
    stat = controller_dir(pid, "cpu") / "cpu.stat"
    deadline = time.monotonic() + 20
    while not any(line.startswith("nr_throttled") and int(line.split()[1]) > 0
                  for line in stat.read_text().splitlines()):
        assert time.monotonic() < deadline, stat.read_text()
        time.sleep(0.1)
    stop_and_remove(ctr, cid, dirs)
