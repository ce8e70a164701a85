"""Signal names and numbers, without the `signal` module (its enum import costs milliseconds)."""

from __future__ import annotations

import _signal

from runproc.errors import RunprocError


def _signal_table() -> dict[str, int]:
    """NAME (without SIG) -> number, from the C module's constants, so it fits the build's arch."""
    table: dict[str, int] = {}
    for attr in dir(_signal):
        if attr.startswith("SIG") and not attr.startswith(("SIG_", "SIGRT")):
            value = getattr(_signal, attr)
            if isinstance(value, int):
                table[attr[3:]] = value
    table["RTMIN"] = _signal.SIGRTMIN
    table["RTMAX"] = _signal.SIGRTMAX
    return table


def parse_signal(raw: str) -> int:
    """A signal as runc's kill takes it: a number (`9`) or a name (`KILL`, `SIGKILL`, `sigkill`).

    RTMIN+N and RTMAX-N are accepted too.
    """
    text = raw.strip()
    if text.isascii() and text.isdigit():
        number = int(text)
        if 0 <= number <= _signal.SIGRTMAX:
            return number
        raise RunprocError(f"unknown signal {raw!r}")
    name = text.upper()
    if name.startswith("SIG"):
        name = name[3:]
    table = _signal_table()
    if name in table:
        return table[name]
    for base, sign in (("RTMIN+", 1), ("RTMAX-", -1)):
        if name.startswith(base) and name[len(base):].isascii() and name[len(base):].isdigit():
            number = table[base[:-1]] + sign * int(name[len(base):])
            if _signal.SIGRTMIN <= number <= _signal.SIGRTMAX:
                return number
    raise RunprocError(f"unknown signal {raw!r}")
