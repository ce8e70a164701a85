"""Release-binary tests of the cached unpack (build/static/README.md, "Cache").

The binary ($RUNPROC_BIN, see runproc_testlib.runproc_path()) execs a verified,
read-only unpack of itself from a per-user cache keyed by the build id that
sxbundle.py embeds (section .staticx.buildid).  Every test runs in a private
mount namespace with tmpfs over /var/lib, /var/tmp and /tmp (class Ns), so the
real caches and mounts are untouched and the read-only bind mounts the binary
makes as root vanish with the namespace.  Needs root (unshare, mount, nsenter,
setpriv) and strace.

STATICX_CACHE_TRACE=1 makes the bootloader say on stderr what it decided
(hit / populating / refused ... / using a per-call directory); the tests
check those lines and, independently, the file system.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from runproc_testlib import NOBODY, runproc_path, strace_joined

BIN = runproc_path()
PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BINDIR = "/var/lib/.rp-bin"          # in the namespace: the binaries under test
ROOT_CACHE = "/var/lib/runproc/cache"
NOBODY_CACHE = f"/var/tmp/runproc-cache-{NOBODY}"

if os.geteuid() != 0:
    pytest.skip("cache tests need root (unshare/mount/nsenter)", allow_module_level=True)
if not BIN.is_file():
    pytest.fail(f"no runproc binary at {BIN}: run `make build` (or set RUNPROC_BIN)", pytrace=False)
if not shutil.which("strace"):
    pytest.skip("cache tests need strace", allow_module_level=True)


# ----------------------------------------------------------------- helpers
def build_id(path: str | os.PathLike[str]) -> str:
    """The 64-hex build id in the binary's .staticx.buildid section."""
    m = re.search(rb"v1\nid=([0-9a-f]{64})\napp=", Path(path).read_bytes())
    assert m, f"{path} has no .staticx.buildid section (not built by the patched sxbundle.py?)"
    return m.group(1).decode()


def entry_name(path: str | os.PathLike[str]) -> str:
    return build_id(path)[:32]


def make_variant(src: Path, dst: Path, tag: str) -> str:
    """A copy of src with another build id (same content: a "new version")."""
    data = src.read_bytes()
    old = build_id(src)
    new = hashlib.sha256(f"{old}-{tag}".encode()).hexdigest()
    out = data.replace(b"v1\nid=" + old.encode(), b"v1\nid=" + new.encode())
    assert out != data
    dst.write_bytes(out)
    dst.chmod(0o755)
    return new


def env_for(**extra: str) -> dict[str, str]:
    """containerd-like environment (no TMPDIR, no HOME), with the trace on."""
    return {"PATH": PATH_ENV, "STATICX_CACHE_TRACE": "1", **extra}


def check_version(r: subprocess.CompletedProcess[str]) -> None:
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    assert r.stdout.startswith("runproc version"), r.stdout


def as_user(uid: int | None, argv: Sequence[str]) -> list[str]:
    if uid is None:
        return list(argv)
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *argv]


class Ns:
    """A private mount namespace, kept alive by a sleeping process.

    Set up (in this order): tmpfs on /var/lib (`var_lib` options), an exec
    tmpfs /var/lib/.rp-bin holding the binaries, tmpfs on /var/tmp, /tmp (and
    /run if `run_opts`), then `extra` shell lines."""

    def __init__(self, binaries: dict[str, Path], *, var_lib: str = "mode=0755",
                 var_tmp: str = "mode=1777", tmp: str = "mode=1777",
                 run_opts: str | None = None, extra: str = "") -> None:
        lines = [f"mount -t tmpfs -o {var_lib} tmpfs /var/lib",
                 f"mkdir -p {BINDIR}", f"mount -t tmpfs -o mode=0755 tmpfs {BINDIR}"]
        lines += [f'cp "{src}" {BINDIR}/{name} && chmod 0755 {BINDIR}/{name}'
                  for name, src in binaries.items()]
        lines += [f"mount -t tmpfs -o {var_tmp} tmpfs /var/tmp",
                  f"mount -t tmpfs -o {tmp} tmpfs /tmp"]
        if run_opts:
            lines.append(f"mount -t tmpfs -o {run_opts} tmpfs /run")
        lines += [extra, "echo ready", "exec sleep infinity"]
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-ec", "\n".join(lines)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.proc.kill()
            raise AssertionError(f"namespace setup failed: {line}{self.proc.stderr.read() if self.proc.stderr else ''}")
        self.pid = self.proc.pid

    def argv(self, argv: Sequence[str], uid: int | None = None) -> list[str]:
        return ["nsenter", "-t", str(self.pid), "-m", "--", *as_user(uid, argv)]

    def run(self, argv: Sequence[str], uid: int | None = None, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(argv, uid), env=env or env_for(), capture_output=True,
                              text=True, timeout=timeout)

    def sh(self, script: str) -> subprocess.CompletedProcess[str]:
        r = self.run(["/bin/sh", "-ec", script])
        assert r.returncode == 0, f"{script}: {r.stderr}"
        return r

    def runproc(self, *args: str, name: str = "runproc", uid: int | None = None,
                **env: str) -> subprocess.CompletedProcess[str]:
        return self.run([f"{BINDIR}/{name}", *args], uid=uid, env=env_for(**env))

    def p(self, path: str) -> Path:
        """The namespace's view of path, from outside."""
        return Path(f"/proc/{self.pid}/root{path}")

    def ls(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(self.p(path)))
        except FileNotFoundError:
            return []

    def mounts(self) -> list[tuple[str, str]]:
        """(mount point, options) of the namespace."""
        out = []
        for line in Path(f"/proc/{self.pid}/mountinfo").read_text().splitlines():
            f = line.split()
            out.append((f[4], f[5]))
        return out

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def stage(tmp_path: Path) -> Path:
    """A host copy of the binary (the namespace setup copies it in)."""
    d = tmp_path / "bin"
    d.mkdir()
    shutil.copy2(BIN, d / "runproc")
    return d / "runproc"


@pytest.fixture
def ns_factory(stage: Path) -> Iterator[Any]:
    made: list[Ns] = []

    def make(binaries: dict[str, Path] | None = None, **kw: Any) -> Ns:
        ns = Ns(binaries or {"runproc": stage}, **kw)
        made.append(ns)
        return ns
    yield make
    for ns in made:
        ns.close()


def entries(ns: Ns, root: str) -> list[str]:
    return [n for n in ns.ls(root) if re.fullmatch(r"[0-9a-f]{32}", n)]


def scratch(ns: Ns, root: str) -> list[str]:
    return [n for n in ns.ls(root) if n.startswith((".staging-", ".trash-"))]


def per_call_dirs(ns: Ns) -> list[str]:
    return [f"{d}/{n}" for d in ("/tmp", "/var/tmp", "/dev/shm", BINDIR)
            for n in ns.ls(d) if n.startswith("staticx-")]


def is_ro_mount(ns: Ns, path: str) -> bool:
    """What the namespace sees at path is a read-only mount point.  (Not by
    mountinfo alone: the host's own cache mounts are listed there too, hidden
    under our tmpfs, possibly at the same path.)"""
    ro = os.statvfs(ns.p(path)).f_flag & os.ST_RDONLY
    return bool(ro) and os.path.ismount(ns.p(path))


def plant_entry(ns: Ns, root: str, name: str, marker: str, *, owner: int = 0,
                mode: str = "0555", complete: bool = True, bid: str = "") -> None:
    """An attacker's entry at root/name whose program would create marker."""
    d = f"{root}/{name}"
    ns.sh(f"""
        mkdir -p {d}
        printf '#!/bin/sh\\ntouch {marker}\\necho runproc version EVIL\\n' > {d}/runproc
        chmod 0755 {d}/runproc
        ln -s runproc {d}/.staticx.prog
        {f'echo {bid} > {d}/.staticx.buildid' if complete else ':'}
        chown -R {owner}:{owner} {d}
        chmod {mode} {d}
    """)


def stderr_pids(stderr: str, what: str) -> list[int]:
    return [int(m.group(1)) for m in re.finditer(r"staticx-cache\[(\d+)\]: " + what, stderr)]


# ------------------------------------------------------------------- tests
def test_build_id_section() -> None:
    """sxbundle.py embedded a build id, the app name and PyInstaller's home."""
    data = BIN.read_bytes()
    m = re.search(rb"v1\nid=[0-9a-f]{64}\napp=runproc\n(pyi-home=[^\n]+\n)?", data)
    assert m, "no .staticx.buildid section with app=runproc"
    assert b"pyi-home=_internal" in m.group(0), m.group(0)


def test_miss_then_hit_as_root(ns_factory: Any) -> None:
    """First call populates a read-only, bind-mounted entry; the second call
    execs it directly: no copy (sendfile), no fork, no PyInstaller restart,
    no per-call dir, entry untouched."""
    ns = ns_factory()
    name = entry_name(BIN)
    entry = f"{ROOT_CACHE}/{name}"

    r = ns.runproc("--version")
    check_version(r)
    assert "populating" in r.stderr, r.stderr
    assert f"keeping {name}" not in r.stderr, "tried to collect its own new entry"
    assert entries(ns, ROOT_CACHE) == [name]
    assert scratch(ns, ROOT_CACHE) == []
    assert not per_call_dirs(ns), per_call_dirs(ns)
    assert is_ro_mount(ns, entry), f"{entry} is not a read-only mount: {ns.mounts()}"
    # private root, read-only tree, complete
    assert os.stat(ns.p("/var/lib/runproc")).st_mode & 0o7777 == 0o700
    assert os.stat(ns.p(ROOT_CACHE)).st_mode & 0o7777 == 0o700
    e = ns.p(entry)
    assert (e / ".staticx.buildid").read_text().strip() == build_id(BIN)
    for dirpath, dirnames, filenames in os.walk(e):
        for n in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, n))
            if not os.path.islink(os.path.join(dirpath, n)):
                assert st.st_mode & 0o222 == 0, f"{dirpath}/{n} is writable ({st.st_mode:o})"
    before = os.stat(e / "runproc")

    trace = f"/tmp/strace-{time.time_ns()}"
    r = ns.run(["strace", "-f", "-o", trace, "-e", "trace=execve,execveat,clone,clone3,fork,vfork,sendfile",
                f"{BINDIR}/runproc", "--version"], env=env_for())
    check_version(r)
    assert re.search(r"hit: ", r.stderr), r.stderr
    calls = ns.p(trace).read_text()
    assert "sendfile" not in calls, calls
    assert not re.search(r"\b(clone3?|v?fork)\(", calls), f"forked on a hit:\n{calls}"
    execs = re.findall(r"\b(execve|execveat)\(", calls)
    assert execs == ["execve", "execveat"], f"expected our exec + one of the entry (no restart):\n{calls}"
    after = os.stat(e / "runproc")
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not per_call_dirs(ns)

    # STATICX_PYI_RESTART=1: PyInstaller restarts itself as before
    r = ns.run(["strace", "-f", "-o", trace, "-e", "trace=execve,execveat", f"{BINDIR}/runproc", "--version"],
               env=env_for(STATICX_PYI_RESTART="1"))
    check_version(r)
    assert len(re.findall(r"\b(execve|execveat)\(", ns.p(trace).read_text())) == 3


def test_root_entry_remounted_read_only(ns_factory: Any) -> None:
    """A root entry that is not a read-only mount (reboot, other namespace) is
    not run as is: the call re-applies the mount (no new unpack)."""
    ns = ns_factory()
    entry = f"{ROOT_CACHE}/{entry_name(BIN)}"
    check_version(ns.runproc("--version"))
    ns.sh(f"umount -l {entry}")
    assert not is_ro_mount(ns, entry)
    r = ns.runproc("--version")
    check_version(r)
    assert "populating" not in r.stderr and "miss: " in r.stderr, r.stderr
    assert is_ro_mount(ns, entry), ns.mounts()


def test_hit_as_nobody_and_disable(ns_factory: Any) -> None:
    """An unprivileged user gets a 0700 per-uid dir in the sticky /var/tmp (no
    HOME); STATICX_NO_CACHE=1 uses a per-call dir and leaves the cache alone."""
    ns = ns_factory()
    check_version(ns.runproc("--version", uid=NOBODY))
    r = ns.runproc("--version", uid=NOBODY)
    check_version(r)
    assert "hit: " + NOBODY_CACHE in r.stderr, r.stderr
    st = os.stat(ns.p(NOBODY_CACHE))
    assert (st.st_uid, st.st_mode & 0o7777) == (NOBODY, 0o700)
    assert entries(ns, NOBODY_CACHE) == [entry_name(BIN)]
    assert entries(ns, ROOT_CACHE) == []

    r = ns.runproc("--version", uid=NOBODY, STATICX_NO_CACHE="1")
    check_version(r)
    assert "disabled" in r.stderr and "hit" not in r.stderr, r.stderr
    # HOME with a usable ~/.cache is preferred
    ns.sh(f"mkdir -p /var/tmp/home && chown {NOBODY}:{NOBODY} /var/tmp/home && chmod 0755 /var/tmp/home")
    r = ns.runproc("--version", uid=NOBODY, HOME="/var/tmp/home")
    check_version(r)
    assert "populating /var/tmp/home/.cache/runproc/" in r.stderr, r.stderr


def test_fifty_concurrent_first_calls(ns_factory: Any) -> None:
    """50 concurrent first calls: one populates, the others wait for its copy;
    one entry, no staging or per-call dirs left."""
    ns = ns_factory()
    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(lambda _: ns.runproc("--version"), range(50)))
    for r in results:
        check_version(r)
    populators = sum(len(stderr_pids(r.stderr, "populating")) for r in results)
    assert populators == 1, [r.stderr for r in results if "populating" in r.stderr]
    assert entries(ns, ROOT_CACHE) == [entry_name(BIN)]
    assert scratch(ns, ROOT_CACHE) == []
    time.sleep(0.5)
    assert not per_call_dirs(ns)


def _kill_populate(ns: Ns, uid: int | None, root: str) -> None:
    """Start a first call slowed down by strace (200 ms per sendfile) and
    SIGKILL it in the middle of populating."""
    argv = ["strace", "-f", "-o", "/dev/null", "-e", "trace=sendfile",
            "-e", "inject=sendfile:delay_enter=200000", f"{BINDIR}/runproc", "--version"]
    if uid is not None:  # strace as root, the traced binary as uid
        argv = ["strace", "-f", "-o", "/dev/null", "-u", "nobody", "-e", "trace=sendfile",
                "-e", "inject=sendfile:delay_enter=200000", f"{BINDIR}/runproc", "--version"]
    p = subprocess.Popen(ns.argv(argv), env=env_for(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stderr is not None
    pid = None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = p.stderr.readline()
        pids = stderr_pids(line, "populating")
        if pids:
            pid = pids[0]
            break
    assert pid, "no populate started"
    time.sleep(0.7)  # a few files in
    staging = scratch(ns, root)
    assert staging and os.listdir(ns.p(f"{root}/{staging[0]}")), "populate not under way"
    os.kill(pid, signal.SIGKILL)
    p.wait(timeout=20)
    assert entries(ns, root) == [], "a killed populate published an entry"


@pytest.mark.parametrize("uid", [None, NOBODY], ids=["root", "nobody"])
def test_sigkill_during_populate(ns_factory: Any, uid: int | None) -> None:
    """SIGKILL mid-populate leaves only an unlocked staging dir, which is never
    used; the next call sweeps it and populates a complete entry."""
    ns = ns_factory()
    root = ROOT_CACHE if uid is None else NOBODY_CACHE
    _kill_populate(ns, uid, root)
    stale = scratch(ns, root)
    assert len(stale) == 1 and stale[0].startswith(".staging-"), stale

    r = ns.runproc("--version", uid=uid)
    check_version(r)
    assert f"sweeping {stale[0]}" in r.stderr, r.stderr
    assert entries(ns, root) == [entry_name(BIN)]
    assert scratch(ns, root) == []
    assert "hit: " in ns.runproc("--version", uid=uid).stderr


# Refusals: each must fall back (next root, or per-call), still work, and
# never run the attacker's program (which would create MARK).
MARK = "/var/tmp/pwned"


def _assert_not_pwned(ns: Ns, r: subprocess.CompletedProcess[str]) -> None:
    check_version(r)
    assert "EVIL" not in r.stdout
    assert not ns.p(MARK).exists(), "the attacker's program ran"


def test_refuse_root_owned_by_someone_else(ns_factory: Any) -> None:
    """/var/lib/runproc/cache owned by uid 65534 (with a planted entry): root
    refuses it and uses its /var/tmp dir; for nobody, a pre-created
    /var/tmp/runproc-cache-65534 owned by root is refused likewise."""
    ns = ns_factory()
    name = entry_name(BIN)
    ns.sh(f"mkdir -p {ROOT_CACHE} && chown {NOBODY}:{NOBODY} {ROOT_CACHE} && chmod 0700 {ROOT_CACHE}")
    plant_entry(ns, ROOT_CACHE, name, MARK, owner=NOBODY, bid=build_id(BIN))
    r = ns.runproc("--version")
    _assert_not_pwned(ns, r)
    assert f"refused {ROOT_CACHE}: owner {NOBODY}" in r.stderr, r.stderr
    assert "populating /var/tmp/runproc-cache-0/" in r.stderr, r.stderr

    ns.sh(f"mkdir -m 0755 {NOBODY_CACHE}")  # root's, in nobody's place
    r = ns.runproc("--version", uid=NOBODY)
    _assert_not_pwned(ns, r)
    assert f"refused {NOBODY_CACHE}: owner 0" in r.stderr, r.stderr
    assert f"populating /tmp/runproc-cache-{NOBODY}/" in r.stderr, r.stderr


def test_refuse_symlinked_directory(ns_factory: Any) -> None:
    """/var/lib/runproc is a symlink to an attacker's tree: never followed."""
    ns = ns_factory()
    ns.sh("mkdir -p /var/tmp/evil/cache && ln -s /var/tmp/evil /var/lib/runproc")
    plant_entry(ns, "/var/tmp/evil/cache", entry_name(BIN), MARK, owner=0, bid=build_id(BIN))
    ns.sh("chmod 0700 /var/tmp/evil/cache")
    r = ns.runproc("--version")
    _assert_not_pwned(ns, r)
    assert re.search(r"refused /var/lib/runproc/cache: runproc: (Not a directory|Too many levels)", r.stderr), \
        r.stderr
    # nobody: its per-uid dir is a symlink
    ns.sh(f"mkdir -m 0700 /var/tmp/evil2 && chown {NOBODY} /var/tmp/evil2 && ln -s /var/tmp/evil2 {NOBODY_CACHE}")
    r = ns.runproc("--version", uid=NOBODY)
    _assert_not_pwned(ns, r)
    assert f"refused {NOBODY_CACHE}" in r.stderr, r.stderr


def test_refuse_world_writable_non_sticky_parent(ns_factory: Any) -> None:
    """/var/lib mode 0777 without the sticky bit: anyone could swap
    /var/lib/runproc; refused, root falls back to /var/tmp (sticky: fine)."""
    ns = ns_factory(var_lib="mode=0777")
    r = ns.runproc("--version")
    check_version(r)
    assert "refused lib: writable by group/others and not sticky (0777)" in r.stderr, r.stderr
    assert "populating /var/tmp/runproc-cache-0/" in r.stderr, r.stderr
    assert ns.ls("/var/lib") == [".rp-bin"], "created something in the refused dir"
    # also refused: /var/tmp 0777 non-sticky for nobody -> /tmp
    ns.sh("chmod 0777 /var/tmp")
    r = ns.runproc("--version", uid=NOBODY)
    check_version(r)
    assert "refused tmp: writable by group/others and not sticky" in r.stderr, r.stderr
    assert f"populating /tmp/runproc-cache-{NOBODY}/" in r.stderr, r.stderr


@pytest.mark.parametrize("uid", [None, NOBODY], ids=["root", "nobody"])
@pytest.mark.parametrize("damage", ["group-writable", "incomplete", "wrong-id"])
def test_refuse_bad_entry(ns_factory: Any, uid: int | None, damage: str) -> None:
    """An entry at the final name that is writable by group/others, has no
    completion mark (.staticx.buildid; e.g. half-written), or the wrong id is
    never run: it is removed and a good one populated."""
    ns = ns_factory()
    root = ROOT_CACHE if uid is None else NOBODY_CACHE
    owner = 0 if uid is None else NOBODY
    check_version(ns.runproc("--version", uid=uid))      # create the root dir
    name = entry_name(BIN)
    if uid is None:
        ns.sh(f"umount -l {root}/{name}")
    ns.sh(f"chmod -R u+w {root}/{name} && rm -rf {root}/{name}")
    plant_entry(ns, root, name, MARK, owner=owner,
                mode="0775" if damage == "group-writable" else "0555",
                complete=damage != "incomplete",
                bid=build_id(BIN) if damage != "wrong-id" else "0" * 64)
    r = ns.runproc("--version", uid=uid)
    _assert_not_pwned(ns, r)
    assert "populating" in r.stderr, r.stderr
    assert (ns.p(f"{root}/{name}/.staticx.buildid")).read_text().strip() == build_id(BIN)
    assert "hit: " in ns.runproc("--version", uid=uid).stderr


def test_refuse_override_that_fails_checks(ns_factory: Any) -> None:
    """STATICX_CACHE_DIR is honoured only if it passes the same checks
    (nobody: exactly 0700); else the per-call mode is used."""
    ns = ns_factory()
    ns.sh(f"mkdir -m 0755 /var/tmp/mine && chown {NOBODY} /var/tmp/mine")
    r = ns.runproc("--version", uid=NOBODY, STATICX_CACHE_DIR="/var/tmp/mine")
    check_version(r)
    assert "refused /var/tmp/mine: mode 0755" in r.stderr and "per-call" in r.stderr, r.stderr
    ns.sh("chmod 0700 /var/tmp/mine")
    r = ns.runproc("--version", uid=NOBODY, STATICX_CACHE_DIR="/var/tmp/mine")
    assert "populating /var/tmp/mine/" in r.stderr, r.stderr


def test_disk_full_falls_back(ns_factory: Any) -> None:
    """ENOSPC while populating (a 4 MB /var/lib): per-call mode, the partial
    staging dir removed, nothing published."""
    ns = ns_factory(var_lib="mode=0755,size=4m")
    r = ns.runproc("--version")
    check_version(r)
    assert "file system full" in r.stderr and "per-call" in r.stderr, r.stderr
    assert entries(ns, ROOT_CACHE) == [] and scratch(ns, ROOT_CACHE) == []


def test_versions_side_by_side_and_collection(ns_factory: Any, stage: Path, tmp_path: Path) -> None:
    """Versions A, B, C (same content, other build ids).  B's populate keeps A
    while a process holds A's shared lock; C's populate collects A and B once
    unused (unmounted and removed)."""
    ids = {n: make_variant(stage, tmp_path / n, n) for n in ("A", "B", "C")}
    ns = ns_factory({n: tmp_path / n for n in ids})
    ea, eb, ec = (ids[n][:32] for n in "ABC")
    check_version(ns.runproc("--version", name="A"))
    holder = subprocess.Popen(ns.argv([
        "python3", "-c",
        "import fcntl, os, sys, time\n"
        f"fd = os.open('{ROOT_CACHE}/{ea}/.staticx.buildid', os.O_RDONLY)\n"
        "fcntl.flock(fd, fcntl.LOCK_SH); print('locked', flush=True); time.sleep(120)"]),
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        r = ns.runproc("--version", name="B")
        check_version(r)
        assert f"keeping {ea} (in use)" in r.stderr, r.stderr
        assert entries(ns, ROOT_CACHE) == sorted([ea, eb])
        check_version(ns.runproc("--version", name="A"))   # still a hit
    finally:
        holder.kill()
        holder.wait()
    r = ns.runproc("--version", name="C")
    check_version(r)
    assert f"collecting {ea}" in r.stderr and f"collecting {eb}" in r.stderr, r.stderr
    assert entries(ns, ROOT_CACHE) == [ec]
    assert scratch(ns, ROOT_CACHE) == []
    assert not any(mp.startswith(f"{ROOT_CACHE}/{e}") for mp, _ in ns.mounts() for e in (ea, eb))


NOEXEC = "mode=1777,noexec,nosuid,nodev"


@pytest.mark.parametrize("uid", [None, NOBODY], ids=["root", "nobody"])
@pytest.mark.parametrize("noexec", ["tmp+run", "tmp+run+var_tmp", "all+var_lib"])
def test_noexec_combinations(ns_factory: Any, uid: int | None, noexec: str) -> None:
    """Kind-like noexec /tmp and /run, and worse: the cache is only ever on an
    exec-capable file system; otherwise the per-call mode (in /dev/shm or the
    binary's dir) takes over.  Second call: a hit where a cache was usable."""
    ns = ns_factory(tmp=NOEXEC, run_opts=NOEXEC,
                    var_tmp=NOEXEC if noexec != "tmp+run" else "mode=1777",
                    var_lib="mode=0755,noexec" if noexec == "all+var_lib" else "mode=0755")
    expect = {
        (None, "tmp+run"): ROOT_CACHE, (None, "tmp+run+var_tmp"): ROOT_CACHE,
        (NOBODY, "tmp+run"): NOBODY_CACHE,
    }.get((uid, noexec))
    r1 = ns.runproc("--version", uid=uid)
    check_version(r1)
    r2 = ns.runproc("--version", uid=uid)
    check_version(r2)
    if expect:
        assert f"hit: {expect}/" in r2.stderr, r2.stderr
    else:
        assert "using a per-call directory" in r2.stderr, r2.stderr
        assert "noexec" in r2.stderr, r2.stderr
    time.sleep(0.3)
    assert not per_call_dirs(ns), per_call_dirs(ns)


@pytest.mark.parametrize("with_tmp", [True, False], ids=["proc+tmp", "proc-only"])
def test_chroot(tmp_path: Path, with_tmp: bool) -> None:
    """An empty root with /proc (and a 1777 /tmp): root caches in
    /tmp/runproc-cache-0 (no /var there) and hits the second time; with only
    /proc, the per-call mode unpacks next to the binary and cleans up."""
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    if with_tmp:
        (root / "tmp").mkdir()
        (root / "tmp").chmod(0o1777)
    shutil.copy2(BIN, root / "runproc")
    (root / "runproc").chmod(0o755)
    script = (f'mount -t proc proc "{root}/proc"\n'
              f'chroot "{root}" /runproc --version\n'
              f'chroot "{root}" /runproc --version\n'
              f'ls -A "{root}/tmp" 2>/dev/null || true\n')
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "/bin/sh", "-ec", script],
                       env={"STATICX_CACHE_TRACE": "1"}, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("runproc version") == 2, r.stdout
    if with_tmp:
        assert "populating /tmp/runproc-cache-0/" in r.stderr and "hit: /tmp/runproc-cache-0/" in r.stderr, r.stderr
    else:
        assert r.stderr.count("using a per-call directory") == 2, r.stderr
        deadline = time.monotonic() + 3
        while any(n.startswith("staticx-") for n in os.listdir(root)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(os.listdir(root)) == ["proc", "runproc"], os.listdir(root)


def _host_bundle(ns: Ns, args: list[str]) -> str:
    bundle = f"/tmp/bundle-{time.time_ns()}"
    ns.sh(f"mkdir -p {bundle}/rootfs")
    ns.p(f"{bundle}/config.json").write_text(json.dumps({
        "ociVersion": "1.0.2",
        "process": {"args": args, "cwd": "/", "env": ["PATH=" + PATH_ENV]},
        "root": {"path": "rootfs"},
        "annotations": {"runproc.host": "1"},
    }))
    return bundle


def _pids_with_exe(path: str, marker: str) -> list[int]:
    """Processes running `path` with `marker` in their command line (not another test's runproc)."""
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if os.readlink(f"/proc/{p}/exe") == path and marker in _cmdline(p):
                    out.append(int(p))
            except OSError:
                pass
    return out


def test_exe_not_writable_through_proc(ns_factory: Any) -> None:
    """CVE-2019-5736 class, as root: while `runproc run` of a sleeping
    (host-mode) container is alive, its /proc/PID/exe, the cached program and
    libpython cannot be opened for writing (by path, by /proc/PID/exe,
    /proc/PID/map_files, or through an O_PATH handle kept after the process
    ended): EROFS.  Contents unchanged.  The call holds its entry's lock
    (STATICX_LOCK_FD), and the container's program does not inherit it."""
    ns = ns_factory()
    check_version(ns.runproc("--version"))
    entry = f"{ROOT_CACHE}/{entry_name(BIN)}"
    prog, libpython = f"{entry}/runproc", None
    for n in os.listdir(ns.p(f"{entry}/_internal")):
        if n.startswith("libpython"):
            libpython = f"{entry}/_internal/{n}"
    assert libpython, "no libpython in the entry"
    digests = {p: hashlib.sha256(ns.p(p).read_bytes()).hexdigest() for p in (prog, libpython)}

    tag = f"{time.time_ns() % 10**9}"
    bundle = _host_bundle(ns, ["/bin/sleep", f"60.{tag}"])
    p = subprocess.Popen(ns.argv([f"{BINDIR}/runproc", "--root", "/tmp/state", "run", "--bundle", bundle,
                                  f"cve-{tag}"]), env=env_for(), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    handles: list[int] = []
    try:
        deadline = time.monotonic() + 20
        pids: list[int] = []
        while time.monotonic() < deadline:
            pids = _pids_with_exe(prog, f"cve-{tag}")
            sleepers = [q for q in os.listdir("/proc") if q.isdigit() and _cmdline(q) == ["/bin/sleep", f"60.{tag}"]]
            if pids and sleepers:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"runproc run did not start: {p.stderr.read() if p.poll() is not None and p.stderr else ''}")
        pid = pids[0]

        # the contract: the lock fd is open in runproc, and the lock is held
        env = dict(kv.split("=", 1) for kv in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in kv)
        lockfd = env.get("STATICX_LOCK_FD")
        assert lockfd and os.readlink(f"/proc/{pid}/fd/{lockfd}") == f"{entry}/.staticx.buildid"
        r = ns.run(["python3", "-c", "import fcntl, os\n"
                    f"fd = os.open('{entry}/.staticx.buildid', os.O_RDONLY)\n"
                    "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)"])
        assert r.returncode != 0 and "BlockingIOError" in r.stderr, "entry not locked by the running call"
        for q in sleepers:
            for fd in os.listdir(f"/proc/{q}/fd"):
                target = os.readlink(f"/proc/{q}/fd/{fd}")
                assert not target.startswith(ROOT_CACHE), f"container program inherited {target}"

        def must_fail_write(path: str, allowed: tuple[int, ...] = (errno.EROFS,)) -> None:
            try:
                fd = os.open(path, os.O_WRONLY)
            except OSError as e:
                assert e.errno in allowed, f"{path}: {e}"
            else:
                os.close(fd)
                pytest.fail(f"{path} opened for writing")

        # through the namespace's view of the paths
        must_fail_write(str(ns.p(prog)), (errno.EROFS, errno.ETXTBSY))
        must_fail_write(str(ns.p(libpython)))
        # through the running process
        must_fail_write(f"/proc/{pid}/exe", (errno.EROFS, errno.ETXTBSY))
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
            if line.endswith(libpython):
                must_fail_write(f"/proc/{pid}/map_files/{line.split()[0]}")
                break
        else:
            pytest.fail("libpython not mapped")
        # an O_PATH handle kept until the process is gone (the CVE's trick)
        handles.append(os.open(f"/proc/{pid}/exe", os.O_PATH))
    finally:
        for q in os.listdir("/proc"):
            if q.isdigit() and _cmdline(q) == ["/bin/sleep", f"60.{tag}"]:
                os.kill(int(q), signal.SIGKILL)
        p.wait(timeout=20)
    must_fail_write(f"/proc/self/fd/{handles[0]}")
    os.close(handles[0])
    for path, digest in digests.items():
        assert hashlib.sha256(ns.p(path).read_bytes()).hexdigest() == digest, f"{path} changed"


def _cmdline(pid: str) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    except OSError:
        return []


# ------------------------------------------- per-call mode (the fallback)
def test_per_call_cleaner_closes_fds_with_close_range(ns_factory: Any) -> None:
    """The detached cleaner keeps only the lock fd (3 here) and closes the rest
    with close_range(4, ~0U), not with a loop of 65536 close() calls."""
    ns = ns_factory()
    trace = "/tmp/strace-cleaner"
    r = ns.run(["strace", "-f", "-o", trace, "-e", "trace=close,close_range", f"{BINDIR}/runproc", "--version"],
               env=env_for(STATICX_NO_CACHE="1"))
    check_version(r)
    # The cleaner is detached: wait for it to show up in the trace (not for a fixed time).
    deadline = time.monotonic() + 30
    while True:
        calls = strace_joined(ns.p(trace).read_text())
        m = re.search(r"^(\d+) +close_range\(4, 4294967295, 0\) += 0", calls, re.M)
        if m or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert m, calls[-2000:]
    cleaner = m.group(1)
    closes = re.findall(rf"^{cleaner} +close\((\d+)", calls, re.M)
    assert len(closes) < 1000, f"the cleaner closed {len(closes)} fds one by one"  # nftw: a few


def test_per_call_cleaner_survives_killpg(ns_factory: Any) -> None:
    """A caller that SIGKILLs our process group as soon as we exit must not
    kill the cleaner: every per-call dir is still removed.  Every setsid() is
    delayed by 300 ms (strace -DDD: the tracer is not in the caller's group,
    the caller's child is the binary itself), so a cleaner that leaves the
    group only by itself, after its parent exited, is still in it."""
    ns = ns_factory()
    for _ in range(5):
        argv = ["strace", "-DDD", "-f", "-o", "/dev/null", "-e", "trace=setsid",
                "-e", "inject=setsid:delay_enter=300000", f"{BINDIR}/runproc", "--version"]
        # a file, not a pipe: react to the exit, not to EOF
        with tempfile.TemporaryFile() as out:
            p = subprocess.Popen(ns.argv(argv), env=env_for(STATICX_NO_CACHE="1"),
                                 stdout=out, stderr=subprocess.DEVNULL, start_new_session=True)
            p.wait(timeout=30)
            out.seek(0)
            assert out.read().startswith(b"runproc version")
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while per_call_dirs(ns) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not per_call_dirs(ns), f"cleaner killed with the caller's group: {per_call_dirs(ns)}"
