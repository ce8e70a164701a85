"""`make release`: dist/runproc-<version>-linux-<arch> and dist/SHA256SUMS, version from the package."""

from __future__ import annotations

import platform
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_make_release_writes_the_binary_and_its_checksum() -> None:
    if not (REPO / "dist/runproc").is_file():
        pytest.skip("no dist/runproc: run `make build` first")
    init = (REPO / "runproc/__init__.py").read_text()
    version = re.search(r'^__version__ = "([^"]+)"', init, re.M).group(1)  # type: ignore[union-attr]
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    result = subprocess.run(["make", "-C", str(REPO), "release"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    artifact = REPO / "dist" / f"runproc-{version}-linux-{arch}"
    assert artifact.is_file() and artifact.read_bytes() == (REPO / "dist/runproc").read_bytes()
    sums = (REPO / "dist" / "SHA256SUMS").read_text()
    assert sums.split()[1:] == [artifact.name]
    check = subprocess.run(["sha256sum", "--check", "--strict", "SHA256SUMS"], cwd=REPO / "dist",
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    version_line = subprocess.run([str(artifact), "--version"], capture_output=True, text=True).stdout
    assert version_line.startswith(f"runproc version {version}\n")
