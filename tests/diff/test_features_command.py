"""`features`: runc's JSON shape, listing only what runproc's spec step accepts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from runproc_testlib import Runproc

RUNC = Path("/usr/sbin/runc")

pytestmark = pytest.mark.skipif(not RUNC.is_file(), reason="needs runc")


def features(tool: Runproc) -> dict:
    return json.loads(tool.ok("features").stdout)


def test_features_has_runcs_shape(runproc: Runproc, tmp_path: Path) -> None:
    ours, theirs = features(runproc), features(Runproc(RUNC, tmp_path, name="runc"))
    assert set(ours) == set(theirs)
    assert set(ours["linux"]) == set(theirs["linux"])
    assert set(ours["linux"]["seccomp"]) == set(theirs["linux"]["seccomp"])
    assert set(ours["linux"]["cgroup"]) == set(theirs["linux"]["cgroup"])


def test_features_lists_what_runc_lists_where_runproc_does_it(runproc: Runproc, tmp_path: Path) -> None:
    ours, theirs = features(runproc), features(Runproc(RUNC, tmp_path, name="runc"))
    assert ours["hooks"] == theirs["hooks"]  # all six, in runc's order
    assert ours["mountOptions"] == theirs["mountOptions"]
    assert ours["linux"]["capabilities"] == theirs["linux"]["capabilities"]
    assert set(theirs["linux"]["namespaces"]) <= set(ours["linux"]["namespaces"])
    assert set(ours["linux"]["seccomp"]["actions"]) == set(theirs["linux"]["seccomp"]["actions"]) - {
        "SCMP_ACT_NOTIFY"}
    assert ours["linux"]["seccomp"]["operators"] == theirs["linux"]["seccomp"]["operators"]


def test_features_claims_nothing_runproc_lacks(runproc: Runproc) -> None:
    ours = features(runproc)
    # The fs drivers for v1 and v2 and systemd's on the system bus, not the user's (runproc.linux.cgroups).
    assert ours["linux"]["cgroup"] == {"v1": True, "v2": True, "systemd": True, "systemdUser": False}
    assert ours["linux"]["apparmor"] == {"enabled": False} and ours["linux"]["selinux"] == {"enabled": False}
