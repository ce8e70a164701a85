"""exec and the CVE-2019-5736 class: the runtime's own files out of a container's reach while it execs.

The container here has no pid namespace of its own, so the exec'd program
sees its parent: the `runproc exec` process that waits for it, running the
frozen binary's unpacked files. The program goes for that parent's
/proc/PID/exe, map_files and fds. exec is not dumpable, so without
CAP_SYS_PTRACE even the link cannot be read; with it (a privileged container)
every write fails (the unpack cache is a read-only mount) and the files stay
as they were.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from isolation_probe import SpecBundle, privileged_attacker
from runproc_testlib import Runproc, make_reachable

ATTACK = (
    'p=$PPID; echo "parent $p $(cat /proc/$p/comm)"; echo "exe $(readlink /proc/$p/exe)"; '
    "echo pwned >> /proc/$p/exe && echo wrote-exe; "
    "for f in /proc/$p/map_files/*; do case $(readlink $f) in *runproc*|*/_internal/*|*.so*) "
    "echo pwned >> $f && echo wrote-map $(readlink $f);; esac; done; "
    'echo "maps $(ls /proc/$p/map_files 2>/dev/null | wc -l)"; '
    'for f in /proc/$p/fd/*; do echo "fd $f $(readlink $f)"; done'
)


def cache_files(directory: Path) -> dict[str, str]:
    return {str(path): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(directory.rglob("*")) if path.is_file() and not path.is_symlink()}


def no_pid_namespace(privileged: bool):  # noqa: ANN201 - an edit for spec_bundle
    def edit(config: dict) -> None:
        config["linux"]["namespaces"] = [ns for ns in config["linux"]["namespaces"] if ns["type"] != "pid"]
        if privileged:
            privileged_attacker(config)

    return edit


def start(runproc: Runproc, spec_bundle: SpecBundle, cid: str, privileged: bool) -> None:
    bundle = spec_bundle("exec sleep 1000", no_pid_namespace(privileged))
    config = json.loads((bundle / "config.json").read_text())
    shutil.copytree(config["root"]["path"], bundle / "rootfs", symlinks=True)
    make_reachable(bundle / "rootfs")
    config["root"]["path"] = str(bundle / "rootfs")
    (bundle / "config.json").write_text(json.dumps(config))
    runproc.ok("run", "--detach", "--bundle", str(bundle), cid)


def unpacked_directory(runproc: Runproc, spec_bundle: SpecBundle, tmp_path: Path) -> Path:
    """Where this binary's files are unpacked: seen through a created container's waiting init."""
    pid_file = tmp_path / "waiting.pid"
    runproc.ok("create", "--bundle", str(spec_bundle("true")), "--pid-file", str(pid_file), "waiting")
    return Path(os.path.realpath(f"/proc/{int(pid_file.read_text())}/exe")).parent


def test_privileged_exec_cannot_write_the_runtime(runproc: Runproc, spec_bundle: SpecBundle, tmp_path: Path) -> None:
    unpacked = unpacked_directory(runproc, spec_bundle, tmp_path)
    before = cache_files(unpacked)
    assert len(before) > 5, before
    start(runproc, spec_bundle, "privileged", privileged=True)
    result = runproc("exec", "privileged", "sh", "-c", ATTACK)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("parent ") and lines[1].startswith(f"exe {unpacked}/"), result.stdout  # it got there
    assert "wrote" not in result.stdout, result.stdout
    assert int(next(line for line in lines if line.startswith("maps ")).split()[1]) > 5, result.stdout
    # The waiting exec holds its stdio, its report pipe and the bootloader's lock on the (read-only)
    # unpacked files: nothing of the host's to go through (no state root, no bundle directory).
    held = {int(fields[1].rsplit("/", 1)[1]): fields[2] if len(fields) > 2 else ""
            for fields in (line.split(" ", 2) for line in lines if line.startswith("fd "))}
    others = {fd: target for fd, target in held.items()
              if fd > 2 and not target.startswith(("pipe:", f"{unpacked}/"))}
    assert not others, held
    assert cache_files(unpacked) == before


def test_exec_is_not_dumpable_before_it_forks_or_joins(runproc: Runproc, spec_bundle: SpecBundle,
                                                        tmp_path: Path) -> None:
    """exec turns dumpable off before anything else: its child, born in the container's pid
    namespace, inherits that until it execs the program (strace shows the order)."""
    start(runproc, spec_bundle, "plain", privileged=False)
    trace = tmp_path / "trace"
    result = runproc("exec", "plain", "true", prefix=("strace", "-f", "-qq", "-o", str(trace), "-e",
                                                       "trace=prctl,clone,clone3,fork,vfork,setns,execve"))
    assert result.returncode == 0, result.stderr
    calls = [line.split(None, 1)[1] for line in trace.read_text().splitlines()]
    calls = [call for call in calls if not call.startswith("+++")]
    dumpable = next(n for n, call in enumerate(calls) if call.startswith("prctl(PR_SET_DUMPABLE, SUID_DUMP_DISABLE"))
    forks = [n for n, call in enumerate(calls) if call.startswith(("clone", "fork", "vfork")) and n > 0]
    joins = [n for n, call in enumerate(calls) if call.startswith("setns(")]
    assert forks and joins, calls
    assert dumpable < min(forks + joins), calls
