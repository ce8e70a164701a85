"""OCI hooks under runc and runproc, from one bundle: when each runs, in which namespaces, with
which state, argv, cwd and environment (tests/hooks_testlib.py's recorder writes it down).

Known difference, on purpose: runc 1.1 runs poststart hooks at the end of *create*
(state "created"), a bug against the runtime spec; runproc runs them once start has
the program running (state "running"), as the spec says.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from hooks_testlib import (
    RUNTIME_KINDS,
    every_kind,
    hook,
    hooks_config,
    hooks_rootfs,
    install_recorder,
    namespaces_of,
    process_gone,
    read_order,
    read_record,
    where_it_ran,
    write_bundle,
)
from runproc_testlib import Runproc

RUNC = Path("/usr/sbin/runc")

pytestmark = [pytest.mark.root, pytest.mark.skipif(not RUNC.is_file() or os.geteuid() != 0, reason="needs runc, root")]

# The caller's environment: a hook without `env` of its own runs with it (runc: with its own).
CALLER_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOOKS_CALLER": "yes"}
KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")


class Rig:
    """A recorder on the host and in a rootfs, and one output directory per run."""

    def __init__(self, tmp_path: Path, busybox_rootfs: Path) -> None:
        self.tmp = tmp_path
        self.rootfs = hooks_rootfs(busybox_rootfs, tmp_path)
        self.recorder = install_recorder(tmp_path / "recorder.sh")
        self.runs = 0

    def bundle(self, hooks_for: object, args: list[str] | None = None) -> tuple[Path, Path]:
        """A bundle whose hooks (hooks_for(recorder, out)) write into a fresh output directory."""
        self.runs += 1
        out = self.tmp / f"out{self.runs}"
        out.mkdir()
        os.chmod(out, 0o777)  # startContainer hooks may run as another user
        config = hooks_config(self.rootfs, out, args or ["sleep", "30"], hooks_for(self.recorder, out))  # type: ignore[operator]
        return write_bundle(self.tmp / f"bundle{self.runs}", config), out


@pytest.fixture
def rig(tmp_path: Path, busybox_rootfs: Path) -> Rig:
    return Rig(tmp_path, busybox_rootfs)


@pytest.fixture
def runc(tmp_path: Path) -> Iterator[Runproc]:
    root = tmp_path / "state-runc"
    root.mkdir()
    tool = Runproc(RUNC, root, name="runc")
    yield tool
    for entry in root.iterdir():
        tool("delete", "--force", entry.name, timeout=15)
    shutil.rmtree(root, ignore_errors=True)


def lifecycle(side: Runproc, bundle: Path, out: Path, cid: str, cwd: Path) -> dict:
    """create, start, kill, delete; what the hooks recorded, and where the container was."""
    side.ok("create", "--bundle", str(bundle), cid, env=CALLER_ENV, cwd=cwd)
    init = side.state(cid)["pid"]
    seen = {"init": init, "container": namespaces_of(init), "after_create": read_order(out)}
    side.ok("start", cid, env=CALLER_ENV, cwd=cwd)
    seen["after_start"] = read_order(out)
    side.ok("kill", cid, "KILL")
    side.wait_status(cid, "stopped")
    side.ok("delete", cid, env=CALLER_ENV, cwd=cwd)
    seen["order"] = read_order(out)
    seen["records"] = {kind: read_record(out, kind) for kind in KINDS}
    return seen


def view(seen: dict, bundle: Path, rootfs: Path, cwd: Path) -> dict:
    """Each hook's record with host-specific values named: the init's pid, the places, the namespaces."""
    host = namespaces_of(os.getpid())
    names = {str(bundle): "<bundle>", str(rootfs): "<rootfs>", str(cwd): "<caller cwd>"}
    result = {}
    for kind, record in seen["records"].items():
        state = dict(record["stdin"])
        state.pop("ociVersion")  # runc 1.1 says 1.0.2-dev, runproc the 1.0.2 it follows
        if "pid" in state:
            state["pid"] = "<init>" if state["pid"] == seen["init"] else state["pid"]
        state["bundle"] = names.get(state["bundle"], state["bundle"])
        result[kind] = {
            "state": state,
            "where": where_it_ran(record, host, seen["container"]),
            "cwd": names.get(record["cwd"], record["cwd"]),
            "argv": record["argv"].replace(str(seen["out"]), "<out>"),
            "uid": record["uid"],
            "env": record["env"],
        }
    return result


@pytest.mark.parametrize("hook_env", [["HOOKS_GIVEN=1", "PATH=/bin:/usr/bin"], None], ids=["env", "no-env"])
def test_every_hook_runs_where_and_with_what_runc_runs_it(
    rig: Rig, runc: Runproc, runproc: Runproc, tmp_path: Path, hook_env: list[str] | None
) -> None:
    caller_cwd = tmp_path / "caller"
    caller_cwd.mkdir()
    views = {}
    for side in (runc, runproc):
        bundle, out = rig.bundle(lambda recorder, out: every_kind(recorder, out, hook_env))
        seen = lifecycle(side, bundle, out, "hooked", caller_cwd)
        seen["out"] = out
        views[side.name] = view(seen, bundle, rig.rootfs, caller_cwd)
        order = ["prestart", "createRuntime", "createContainer"]
        if side is runc:  # runc 1.1's poststart bug: at the end of create
            assert seen["after_create"] == [*order, "poststart"]
            assert seen["order"] == [*order, "poststart", "startContainer", "poststop"]
        else:
            assert seen["after_create"] == order
            assert seen["after_start"] == [*order, "startContainer", "poststart"]  # start returns after poststart
            assert seen["order"] == [*order, "startContainer", "poststart", "poststop"]
    ours, theirs = views["runproc"], views["runc"]
    assert theirs["poststart"]["state"]["status"] == "created"
    assert ours["poststart"]["state"]["status"] == "running"
    theirs["poststart"]["state"]["status"] = "running"
    assert ours == theirs

    # What both agree on, spelled out (runtime-spec "Lifecycle" and runc 1.1's places).
    for kind in ("prestart", "createRuntime", "poststart", "poststop"):
        assert ours[kind]["where"] == {"pid": "host", "mnt": "host", "net": "host"}, kind
    for kind in ("createContainer", "startContainer"):
        assert ours[kind]["where"] == {"pid": "container", "mnt": "container", "net": "container"}, kind
    assert {kind: ours[kind]["state"]["status"] for kind in KINDS} == {
        "prestart": "creating", "createRuntime": "creating", "createContainer": "creating",
        "startContainer": "created", "poststart": "running", "poststop": "stopped"}
    assert {kind: ours[kind]["state"].get("pid") for kind in KINDS} == {
        "prestart": "<init>", "createRuntime": "<init>", "createContainer": 1, "startContainer": 1,
        "poststart": "<init>", "poststop": None}
    assert {kind: ours[kind]["cwd"] for kind in KINDS} == {
        "prestart": "<bundle>", "createRuntime": "<bundle>", "createContainer": "<rootfs>",
        "startContainer": "/", "poststart": "<bundle>", "poststop": "<caller cwd>"}
    assert ours["createRuntime"]["argv"] == "<out> createRuntime two words"
    assert ours["prestart"]["state"] == {"id": "hooked", "status": "creating", "pid": "<init>",
                                         "bundle": "<bundle>", "annotations": {"org.example.hooks": "yes"}}
    if hook_env is not None:
        for kind in KINDS:
            assert ours[kind]["env"] == {"HOOKS_GIVEN": "1", "PATH": "/bin:/usr/bin"}, kind
    else:
        for kind in RUNTIME_KINDS:  # the caller's, none of the frozen binary's own
            assert ours[kind]["env"] == CALLER_ENV, kind
        process_env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM": "xterm"}
        assert ours["createContainer"]["env"] == process_env
        assert ours["startContainer"]["env"] == {**process_env, "HOME": "/root"}


@pytest.mark.parametrize("kind", ["prestart", "createRuntime", "createContainer"])
def test_a_failing_create_hook_fails_create_as_runcs_and_leaves_nothing(
    rig: Rig, runc: Runproc, runproc: Runproc, kind: str
) -> None:
    def hooks_for(recorder: Path, out: Path) -> dict:
        hooks = every_kind(recorder, out)
        hooks[kind] = [hook(recorder, out, kind, env=["HOOK_EXIT=3"])]
        return hooks

    for side in (runc, runproc):
        bundle, out = rig.bundle(hooks_for)
        log = bundle / "log.json"
        result = side("--log", str(log), "--log-format", "json", "create", "--bundle", str(bundle), "failing")
        assert result.returncode == 1, result
        inner = f"error running hook: exit status 3, stdout: stdout of {kind}\n, stderr: stderr of {kind}\n"
        if side is runproc:
            message = f"runproc create failed: unable to start container process: error running {kind} hook #0: {inner}"
            assert result.stderr == message + "\n"
            records = [json.loads(line) for line in log.read_text().splitlines()]
            assert records[-1]["level"] == "error" and records[-1]["msg"] == message
        else:
            assert inner in result.stderr
        # As runc: the hooks up to the failing one, then poststop (the lifecycle goes on at delete).
        ran = ["prestart", "createRuntime", "createContainer"]
        assert read_order(out) == [*ran[: ran.index(kind) + 1], "poststop"], side.name
        init = read_record(out, "prestart")["stdin"]["pid"]
        assert process_gone(init), side.name
        assert list(side.root.iterdir()) == [], side.name
        assert str(rig.rootfs) not in Path("/proc/self/mountinfo").read_text(), side.name
        assert side("state", "failing").returncode == 1
