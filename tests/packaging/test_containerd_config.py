"""The shipped containerd snippets, merged by install.sh, as the installed containerd reads them.

`containerd --config FILE config dump` prints the config containerd would run with (containerd
2.x migrates version 2 files to its version 3 layout first), so these check what containerd
sees, not what we wrote. The daemon test goes one step further and loads the CRI plugin.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # fixtures come from conftest.py; import only for the annotations
    from conftest import MakeLayout, NodeLayout, RunInstall

PACKAGING = Path(__file__).resolve().parents[2] / "packaging"
CONTAINERD = shutil.which("containerd")
if CONTAINERD is None:
    pytest.skip("containerd not installed (apt-get install containerd)", allow_module_level=True)


def containerd_version() -> tuple[str, int]:
    # "containerd github.com/containerd/containerd 1.6.20~ds1 ..." or "... /v2 v2.0.2 <commit>"
    out = subprocess.run([CONTAINERD, "--version"], capture_output=True, text=True, check=True).stdout
    for field in out.split():
        head = field.removeprefix("v")
        if head[:1].isdigit() and "." in head:
            return head, int(head.split(".")[0])
    raise AssertionError(f"cannot parse containerd --version: {out!r}")


VERSION, MAJOR = containerd_version()
# Each check_* below takes the config version. A version 2 file works on both majors (2.x
# migrates it), so the version 2 tests always run; the version 3 checks are one test, skipped
# on containerd 1.x, which cannot read version 3.


def dump(config: Path) -> dict:
    proc = subprocess.run(
        [CONTAINERD, "--config", str(config), "config", "dump"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, f"containerd rejects {config}:\n{proc.stderr}\n{config.read_text()}"
    return tomllib.loads(proc.stdout)


def cri_containerd_section(dumped: dict) -> dict:
    """The table holding default_runtime_name and runtimes, wherever this containerd keeps it."""
    plugins = dumped["plugins"]
    plugin = (
        "io.containerd.cri.v1.runtime" if "io.containerd.cri.v1.runtime" in plugins else "io.containerd.grpc.v1.cri"
    )
    return plugins[plugin]["containerd"]


def assert_runproc_registered(dumped: dict, binary: str = "/usr/local/bin/runproc") -> dict:
    section = cri_containerd_section(dumped)
    runtimes = section["runtimes"]
    assert "runproc" in runtimes, f"runtime runproc missing; runtimes: {sorted(runtimes)}"
    runproc = runtimes["runproc"]
    assert runproc["runtime_type"] == "io.containerd.runc.v2"
    assert runproc["options"]["BinaryName"] == binary
    # Without these, containerd drops the annotation and host-mode Pods silently run isolated.
    assert "runproc.host" in runproc["pod_annotations"]
    assert "runproc.host" in runproc["container_annotations"]
    # The CRI plugin refuses to start when the default runtime is not among the runtimes.
    assert section["default_runtime_name"] in runtimes, sorted(runtimes)
    return runproc


def check_merge_into_existing_minimal_config(
    version: int, node: NodeLayout, binary: Path, run_install: RunInstall
) -> None:
    # Debian's packaged config for version 2; the same shape in version 3 naming.
    cni = '"io.containerd.grpc.v1.cri".cni' if version == 2 else "'io.containerd.cri.v1.runtime'.cni"
    node.write_config(
        f'version = {version}\n\n[plugins]\n  [plugins.{cni}]\n    conf_dir = "/etc/cni/net.d"\n'
        '  [plugins."io.containerd.internal.v1.opt"]\n    path = "/var/lib/containerd/opt"\n'
    )
    run_install("--binary", binary, "--root", node.root)
    dumped = dump(node.config)
    runproc = assert_runproc_registered(dumped)
    assert runproc["options"].get("SystemdCgroup", False) is False
    assert dumped["plugins"]["io.containerd.internal.v1.opt"]["path"] == "/var/lib/containerd/opt"


def check_merge_from_scratch(version: int, node: NodeLayout, binary: Path, run_install: RunInstall) -> None:
    run_install("--binary", binary, "--root", node.root, "--config-version", str(version))
    assert tomllib.loads(node.config.read_text())["version"] == version
    assert_runproc_registered(dump(node.config))


def check_kind_like_config(version: int, node: NodeLayout, binary: Path, run_install: RunInstall) -> None:
    """Kind's shape: runc and test-handler defined, systemd cgroups: both kept, SystemdCgroup mirrored."""
    plugin = '"io.containerd.grpc.v1.cri"' if version == 2 else "'io.containerd.cri.v1.runtime'"
    node.write_config(
        f"version = {version}\n"
        f"[plugins.{plugin}.containerd]\n"
        '  default_runtime_name = "runc"\n'
        f"[plugins.{plugin}.containerd.runtimes.runc]\n"
        '  runtime_type = "io.containerd.runc.v2"\n'
        '  base_runtime_spec = "/etc/containerd/cri-base.json"\n'
        f"[plugins.{plugin}.containerd.runtimes.runc.options]\n"
        "  SystemdCgroup = true\n"
        f"[plugins.{plugin}.containerd.runtimes.test-handler]\n"
        '  runtime_type = "io.containerd.runc.v2"\n'
    )
    run_install("--binary", binary, "--root", node.root, "--dest", "/opt/bin/runproc")
    dumped = dump(node.config)
    runproc = assert_runproc_registered(dumped, binary="/opt/bin/runproc")
    assert runproc["options"]["SystemdCgroup"] is True
    runtimes = cri_containerd_section(dumped)["runtimes"]
    assert runtimes["runc"]["base_runtime_spec"] == "/etc/containerd/cri-base.json"
    assert {"runc", "test-handler", "runproc"} <= set(runtimes)


def check_shipped_snippet_as_the_readme_says(version: int, node: NodeLayout) -> None:
    # The README's manual path: version line + snippet + the runc table it says to add.
    snippet = (PACKAGING / "containerd" / f"runproc-v{version}.toml").read_text()
    plugin = '"io.containerd.grpc.v1.cri"' if version == 2 else "'io.containerd.cri.v1.runtime'"
    config = node.write_config(
        f"version = {version}\n{snippet}"
        f'[plugins.{plugin}.containerd.runtimes.runc]\n  runtime_type = "io.containerd.runc.v2"\n'
    )
    assert_runproc_registered(dump(config))


def cri_plugin_rows(ctr: str, address: str) -> list[list[str]]:
    out = subprocess.run([ctr, "--address", address, "plugins", "ls"], capture_output=True, text=True, timeout=10)
    if out.returncode != 0:
        return []
    rows = [line.split() for line in out.stdout.splitlines()[1:]]
    return [
        r for r in rows
        if len(r) >= 3 and ((r[0], r[1]) == ("io.containerd.grpc.v1", "cri") or r[0] == "io.containerd.cri.v1")
    ]  # fmt: skip


def check_daemon_loads_cri(version: int, node: NodeLayout, binary: Path, run_install: RunInstall) -> None:
    """A real containerd daemon, on private dirs and socket, loads its CRI plugin with the merged config."""
    ctr = shutil.which("ctr")
    assert ctr is not None, "ctr not installed"
    # The socket path must fit in sun_path (108 bytes); pytest's tmp_path may not.
    scratch = Path(tempfile.mkdtemp(prefix="rp-ctd-"))
    try:
        # No runc table: the case where a naive merge drops the default runtime and the CRI
        # plugin fails. Everything the daemon writes stays in scratch; NRI would take a host socket.
        node.write_config(
            f"version = {version}\n"
            'disabled_plugins = ["io.containerd.nri.v1.nri"]\n'
            f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{scratch}/opt"\n'
        )
        run_install("--binary", binary, "--root", node.root)
        address = str(scratch / "c.sock")
        log_path = scratch / "containerd.log"
        with log_path.open("w") as log:
            daemon = subprocess.Popen(
                [CONTAINERD, "--config", str(node.config), "--root", str(scratch / "root"),
                 "--state", str(scratch / "state"), "--address", address],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            try:
                deadline = time.monotonic() + 30
                rows: list[list[str]] = []
                while not rows and time.monotonic() < deadline and daemon.poll() is None:
                    time.sleep(0.3)
                    rows = cri_plugin_rows(ctr, address)
            finally:
                daemon.send_signal(signal.SIGTERM)
                try:
                    daemon.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait(timeout=5)
        log_text = log_path.read_text()
        assert rows, f"containerd never listed its CRI plugin:\n{log_text[-3000:]}"
        failed = [r for r in rows if r[-1] != "ok"]
        cri_lines = "\n".join(line for line in log_text.splitlines() if "cri" in line and "level=" in line)
        assert not failed, f"CRI plugin did not load: {failed}\n{cri_lines}"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def require_daemon_rights() -> None:
    if os.geteuid() != 0:
        pytest.skip("starting a containerd daemon needs root")
    if shutil.which("ctr") is None:
        pytest.skip("ctr (containerd's client) not installed")


# ------------------------------------------------------------------ version 2 (containerd 1.x and 2.x)


def test_v2_merge_into_existing_minimal_config(layout: NodeLayout, dummy_binary: Path, run_install: RunInstall) -> None:
    check_merge_into_existing_minimal_config(2, layout, dummy_binary, run_install)


def test_v2_merge_from_scratch(layout: NodeLayout, dummy_binary: Path, run_install: RunInstall) -> None:
    check_merge_from_scratch(2, layout, dummy_binary, run_install)


def test_v2_kind_like_config(layout: NodeLayout, dummy_binary: Path, run_install: RunInstall) -> None:
    check_kind_like_config(2, layout, dummy_binary, run_install)


def test_v2_shipped_snippet(layout: NodeLayout) -> None:
    check_shipped_snippet_as_the_readme_says(2, layout)


def test_v2_daemon_loads_cri(layout: NodeLayout, dummy_binary: Path, run_install: RunInstall) -> None:
    require_daemon_rights()
    check_daemon_loads_cri(2, layout, dummy_binary, run_install)


# ------------------------------------------------------------------ version 3 (containerd 2.x only)


@pytest.mark.skipif(MAJOR < 2, reason=f"containerd {VERSION} is 1.x: the version 3 config checks need containerd 2.x")
def test_v3_config_on_containerd2(make_layout: MakeLayout, dummy_binary: Path, run_install: RunInstall) -> None:
    check_merge_into_existing_minimal_config(3, make_layout(), dummy_binary, run_install)
    check_merge_from_scratch(3, make_layout(), dummy_binary, run_install)
    check_kind_like_config(3, make_layout(), dummy_binary, run_install)
    check_shipped_snippet_as_the_readme_says(3, make_layout())
    if os.geteuid() == 0 and shutil.which("ctr"):
        check_daemon_loads_cri(3, make_layout(), dummy_binary, run_install)


# ------------------------------------------------------------------ either


def test_from_scratch_version_follows_installed_containerd(
    layout: NodeLayout, dummy_binary: Path, run_install: RunInstall
) -> None:
    run_install("--binary", dummy_binary, "--root", layout.root)
    expected = 2 if MAJOR == 1 else 3
    assert tomllib.loads(layout.config.read_text())["version"] == expected
    assert_runproc_registered(dump(layout.config))


def test_install_refuses_a_merge_containerd_rejects(
    layout: NodeLayout, dummy_binary: Path, run_install: RunInstall
) -> None:
    # An inline runtimes table cannot be extended by a [..runtimes.runproc] table: install.sh
    # must notice (via containerd) before touching the node, not break containerd on restart.
    original = (
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\n'
        '  runtimes = { runc = { runtime_type = "io.containerd.runc.v2" } }\n'
    )
    layout.write_config(original)
    proc = run_install("--binary", dummy_binary, "--root", layout.root, check=False)
    assert proc.returncode == 1
    assert "containerd rejects the merged config" in proc.stderr
    assert layout.config.read_text() == original
    assert not layout.binary.exists()
