"""What is left when things go wrong: a create killed half-way, corrupt records, reused pids."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from runproc_testlib import REPO, MakeBundle, Runproc, require_root


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# create, unfrozen (same code as the binary), SIGKILLed right after the init reported
# ready and before the record is written: the moment a shim's SIGKILL hurts most.
KILLED_CREATE = """
import os, sys
from runproc import state
from runproc.cli import main
def die(self, locked, record):
    print(record.pid, flush=True)
    os.kill(os.getpid(), 9)
state.StateStore.save = die
main(sys.argv[1:])
"""


def test_create_killed_half_way_leaves_nothing_running(runproc: Runproc, make_bundle: MakeBundle,
                                                       state_root: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    bundle = make_bundle(["/bin/sh", "-c", f"touch {marker}"], host=True)
    result = subprocess.run(
        [sys.executable, "-c", KILLED_CREATE, "--root", str(state_root), "create", "--bundle", str(bundle), "k1"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == -9, result.stderr
    init_pid = int(result.stdout)
    # The init hears its creator die (its go-ahead pipe closes) and ends.
    deadline = time.monotonic() + 10
    while alive(init_pid):
        assert time.monotonic() < deadline, "the init of a killed create is still waiting"
        time.sleep(0.02)
    assert not marker.exists()
    # What containerd's cleanup does next: delete --force removes the half-made directory.
    assert (state_root / "k1").exists()
    assert runproc("state", "k1").returncode == 1
    runproc.ok("delete", "--force", "k1")
    assert not (state_root / "k1").exists()
    # And the id can be used again.
    runproc.ok("create", "--bundle", str(bundle), "k1")
    assert runproc.status("k1") == "created"


def test_delete_force_removes_a_corrupt_record(runproc: Runproc, make_bundle: MakeBundle, state_root: Path) -> None:
    runproc.ok("run", "--keep", "bad", str(make_bundle(["/bin/true"])))
    (state_root / "bad" / "state.json").write_text('{"id": "bad"}')
    refused = runproc("delete", "bad")
    assert refused.returncode == 1 and "corrupt state record" in refused.stderr
    runproc.ok("delete", "--force", "bad")
    assert not (state_root / "bad").exists()


def test_delete_spares_a_session_that_reused_the_pid(runproc: Runproc, make_bundle: MakeBundle,
                                                     state_root: Path) -> None:
    """Once the init is gone, its pid may lead someone else's session: that one is not ours."""
    runproc.ok("run", "--keep", "gone", str(make_bundle(["/bin/true"])))
    stranger = subprocess.Popen(["setsid", "sh", "-c", "sleep 300 & echo $!; wait"], stdout=subprocess.PIPE,
                                text=True)
    try:
        assert stranger.stdout is not None
        child = int(stranger.stdout.readline())
        record_path = state_root / "gone" / "state.json"
        record = json.loads(record_path.read_text())
        # Pretend the stranger got our init's pid: same pid, later start time (ours was earlier).
        record["pid"] = stranger.pid
        start = int(Path(f"/proc/{stranger.pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        record["start_time"] = start - 1
        record_path.write_text(json.dumps(record))
        assert runproc.status("gone") == "stopped"
        runproc.ok("kill", "--all", "gone", "KILL")
        runproc.ok("delete", "--force", "gone")
        assert alive(child) and alive(stranger.pid)
    finally:
        stranger.kill()
        stranger.wait()
        subprocess.run(["pkill", "-KILL", "-s", str(stranger.pid)], check=False)


def test_passwd_fifo_in_rootfs_does_not_hang_create(runproc: Runproc, make_bundle: MakeBundle,
                                                    busybox_rootfs: Path, tmp_path: Path) -> None:
    require_root()
    rootfs = tmp_path / "rootfs"
    shutil.copytree(busybox_rootfs, rootfs, symlinks=True)
    (rootfs / "etc" / "passwd").unlink()
    os.mkfifo(rootfs / "etc" / "passwd")
    bundle = make_bundle(["/bin/sh", "-c", "echo $HOME"], rootfs=rootfs, env=["PATH=/bin"])
    result = runproc("run", "fifo", str(bundle), timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "/\n"
