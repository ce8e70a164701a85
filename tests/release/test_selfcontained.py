"""Release-binary tests: self-contained (needs nothing from the host but the
kernel) and noexec-safe (works where /tmp and /run are noexec tmpfs mounts).

The binary is taken from $RUNPROC_BIN (default: <repo>/dist/runproc), i.e. the
output of build/static/make-static.sh.  All tests need root (they use
unshare -m, mount and chroot; (c) then drops to uid/gid 65534).
`make build` makes exactly this binary, so a dynamically linked one fails here.

See build/static/README.md for the design these tests check:
  * the binary is a static ELF (no PT_INTERP / PT_DYNAMIC);
  * it unpacks into <root>/staticx-lk-XXXXXX where <root> is the first of
    $TMPDIR, /tmp, /var/tmp, /dev/shm, <dir of the binary> that is writable and
    not mounted noexec; the directory is removed after every call;
  * a directory left by a SIGKILLed call is removed by the next call.
These are the properties of the per-call mode (the fallback when the cached
unpack cannot be used), so every call here sets STATICX_NO_CACHE=1;
tests/release/test_cache.py covers the cache.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("RUNPROC_BIN") or REPO / "dist" / "runproc")
PREFIXES = ("staticx-", "_MEI")
NOBODY = 65534


def elf_program_header_types(path: str | os.PathLike[str]) -> set[int] | None:
    """Set of p_type values of a 64-bit little-endian ELF, or None if not one."""
    try:
        with open(path, "rb") as f:
            hdr = f.read(64)
            if len(hdr) < 64 or hdr[:4] != b"\x7fELF" or hdr[4] != 2:
                return None
            phoff, = struct.unpack_from("<Q", hdr, 0x20)
            phentsize, phnum = struct.unpack_from("<HH", hdr, 0x36)
            f.seek(phoff)
            return {struct.unpack_from("<I", f.read(phentsize))[0] for _ in range(phnum)}
    except OSError:
        return None


def is_release_binary(path: str | os.PathLike[str]) -> bool:
    types = elf_program_header_types(path)
    return types is not None and 3 not in types and 2 not in types  # no PT_INTERP/PT_DYNAMIC


if os.geteuid() != 0:
    pytest.skip("release tests need root (unshare/mount/chroot)", allow_module_level=True)
if not BIN.is_file():
    pytest.fail(f"no runproc binary at {BIN}: run `make build` (or set RUNPROC_BIN)", pytrace=False)


# ----------------------------------------------------------------- helpers
NO_CACHE = {"STATICX_NO_CACHE": "1"}  # per-call mode: what this file checks


def clean_env(**extra: str) -> dict[str, str]:
    """containerd-like environment: no TMPDIR (and no cache)."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", **NO_CACHE}
    env.update(extra)
    return env


def run(cmd: Sequence[str], timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def in_mountns(script: str, env: dict[str, str] | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a /bin/sh script in a private mount namespace (as root)."""
    return run(["unshare", "--mount", "--propagation", "private", "/bin/sh", "-ec", script],
               env=env if env is not None else clean_env(), timeout=timeout)


def help_text() -> str:
    r = run([str(BIN), "--help"], env=clean_env())
    return r.stdout + r.stderr


def has_command(word: str) -> bool:
    return any(word in line.split() for line in help_text().splitlines())


def leftovers(*dirs: str | os.PathLike[str]) -> set[str]:
    out: set[str] = set()
    for d in dirs:
        try:
            names = os.listdir(d)
        except OSError:
            continue
        out |= {os.path.join(d, n) for n in names if n.startswith(PREFIXES)}
    return out


def assert_no_new_leftovers(before: set[str], dirs: Iterable[str | os.PathLike[str]],
                            what: str) -> None:
    """New staticx-*/_MEI* entries must not remain.  Another process on the
    machine may run a binary concurrently, so give transient ones 3 s."""
    deadline = time.monotonic() + 3
    while True:
        new = leftovers(*dirs) - before
        if not new or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not new, f"{what} left {sorted(new)}"


@pytest.fixture
def staged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of the binary in a fresh 0755 directory outside /tmp and /run
    (so a tmpfs mounted over those does not hide it) readable by nobody."""
    base = "/var/tmp" if os.path.isdir("/var/tmp") else str(REPO / "build")
    d = Path(tempfile.mkdtemp(prefix="runproc-release-", dir=base))
    d.chmod(0o755)
    b = d / "runproc"
    shutil.copy2(BIN, b)
    b.chmod(0o755)
    yield b
    shutil.rmtree(d, ignore_errors=True)


def wait_empty_of_bundles(d: str | os.PathLike[str], what: str, timeout: float = 3) -> None:
    """The launcher removes its bundle dir in a detached child right after it
    exits (so the caller does not wait for the unlinking): allow a moment."""
    deadline = time.monotonic() + timeout
    while True:
        left = [n for n in os.listdir(d) if n.startswith(PREFIXES)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not left, f"{what} left {left} in {d}"


def check_version(r: subprocess.CompletedProcess[str]) -> None:
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    assert r.stdout.splitlines() and r.stdout.splitlines()[0].startswith("runproc version"), r.stdout


# ------------------------------------------------------------------- tests
def test_binary_is_static_elf() -> None:
    """No program interpreter and no dynamic section: the kernel runs it alone."""
    types = elf_program_header_types(BIN)
    assert types is not None, "not a 64-bit ELF"
    assert 3 not in types, "has PT_INTERP (needs the host's ld.so)"
    assert 2 not in types, "has PT_DYNAMIC (needs host libraries)"


def test_chroot_only_proc(tmp_path: Path) -> None:
    """(a) Empty root with only /proc mounted and a writable /tmp: --version and
    `run` of a host-mode bundle whose process is the binary itself."""
    root = tmp_path / "root"
    for d in ("proc", "tmp"):
        (root / d).mkdir(parents=True)
    (root / "tmp").chmod(0o1777)
    shutil.copy2(BIN, root / "runproc")
    (root / "runproc").chmod(0o755)

    script = f'mount -t proc proc "{root}/proc"\nexec chroot "{root}" /runproc --version'
    r = in_mountns(script, env=dict(NO_CACHE))
    check_version(r)
    wait_empty_of_bundles(root / "tmp", "--version")
    assert not os.listdir(root / "tmp"), f"left in /tmp: {os.listdir(root / 'tmp')}"
    assert sorted(os.listdir(root)) == ["proc", "runproc", "tmp"], os.listdir(root)

    if not has_command("run"):
        pytest.skip("binary's --help lists no `run` command (toy binary?)")
    bundle = root / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    (bundle / "config.json").write_text(json.dumps({
        "ociVersion": "1.0.2",
        "process": {"args": ["/runproc", "--version"], "cwd": "/", "env": []},
        "root": {"path": "rootfs"},
        "annotations": {"runproc.host": "1"},
    }))
    script = (f'mount -t proc proc "{root}/proc"\n'
              f'exec chroot "{root}" /runproc --root /tmp/runproc-state run --bundle /bundle selfcontained-test')
    r = in_mountns(script, env=dict(NO_CACHE))
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    assert "runproc version" in r.stdout, r.stdout
    wait_empty_of_bundles(root / "tmp", "run")


def test_chroot_noexec_tmp(tmp_path: Path) -> None:
    """Chroot whose only writable tmp dir is noexec: falls back to the
    binary's own directory, and cleans up."""
    root = tmp_path / "root"
    for d in ("proc", "tmp"):
        (root / d).mkdir(parents=True)
    shutil.copy2(BIN, root / "runproc")
    script = (f'mount -t proc proc "{root}/proc"\n'
              f'mount -t tmpfs -o noexec,nosuid,nodev tmpfs "{root}/tmp"\n'
              f'exec chroot "{root}" /runproc --version')
    check_version(in_mountns(script, env=dict(NO_CACHE)))
    wait_empty_of_bundles(root, "--version")
    assert sorted(os.listdir(root)) == ["proc", "runproc", "tmp"], os.listdir(root)


NOEXEC = ('mount -t tmpfs -o noexec,nosuid,nodev tmpfs /tmp\n'
          'mount -t tmpfs -o noexec,nosuid,nodev tmpfs /run\n')


@pytest.mark.parametrize("tmpdir_env", [None, "/tmp"], ids=["no-TMPDIR", "TMPDIR=noexec-tmp"])
def test_noexec_tmp_as_root(staged: Path, tmpdir_env: str | None) -> None:
    """(b) /tmp and /run noexec tmpfs, containerd-like env (no TMPDIR; or a
    TMPDIR pointing at the noexec /tmp): works and leaves nothing behind."""
    watch = ["/var/tmp", "/dev/shm", str(staged.parent)]
    before = leftovers(*watch)
    env = clean_env(**({"TMPDIR": tmpdir_env} if tmpdir_env else {}))
    script = NOEXEC + f'"{staged}" --version\necho "LEFT:$(ls -A /tmp /run)"'
    r = in_mountns(script, env=env)
    check_version(r)
    left = r.stdout.split("LEFT:", 1)[1]
    assert not any(p in left for p in PREFIXES), f"left in the noexec /tmp or /run: {left}"
    assert_no_new_leftovers(before, watch, "--version")


def test_noexec_tmp_unprivileged(staged: Path) -> None:
    """(c) As uid/gid 65534 without write access to system dirs (only the
    world-writable /var/tmp), with noexec /tmp and /run."""
    watch = ["/var/tmp", "/dev/shm"]
    before = leftovers(*watch)
    script = NOEXEC + (f'exec setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups '
                       f'"{staged}" --version')
    check_version(in_mountns(script))
    assert_no_new_leftovers(before, watch, "--version as nobody")


def _long_running_command(tmp_path: Path) -> tuple[list[str] | None, list[str] | None]:
    """A command line that keeps the binary busy, or None."""
    if has_command("run"):
        tag = f"{time.time_ns() % 10**9}"
        bundle = tmp_path / "sleep-bundle"
        (bundle / "rootfs").mkdir(parents=True)
        sleep = shutil.which("sleep") or "/bin/sleep"
        (bundle / "config.json").write_text(json.dumps({
            "ociVersion": "1.0.2",
            "process": {"args": [sleep, f"30.{tag}"], "cwd": "/", "env": []},
            "root": {"path": "rootfs"},
            "annotations": {"runproc.host": "1"},
        }))
        state = tmp_path / "state"
        return ([str(BIN), "--root", str(state), "run", "--bundle", str(bundle), f"sigkill-{tag}"],
                [sleep, f"30.{tag}"])
    if any("sleep" in line for line in help_text().splitlines()):  # the toy binary
        return [str(BIN), "sleep", "30"], None
    return None, None


def _pids_with_cmdline(argv: Sequence[str]) -> list[int]:
    want = ("\0".join(argv) + "\0").encode()
    pids: list[int] = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if Path(f"/proc/{p}/cmdline").read_bytes() == want:
                    pids.append(int(p))
            except OSError:
                pass
    return pids


def _pids_running_from(d: str) -> list[int]:
    pids: list[int] = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if os.readlink(f"/proc/{p}/exe").startswith(d + "/"):
                    pids.append(int(p))
            except OSError:
                pass
    return pids


def test_sigkill_leaves_one_dir_and_next_run_sweeps_it(tmp_path: Path) -> None:
    """(d) SIGKILL (as the shim may send) mid-run leaves at most one stale dir,
    the app dies with its launcher, and the next call removes the stale dir."""
    cmd, container_argv = _long_running_command(tmp_path)
    if cmd is None:
        pytest.skip("binary has no long-running command to interrupt")
    tmpdir = tmp_path / "t"
    tmpdir.mkdir()
    env = clean_env(TMPDIR=str(tmpdir))
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            dirs = leftovers(tmpdir)
            started = (_pids_with_cmdline(container_argv) if container_argv
                       else [q for d in dirs for q in _pids_running_from(d)])
            if dirs and started:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"binary did not start: dirs={leftovers(tmpdir)}")
        time.sleep(0.3)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)

        stale = leftovers(tmpdir)
        assert len(stale) <= 1, f"more than one stale dir: {stale}"
        # the app process (PyInstaller bootloader + Python) dies with its launcher
        deadline = time.monotonic() + 10
        while any(_pids_running_from(d) for d in stale) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_pids_running_from(d) for d in stale), "app survived its launcher"

        check_version(run([str(BIN), "--version"], env=env))
        wait_empty_of_bundles(tmpdir, "the stale dir was not swept; the next run")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if container_argv:  # the host-mode container process outlives runproc by design
            for pid in _pids_with_cmdline(container_argv):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
