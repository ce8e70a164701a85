"""Fixtures of the cgroup v2 suite: scenarios run in a QEMU VM booted with Debian's kernel.

`run_in_v2_vm(script, files=None, timeout=None) -> VmResult` (fixture) boots once for one
script; `run_v2_scenarios({name: script}, files=None, timeout=None) -> VmResult` boots
once for several (use it from a module-scoped fixture: one boot per test module).
Both fail the test, with the console, when the VM does not boot or a scenario does
not report; they never skip. See README.md.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from runproc_testlib import runproc_path

from cgroupv2.vm import Files, VmError, VmResult, ensure_host_packages, fetch_kernel, run_scenarios

RunScenarios = Callable[..., VmResult]


@pytest.fixture(scope="session")
def v2vm_ready() -> Path:
    """qemu and busybox-static installed, the kernel fetched; the binary under test."""
    binary = runproc_path()
    if not binary.is_file():
        pytest.fail(f"runproc binary {binary} not found: run `make build` (or set RUNPROC_BIN)")
    try:
        # Installs only what is missing (apt-get update + install, as root).
        ensure_host_packages()
        fetch_kernel()
    except (subprocess.SubprocessError, VmError) as err:
        pytest.fail(f"cannot prepare the cgroup v2 VM: {err}")
    return binary


@pytest.fixture(scope="session")
def run_v2_scenarios(v2vm_ready: Path) -> RunScenarios:
    def run(scenarios: Mapping[str, str], files: Files | None = None, timeout: float | None = None,
            **kwargs: object) -> VmResult:
        try:
            return run_scenarios(scenarios, files, runproc=v2vm_ready, timeout=timeout, **kwargs)  # type: ignore[arg-type]
        except VmError as err:
            pytest.fail(str(err), pytrace=False)

    return run


@pytest.fixture(scope="session")
def run_in_v2_vm(run_v2_scenarios: RunScenarios) -> Callable[..., VmResult]:
    def run(script: str, files: Files | None = None, timeout: float | None = None, **kwargs: object) -> VmResult:
        return run_v2_scenarios({"main": script}, files, timeout, **kwargs)

    return run
