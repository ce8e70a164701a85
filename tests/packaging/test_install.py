"""packaging/install.sh against a directory layout (--root DIR) with a dummy binary.

These need no containerd: when it is installed, install.sh also validates the merged
config with it, which test_containerd_config.py covers on its own.
"""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # fixtures come from conftest.py; import only for the annotations
    from conftest import NodeLayout, RunInstall

REPO = Path(__file__).resolve().parents[2]
INSTALL_SH = REPO / "packaging" / "install.sh"

# A config as a node might have it: one unrelated top-level setting and one plugin setting.
EXISTING_V2 = """\
version = 2
oom_score = -999

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/opt/custom-cni/bin"
"""

RUNPROC_HEADER = re.compile(
    r"""^\s*\[\s*plugins\.["']io\.containerd\.(grpc\.v1\.cri|cri\.v1\.runtime)["']"""
    r"""\.containerd\.runtimes\.["']?runproc["']?\s*\]""",
    re.M,
)


def cri_runtimes(config: dict, version: int) -> dict:
    plugin = "io.containerd.grpc.v1.cri" if version == 2 else "io.containerd.cri.v1.runtime"
    return config["plugins"][plugin]["containerd"]["runtimes"]


def test_install_twice_is_idempotent_and_keeps_existing_settings(
    layout: NodeLayout, dummy_binary: Path, run_install: RunInstall
) -> None:
    layout.write_config(EXISTING_V2)

    run_install("--binary", dummy_binary, "--root", layout.root)
    first = layout.config.read_text()
    run_install("--binary", dummy_binary, "--root", layout.root)
    second = layout.config.read_text()

    assert second == first, "a second run must not change the config"
    assert len(RUNPROC_HEADER.findall(second)) == 1, second
    assert second.count("runtimes.runproc.options]") == 1, second

    # The binary lands executable, byte for byte.
    mode = layout.binary.stat().st_mode
    assert mode & stat.S_IXUSR and mode & stat.S_IXOTH, oct(mode)
    assert layout.binary.read_bytes() == dummy_binary.read_bytes()

    parsed = tomllib.loads(second)
    assert parsed["version"] == 2
    assert parsed["oom_score"] == -999
    assert parsed["plugins"]["io.containerd.grpc.v1.cri"]["cni"]["bin_dir"] == "/opt/custom-cni/bin"
    runtimes = cri_runtimes(parsed, 2)
    assert runtimes["runproc"]["runtime_type"] == "io.containerd.runc.v2"
    assert runtimes["runproc"]["options"]["BinaryName"] == "/usr/local/bin/runproc"
    assert "runproc.host" in runtimes["runproc"]["pod_annotations"]
    # Without a runc table in the file, containerd would lose its default runtime.
    assert runtimes["runc"]["runtime_type"] == "io.containerd.runc.v2"


def test_from_scratch_writes_requested_version(layout: NodeLayout, dummy_binary: Path, run_install: RunInstall) -> None:
    run_install("--binary", dummy_binary, "--root", layout.root, "--config-version", "3", "--no-validate")
    parsed = tomllib.loads(layout.config.read_text())
    assert parsed["version"] == 3
    runtimes = cri_runtimes(parsed, 3)
    assert runtimes["runproc"]["options"]["BinaryName"] == "/usr/local/bin/runproc"
    assert runtimes["runproc"]["container_annotations"] == ["runproc.host"]
    assert set(runtimes) == {"runproc", "runc"}


def test_existing_runc_table_is_not_duplicated(layout: NodeLayout, dummy_binary: Path, run_install: RunInstall) -> None:
    # Kind's config shape: runc defined, systemd cgroups on.
    layout.write_config(
        "version = 2\n"
        '[plugins."io.containerd.grpc.v1.cri".containerd]\n'
        '  default_runtime_name = "runc"\n'
        '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\n'
        '  runtime_type = "io.containerd.runc.v2"\n'
        '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\n'
        "  SystemdCgroup = true\n"
    )
    run_install("--binary", dummy_binary, "--root", layout.root)
    text = layout.config.read_text()
    parsed = tomllib.loads(text)  # a duplicated table would not parse
    runtimes = cri_runtimes(parsed, 2)
    # SystemdCgroup is mirrored so containerd hands runproc systemd-style cgroup paths too.
    assert runtimes["runproc"]["options"]["SystemdCgroup"] is True
    assert text.count("runtimes.runc]") == 1


def test_systemd_cgroup_can_be_turned_off(layout: NodeLayout, dummy_binary: Path, run_install: RunInstall) -> None:
    layout.write_config(
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\n  SystemdCgroup = true\n'
    )
    run_install("--binary", dummy_binary, "--root", layout.root, "--systemd-cgroup", "false")
    runtimes = cri_runtimes(tomllib.loads(layout.config.read_text()), 2)
    assert "SystemdCgroup" not in runtimes["runproc"]["options"]


@pytest.mark.parametrize("has_driver", [False, True])
def test_systemd_cgroup_warns_while_the_binary_lacks_the_driver(
    layout: NodeLayout, tmp_path: Path, run_install: RunInstall, has_driver: bool
) -> None:
    # A stand-in that answers `features` as runproc does (linux.cgroup.systemd).
    binary = tmp_path / "runproc-features"
    value = "true" if has_driver else "false"
    binary.write_text(f'#!/bin/sh\n[ "$1" = features ] && printf \'{{"linux": {{"cgroup": {{"systemd": {value}}}}}}}\\n\'\n')
    binary.chmod(0o755)
    layout.write_config(
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\n  SystemdCgroup = true\n'
    )
    proc = run_install("--binary", binary, "--root", layout.root)
    assert ("warning: SystemdCgroup = true" in proc.stderr) is not has_driver, proc.stderr
    # --systemd-cgroup false: nothing to warn about.
    proc = run_install("--binary", binary, "--root", layout.root, "--systemd-cgroup", "false")
    assert "warning" not in proc.stderr, proc.stderr


def test_dest_sets_binary_path_and_binaryname(layout: NodeLayout, dummy_binary: Path, run_install: RunInstall) -> None:
    layout.write_config(EXISTING_V2)
    run_install("--binary", dummy_binary, "--root", layout.root, "--dest", "/opt/runproc/bin/runproc")
    assert (layout.root / "opt/runproc/bin/runproc").read_bytes() == dummy_binary.read_bytes()
    runtimes = cri_runtimes(tomllib.loads(layout.config.read_text()), 2)
    assert runtimes["runproc"]["options"]["BinaryName"] == "/opt/runproc/bin/runproc"


def test_restart_command_runs_after_install(
    layout: NodeLayout, dummy_binary: Path, run_install: RunInstall, tmp_path: Path
) -> None:
    marker = tmp_path / "restarted"
    layout.write_config(EXISTING_V2)
    run_install("--binary", dummy_binary, "--root", layout.root, "--restart-cmd", f"echo restarted >> {marker}")
    assert marker.read_text() == "restarted\n"
    run_install("--binary", dummy_binary, "--root", layout.root)  # no --restart-cmd: nothing runs
    assert marker.read_text() == "restarted\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unknown option '--bogus'"),
        ([], "missing --binary"),
        (["--binary"], "--binary needs a value"),
        (["--binary", "/nonexistent/runproc"], "not found"),
        (["--binary", "{bin}", "--config-version", "9"], "--config-version must be 2 or 3"),
        (["--binary", "{bin}", "--dest", "usr/bin/runproc"], "absolute path"),
        (["--binary", "{bin}", "--root", "{root}", "--kind-node", "n"], "cannot be combined"),
        (["--binary", "{bin}", "--kind-node", "n", "--engine", "no-such-engine-x"], "'no-such-engine-x' not found"),
    ],
)
def test_bad_usage_is_one_line_and_nonzero(
    args: list[str], message: str, layout: NodeLayout, dummy_binary: Path, run_install: RunInstall
) -> None:
    argv = [a.format(bin=dummy_binary, root=layout.root) for a in args]
    proc = run_install(*argv, check=False)
    assert proc.returncode != 0
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert message in lines[0]
    assert lines[0].startswith("install.sh: ")
    assert not layout.binary.exists()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        # No version line: containerd reads it as version 1 (plugins.cri), which we do not edit.
        ('root = "/var/lib/containerd"\n[plugins.cri]\n', "no 'version = N' line"),
        ("version = 9\n", "config version 9"),
        (
            'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runproc]\n'
            '  runtime_type = "io.containerd.runc.v2"\n',
            "outside the block",
        ),
    ],
)
def test_refuses_configs_it_cannot_merge(
    config: str, message: str, layout: NodeLayout, dummy_binary: Path, run_install: RunInstall
) -> None:
    layout.write_config(config)
    proc = run_install("--binary", dummy_binary, "--root", layout.root, check=False)
    assert proc.returncode == 1
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert message in proc.stderr
    assert layout.config.read_text() == config, "a refused config must be left untouched"
    assert not layout.binary.exists(), "nothing is installed when the config cannot be merged"


def test_comment_only_config_gets_a_version_line(
    layout: NodeLayout, dummy_binary: Path, run_install: RunInstall
) -> None:
    layout.write_config("# managed by hand\n")
    run_install("--binary", dummy_binary, "--root", layout.root, "--config-version", "2", "--no-validate")
    text = layout.config.read_text()
    assert text.startswith("version = 2\n")
    assert "# managed by hand" in text
    assert tomllib.loads(text)["version"] == 2


def test_help_describes_targets(run_install: RunInstall) -> None:
    proc = run_install("--help")
    for word in ("--binary", "--root", "--kind-node", "--kind-cluster", "--restart-cmd"):
        assert word in proc.stdout
    assert proc.stderr == ""


def test_script_is_executable_posix_sh() -> None:
    # Run as ./install.sh in the docs; the shebang must stay /bin/sh for minimal nodes.
    assert INSTALL_SH.stat().st_mode & stat.S_IXUSR
    assert INSTALL_SH.read_text().startswith("#!/bin/sh\n")


# ------------------------------------------------------------------ Kind-node target


def working_engine() -> str | None:
    for name in ("docker", "podman"):
        if shutil.which(name):
            probe = subprocess.run([name, "info"], capture_output=True, text=True, timeout=60)
            if probe.returncode == 0:
                return name
    return None


@pytest.fixture
def fake_kind_cluster(tmp_path: Path) -> Iterator[tuple[str, str, list[str]]]:
    """Two containers labelled like Kind nodes, from a local busybox root filesystem (no pull).

    They stand in for Kind nodes to drive install.sh's cp/exec path with the real engine;
    containerd itself is exercised by test_containerd_config.py and tests/kind.
    """
    engine = working_engine()
    if engine is None:
        pytest.skip("no working docker or podman: the Kind-node install path is not exercised")
    tag = uuid.uuid4().hex[:10]
    cluster, image = f"rp-test-{tag}", f"localhost/runproc-test-node:{tag}"
    rootfs = tmp_path / "rootfs"
    subprocess.run([str(REPO / "build" / "make-rootfs.sh"), str(rootfs)], check=True, timeout=300)
    config = rootfs / "etc/containerd/config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(KIND_CONFIG)
    tar = subprocess.run(["tar", "-C", str(rootfs), "-cf", "-", "."], capture_output=True, check=True, timeout=120)
    subprocess.run([engine, "import", "-", image], input=tar.stdout, capture_output=True, check=True, timeout=120)
    names = [f"{cluster}-control-plane", f"{cluster}-worker"]
    try:
        for name in names:
            subprocess.run(
                [engine, "run", "-d", "--name", name, "--label", f"io.x-k8s.kind.cluster={cluster}", image, "sleep", "600"],
                capture_output=True, check=True, timeout=120,
            )  # fmt: skip
        yield engine, cluster, names
    finally:
        subprocess.run([engine, "rm", "-f", *names], capture_output=True, timeout=120)
        subprocess.run([engine, "rmi", "-f", image], capture_output=True, timeout=120)


KIND_CONFIG = """\
version = 2
[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = true
"""


def test_kind_cluster_target_installs_into_every_node(
    fake_kind_cluster: tuple[str, str, list[str]], dummy_binary: Path, run_install: RunInstall
) -> None:
    engine, cluster, names = fake_kind_cluster
    # The nodes have no systemd; the restart command leaves a trace instead.
    args = ["--binary", dummy_binary, "--kind-cluster", cluster, "--engine", engine,
            "--restart-cmd", "echo restarted >> /tmp/restarted"]  # fmt: skip
    first = run_install(*args)
    assert all(f"installing into Kind node {name}" in first.stdout for name in names), first.stdout
    run_install(*args)
    for name in names:

        def node(*argv: str, name: str = name) -> subprocess.CompletedProcess[str]:
            return subprocess.run([engine, "exec", name, *argv], capture_output=True, text=True, timeout=60)

        assert node("cat", "/usr/local/bin/runproc").stdout == dummy_binary.read_text()
        assert node("test", "-x", "/usr/local/bin/runproc").returncode == 0
        text = node("cat", "/etc/containerd/config.toml").stdout
        assert len(RUNPROC_HEADER.findall(text)) == 1, text
        runtimes = cri_runtimes(tomllib.loads(text), 2)
        assert runtimes["runproc"]["options"] == {"BinaryName": "/usr/local/bin/runproc", "SystemdCgroup": True}
        assert node("cat", "/tmp/restarted").stdout == "restarted\nrestarted\n"
        assert node("test", "-e", "/tmp/runproc-install").returncode != 0, "install.sh left its files in the node"
