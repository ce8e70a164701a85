"""Fixtures shared by the test suites: the binary under test, bundles, state roots.

Lifecycle, differential and end-to-end tests drive the frozen binary named by
$RUNPROC_BIN (default: ./runproc at the repo root, which `make test` builds).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOBODY = 65534


def runproc_path() -> Path:
    return Path(os.environ.get("RUNPROC_BIN", REPO / "runproc")).resolve()


@pytest.fixture(scope="session")
def runproc_bin() -> Path:
    path = runproc_path()
    if not path.is_file():
        pytest.fail(f"runproc binary {path} not found: run `make build` (or set RUNPROC_BIN)")
    return path


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A static busybox root filesystem, shared read-only by the tests' bundles."""
    root = tmp_path_factory.mktemp("rootfs-busybox")
    subprocess.run([str(REPO / "build/make-rootfs.sh"), str(root)], check=True, timeout=120)
    # World-readable path, so an unprivileged runproc can reach bundles under it.
    os.chmod(root.parent, 0o755)
    return root


@pytest.fixture
def world_tmp(tmp_path: Path) -> Path:
    """tmp_path, reachable (and the dir writable) by the unprivileged user, for nobody's tests."""
    for parent in [tmp_path, *tmp_path.parents]:
        if parent == Path("/tmp") or parent == Path("/"):
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o755)
    os.chmod(tmp_path, 0o777)
    return tmp_path


def default_process(args: list[str]) -> dict:
    return {
        "terminal": False,
        "user": {"uid": 0, "gid": 0},
        "args": args,
        "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
        "cwd": "/",
        "noNewPrivileges": True,
    }


MakeBundle = Callable[..., Path]


@pytest.fixture
def make_bundle(tmp_path: Path, busybox_rootfs: Path) -> MakeBundle:
    """make_bundle(args, name=..., host=False, rootfs=None, annotations=None, **process_fields) -> bundle dir."""
    counter = iter(range(1000))

    def make(
        args: list[str],
        name: str | None = None,
        host: bool = False,
        rootfs: Path | str | None = None,
        annotations: dict[str, str] | None = None,
        config: dict | None = None,
        **process_fields: object,
    ) -> Path:
        bundle = tmp_path / (name or f"bundle{next(counter)}")
        bundle.mkdir(mode=0o755)
        os.chmod(bundle, 0o755)
        process = default_process(args)
        process.update(process_fields)
        spec = {
            "ociVersion": "1.0.2",
            "process": process,
            "root": {"path": str(rootfs or busybox_rootfs)},
            "annotations": dict(annotations or {}),
        }
        if host:
            spec["annotations"]["runproc.host"] = "1"
        if config is not None:
            spec = config
        (bundle / "config.json").write_text(json.dumps(spec, indent=1))
        return bundle

    return make


class Runproc:
    """Runs the binary with one state root; `as_user` runs it unprivileged via setpriv."""

    def __init__(self, binary: Path, root: Path, as_user: int | None = None) -> None:
        self.binary = binary
        self.root = root
        self.as_user = as_user

    def argv(self, *args: str, global_args: tuple[str, ...] = ()) -> list[str]:
        argv = [str(self.binary), "--root", str(self.root), *global_args, *args]
        if self.as_user is not None:
            uid = str(self.as_user)
            argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *argv]
        return argv

    def __call__(
        self,
        *args: str,
        input: bytes | str | None = None,
        timeout: float = 30,
        env: dict[str, str] | None = None,
        global_args: tuple[str, ...] = (),
        prefix: tuple[str, ...] = (),
    ) -> subprocess.CompletedProcess[str]:
        text_input = input.decode() if isinstance(input, bytes) else input
        # Files, not pipes, for output: a created container's process inherits them,
        # and a pipe would not reach EOF until that process exits (containerd too
        # waits for the runtime's exit, not for EOF).
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            process = subprocess.Popen(
                [*prefix, *self.argv(*args, global_args=global_args)],
                stdin=subprocess.PIPE if text_input is not None else subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
            )
            try:
                if text_input is not None:
                    assert process.stdin is not None
                    process.stdin.write(text_input.encode())
                    process.stdin.close()
                returncode = process.wait(timeout=timeout)
            except BaseException:
                process.kill()
                process.wait()
                raise
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(
                process.args, returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace")
            )

    def ok(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        result = self(*args, **kwargs)  # type: ignore[arg-type]
        assert result.returncode == 0, f"runproc {' '.join(args)} failed: {result.stderr}"
        return result

    def state(self, container_id: str) -> dict:
        return json.loads(self.ok("state", container_id).stdout)

    def status(self, container_id: str) -> str:
        return self.state(container_id)["status"]

    def wait_status(self, container_id: str, status: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while self.status(container_id) != status:
            assert time.monotonic() < deadline, f"{container_id} never became {status}"
            time.sleep(0.02)


@pytest.fixture
def state_root(tmp_path: Path) -> Path:
    root = tmp_path / "state"
    root.mkdir()
    return root


@pytest.fixture
def runproc(runproc_bin: Path, state_root: Path) -> Iterator[Runproc]:
    tool = Runproc(runproc_bin, state_root)
    yield tool
    # Whatever a test left: force-delete it, so no process outlives the test.
    if state_root.is_dir():
        for entry in state_root.iterdir():
            if entry.is_dir():
                tool("delete", "--force", entry.name)
    shutil.rmtree(state_root, ignore_errors=True)


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
