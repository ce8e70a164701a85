"""The README's try-out must work as written after `make build` alone, as root and as an unprivileged user.

The tree under test is a copy of the checkout's files (tracked, or new and not ignored), without a
binary or a rootfs, in which `make build` runs first: so the test fails if
`make build` stops making anything the try-out needs. The copy shares the
checkout's venvs (symlinked) so that nothing is installed twice.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from runproc_testlib import NOBODY, REPO

BUILD_LINE = "make build\n"


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
    return subprocess.run(argv, cwd=checkout, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def fresh_checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The checkout's tracked files (as they are in the work tree) in a new directory everyone can reach."""
    if os.geteuid() != 0:
        pytest.skip("make build installs packages: run as root")
    base = tmp_path_factory.mktemp("readme")
    checkout = base / "checkout"
    tracked = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, check=True).stdout
    venvs = (".venv", "build/static/.venv")
    for name in filter(None, tracked.decode().split("\0")):
        source = REPO / name
        if not source.exists() or name.startswith(venvs):
            continue  # deleted in the work tree, not yet committed; or a venv (linked below)
        target = checkout / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    for venv in venvs:
        if (REPO / venv).is_dir():
            (checkout / venv).symlink_to(REPO / venv)
    for parent in [checkout, *checkout.parents]:
        if parent in (Path("/tmp"), Path("/")):
            break
        os.chmod(parent, 0o755)
    yield checkout
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("user", [None, NOBODY], ids=["root", "nobody"])
def test_try_out_as_written(user: int | None, fresh_checkout: Path, world_tmp: Path) -> None:
    script = try_out_script()
    assert script.startswith(BUILD_LINE), script
    assert "./dist/runproc create --pid-file $STATE_DIR/pid demo $(pwd)/examples/echo" in script
    if user is not None:
        # `make build` is root's (it installs packages); the user runs the rest in root's tree.
        script = script[len(BUILD_LINE):]
        subprocess.run(["make", "-C", str(fresh_checkout), "build"], check=True, capture_output=True, timeout=600)
        subprocess.run(["chmod", "-R", "a+rX", str(fresh_checkout)], check=True)
    result = run_script(script, user, fresh_checkout, world_tmp)
    assert result.returncode == 0, result.stderr
    assert (fresh_checkout / "dist/runproc").is_file()
    # create, then start's output, then run's: the echo program ran twice.
    assert result.stdout.count("hello from runproc\n") == 2, result.stdout
    assert '"status": "created"' in result.stdout and '"status": "stopped"' in result.stdout
