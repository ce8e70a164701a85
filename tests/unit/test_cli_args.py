"""Argument parsing: runc's shapes, both flag spellings, positional bundle, errors."""

from __future__ import annotations

import pytest

from runproc.cli import HelpRequested, parse_args, state_root
from runproc.errors import RunprocError


def test_global_flags_then_create_with_flags() -> None:
    parsed = parse_args(
        ["--root", "/r", "--log", "/l.json", "--log-format=json", "create", "--bundle", "/b", "--pid-file=/p", "c1"]
    )
    assert parsed.globals == {"root": "/r", "log": "/l.json", "log_format": "json"}
    assert parsed.command == "create"
    assert parsed.values == {"bundle": "/b", "pid_file": "/p", "id": "c1"}


def test_short_bundle_flag_and_single_dash_long_flag() -> None:
    assert parse_args(["create", "-b", "/b", "c1"]).values["bundle"] == "/b"
    assert parse_args(["create", "-bundle", "/b2", "c1"]).values["bundle"] == "/b2"


def test_bundle_as_positional_after_id() -> None:
    parsed = parse_args(["create", "--pid-file", "/s/pid", "demo", "/work/examples/echo"])
    assert parsed.values == {"pid_file": "/s/pid", "id": "demo", "bundle": "/work/examples/echo"}


def test_bundle_given_twice_differently_is_an_error() -> None:
    with pytest.raises(RunprocError, match="bundle given twice"):
        parse_args(["create", "-b", "/a", "c1", "/b"])


def test_runc_flags_accepted_without_effect() -> None:
    parsed = parse_args(
        ["--debug", "--systemd-cgroup", "--rootless", "false", "--criu", "/x", "create",
         "--no-pivot", "--no-new-keyring", "--console-socket", "/s.sock", "--preserve-fds", "2", "c1"]
    )
    assert parsed.globals["debug"] is True and parsed.globals["rootless"] == "false"
    assert parsed.values["no_pivot"] is True and parsed.values["preserve_fds"] == "2"


def test_kill_signal_positional_and_all_flags() -> None:
    assert parse_args(["kill", "--all", "c1", "9"]).values == {"all": True, "id": "c1", "signal": "9"}
    assert parse_args(["kill", "-a", "c1"]).values == {"all": True, "id": "c1"}


def test_delete_force_forms() -> None:
    assert parse_args(["delete", "-f", "c1"]).values["force"] is True
    assert parse_args(["delete", "--force=false", "c1"]).values["force"] is False


def test_run_flags() -> None:
    values = parse_args(["run", "-d", "--keep", "--bundle=/b", "c1"]).values
    assert values == {"detach": True, "keep": True, "bundle": "/b", "id": "c1"}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["create", "--bogus", "c1"], "flag provided but not defined: --bogus"),
        (["create", "--bundle"], "flag needs an argument: --bundle"),
        (["start"], "takes arguments ID"),
        (["state", "a", "b"], "takes arguments ID"),
        (["frobnicate", "x"], "no such command"),
        (["--log-format"], "flag needs an argument"),
        (["delete", "--force=maybe", "c1"], "invalid boolean value"),
    ],
)
def test_bad_command_lines(argv: list[str], message: str) -> None:
    with pytest.raises(RunprocError, match=message):
        parse_args(argv)


@pytest.mark.parametrize("argv", [[], ["--help"], ["-h"], ["help"], ["create", "--help"]])
def test_help(argv: list[str]) -> None:
    with pytest.raises(HelpRequested, match="usage: runproc"):
        parse_args(argv)


@pytest.mark.parametrize("flag", ["--version", "-v"])
def test_version(flag: str) -> None:
    assert parse_args([flag]).command == "version"


def test_state_root_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNPROC_STATE_DIR", "/env/state")
    assert state_root("/cli") == "/cli"
    assert state_root(None) == "/env/state"
    monkeypatch.delenv("RUNPROC_STATE_DIR")
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    assert state_root(None) == "/run/runproc"


def test_python_dash_m_runs_the_same_cli() -> None:
    """`python -m runproc` is the unfrozen CLI (run from the checkout, no PYTHONPATH)."""
    import os
    import subprocess
    import sys

    from runproc_testlib import REPO

    # As a developer runs it: from the checkout, with no PYTHONPATH.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    result = subprocess.run([sys.executable, "-m", "runproc", "--version"], capture_output=True, text=True,
                            timeout=60, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("runproc version ")
    bad = subprocess.run([sys.executable, "-m", "runproc", "state"], capture_output=True, text=True, timeout=60,
                         cwd=REPO, env=env)
    assert bad.returncode == 1 and bad.stderr == "'state' takes arguments ID, got 0\n"
