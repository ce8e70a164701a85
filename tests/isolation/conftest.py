"""Fixtures of the isolation tests (the helpers are in isolation_probe)."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from isolation_probe import RUNC, Probe, SpecBundle, runc_spec
from runproc_testlib import Runproc


@pytest.fixture
def probes(runproc: Runproc, tmp_path: Path) -> Iterator[tuple[Probe, Probe]]:
    if os.geteuid() != 0 or not RUNC.is_file():
        pytest.fail("the isolation tests need root and runc (make test installs runc)")
    runc_root = tmp_path / "state-runc"
    runc_root.mkdir()
    runc = Runproc(RUNC, runc_root, name="runc")
    yield Probe(runc), Probe(runproc)
    for side in (runc, runproc):
        for entry in side.root.iterdir() if side.root.is_dir() else []:
            side("delete", "--force", entry.name, timeout=15)


@pytest.fixture(scope="module")
def probe_rootfs(busybox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The busybox rootfs the probes copy (never run in place: runtimes make device nodes and mount points)."""
    root = tmp_path_factory.mktemp("rootfs-isolation") / "rootfs"
    shutil.copytree(busybox_rootfs, root, symlinks=True)
    os.chmod(root, 0o755)
    return root


@pytest.fixture
def spec_bundle(tmp_path: Path, probe_rootfs: Path) -> SpecBundle:
    """spec_bundle(script, edit=None) -> a bundle of runc spec's config running `sh -c script`."""
    counter = iter(range(1000))

    def make(script: str, edit: Callable[[dict], None] | None = None) -> Path:
        bundle = tmp_path / f"bundle{next(counter)}"
        bundle.mkdir()
        config = runc_spec()
        config["process"]["terminal"] = False
        config["process"]["args"] = ["sh", "-c", script]
        config["root"]["path"] = str(probe_rootfs)
        # runc's default cgroup is /<id>; a unique one keeps tests apart.
        config["linux"]["cgroupsPath"] = f"/runproc-isolation-{uuid.uuid4().hex[:16]}"
        if edit is not None:
            edit(config)
        (bundle / "config.json").write_text(json.dumps(config, indent=1))
        return bundle

    return make
