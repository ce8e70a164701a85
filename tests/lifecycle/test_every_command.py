"""Every runc subcommand exists: `--help` works and exits 0; checkpoint/restore say clearly that they
are not supported (runproc has no CRIU)."""

from __future__ import annotations

import pytest
from runproc_testlib import Runproc

from runproc.cli import COMMANDS

RUNC_COMMANDS = ("checkpoint", "create", "delete", "events", "exec", "kill", "list", "pause", "ps", "restore",
                 "resume", "run", "spec", "start", "state", "update", "features")


def test_runproc_has_every_runc_command() -> None:
    assert set(RUNC_COMMANDS) <= set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_of_every_command(runproc: Runproc, command: str) -> None:
    result = runproc(command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: runproc {command}")


@pytest.mark.parametrize("command", ["checkpoint", "restore"])
def test_criu_commands_are_refused_clearly(runproc: Runproc, command: str) -> None:
    result = runproc(command, "--image-path", "/tmp/nowhere", "some-id")
    assert result.returncode == 1
    assert result.stderr == "checkpoint and restore are not supported: runproc has no CRIU support\n"
