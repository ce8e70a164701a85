"""JSON without the `json` package: it imports `re`, `enum` and more, several
milliseconds per call of a binary that containerd runs for every operation.

The C accelerator `_json` that `json` itself uses does the real work; this
module gives it the few parameters `json.decoder`/`json.encoder` would.
Only the error path imports `json.decoder` (for its error type and message).
"""

from __future__ import annotations

import _json

_WHITESPACE = " \t\n\r"


class _DecoderContext:
    """The attributes `_json.make_scanner` reads from a json.JSONDecoder."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> float:
        return float({"NaN": "nan", "Infinity": "inf", "-Infinity": "-inf"}[name])


_scan = _json.make_scanner(_DecoderContext())
_INF = float("inf")
_encode_string = _json.encode_basestring_ascii


def _error(message: str, text: str, position: int) -> ValueError:
    from json.decoder import JSONDecodeError

    return JSONDecodeError(message, text, position)


def loads(data: bytes | str) -> object:
    """Parse one JSON document, as json.loads does (errors are json.JSONDecodeError, a ValueError)."""
    text = data.decode("utf-8-sig") if isinstance(data, bytes) else data
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scan(text, start)
    except StopIteration as stop:
        raise _error("Expecting value", text, stop.value) from None
    except SystemError:
        # _json raises its JSONDecodeError only if json.decoder is already loaded,
        # else a bare SystemError: load it (this is the error path) and scan again.
        import json.decoder  # noqa: F401

        try:
            value, end = _scan(text, start)
        except StopIteration as stop:
            raise _error("Expecting value", text, stop.value) from None
    rest = len(text) - len(text[end:].lstrip(_WHITESPACE))
    if rest != len(text):
        raise _error("Extra data", text, rest)
    return value


def dumps(value: object, indent: int | str | None = None, compact: bool = False) -> str:
    """Serialise dicts, lists, strings, numbers, booleans and None (ASCII-escaped, like json.dumps).

    With `indent` (a number of spaces, or a string such as a tab), the layout of
    json.dumps(value, indent=indent); `compact`: no spaces after , and : (Go's json.Marshal).
    """
    if isinstance(indent, int):
        indent = " " * indent
    chunks: list[str] = []
    _write(value, chunks, indent, 0, compact)
    return "".join(chunks)


def _write(value: object, out: list[str], indent: str | None, level: int, compact: bool = False) -> None:
    if isinstance(value, str):
        out.append(_encode_string(value))
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif value is None:
        out.append("null")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        # As json.dumps: NaN and the infinities as JavaScript spells them.
        if value != value:
            out.append("NaN")
        elif value in (_INF, -_INF):
            out.append("Infinity" if value > 0 else "-Infinity")
        else:
            out.append(repr(value))
    elif isinstance(value, dict):
        colon = ":" if compact else ": "
        _write_container([(_encode_string(str(k)) + colon, v) for k, v in value.items()], "{", "}", out, indent,
                         level, compact)
    elif isinstance(value, (list, tuple)):
        _write_container([("", v) for v in value], "[", "]", out, indent, level, compact)
    else:
        raise TypeError(f"cannot serialise {type(value).__name__} as JSON")


def _write_container(items: list[tuple[str, object]], opening: str, closing: str, out: list[str],
                     indent: str | None, level: int, compact: bool) -> None:
    if not items:
        out.append(opening + closing)
        return
    inner = "\n" + indent * (level + 1) if indent is not None else ""
    separator = "," + inner if indent is not None else ("," if compact else ", ")
    out.append(opening + inner)
    for n, (prefix, item) in enumerate(items):
        if n:
            out.append(separator)
        out.append(prefix)
        _write(item, out, indent, level + 1, compact)
    out.append(("\n" + indent * level if indent is not None else "") + closing)
