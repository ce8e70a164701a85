"""Isolation through a real containerd: what `ctr run` options ask of the runtime, compared with runc.

Each case runs the same ctr command line with runproc and with runc as --runc-binary and
compares what the container saw (see tests/isolation for the same at the runtime's level).
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # conftest is not an importable module at run time; fixtures carry it.
    from conftest import Ctr

NewId = Callable[[str], str]

RUNC = Path("/usr/sbin/runc")
NAMESPACES = ("ipc", "mnt", "net", "pid", "uts", "user", "cgroup")
NAMESPACE_SCRIPT = f"for n in {' '.join(NAMESPACES)}; do echo $n $(readlink /proc/self/ns/$n); done"


def run_with(ctr: Ctr, runtime: Path, cid: str, *cmd: str, opts: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """`ctr run --rm` with the given runtime binary (the rest as ctr.run does it)."""
    argv = ctr.run_argv(cid, *cmd, opts=opts)
    argv[argv.index("--runc-binary") + 1] = str(runtime)
    return ctr.run_cmd(argv, timeout=ctr.timeout)


def both(ctr: Ctr, new_id: NewId, *cmd: str, opts: tuple[str, ...] = ()) -> tuple[str, str]:
    """(runc's output, runproc's output) of the same `ctr run`; both must succeed."""
    outputs = []
    for runtime in (RUNC, ctr.runtime):
        proc = run_with(ctr, runtime, new_id(runtime.name), *cmd, opts=opts)
        assert proc.returncode == 0, f"{runtime}: {ctr.describe(proc)}"
        outputs.append(proc.stdout)
    return outputs[0], outputs[1]


def host_view(output: str) -> dict[str, str]:
    """Each namespace as "host" or "own" from NAMESPACE_SCRIPT's output."""
    view = {}
    for line in output.splitlines():
        name, _, link = line.partition(" ")
        if name in NAMESPACES:
            view[name] = "host" if link == os.readlink(f"/proc/self/ns/{name}") else "own"
    return view


def test_program_is_pid_one_in_its_own_namespaces(ctr: Ctr, new_id: NewId) -> None:
    runc_out, ours = both(ctr, new_id, "/bin/sh", "-c", f"echo $$; {NAMESPACE_SCRIPT}")
    assert ours.splitlines()[0] == "1"
    assert host_view(ours) == host_view(runc_out)
    assert host_view(ours)["pid"] == host_view(ours)["net"] == host_view(ours)["mnt"] == "own"


def test_default_capabilities_and_masks(ctr: Ctr, new_id: NewId) -> None:
    script = "grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status; head -1 /proc/timer_list; ls /dev | wc -l; true"
    runc_out, ours = both(ctr, new_id, "/bin/sh", "-c", script)
    assert ours == runc_out


def test_privileged(ctr: Ctr, new_id: NewId) -> None:
    script = "grep -E '^Cap' /proc/self/status; head -1 /proc/timer_list; ls /dev | wc -l; mount | grep -c ' ro,'; true"
    runc_out, ours = both(ctr, new_id, "/bin/sh", "-c", script, opts=("--privileged",))
    assert ours == runc_out


@pytest.mark.parametrize("options", ["rbind:rw", "rbind:ro"])
def test_bind_mount(ctr: Ctr, new_id: NewId, tmp_path: Path, options: str) -> None:
    source = tmp_path / "shared"
    source.mkdir()
    (source / "from-host").write_text("hello\n")
    mount = f"type=bind,src={source},dst=/data/deep,options={options}"
    runc_out, ours = both(ctr, new_id, "/bin/sh", "-c", "cat /data/deep/from-host; touch /data/deep/new && echo wrote; true",
                          opts=("--mount", mount))
    assert ours == runc_out
    assert ("wrote" in ours) == options.endswith("rw")


def test_read_only_root(ctr: Ctr, new_id: NewId) -> None:
    runc_out, ours = both(ctr, new_id, "/bin/sh", "-c", "touch /new-file 2>&1; grep ' / ' /proc/self/mounts | cut -d' ' -f4",
                          opts=("--read-only",))
    assert ours == runc_out and "Read-only file system" in ours


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"rp-e2e-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield f"/run/netns/{name}"
    subprocess.run(["ip", "netns", "delete", name], check=True)


def test_joined_network_namespace(ctr: Ctr, new_id: NewId, netns: str) -> None:
    runc_out, ours = both(ctr, new_id, "/bin/readlink", "/proc/self/ns/net", opts=("--with-ns", f"network:{netns}"))
    assert ours == runc_out == f"net:[{os.stat(netns).st_ino}]\n"


def test_seccomp_default_profile(ctr: Ctr, new_id: NewId) -> None:
    script = "grep Seccomp: /proc/self/status; unshare -U true 2>&1 || echo refused; mkdir -p /tmp/sc && echo allowed"
    runc_out, ours = both(ctr, new_id, "/bin/sh", "-c", script, opts=("--seccomp",))
    assert ours == runc_out
    assert "Seccomp:\t2" in ours and "refused" in ours and "allowed" in ours


def test_user_namespace(ctr: Ctr, new_id: NewId) -> None:
    script = "cat /proc/self/uid_map; id -u; " + NAMESPACE_SCRIPT
    opts = ("--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536")
    runc_out, ours = both(ctr, new_id, "/bin/sh", "-c", script, opts=opts)
    assert ours.splitlines()[:2] == runc_out.splitlines()[:2]
    assert host_view(ours) == host_view(runc_out)


def test_user_that_is_not_root(ctr: Ctr, new_id: NewId, tmp_path: Path) -> None:
    """ctr 1.6's run has no --user: a spec of our own (--config) sets process.user, as Kubernetes does."""
    outputs = []
    for runtime in (RUNC, ctr.runtime):
        config_path = tmp_path / f"config-{runtime.name}.json"
        ctr.run_cmd([str(ctr.runtime), "spec", "--bundle", str(tmp_path)], timeout=30)
        config = json.loads((tmp_path / "config.json").read_text())
        (tmp_path / "config.json").unlink()
        config["process"].update({"terminal": False, "user": {"uid": 1000, "gid": 1000, "additionalGids": [5]},
                                  "args": ["/bin/sh", "-c", "id; grep -E '^Cap(Eff|Prm)' /proc/self/status"]})
        config["root"] = {"path": str(ctr.rootfs), "readonly": True}
        config_path.write_text(json.dumps(config))
        argv = ctr.run_argv(new_id(runtime.name), opts=("--config", str(config_path)))
        argv[argv.index("--runc-binary") + 1] = str(runtime)
        del argv[argv.index("--rootfs"):argv.index("--rootfs") + 2]
        proc = ctr.run_cmd(argv, timeout=ctr.timeout)
        assert proc.returncode == 0, f"{runtime}: {ctr.describe(proc)}"
        outputs.append(proc.stdout)
    assert outputs[1] == outputs[0]
    assert outputs[1].startswith("uid=1000 gid=1000 groups=5")
