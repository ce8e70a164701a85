"""--log and --log-format: what containerd reads back, and nothing on success."""

from __future__ import annotations

import json
import re
from pathlib import Path

from runproc_testlib import MakeBundle, Runproc

RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def test_json_error_record_is_what_containerd_parses(runproc: Runproc, make_bundle: MakeBundle,
                                                     tmp_path: Path) -> None:
    log = tmp_path / "log.json"
    bundle = make_bundle(["e2e-no-such-cmd"])
    result = runproc("create", "--bundle", str(bundle), "--pid-file", str(tmp_path / "pid"), "logc",
                     global_args=("--log", str(log), "--log-format", "json"))
    assert result.returncode == 1
    lines = log.read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert set(record) == {"level", "msg", "time"}
    assert record["level"] == "error"
    assert record["msg"] == ('runproc create failed: unable to start container process: '
                             'exec: "e2e-no-such-cmd": executable file not found in $PATH')
    assert RFC3339.match(record["time"]), record["time"]
    # The same text on stderr, once.
    assert result.stderr == f"{record['msg']}\n"


def test_log_appends_across_calls(runproc: Runproc, tmp_path: Path) -> None:
    log = tmp_path / "log.json"
    log.write_text('{"level":"info","msg":"earlier","time":"2026-01-01T00:00:00Z"}\n')
    for command in ("state", "delete"):
        assert runproc(command, "ghost", global_args=("--log", str(log), "--log-format", "json")).returncode == 1
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["msg"] for r in records] == ["earlier", "container does not exist", "container does not exist"]


def test_text_format(runproc: Runproc, tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    assert runproc("state", "ghost", global_args=("--log", str(log))).returncode == 1
    line = log.read_text()
    assert re.fullmatch(r'time=\S+ level=error msg="container does not exist"\n', line), line


def test_success_writes_nothing(runproc: Runproc, make_bundle: MakeBundle, tmp_path: Path) -> None:
    log = tmp_path / "log.json"
    flags = ("--log", str(log), "--log-format", "json")
    bundle = make_bundle(["/bin/true"])
    for argv in (["create", "--bundle", str(bundle), "quiet"], ["state", "quiet"], ["start", "quiet"],
                 ["delete", "--force", "quiet"], ["delete", "--force", "quiet"]):
        assert runproc(*argv, global_args=flags).returncode == 0
    assert not log.exists()


def test_unwritable_log_still_reports_on_stderr(runproc: Runproc, tmp_path: Path) -> None:
    result = runproc("state", "ghost", global_args=("--log", str(tmp_path / "no" / "log.json")))
    assert result.returncode == 1
    assert "container does not exist" in result.stderr
    assert "Traceback" not in result.stderr
