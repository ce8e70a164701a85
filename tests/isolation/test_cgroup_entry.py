"""How the container's first process gets into its cgroup on this host (v1 or hybrid): runproc's own.

create writes no pid to any cgroup.procs (its first taker waits for an RCU grace period,
10-40 ms): the init is born in its v2 directory (clone3 CLONE_INTO_CGROUP) and moves
itself into the v1 ones ("0" to `tasks`). runproc.linux.cgroups.entry explains why; these
tests pin the way in, the fallback where clone3 is refused, and the failure path. strace
watches (and, with inject, breaks) the system calls.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import pytest
from isolation_probe import SpecBundle
from runproc_testlib import Runproc

CGROUP = Path("/sys/fs/cgroup")
HYBRID = (CGROUP / "unified" / "cgroup.controllers").exists()
V1 = sorted(entry.name for entry in CGROUP.iterdir() if os.path.ismount(entry) and entry.name != "unified")

pytestmark = pytest.mark.skipif((CGROUP / "cgroup.controllers").exists(),
                                reason="a cgroup v1 host (tests/cgroupv2 covers v2)")


def cgroups_seen(output: str) -> dict[str, str]:
    """The container's `cat /proc/self/cgroup`: hierarchy (v1 controllers, "" for v2) -> path."""
    return {line.split(":", 2)[1]: line.split(":", 2)[2] for line in output.splitlines() if line.count(":") >= 2}


def bundle_in_own_cgroup(spec_bundle: SpecBundle, script: str) -> tuple[str, Path]:
    """A bundle running `script` with a cgroupsPath of its own: (the path, the bundle)."""
    path = f"/runproc-entry-{uuid.uuid4().hex[:12]}"

    def edit(config: dict) -> None:
        config["linux"]["cgroupsPath"] = path

    return path, spec_bundle(script, edit)


def run_traced(runproc: Runproc, spec_bundle: SpecBundle, tmp_path: Path, *strace: str
               ) -> tuple[str, int, str, str]:
    """`runproc run` of a container that prints its cgroups, under strace -f; (path, exit code, output, trace)."""
    path, bundle = bundle_in_own_cgroup(spec_bundle, "cat /proc/self/cgroup")
    trace = tmp_path / "strace.txt"
    result = runproc("run", "--bundle", str(bundle), f"entry-{uuid.uuid4().hex[:8]}",
                     prefix=("strace", "-f", "-qq", "-y", "-o", str(trace), *strace))
    return path, result.returncode, result.stdout + result.stderr, trace.read_text()


def expected_cgroups(path: str) -> dict[str, str]:
    seen = {line.split(":", 2)[1] for line in Path("/proc/self/cgroup").read_text().splitlines()}
    return {hierarchy: path for hierarchy in seen if hierarchy != "" or HYBRID}


def assert_in_without_a_pid_write(path: str, output: str, trace: str) -> None:
    """The process saw its cgroup in every hierarchy (`output`: its /proc/self/cgroup), and the trace
    shows no pid written to cgroup.procs: "0" to each v1 `tasks`, and (hybrid) a birth by clone3."""
    seen = cgroups_seen(output)
    assert {key: seen.get(key) for key in expected_cgroups(path)} == expected_cgroups(path), output
    assert "cgroup.procs>" not in trace, "a pid was written to cgroup.procs"
    for name in V1:
        assert re.search(rf'write\(\d+</sys/fs/cgroup/{name}{path}/tasks>, "0", 1\) = 1', trace), (name, trace)
    if HYBRID:
        # Born there: strace does not name clone3's cgroup fd, but the process's unified line is its path.
        assert re.search(r"clone3\(\{flags=[^}]*CLONE_INTO_CGROUP[^}]*\}, \d+\) = [1-9]", trace), trace


def assert_nothing_left(path: str) -> None:
    directories = [CGROUP / name / path.lstrip("/") for name in [*V1, "unified"]]
    assert [str(d) for d in directories if d.exists()] == []


def test_the_init_gets_in_without_a_pid_write(runproc: Runproc, spec_bundle: SpecBundle, tmp_path: Path) -> None:
    path, code, output, trace = run_traced(runproc, spec_bundle, tmp_path, "-e", "trace=clone3,write")
    assert code == 0, output
    assert_in_without_a_pid_write(path, output, trace)
    assert_nothing_left(path)


def test_where_clone3_is_refused_create_joins_by_pid(runproc: Runproc, spec_bundle: SpecBundle,
                                                     tmp_path: Path) -> None:
    """As under a seccomp filter that answers ENOSYS (Docker's default), or before Linux 5.7."""
    path, code, output, trace = run_traced(runproc, spec_bundle, tmp_path, "-e", "trace=clone3,write",
                                           "-e", "inject=clone3:error=ENOSYS")
    assert code == 0, output
    seen = cgroups_seen(output)
    assert {key: seen.get(key) for key in expected_cgroups(path)} == expected_cgroups(path), output
    assert "ENOSYS" in trace and "CLONE_INTO_CGROUP" in trace, trace
    assert re.search(rf'write\(\d+</sys/fs/cgroup/devices{path}/cgroup.procs>, "\d+", \d+\) = \d+', trace), trace
    assert_nothing_left(path)


def test_a_failed_self_join_fails_create_and_leaves_nothing(runproc: Runproc, spec_bundle: SpecBundle,
                                                            tmp_path: Path) -> None:
    path, bundle = bundle_in_own_cgroup(spec_bundle, "sleep 1000")
    tasks = f"/sys/fs/cgroup/pids{path}/tasks"
    strace = ("strace", "-f", "-qq", "-o", "/dev/null", "-P", tasks, "-e", "trace=openat",
              "-e", "inject=openat:error=EACCES")
    result = runproc("create", "--bundle", str(bundle), "selfjoin", prefix=strace)
    assert result.returncode == 1, result.stderr
    assert f"cgroup: join /sys/fs/cgroup/pids{path}: permission denied" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (runproc.root / "selfjoin").exists()
    assert_nothing_left(path)


def test_an_exec_gets_in_without_a_pid_write(runproc: Runproc, spec_bundle: SpecBundle, tmp_path: Path) -> None:
    """exec's process joins the same way (and, on v2, Kubernetes' exec probes skip the grace period too)."""
    path, bundle = bundle_in_own_cgroup(spec_bundle, "sleep 1000")
    runproc.ok("create", "--bundle", str(bundle), "execd")
    trace = tmp_path / "strace.txt"
    result = runproc("exec", "execd", "cat", "/proc/self/cgroup",
                     prefix=("strace", "-f", "-qq", "-y", "-o", str(trace), "-e", "trace=clone3,write"))
    assert result.returncode == 0, result.stderr
    assert_in_without_a_pid_write(path, result.stdout, trace.read_text())
    runproc.ok("delete", "--force", "execd")
    assert_nothing_left(path)
