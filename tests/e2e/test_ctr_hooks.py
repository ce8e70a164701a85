"""End-to-end: OCI hooks through containerd (`ctr run --config SPEC` hands our spec, hooks and all,
to the shim, which runs the runtime under test on it)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hooks_testlib import (
    every_kind,
    hook,
    hooks_config,
    hooks_rootfs,
    install_recorder,
    read_order,
    read_record,
)

if TYPE_CHECKING:  # conftest is not an importable module at run time; fixtures carry it.
    from conftest import Ctr

NewId = Callable[[str], str]
ORDER = ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"]


@pytest.fixture(scope="module")
def hooks_dir(e2e_workdir: Path, rootfs: Path) -> Path:
    where = e2e_workdir / "hooks"
    if where.exists():
        shutil.rmtree(where)
    where.mkdir()
    hooks_rootfs(rootfs, where)
    install_recorder(where / "recorder.sh")
    return where


def run_with_hooks(ctr: Ctr, hooks_dir: Path, cid: str, edit: Callable[[dict, Path], None] | None = None,
                   args: list[str] | None = None) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = hooks_dir / f"out-{cid}"
    out.mkdir()
    config = hooks_config(hooks_dir / "rootfs", out, args or ["echo", "hello from the program"],
                          every_kind(hooks_dir / "recorder.sh", out))
    config["linux"]["cgroupsPath"] = f"/runproc-e2e/{cid}"  # where the suite's teardown looks
    if edit is not None:
        edit(config, out)
    spec = hooks_dir / f"{cid}.json"
    spec.write_text(json.dumps(config))
    proc = ctr(
        "run", "--rm", "--fifo-dir", ctr.fifo_dir, "--runc-binary", ctr.runtime, "--runc-root", ctr.runc_root,
        "--config", spec, cid,
    )
    return proc, out


def test_hooks_run_under_containerd(ctr: Ctr, new_id: NewId, hooks_dir: Path) -> None:
    cid = new_id("hooks")
    proc, out = run_with_hooks(ctr, hooks_dir, cid)
    assert proc.returncode == 0, ctr.describe(proc)
    assert proc.stdout == "hello from the program\n"
    assert read_order(out) == ORDER
    state = read_record(out, "createRuntime")["stdin"]
    assert (state["id"], state["status"]) == (cid, "creating")
    # The program (echo) may be done by the time start runs poststart: the state says so truthfully.
    assert read_record(out, "poststart")["stdin"]["status"] in ("running", "stopped")
    assert read_record(out, "poststop")["stdin"]["status"] == "stopped"
    assert not (ctr.runtime_root / cid).exists()


def test_a_failing_create_runtime_hook_comes_back_through_ctr(ctr: Ctr, new_id: NewId, hooks_dir: Path) -> None:
    def failing(config: dict, out: Path) -> None:
        config["hooks"]["createRuntime"] = [hook(hooks_dir / "recorder.sh", out, "createRuntime",
                                                 env=["HOOK_EXIT=3"])]

    cid = new_id("hookfail")
    proc, out = run_with_hooks(ctr, hooks_dir, cid, failing)
    assert proc.returncode != 0, ctr.describe(proc)
    # The shim reads it from the runtime's --log (its last "error" record).
    assert "error running createRuntime hook #0: error running hook: exit status 3, stdout: stdout of " \
           "createRuntime" in proc.stderr, ctr.describe(proc)
    assert read_order(out) == ["prestart", "createRuntime", "poststop"]
    assert "hello" not in proc.stdout
    assert not (ctr.runtime_root / cid).exists()
