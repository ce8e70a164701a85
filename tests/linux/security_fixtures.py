"""Fixtures for the security tests: runc spec's config on the busybox rootfs, and running it both ways."""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from security_probe import run_probe, run_runc

Config = dict
Both = Callable[[Config, str], tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]]


@pytest.fixture(scope="module")
def base_config(tmp_path_factory: pytest.TempPathFactory, busybox_rootfs: Path) -> Config:
    """runc spec's config.json for the busybox rootfs, without a terminal."""
    where = tmp_path_factory.mktemp("runc-spec")
    subprocess.run(["runc", "spec"], cwd=where, check=True)
    config = json.loads((where / "config.json").read_text())
    config["process"]["terminal"] = False
    config["root"] = {"path": str(busybox_rootfs), "readonly": False}
    return config


@pytest.fixture
def config(base_config: Config) -> Config:
    return copy.deepcopy(base_config)


@pytest.fixture
def both(tmp_path: Path) -> Both:
    """both(config, script) -> (probe result, runc result) of `sh -c script`."""
    counter = iter(range(100))

    def run(config: Config, script: str) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
        config = copy.deepcopy(config)
        config["process"]["args"] = ["/bin/sh", "-c", script]
        return run_probe(config), run_runc(config, tmp_path, str(next(counter)))

    return run


def assert_same(probe: subprocess.CompletedProcess[str], runc: subprocess.CompletedProcess[str]) -> None:
    assert runc.returncode == probe.returncode, (probe.stderr, runc.stderr)
    assert probe.stdout == runc.stdout, (probe.stderr, runc.stderr)
