"""The README's try-out must work as written, as root and as an unprivileged user."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from runproc_testlib import NOBODY, REPO


def try_out_script() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Try it out", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def run_script(script: str, user: int | None, checkout: Path, tmpdir: Path) -> subprocess.CompletedProcess[str]:
    argv = ["bash", "-euxc", script]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    # TMPDIR: the try-out's `mktemp -d` lands in the test's own directory.
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/", "TMPDIR": str(tmpdir)}
    return subprocess.run(argv, cwd=checkout, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def example_rootfs() -> None:
    if not (REPO / "examples/echo/rootfs/bin/busybox").exists():
        subprocess.run([str(REPO / "build/make-rootfs.sh"), str(REPO / "examples/echo/rootfs")], check=True)


@pytest.mark.parametrize("user", [None, NOBODY], ids=["root", "nobody"])
def test_try_out_as_written(user: int | None, runproc_bin: Path, example_rootfs: None, world_tmp: Path) -> None:
    if runproc_bin != (REPO / "runproc").resolve():
        pytest.skip("the README uses ./runproc; RUNPROC_BIN points elsewhere")
    checkout = REPO
    if user is not None:
        # The unprivileged user works in a copy of what the try-out uses, in a place
        # it can reach (this checkout's own location may not be).
        checkout = world_tmp / "checkout"
        (checkout / "examples").mkdir(parents=True)
        shutil.copy2(runproc_bin, checkout / "runproc")
        shutil.copytree(REPO / "examples/echo", checkout / "examples/echo", symlinks=True,
                        ignore=shutil.ignore_patterns("rootfs"))
        subprocess.run(["chmod", "-R", "a+rX", str(checkout)], check=True)
    script = try_out_script()
    assert "./runproc create --pid-file $RUNPROC_STATE_DIR/pid demo $(pwd)/examples/echo" in script
    result = run_script(script, user, checkout, world_tmp)
    assert result.returncode == 0, result.stderr
    # create, then start's output, then run's: the echo program ran twice.
    assert result.stdout.count("hello from runproc\n") == 2, result.stdout
    assert '"status": "created"' in result.stdout and '"status": "stopped"' in result.stdout
