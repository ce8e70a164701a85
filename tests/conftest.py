"""Fixtures shared by the test suites; the helpers they use live in runproc_testlib."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from runproc_testlib import REPO, MakeBundle, Runproc, default_process, make_reachable, runproc_path

# The Kind-like node's session fixtures, shared by tests/node and tests/cri (whose cases also
# run on the node): registered once, here, so that the node boots once per session.
pytest_plugins = ["node.node_fixtures"]


@pytest.fixture(scope="session")
def runproc_bin() -> Path:
    path = runproc_path()
    if not path.is_file():
        pytest.fail(f"runproc binary {path} not found: run `make build` (or set RUNPROC_BIN)")
    return path


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A static busybox root filesystem, shared read-only by the tests' bundles."""
    root = tmp_path_factory.mktemp("rootfs-busybox")
    subprocess.run([str(REPO / "build/make-rootfs.sh"), str(root)], check=True, timeout=120)
    # Reachable by everyone: containers of other users chroot into it, and runproc
    # looks programs up with the container user's permissions.
    make_reachable(root)
    return root


@pytest.fixture
def world_tmp(tmp_path: Path) -> Path:
    """tmp_path, reachable (and the dir writable) by the unprivileged user, for nobody's tests."""
    make_reachable(tmp_path)
    os.chmod(tmp_path, 0o777)
    return tmp_path


@pytest.fixture
def make_bundle(tmp_path: Path, busybox_rootfs: Path) -> MakeBundle:
    """make_bundle(args, name=..., host=False, rootfs=None, annotations=None, **process_fields) -> bundle dir."""
    counter = iter(range(1000))

    def make(
        args: list[str],
        name: str | None = None,
        host: bool = False,
        rootfs: Path | str | None = None,
        annotations: dict[str, str] | None = None,
        config: dict | None = None,
        **process_fields: object,
    ) -> Path:
        bundle = tmp_path / (name or f"bundle{next(counter)}")
        bundle.mkdir(mode=0o755)
        os.chmod(bundle, 0o755)
        process = default_process(args)
        process.update(process_fields)
        spec_annotations = dict(annotations or {})
        if host:
            spec_annotations["runproc.host"] = "1"
        spec: dict[str, object] = {
            "ociVersion": "1.0.2",
            "process": process,
            "root": {"path": str(rootfs or busybox_rootfs)},
            "annotations": spec_annotations,
        }
        if config is not None:
            spec = config
        (bundle / "config.json").write_text(json.dumps(spec, indent=1))
        return bundle

    return make


@pytest.fixture
def state_root(tmp_path: Path) -> Path:
    root = tmp_path / "state"
    root.mkdir()
    return root


@pytest.fixture
def runproc(runproc_bin: Path, state_root: Path) -> Iterator[Runproc]:
    tool = Runproc(runproc_bin, state_root)
    yield tool
    # Whatever a test left: force-delete it, so no process outlives the test.
    if state_root.is_dir():
        for entry in state_root.iterdir():
            if entry.is_dir():
                tool("delete", "--force", entry.name)
    shutil.rmtree(state_root, ignore_errors=True)

