"""What a waiting init holds: none of its caller's fds, and no way out of the container through an fd."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from runproc_testlib import REPO, MakeBundle, Runproc, require_root

BOOT_LOCK_ENV = "STATICX_LOCK_FD"


def init_fds(pid: int) -> dict[int, str]:
    return {int(fd): os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}


def boot_lock_of(pid: int) -> int | None:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    for entry in environ:
        if entry.startswith(f"{BOOT_LOCK_ENV}=".encode()):
            return int(entry.split(b"=", 1)[1])
    return None


@pytest.fixture
def caller_fds(tmp_path: Path) -> Iterator[list[int]]:
    """fds a careless caller leaks: a directory fd on /, a host file, a pipe, the state dir's parent."""
    host_file = tmp_path / "host-file"
    host_file.write_text("host\n")
    read_end, write_end = os.pipe()
    fds = [os.open("/", os.O_RDONLY | os.O_DIRECTORY), os.open(host_file, os.O_RDONLY), read_end, write_end,
           os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)]
    yield fds
    for fd in fds:
        os.close(fd)


def with_fds_3_and_4(fds: list[int]) -> list[str]:
    """A prefix that runs the command with fd 3 on / and fd 4 on the caller's host file (for --preserve-fds)."""
    return ["/bin/bash", "-c", f'exec "$@" 3</ 4<&{fds[1]}', "bash"]


@pytest.mark.parametrize("preserve", [0, 2])
def test_waiting_init_holds_only_its_own_fds(runproc: Runproc, make_bundle: MakeBundle, state_root: Path,
                                             caller_fds: list[int], tmp_path: Path, preserve: int) -> None:
    # The caller's fds 3 and 4 are what --preserve-fds passes on.
    argv = runproc.argv("create", "--preserve-fds", str(preserve), "c1", str(make_bundle(["/bin/true"])))
    with open(tmp_path / "create.err", "w+") as err:  # not a pipe: the waiting init keeps it
        process = subprocess.run([*with_fds_3_and_4(caller_fds), *argv], pass_fds=caller_fds,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, timeout=30)
    assert process.returncode == 0, (tmp_path / "create.err").read_text()
    pid = runproc.state("c1")["pid"]
    held = init_fds(pid)
    boot_lock = boot_lock_of(pid)
    expected_fifo = f"{state_root}/c1/exec.fifo"
    for fd, target in held.items():
        if fd < 3 + preserve:
            continue  # stdio and what --preserve-fds asked for
        if fd == boot_lock:
            # The bootloader's lock on its cache (a file or directory of its own), kept close-on-exec.
            flags = Path(f"/proc/{pid}/fdinfo/{fd}").read_text().split("flags:")[1].split()[0]
            assert int(flags, 8) & os.O_CLOEXEC, (fd, target)
            continue
        assert target in (expected_fifo, "anon_inode:[eventpoll]"), (fd, target, held)
    assert sorted(held[fd] for fd in held if fd >= 3 + preserve and fd != boot_lock) == sorted(
        [expected_fifo, "anon_inode:[eventpoll]"])
    if preserve:
        assert held[3] == "/" and held[4].endswith("host-file")


def test_program_gets_only_stdio_and_preserved_fds_not_the_boot_lock(runproc: Runproc, make_bundle: MakeBundle,
                                                                     tmp_path: Path) -> None:
    """The bootloader's lock is close-on-exec in the init: the user's program never has it."""
    out = tmp_path / "fds"
    bundle = make_bundle(["/bin/sh", "-c", f"ls /proc/self/fd > {out}"], host=True)
    runproc.ok("create", "c1", str(bundle))
    pid = runproc.state("c1")["pid"]
    runproc.ok("start", "c1")
    runproc.wait_status("c1", "stopped")
    # ls's own fd 3 (the directory it lists) is among them; the init's fifo, epoll and lock are not.
    assert sorted(int(fd) for fd in out.read_text().split()) == [0, 1, 2, 3], pid


@pytest.fixture
def rootfs_with_proc(busybox_rootfs: Path, tmp_path: Path) -> Iterator[Path]:
    """A rootfs with procfs mounted in it: what makes /proc/self/fd/N a path for the init."""
    require_root()
    rootfs = tmp_path / "rootfs"
    shutil.copytree(busybox_rootfs, rootfs, symlinks=True)
    (rootfs / "proc").mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "proc", "proc", str(rootfs / "proc")], check=True)
    try:
        yield rootfs
    finally:
        subprocess.run(["umount", "-l", str(rootfs / "proc")], check=True)


@pytest.mark.parametrize("preserve", [0, 1])
def test_cwd_through_an_fd_cannot_leave_the_rootfs(runproc: Runproc, make_bundle: MakeBundle,
                                                   rootfs_with_proc: Path, caller_fds: list[int],
                                                   preserve: int) -> None:
    """CVE-2024-21626's class: process.cwd /proc/self/fd/N through a directory fd of the host.

    Without --preserve-fds the init holds no directory of the host; with it,
    fd 3 is the caller's directory on / and the cwd check refuses it.
    """
    for fd in range(0, 16):
        bundle = make_bundle(["/bin/pwd"], rootfs=rootfs_with_proc, cwd=f"/proc/self/fd/{fd}")
        argv = runproc.argv("run", "--preserve-fds", str(preserve), f"cwd{fd}", str(bundle))
        result = subprocess.run([*with_fds_3_and_4(caller_fds), *argv], pass_fds=caller_fds,
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
        assert result.returncode == 1 and result.stdout == "", (fd, result)
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert "chdir to cwd" in result.stderr or "is outside the container's root: refused" in result.stderr, \
            result.stderr


def test_boot_lock_directory_fd_is_kept_but_no_way_out(runproc: Runproc, make_bundle: MakeBundle,
                                                       rootfs_with_proc: Path, state_root: Path,
                                                       tmp_path: Path) -> None:
    """The bootloader's lock may be a directory fd; the init keeps it, and refuses a cwd through it.

    Unfrozen (python -m runproc), so that the lock fd is the one this test hands over.
    """
    lock = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        env = {**os.environ, BOOT_LOCK_ENV: str(lock), "PYTHONPATH": str(REPO)}
        argv = [sys.executable, "-m", "runproc", "--root", str(state_root)]
        escape = make_bundle(["/bin/pwd"], rootfs=rootfs_with_proc, cwd=f"/proc/self/fd/{lock}")
        result = subprocess.run([*argv, "run", "esc", str(escape)], pass_fds=[lock], env=env, capture_output=True,
                                text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert result.returncode == 1, result
        assert "is outside the container's root: refused" in result.stderr, result.stderr
        waiting = make_bundle(["/bin/true"], rootfs=rootfs_with_proc)
        # Output to a file, not a pipe: the waiting init keeps create's stdio.
        with open(tmp_path / "create.err", "w+") as err:
            created = subprocess.run([*argv, "create", "keep", str(waiting)], pass_fds=[lock], env=env,
                                     stdout=err, stderr=err, timeout=60, stdin=subprocess.DEVNULL)
        assert created.returncode == 0, (tmp_path / "create.err").read_text()
        pid = runproc.state("keep")["pid"]
        assert init_fds(pid)[lock] == str(tmp_path)
    finally:
        os.close(lock)


def test_preserve_fds_over_gaps_keeps_none_of_runprocs_own(runproc: Runproc, make_bundle: MakeBundle,
                                                           state_root: Path, tmp_path: Path) -> None:
    """--preserve-fds 20 with only stdio open: runproc's own fds land in that range; the init must drop them.

    The lock's fd among them would keep the container locked: every later command would wait forever.
    """
    argv = runproc.argv("create", "--preserve-fds", "20", "c1", str(make_bundle(["/bin/true"])))
    with open(tmp_path / "create.err", "w+") as err:  # not a pipe: the waiting init keeps it
        process = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, timeout=30)
    assert process.returncode == 0, (tmp_path / "create.err").read_text()
    pid = runproc.state("c1")["pid"]
    state_paths = [target for target in init_fds(pid).values() if target.startswith(str(state_root))]
    assert state_paths == [f"{state_root}/c1/exec.fifo"], init_fds(pid)
    runproc.ok("delete", "c1", timeout=15)
