"""runproc.linux.cgroups.entry's pure parts (its way into the cgroup: tests/isolation/test_cgroup_entry.py)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from runproc.linux.cgroups.entry import kernel_version


@pytest.mark.parametrize(("release", "expected"), [
    ("6.18.44-fc-v669", (6, 18)), ("6.1.0-28-amd64", (6, 1)), ("5.10.0", (5, 10)), ("6.3rc1", (6, 3)), ("7", (7, 0)),
])
def test_kernel_version(monkeypatch: pytest.MonkeyPatch, release: str, expected: tuple[int, int]) -> None:
    monkeypatch.setattr(os, "uname", lambda: SimpleNamespace(release=release))
    assert kernel_version() == expected
