"""Shared fixtures for the packaging tests: they drive the real packaging/install.sh."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "packaging"
INSTALL_SH = PACKAGING / "install.sh"


@dataclass
class NodeLayout:
    """A directory standing in for a node's filesystem (install.sh --root DIR)."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "etc/containerd/config.toml"

    @property
    def binary(self) -> Path:
        return self.root / "usr/local/bin/runproc"

    def write_config(self, text: str) -> Path:
        self.config.parent.mkdir(parents=True, exist_ok=True)
        self.config.write_text(text)
        return self.config


RunInstall = Callable[..., subprocess.CompletedProcess[str]]


MakeLayout = Callable[[], NodeLayout]


@pytest.fixture
def make_layout(tmp_path: Path) -> MakeLayout:
    """Each call gives a new empty node directory (for tests that try several configs)."""
    count = iter(range(1000))

    def make() -> NodeLayout:
        root = tmp_path / f"node{next(count)}"
        root.mkdir()
        return NodeLayout(root)

    return make


@pytest.fixture
def layout(make_layout: MakeLayout) -> NodeLayout:
    return make_layout()


@pytest.fixture
def dummy_binary(tmp_path: Path) -> Path:
    # Deliberately not executable: install.sh must set the mode itself.
    path = tmp_path / "runproc-dummy"
    path.write_text("#!/bin/sh\necho runproc-dummy\n")
    path.chmod(0o644)
    return path


@pytest.fixture
def run_install() -> RunInstall:
    def run(*args: str | os.PathLike[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        # `sh` (dash on Debian) rather than bash: the script must stay POSIX for Kind nodes.
        proc = subprocess.run(
            ["sh", str(INSTALL_SH), *map(str, args)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and proc.returncode != 0:
            pytest.fail(
                f"install.sh {' '.join(map(str, args))} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    return run
