"""Signal parsing as runc's kill takes it."""

from __future__ import annotations

import signal

import pytest

from runproc.errors import RunprocError
from runproc.signals import parse_signal


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("9", signal.SIGKILL),
        ("KILL", signal.SIGKILL),
        ("SIGKILL", signal.SIGKILL),
        ("sigkill", signal.SIGKILL),
        ("kill", signal.SIGKILL),
        ("TERM", signal.SIGTERM),
        ("15", signal.SIGTERM),
        ("SigUsr1", signal.SIGUSR1),
        ("hup", signal.SIGHUP),
        ("RTMIN+2", signal.SIGRTMIN + 2),
        ("RTMAX", signal.SIGRTMAX),
        ("0", 0),
    ],
)
def test_known_signals(raw: str, expected: int) -> None:
    assert parse_signal(raw) == expected


@pytest.mark.parametrize("raw", ["FOO", "SIGFOO", "", "-1", "99", "RTMIN+99", "9x"])
def test_unknown_signals(raw: str) -> None:
    with pytest.raises(RunprocError, match="unknown signal"):
        parse_signal(raw)
