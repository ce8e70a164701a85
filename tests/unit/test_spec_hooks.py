"""The hooks spec step (runproc.spec.hooks) and the runner's pure parts and its own process handling
(runproc.hooks): no root, no container."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from runproc.errors import RunprocError
from runproc.hooks import (
    HookFailed,
    env_dict,
    oci_state,
    recorded_hooks,
    run_hook,
    run_hooks,
    runtime_environment,
    start_wait,
)
from runproc.spec import plan_from_config
from runproc.spec.hooks import HOOK_KINDS, Hook, parse_hooks
from runproc.state import ContainerRecord


def config_with(hooks: object) -> dict:
    return {"ociVersion": "1.0.2", "process": {"args": ["true"], "cwd": "/"}, "hooks": hooks}


def plan_of(hooks: object):
    # Host mode as an unprivileged caller: the hooks step runs in every mode.
    return plan_from_config(config_with(hooks), "/bundle", True, 1000)


def test_every_kind_is_read_in_order_with_its_fields() -> None:
    hooks = {kind: [{"path": f"/bin/{kind}", "args": [kind, "a b"], "env": ["A=1", "B=x=y"], "timeout": 5}]
             for kind in HOOK_KINDS}
    plan = plan_of(hooks)
    assert plan.hooks is not None
    assert list(plan.hooks.kinds) == list(HOOK_KINDS)
    for kind in HOOK_KINDS:
        (hook,) = plan.hooks_of(kind)
        assert (hook.path, hook.args, hook.env, hook.timeout) == (f"/bin/{kind}", [kind, "a b"], ["A=1", "B=x=y"], 5)


def test_defaults_argv_is_the_path_env_and_timeout_unset() -> None:
    plan = plan_of({"poststop": [{"path": "/bin/true"}, {"path": "/bin/false", "args": []}]})
    first, second = plan.hooks_of("poststop")
    assert (first.args, first.env, first.timeout) == (["/bin/true"], None, None)
    assert second.args == ["/bin/false"]  # Go's exec.Cmd: empty Args means {Path}
    assert plan.hooks_of("prestart") == []


def test_no_hooks_at_all_leaves_no_plan() -> None:
    assert plan_of({}).hooks is None
    assert plan_of({"poststart": [], "prestart": None}).hooks is None
    assert plan_from_config({"process": {"args": ["true"], "cwd": "/"}}, "/b", True, 1000).hooks is None


def test_unknown_kinds_are_ignored_as_runc_does() -> None:
    assert plan_of({"preStart": [{"path": "relative"}]}).hooks is None


@pytest.mark.parametrize(
    ("hooks", "message"),
    [
        ([], "config.json: hooks must be an object"),
        ({"prestart": {}}, "config.json: hooks.prestart must be an array of hooks"),
        ({"createRuntime": ["/bin/true"]}, "config.json: hooks.createRuntime[0] must be an object"),
        ({"poststop": [{}]}, "config.json: hooks.poststop[0].path must be a string"),
        ({"poststop": [{"path": 7}]}, "config.json: hooks.poststop[0].path must be a string"),
        ({"poststart": [{"path": "bin/true"}]},
         "config.json: hooks.poststart[0].path must be an absolute path, got 'bin/true'"),
        ({"poststart": [{"path": "/bin/\0x"}]}, "config.json: hooks.poststart[0].path contains a NUL byte"),
        ({"startContainer": [{"path": "/x", "args": "a"}]},
         "config.json: hooks.startContainer[0].args must be a list of strings"),
        ({"startContainer": [{"path": "/x", "args": ["a", 1]}]},
         "config.json: hooks.startContainer[0].args must be a list of strings"),
        ({"createContainer": [{"path": "/x", "env": ["A"]}]},
         "config.json: hooks.createContainer[0].env[0] must be KEY=value, got 'A'"),
        ({"createContainer": [{"path": "/x", "env": ["A=1", "=1"]}]},
         "config.json: hooks.createContainer[0].env[1] must be KEY=value, got '=1'"),
        ({"prestart": [{"path": "/x", "timeout": 0}]},
         "config.json: hooks.prestart[0].timeout must be greater than zero"),
        ({"prestart": [{"path": "/x", "timeout": -3}]},
         "config.json: hooks.prestart[0].timeout must be greater than zero"),
        ({"prestart": [{"path": "/x", "timeout": 1.5}]},
         "config.json: hooks.prestart[0].timeout must be an integer number of seconds"),
        ({"prestart": [{"path": "/x", "timeout": True}]},
         "config.json: hooks.prestart[0].timeout must be an integer number of seconds"),
        ({"prestart": [{"path": "/x", "timeout": 2**40}]},
         "config.json: hooks.prestart[0].timeout must be greater than zero"),
        ({"poststop": [{"path": "/x"}, {"path": "/y", "timeout": "1"}]},
         "config.json: hooks.poststop[1].timeout must be an integer number of seconds"),
    ],
)
def test_bad_hooks_name_the_field(hooks: object, message: str) -> None:
    with pytest.raises(RunprocError) as caught:
        plan_of(hooks)
    assert caught.value.message.startswith(message)


def test_the_record_round_trip_gives_the_same_hooks() -> None:
    plan = plan_of({"poststart": [{"path": "/a", "env": ["X=1"], "timeout": 3}], "poststop": [{"path": "/b"}]})
    assert plan.hooks is not None
    record = ContainerRecord("c", "/run/x/c")
    record.hooks = json.loads(json.dumps(plan.hooks.to_json()))
    again = recorded_hooks(record)
    assert again is not None and again.to_json() == plan.hooks.to_json()
    assert recorded_hooks(ContainerRecord("c", "/run/x/c")) is None


def test_state_has_runcs_shape() -> None:
    state = json.loads(oci_state("c1", "creating", 42, "/b", {"k": "v"}))
    assert list(state) == ["ociVersion", "id", "status", "pid", "bundle", "annotations"]
    assert state["status"] == "creating" and state["pid"] == 42
    # As runc's (Go's omitempty): no pid once stopped, no annotations when there are none.
    assert list(json.loads(oci_state("c1", "stopped", 0, "/b", {}))) == ["ociVersion", "id", "status", "bundle"]


def test_start_waits_for_the_start_hooks_timeouts_or_for_ever() -> None:
    plan = parse_hooks({"startContainer": [{"path": "/a", "timeout": 3}, {"path": "/b", "timeout": 4}]})
    assert start_wait(plan, 10) == 17
    assert start_wait(parse_hooks({"startContainer": [{"path": "/a"}]}), 10) is None
    assert start_wait(parse_hooks({"poststop": [{"path": "/a"}]}), 10) == 10
    assert start_wait(None, 10) == 10


def test_env_dict_keeps_the_last_of_a_name() -> None:
    assert env_dict(["A=1", "B=2=3", "A=4", "C="]) == {"A": "4", "B": "2=3", "C": ""}


def test_runtime_environment_drops_the_bootloaders_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATICX_BUNDLE_DIR", "/cache")
    monkeypatch.setenv("_PYI_ARCHIVE_FILE", "/cache/runproc")
    monkeypatch.setenv("LD_LIBRARY_PATH", "/cache/_internal:/mine")
    monkeypatch.setenv("LD_LIBRARY_PATH_ORIG", "/mine")
    monkeypatch.setenv("HOOKS_UNIT", "kept")
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    env = runtime_environment()
    assert env["HOOKS_UNIT"] == "kept"
    assert env["LD_LIBRARY_PATH"] == "/mine"
    assert not [key for key in env if key.startswith(("STATICX_", "_PYI_")) or key == "LD_LIBRARY_PATH_ORIG"]
    monkeypatch.delenv("LD_LIBRARY_PATH_ORIG")
    assert "LD_LIBRARY_PATH" not in runtime_environment()  # the bootloader's own: gone


# --- the runner, on real processes (no root needed) -----------------------------------------


def sh_hook(script: str, timeout: int | None = None, env: list[str] | None = None) -> Hook:
    return Hook("/bin/sh", ["sh", "-c", script, "hook-argv0"], env, timeout)


def test_a_hook_gets_the_state_on_stdin_exactly_its_env_and_the_cwd(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_hook(sh_hook(f'cat > {out}; echo "|$0|$(pwd)|" >> {out}; env >> {out}'),
             b'{"id": "x"}', {"ONLY": "this"}, str(tmp_path))
    first, *env = out.read_text().splitlines()
    assert first == '{"id": "x"}|hook-argv0|' + str(tmp_path) + "|"
    assert "ONLY=this" in env
    assert {line.partition("=")[0] for line in env} <= {"ONLY", "PWD", "SHLVL", "_"}  # what sh adds


def test_a_failing_hook_has_runcs_message_with_its_output() -> None:
    with pytest.raises(HookFailed) as caught:
        run_hook(sh_hook("echo out; echo err >&2; exit 3"), b"{}", {}, None)
    assert str(caught.value) == "error running hook: exit status 3, stdout: out\n, stderr: err\n"


def test_a_killed_hook_says_by_which_signal() -> None:
    with pytest.raises(HookFailed) as caught:
        run_hook(sh_hook("kill -TERM $$"), b"{}", {}, None)
    assert str(caught.value).startswith("error running hook: signal: terminated, stdout: ")


def test_a_missing_hook_is_a_fork_exec_error() -> None:
    with pytest.raises(HookFailed) as caught:
        run_hook(Hook("/no/such/hook", ["x"], None, None), b"{}", {}, None)
    assert str(caught.value) == "fork/exec /no/such/hook: no such file or directory"


def test_a_hook_past_its_timeout_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    with pytest.raises(HookFailed) as caught:
        run_hook(sh_hook(f"echo $$ > {pid_file}; exec sleep 30", timeout=1), b"{}", {}, None)
    assert str(caught.value) == "hook ran past specified timeout of 1.0s"
    assert not Path(f"/proc/{pid_file.read_text().strip()}").exists()  # killed and reaped


def test_a_hook_that_ignores_its_stdin_or_leaves_a_child_holding_stdout_is_fine(tmp_path: Path) -> None:
    run_hook(sh_hook("exec 0<&-; exit 0"), b"x" * (1 << 20), {}, None)  # EPIPE on a large state: no failure
    # A daemonised child keeps stdout open: the hook's exit is what counts (runc would wait for EOF).
    pid_file = tmp_path / "pid"
    run_hook(sh_hook(f"sleep 30 & echo $! > {pid_file}; exit 0"), b"{}", {}, None)
    os.kill(int(pid_file.read_text()), 9)


def test_run_hooks_stops_at_the_first_failure_and_names_it(tmp_path: Path) -> None:
    mark = tmp_path / "ran"
    hooks = [sh_hook("exit 0"), sh_hook("exit 5"), sh_hook(f"touch {mark}")]
    with pytest.raises(RunprocError) as caught:
        run_hooks("poststop", hooks, b"{}", {}, None)
    assert caught.value.message.startswith("error running poststop hook #1: error running hook: exit status 5")
    assert not mark.exists()


def test_the_hooks_own_fds_are_only_stdio(tmp_path: Path) -> None:
    out = tmp_path / "fds"
    keep = os.open("/dev/null", os.O_RDONLY)  # not close-on-exec: still never the hook's
    os.set_inheritable(keep, True)
    try:
        run_hook(sh_hook(f"ls /proc/self/fd > {out}"), b"{}", {}, None)
    finally:
        os.close(keep)
    # ls's own directory fd shows too; nothing else beyond 0-2.
    assert len(out.read_text().split()) == 4
