"""Failing and timed-out hooks of each kind through runproc: the right call fails (or only warns),
with runc's text, and nothing is left behind. The timeouts are 1 s against hooks that sleep 30:
a hook that is not killed shows as a call that does not return (the call's own limit fails it)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hooks_testlib import (
    INSIDE_OUT,
    INSIDE_RECORDER,
    every_kind,
    hook,
    hooks_config,
    hooks_rootfs,
    install_recorder,
    process_gone,
    read_order,
    read_record,
    write_bundle,
)
from runproc_testlib import Runproc, require_root

pytestmark = pytest.mark.root
# A call whose hook was not killed at its 1 s timeout would run 30 s: fail it well before.
CALL_LIMIT = 20


class Bundles:
    def __init__(self, tmp_path: Path, busybox_rootfs: Path) -> None:
        self.tmp = tmp_path
        self.rootfs = hooks_rootfs(busybox_rootfs, tmp_path)
        self.recorder = install_recorder(tmp_path / "recorder.sh")
        self.count = 0

    def make(self, kind: str, env: list[str], timeout: int | None = None,
             args: list[str] | None = None) -> tuple[Path, Path]:
        """Every kind records; `kind`'s hook gets `env` (HOOK_EXIT or HOOK_SLEEP) and `timeout`."""
        self.count += 1
        out = self.tmp / f"out{self.count}"
        out.mkdir()
        hooks = every_kind(self.recorder, out)
        if kind == "startContainer":
            hooks[kind] = [hook(INSIDE_RECORDER, INSIDE_OUT, kind, env=env, timeout=timeout)]
        else:
            hooks[kind] = [hook(self.recorder, out, kind, env=env, timeout=timeout)]
        config = hooks_config(self.rootfs, out, args or ["sleep", "30"], hooks)
        return write_bundle(self.tmp / f"bundle{self.count}", config), out


@pytest.fixture
def bundles(tmp_path: Path, busybox_rootfs: Path) -> Bundles:
    require_root()
    return Bundles(tmp_path, busybox_rootfs)


def logged(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def assert_nothing_left(runproc: Runproc, rootfs: Path, init: int) -> None:
    assert list(runproc.root.iterdir()) == []
    assert process_gone(init)
    assert str(rootfs) not in Path("/proc/self/mountinfo").read_text()


def failure(kind: str) -> str:
    return f"error running {kind} hook #0: error running hook: exit status 3, stdout: stdout of {kind}\n, " \
           f"stderr: stderr of {kind}\n"


def timed_out(kind: str) -> str:
    return f"error running {kind} hook #0: hook ran past specified timeout of 1.0s"


@pytest.mark.parametrize("kind", ["createRuntime", "createContainer"])
def test_a_create_hook_past_its_timeout_fails_create(runproc: Runproc, bundles: Bundles, kind: str) -> None:
    bundle, out = bundles.make(kind, ["HOOK_SLEEP=30"], timeout=1)
    result = runproc("create", "--bundle", str(bundle), "slow", timeout=CALL_LIMIT)
    assert result.returncode == 1
    assert result.stderr == f"runproc create failed: unable to start container process: {timed_out(kind)}\n"
    assert read_order(out)[-1] == "poststop"
    if kind == "createRuntime":
        assert process_gone(read_record(out, kind)["self"])  # the sleeper itself was killed
    assert_nothing_left(runproc, bundles.rootfs, read_record(out, "prestart")["stdin"]["pid"])


@pytest.mark.parametrize(("env", "message"), [(["HOOK_EXIT=3"], failure("startContainer")),
                                              (["HOOK_SLEEP=30"], timed_out("startContainer"))],
                         ids=["fails", "times-out"])
def test_a_failing_start_hook_fails_start_and_the_container_stops(
    runproc: Runproc, bundles: Bundles, env: list[str], message: str
) -> None:
    bundle, out = bundles.make("startContainer", env, timeout=1)
    log = bundle / "log.json"
    runproc.ok("create", "--bundle", str(bundle), "startfail")
    init = runproc.state("startfail")["pid"]
    result = runproc("--log", str(log), "--log-format", "json", "start", "startfail", timeout=CALL_LIMIT)
    assert result.returncode == 1
    assert result.stderr == message + "\n"
    assert logged(log)[-1]["level"] == "error" and logged(log)[-1]["msg"] == message
    # The program never ran, no poststart: the init ended, and the container with it.
    assert runproc.wait_status("startfail", "stopped")["pid"] == 0
    assert read_order(out) == ["prestart", "createRuntime", "createContainer", "startContainer"]
    runproc.ok("delete", "startfail")
    assert read_order(out)[-1] == "poststop"
    assert_nothing_left(runproc, bundles.rootfs, init)


@pytest.mark.parametrize(("env", "message"), [(["HOOK_EXIT=3"], failure("poststart")),
                                              (["HOOK_SLEEP=30"], timed_out("poststart"))],
                         ids=["fails", "times-out"])
def test_a_failing_poststart_hook_only_warns(runproc: Runproc, bundles: Bundles, env: list[str], message: str) -> None:
    bundle, out = bundles.make("poststart", env, timeout=1)
    log = bundle / "log.json"
    runproc.ok("create", "--bundle", str(bundle), "warns")
    result = runproc("--log", str(log), "--log-format", "json", "start", "warns", timeout=CALL_LIMIT)
    assert result.returncode == 0, result
    assert result.stderr == f"warning: {message}\n"
    assert [(r["level"], r["msg"]) for r in logged(log)] == [("warning", message)]
    assert runproc.status("warns") == "running"
    assert process_gone(read_record(out, "poststart")["self"])
    init = runproc.state("warns")["pid"]
    runproc.ok("delete", "--force", "warns")
    assert_nothing_left(runproc, bundles.rootfs, init)


@pytest.mark.parametrize(("env", "message"), [(["HOOK_EXIT=3"], failure("poststop")),
                                              (["HOOK_SLEEP=30"], timed_out("poststop"))],
                         ids=["fails", "times-out"])
def test_a_failing_poststop_hook_only_warns(runproc: Runproc, bundles: Bundles, env: list[str], message: str) -> None:
    bundle, out = bundles.make("poststop", env, timeout=1)
    log = bundle / "log.json"
    runproc.ok("create", "--bundle", str(bundle), "stopwarns")
    init = runproc.state("stopwarns")["pid"]
    runproc.ok("start", "stopwarns")
    result = runproc("--log", str(log), "delete", "--force", "stopwarns", timeout=CALL_LIMIT)
    assert result.returncode == 0, result
    assert result.stderr == f"warning: {message}\n"
    assert "level=warning" in log.read_text()
    assert process_gone(read_record(out, "poststop")["self"])
    assert_nothing_left(runproc, bundles.rootfs, init)


def test_a_hook_that_cannot_be_executed_fails_create(runproc: Runproc, bundles: Bundles) -> None:
    bundle, out = bundles.make("createRuntime", [])
    config = json.loads((bundle / "config.json").read_text())
    config["hooks"]["createRuntime"] = [{"path": "/no/such/hook"}]
    (bundle / "config.json").write_text(json.dumps(config))
    result = runproc("create", "--bundle", str(bundle), "nohook")
    assert result.returncode == 1
    assert result.stderr == ("runproc create failed: unable to start container process: error running createRuntime "
                             "hook #0: fork/exec /no/such/hook: no such file or directory\n")
    assert_nothing_left(runproc, bundles.rootfs, read_record(out, "prestart")["stdin"]["pid"])


def test_bad_hooks_fail_create_before_anything_runs(runproc: Runproc, bundles: Bundles) -> None:
    bundle, out = bundles.make("poststop", [])
    config = json.loads((bundle / "config.json").read_text())
    config["hooks"]["poststop"][0]["timeout"] = 0
    (bundle / "config.json").write_text(json.dumps(config))
    result = runproc("create", "--bundle", str(bundle), "badhook")
    assert result.returncode == 1
    assert result.stderr == "runproc create failed: config.json: hooks.poststop[0].timeout must be greater than zero " \
                            "(and at most 2147483647)\n"
    assert read_order(out) == [] and list(runproc.root.iterdir()) == []


def test_run_runs_every_hook_in_order(runproc: Runproc, bundles: Bundles) -> None:
    bundle, out = bundles.make("poststop", [], args=["sh", "-c", f"echo program >> {INSIDE_OUT}/order; exit 7"])
    result = runproc("run", "--bundle", str(bundle), "runhooks")
    assert result.returncode == 7, result
    order = read_order(out)
    assert order[:4] == ["prestart", "createRuntime", "createContainer", "startContainer"]
    # The program and poststart race (poststart runs once the program is exec'd); poststop is last.
    assert sorted(order[4:6]) == ["poststart", "program"] and order[6:] == ["poststop"]
    assert list(runproc.root.iterdir()) == []


def test_a_create_hook_failing_under_run_fails_run(runproc: Runproc, bundles: Bundles) -> None:
    bundle, out = bundles.make("createContainer", ["HOOK_EXIT=3"])
    result = runproc("run", "--bundle", str(bundle), "runfails")
    assert result.returncode == 1
    assert result.stderr == f"runproc run failed: unable to start container process: {failure('createContainer')}\n"
    assert read_order(out) == ["prestart", "createRuntime", "createContainer", "poststop"]
    assert_nothing_left(runproc, bundles.rootfs, read_record(out, "prestart")["stdin"]["pid"])


def test_hooks_run_in_host_mode_too(runproc: Runproc, bundles: Bundles, tmp_path: Path) -> None:
    """No namespaces, no pivot: the create-time hooks run before the (absent) chroot, all on the host."""
    out = tmp_path / "host-out"
    out.mkdir()
    hooks = every_kind(bundles.recorder, out)
    hooks["startContainer"] = [hook(bundles.recorder, out, "startContainer")]  # the host's file system
    config = {"ociVersion": "1.0.2", "process": {"args": ["true"], "cwd": "/", "env": ["PATH=/bin:/usr/bin"]},
              "root": {"path": str(bundles.rootfs)}, "annotations": {"runproc.host": "1"}, "hooks": hooks}
    bundle = write_bundle(tmp_path / "host-bundle", config)
    runproc.ok("run", "--bundle", str(bundle), "hostmode")
    assert read_order(out) == ["prestart", "createRuntime", "createContainer", "startContainer", "poststart",
                               "poststop"]
    host = os.readlink("/proc/self/ns/mnt")
    assert {read_record(out, kind)["mnt"] for kind in read_order(out)} == {host}
