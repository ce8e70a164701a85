"""exec's process object from flags or a process file (runc's getProcess), and the parsing of exec, ps and list."""

from __future__ import annotations

import pytest

from runproc.cli import parse_args
from runproc.commands.list import tabulate
from runproc.errors import RunprocError
from runproc.spec.exec_process import exec_config, from_file, from_flags

CONTAINER = {
    "args": ["sleep", "1"], "env": ["PATH=/bin"], "cwd": "/", "user": {"uid": 0, "gid": 0},
    "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]},
    "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 10}], "apparmorProfile": "p",
    "noNewPrivileges": True, "terminal": True,
}


def test_flags_change_the_containers_process() -> None:
    values = parse_args(["exec", "-e", "A=1", "--env=B=2", "-u", "7:8", "-g", "9", "-g", "10", "--cap", "CAP_CHOWN",
                         "--cwd", "/tmp", "c1", "sh", "-c", "x"]).values
    process = from_flags(CONTAINER, values)
    assert process["args"] == ["sh", "-c", "x"] and process["cwd"] == "/tmp"
    assert process["env"] == ["PATH=/bin", "A=1", "B=2"]
    assert process["user"] == {"uid": 7, "gid": 8, "additionalGids": [9, 10]}
    assert process["capabilities"]["bounding"] == ["CAP_KILL", "CAP_CHOWN"]
    assert process["capabilities"]["ambient"] == ["CAP_CHOWN"]
    assert process["terminal"] is False and process["noNewPrivileges"] is True and process["rlimits"]
    assert CONTAINER["env"] == ["PATH=/bin"]  # not changed in place
    assert exec_config({"root": {}, "process": CONTAINER}, process) == {"root": {}, "process": process}


def test_uid_alone_keeps_the_gid() -> None:
    assert from_flags(CONTAINER, {"args": ["id"], "user": "5"})["user"] == {"uid": 5, "gid": 0}


@pytest.mark.parametrize(("values", "message"), [
    ({"args": []}, "process args cannot be empty"),
    ({"args": ["id"], "user": "x"}, 'parsing x as int for uid failed: strconv.Atoi: parsing "x": invalid syntax'),
    ({"args": ["id"], "user": "1:y"}, "parsing y as int for gid failed"),
    ({"args": ["id"], "additional_gids": ["-1"]}, "additional-gids must be a positive number -1"),
])
def test_bad_flags(values: dict, message: str) -> None:
    with pytest.raises(RunprocError, match=message.replace("(", r"\(").replace("$", r"\$")):
        from_flags(CONTAINER, values)


def test_process_file_takes_what_it_leaves_out_from_the_container() -> None:
    process = from_file(CONTAINER, {"args": ["id"], "cwd": "/"})
    assert process["capabilities"] == CONTAINER["capabilities"] and process["rlimits"] == CONTAINER["rlimits"]
    assert process["apparmorProfile"] == "p" and "noNewPrivileges" not in process  # false, as runc reads it
    own = from_file(CONTAINER, {"args": ["id"], "cwd": "/", "capabilities": {"bounding": []}})
    assert own["capabilities"] == {"bounding": []}
    with pytest.raises(RunprocError, match="must be a JSON object"):
        from_file(CONTAINER, ["id"])


def test_exec_and_ps_keep_everything_after_the_id() -> None:
    assert parse_args(["exec", "-t", "c1", "ls", "-l", "--", "-x"]).values == {
        "tty": True, "id": "c1", "args": ["ls", "-l", "--", "-x"]}
    assert parse_args(["exec", "c1", "--", "-x"]).values["args"] == ["-x"]
    assert parse_args(["ps", "-f", "json", "c1"]).values == {"format": "json", "id": "c1", "ps_args": []}
    assert parse_args(["ps", "c1", "-o", "pid,args"]).values["ps_args"] == ["-o", "pid,args"]
    assert parse_args(["ps", "c1", "--", "-o", "pid"]).values["ps_args"] == ["-o", "pid"]
    assert parse_args(["list", "-q", "--format=json"]).values == {"quiet": True, "format": "json"}


def test_tabulate_is_gos_tabwriter() -> None:
    rows = [("ID", "PID", "LAST"), ("a-long-identifier", "1", "x y"), ("b", "12345", "")]
    # Each column as wide as its widest cell plus 3, at least 12; the last cell as it is.
    assert tabulate(rows) == ("ID                  PID         LAST\n"
                              "a-long-identifier   1           x y\n"
                              "b                   12345       \n")
