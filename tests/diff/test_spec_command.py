"""`spec`: the same config.json as runc's, byte for byte, and runc's refusals."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from runproc_testlib import NOBODY, Runproc

RUNC = Path("/usr/sbin/runc")

pytestmark = pytest.mark.skipif(not RUNC.is_file(), reason="needs runc")


def spec_in(tool: Runproc, directory: Path, *flags: str, umask: int = 0o022) -> bytes:
    directory.mkdir(mode=0o777)
    os.chmod(directory, 0o777)  # nobody writes here too
    tool.ok("spec", "--bundle", str(directory), *flags, umask=umask)
    return (directory / "config.json").read_bytes()


@pytest.mark.parametrize("flags", [(), ("--rootless",)], ids=["default", "rootless"])
@pytest.mark.parametrize("user", [None, NOBODY], ids=["root", "nobody"])
def test_spec_is_runcs_byte_for_byte(runproc: Runproc, world_tmp: Path, flags: tuple[str, ...],
                                     user: int | None) -> None:
    runc = Runproc(RUNC, world_tmp / "runc-state", as_user=user, name="runc")
    ours = Runproc(runproc.binary, world_tmp / "runproc-state", as_user=user)
    expected = spec_in(runc, world_tmp / "runc", *flags)
    assert spec_in(ours, world_tmp / "runproc", *flags) == expected
    assert expected.startswith(b'{\n\t"ociVersion"')  # a check that the comparison compares something


def test_spec_file_mode_follows_the_umask(runproc: Runproc, tmp_path: Path) -> None:
    runc = Runproc(RUNC, tmp_path / "runc-state", name="runc")
    for tool in (runc, runproc):
        directory = tmp_path / tool.name
        spec_in(tool, directory, umask=0o077)
        assert stat.S_IMODE((directory / "config.json").stat().st_mode) == 0o600, tool.name


def test_spec_refuses_an_existing_config(runproc: Runproc, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("mine")
    runc = Runproc(RUNC, tmp_path / "runc-state", name="runc")
    for tool in (runc, runproc):
        result = tool("spec", "--bundle", str(tmp_path))
        assert result.returncode == 1 and "File config.json exists. Remove it first" in result.stderr, tool.name
    assert (tmp_path / "config.json").read_text() == "mine"


def test_spec_refuses_a_dangling_symlink(runproc: Runproc, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle/config.json").symlink_to(target)
    result = runproc("spec", "--bundle", str(tmp_path / "bundle"))
    assert result.returncode == 1 and "exists" in result.stderr
    assert not target.exists()


@pytest.mark.parametrize("args", [("spec", "--bundle", "/nonexistent/bundle"), ("spec", "extra")])
def test_spec_errors_exit_as_runcs(runproc: Runproc, tmp_path: Path, args: tuple[str, ...]) -> None:
    runc = Runproc(RUNC, tmp_path / "runc-state", name="runc")
    runc_result, ours = runc(*args, cwd=tmp_path), runproc(*args, cwd=tmp_path)
    assert ours.returncode == runc_result.returncode == 1
    assert ours.stderr.count("\n") == 1 and "Traceback" not in ours.stderr
    assert not (tmp_path / "config.json").exists()
