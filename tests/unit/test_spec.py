"""config.json -> ContainerPlan: what is accepted, what is refused, and how it says so."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from runproc.errors import RunprocError
from runproc.spec import ContainerPlan, load_plan, plan_from_config


def config(**process: object) -> dict:
    base: dict[str, object] = {"args": ["/bin/echo", "hi"], "cwd": "/", "env": ["PATH=/bin", "A=1"]}
    base.update(process)
    return {"ociVersion": "1.0.2", "process": base, "root": {"path": "rootfs"}}


def plan(cfg: dict, euid: int = 1000, host: bool = False, bundle: str = "/b") -> ContainerPlan:
    return plan_from_config(cfg, bundle, host, euid)


def test_plan_fields() -> None:
    cfg = config(
        user={"uid": 5, "gid": 6, "additionalGids": [7, 8]},
        rlimits=[{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200}],
        noNewPrivileges=True,
    )
    cfg["annotations"] = {"a": "b"}
    result = plan(cfg)
    assert result.args == ["/bin/echo", "hi"]
    assert result.env == ["PATH=/bin", "A=1"]
    assert (result.uid, result.gid, result.additional_gids) == (5, 6, [7, 8])
    assert result.rlimits == [(7, 100, 200)]
    assert result.no_new_privileges is True
    assert result.rootfs == "/b/rootfs"
    assert result.annotations == {"a": "b"}
    assert result.host_mode is False


def test_surrogate_escaped_bytes_are_fine() -> None:
    """Non-UTF-8 bytes in a path arrive as surrogate escapes and must pass through."""
    assert plan(config(args=["/bin/echo", "\udcff"])).args[1] == "\udcff"


def test_nulls_mean_absent() -> None:
    result = plan(config(env=None, user=None, rlimits=None, terminal=None))
    assert (result.env, result.uid, result.rlimits, result.terminal) == ([], 0, [], False)


def test_deeply_nested_json_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("[" * 100000)
    with pytest.raises(RunprocError, match="invalid JSON: nested too deeply"):
        load_plan(str(tmp_path), False, 1000)


def test_unlimited_rlimit_maps_to_minus_one() -> None:
    cfg = config(rlimits=[{"type": "RLIMIT_CORE", "soft": 2**64 - 1, "hard": 2**64 - 1}])
    assert plan(cfg).rlimits == [(4, -1, -1)]


def test_absolute_root_path_kept() -> None:
    cfg = config()
    cfg["root"] = {"path": "/srv/rootfs"}
    assert plan(cfg).rootfs == "/srv/rootfs"


def test_host_mode_by_annotation_or_env() -> None:
    cfg = config()
    cfg["annotations"] = {"runproc.host": "1"}
    assert plan(cfg).host_mode is True
    assert plan(config(), host=True).host_mode is True
    cfg["annotations"] = {"runproc.host": "0"}
    assert plan(cfg).host_mode is False


def test_pod_sandbox_never_runs_in_host_mode_by_annotation() -> None:
    """CRI copies Pod annotations to the pause container, whose binary is only in its image."""
    cfg = config()
    cfg["annotations"] = {"runproc.host": "1", "io.kubernetes.cri.container-type": "sandbox"}
    assert plan(cfg).host_mode is False
    cfg["annotations"]["io.kubernetes.cri.container-type"] = "container"
    assert plan(cfg).host_mode is True


def test_path_env_last_wins() -> None:
    assert plan(config(env=["PATH=/a", "X=1", "PATH=/b"])).path_env() == "/b"
    assert plan(config(env=[])).path_env() is None


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"ociVersion": "1.0.2"}, "process property must not be empty"),
        (config(args=[]), "args must not be empty"),
        (config(args="echo"), "process.args must be a list of strings"),
        (config(cwd="tmp"), "Cwd must be an absolute path"),
        (config(cwd=""), "Cwd must be an absolute path"),
        (config(env="A=1"), "process.env must be a list of strings"),
        (config(rlimits=[{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}]), "unknown rlimit type 'RLIMIT_BOGUS'"),
        (config(rlimits=[{"type": "RLIMIT_NOFILE", "soft": 2, "hard": 1}]), "soft limit is above its hard limit"),
        (config(rlimits=[{"type": "RLIMIT_NOFILE", "soft": -1, "hard": 1}]), "out of range"),
        (config(user={"uid": -1}), "process.user.uid must be an integer from 0 to 4294967294"),
        (config(user={"uid": True}), "process.user.uid must be an integer from 0 to 4294967294"),
        (config(user={"gid": 2**32}), "process.user.gid must be an integer from 0 to 4294967294"),
        (config(user={"additionalGids": ["x"]}), "additionalGids"),
        (config(user={"additionalGids": [2**40]}), "additionalGids"),
        (config(user=[]), "process.user must be an object"),
        (config(env=["A=1", "B"]), "invalid environment variable 'B': missing '='"),
        (config(env=["=x"]), "invalid environment variable '=x': name cannot be empty"),
        (config(env=["A=\0"]), "process.env[0] contains a NUL byte"),
        (config(args=["/bin/echo", "a\0b"]), "process.args[1] contains a NUL byte"),
        (config(args=["/bin/echo", "\ud800"]), "process.args[1] is not valid text"),
        (config(terminal="yes"), "process.terminal must be a boolean"),
        (config(noNewPrivileges=1), "process.noNewPrivileges must be a boolean"),
        (config(rlimits=[{"type": "RLIMIT_NOFILE", "soft": 2**63, "hard": 2**63}]), "out of range"),
        (config(rlimits={}), "process.rlimits must be a list"),
        ({**config(), "annotations": []}, "annotations must be an object"),
        ({**config(), "root": "rootfs"}, "root must be an object"),
    ],
)
def test_invalid_specs(cfg: dict, message: str) -> None:
    with pytest.raises(RunprocError, match=re.escape(message)):
        plan(cfg)


def test_root_needs_a_rootfs_unless_host_mode(tmp_path: Path) -> None:
    cfg = config()
    with pytest.raises(RunprocError, match="rootfs .*rootfs: no such directory"):
        plan(cfg, euid=0, bundle=str(tmp_path))
    assert plan(cfg, euid=0, bundle=str(tmp_path), host=True).host_mode
    (tmp_path / "rootfs").mkdir()
    assert plan(cfg, euid=0, bundle=str(tmp_path)).contained
    del cfg["root"]
    with pytest.raises(RunprocError, match="root.path must be set"):
        plan(cfg, euid=0, bundle=str(tmp_path))


def test_unprivileged_needs_no_rootfs(tmp_path: Path) -> None:
    result = plan(config(), euid=1000, bundle=str(tmp_path))
    assert not result.contained


def test_unprivileged_with_a_user_namespace_is_rootless(tmp_path: Path) -> None:
    cfg = config()
    cfg["linux"] = {"namespaces": [{"type": "user"}, {"type": "mount"}],
                    "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
                    "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]}
    (tmp_path / "rootfs").mkdir()
    result = plan(cfg, euid=1000, bundle=str(tmp_path))
    assert result.contained and result.namespaces is not None and result.namespaces.new("user")
    assert plan(cfg, euid=1000, bundle=str(tmp_path), host=True).contained is False


def test_load_plan_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(RunprocError, match=f"bundle {tmp_path}/missing: no such directory"):
        load_plan(str(tmp_path / "missing"), False, 1000)
    with pytest.raises(RunprocError, match=f"config.json not found in bundle {tmp_path}"):
        load_plan(str(tmp_path), False, 1000)
    (tmp_path / "config.json").write_text("{bad")
    with pytest.raises(RunprocError, match=f"{tmp_path}/config.json: invalid JSON: .*line 1 column 2"):
        load_plan(str(tmp_path), False, 1000)
    (tmp_path / "config.json").write_text("[]")
    with pytest.raises(RunprocError, match="must be a JSON object"):
        load_plan(str(tmp_path), False, 1000)
    (tmp_path / "config.json").write_text(json.dumps(config()))
    assert load_plan(str(tmp_path), False, 1000).args == ["/bin/echo", "hi"]
