"""jsonio must read and write exactly what the json package does, for what runproc handles."""

from __future__ import annotations

import json

import pytest

from runproc import jsonio

VALUES = [
    {"ociVersion": "1.0.2", "id": "c1", "pid": 42, "annotations": {}, "nested": {"list": [1, 2.5, None, True]}},
    {"unicode": "é ünï \u2603", "quote": 'a"b\\c\n', "empty": [], "neg": -7, "big": 2**64 - 1},
    [],
    {},
    "text",
    [[], [{}], {"a": [{}]}],
    [float("inf"), float("-inf"), 1e300, -0.0],
]


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("indent", [None, 2])
def test_dumps_matches_json(value: object, indent: int | None) -> None:
    assert jsonio.dumps(value, indent=indent) == json.dumps(value, indent=indent)


@pytest.mark.parametrize("value", VALUES)
def test_loads_round_trip(value: object) -> None:
    assert jsonio.loads(json.dumps(value, indent=1)) == value
    assert jsonio.loads(json.dumps(value).encode()) == value


@pytest.mark.parametrize("text", ["{bad", "", "   ", "[1,]", "{} x", '{"a": }'])
def test_errors_match_json(text: str) -> None:
    with pytest.raises(ValueError) as ours:
        jsonio.loads(text)
    with pytest.raises(ValueError) as theirs:
        json.loads(text)
    assert str(ours.value) == str(theirs.value)


def test_unserialisable() -> None:
    with pytest.raises(TypeError, match="cannot serialise set"):
        jsonio.dumps({"a": {1}})


def test_error_without_json_loaded() -> None:
    """The C scanner needs json.decoder in sys.modules to raise its error; jsonio must cope."""
    import subprocess
    import sys

    code = ("import sys; from runproc import jsonio\n"
            "assert 'json.decoder' not in sys.modules\n"
            "try:\n    jsonio.loads('{bad')\nexcept ValueError as e:\n    print(e)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout == "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)\n"
