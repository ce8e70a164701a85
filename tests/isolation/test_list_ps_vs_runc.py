"""list and ps, differential: the same set of containers under runc and under runproc.

Only the values that must differ are normalised (pids, creation times, the
state roots' paths, the spec version each runtime reports), the layout is
compared byte for byte.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

from isolation_probe import Probe, SpecBundle
from runproc_testlib import Runproc, make_reachable

Probes = tuple[Probe, Probe]
CREATED = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z")


def containers(probes: Probes, spec_bundle: SpecBundle, tmp_path: Path) -> list[dict[str, int]]:
    """On each side: `a-running` (runs sleep), `b-created`, `c-stopped` (exited), with one bundle path per
    role shared by both sides. Returns each side's {id: init pid}."""
    pids = []
    for probe in probes:
        side = probe.side
        mine: dict[str, int] = {}
        for cid, script in (("a-running", "exec sleep 1000"), ("b-created", "true"), ("c-stopped", "true")):
            bundle = tmp_path / "bundles" / cid  # the same path on both sides: it shows in the output
            shutil.rmtree(bundle, ignore_errors=True)
            shutil.copytree(spec_bundle(script), bundle)
            config = json.loads((bundle / "config.json").read_text())
            shutil.copytree(config["root"]["path"], bundle / "rootfs", symlinks=True)
            make_reachable(bundle / "rootfs")
            config["root"]["path"] = "rootfs"
            if cid == "b-created":
                config["annotations"] = {"org.example/role": "created, waiting"}
            (bundle / "config.json").write_text(json.dumps(config))
            side.ok("create", "--bundle", str(bundle), cid)
            mine[cid] = int(side.state(cid)["pid"])
            if cid != "b-created":
                side.ok("start", cid)
        side.wait_status("c-stopped", "stopped")
        pids.append(mine)
    return pids


def normalised(text: str, pids: dict[str, int], side: Runproc) -> str:
    for cid, pid in pids.items():
        text = re.sub(rf"\b{pid}\b", f"<pid {cid}>", text)
    text = text.replace(str(side.root), "<root>")
    text = text.replace('"1.0.2-dev"', '"<version>"').replace('"1.0.2"', '"<version>"')
    if text.startswith("["):  # JSON
        return CREATED.sub("<created>", text)
    # A table: padded to the time's length, so that the columns' layout stays what the runtime made.
    return CREATED.sub(lambda m: "<created>".ljust(len(m.group(0))), text)


def containers_with_pids_of_one_width(probes: Probes, spec_bundle: SpecBundle, tmp_path: Path
                                      ) -> list[dict[str, int]]:
    """containers(), made again while the two sides' pids differ in digits (the pid counter crossed
    a power of ten or wrapped between them): a wider PID column is the values' doing, not the layout's."""
    for _ in range(3):
        pids = containers(probes, spec_bundle, tmp_path)
        if len({len(str(pid)) for mine in pids for pid in mine.values()}) == 1:
            return pids
        for probe, mine in zip(probes, pids):
            for cid in mine:
                probe.side.ok("delete", "--force", cid)
    raise AssertionError(f"pids of one width not found in three tries: {pids}")


def test_list(probes: Probes, spec_bundle: SpecBundle, tmp_path: Path) -> None:
    pids = containers_with_pids_of_one_width(probes, spec_bundle, tmp_path)
    for args in ((), ("--quiet",), ("-q",), ("--format", "json"), ("-f", "table"), ("-f", "json", "-q")):
        outputs = [normalised(probe.side.ok("list", *args).stdout, mine, probe.side)
                   for probe, mine in zip(probes, pids)]
        assert outputs[1] == outputs[0], args
    table = probes[1].side.ok("list").stdout.splitlines()
    assert table[0].startswith("ID          PID         STATUS      BUNDLE   ") and table[0].endswith("   OWNER")
    assert [line.split()[2] for line in table[1:]] == ["running", "created", "stopped"]
    listed = json.loads(probes[1].side.ok("list", "-f", "json").stdout)
    assert listed[1]["annotations"] == {"org.example/role": "created, waiting"} and listed[2]["pid"] == 0


def test_list_when_empty(probes: Probes) -> None:
    for probe in probes:
        probe.side.root.mkdir(exist_ok=True)
        assert probe.side.ok("list").stdout == "ID          PID         STATUS      BUNDLE      CREATED     OWNER\n"
        assert probe.side.ok("list", "-q").stdout == ""
        assert probe.side.ok("list", "--format", "json").stdout == "null\n"


def test_list_skips_what_is_not_a_container(runproc: Runproc, spec_bundle: SpecBundle, tmp_path: Path) -> None:
    """Staging entries quietly; a planted symlink or a foreign directory with a line on stderr."""
    bundle = spec_bundle("true")
    runproc.ok("create", "--bundle", str(bundle), "real")
    (runproc.root / "@new-1-2-abcd").mkdir()
    (runproc.root / "planted").symlink_to(tmp_path)
    foreign = runproc.root / "foreign"
    foreign.mkdir(mode=0o755)
    result = runproc.ok("list", "-q")
    assert result.stdout == "real\n"
    assert "load container planted" in result.stderr and "load container foreign" in result.stderr, result.stderr
    assert "@new" not in result.stderr


def test_ps(probes: Probes, spec_bundle: SpecBundle) -> None:
    """ps -ef's header and the container's lines; ps options after the id; the JSON array of pids."""
    started = []
    for probe in probes:
        bundle = spec_bundle("sleep 1000 & exec sleep 999")
        config = json.loads((bundle / "config.json").read_text())
        shutil.copytree(config["root"]["path"], bundle / "rootfs", symlinks=True)
        config["root"]["path"] = str(bundle / "rootfs")
        (bundle / "config.json").write_text(json.dumps(config))
        probe.side.ok("run", "--detach", "--bundle", str(bundle), "ps")
        started.append(probe.side)
    for side in started:
        init = side.state("ps")["pid"]
        deadline = time.monotonic() + 10  # a hang guard: the shell forks its background sleep first
        while len(pids := json.loads(side.ok("ps", "--format", "json", "ps").stdout)) < 2 or \
                Path(f"/proc/{init}/comm").read_text() != "sleep\n":
            assert time.monotonic() < deadline, pids
            time.sleep(0.02)
        assert len(pids) == 2 and init in pids, pids
        table = side.ok("ps", "ps").stdout.splitlines()
        assert table[0].split() == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
        assert sorted(int(line.split()[1]) for line in table[1:]) == pids
        assert sorted(line.split(None, 7)[7] for line in table[1:]) == ["sleep 1000", "sleep 999"]
    outputs = []
    for side in started:
        pids = json.loads(side.ok("ps", "-f", "json", "ps").stdout)
        output = side.ok("ps", "ps", "-o", "pid,args").stdout
        for n, pid in enumerate(sorted(pids)):
            output = re.sub(rf"\b{pid}\b", f"<{n}>", output)
        outputs.append(output)
    assert outputs[1] == outputs[0]
    assert outputs[1].splitlines()[0].split() == ["PID", "COMMAND"]
    # runproc also takes the options after `--`; runc hands the `--` on to ps, which refuses it.
    runproc = started[1]
    assert runproc.ok("ps", "ps", "--", "-o", "pid,args").stdout == runproc.ok("ps", "ps", "-o", "pid,args").stdout
    for side in started:
        bad = side("ps", "ps", "-o", "comm")
        assert bad.returncode == 1 and "PID field" in bad.stderr, bad
        side.ok("kill", "ps", "KILL")
        side.wait_status("ps", "stopped")
        assert side.ok("ps", "-f", "json", "ps").stdout == "null\n"
        assert side.ok("ps", "ps").stdout.split() == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
