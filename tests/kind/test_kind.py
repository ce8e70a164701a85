"""Kind end-to-end: runproc as a Kubernetes RuntimeClass in a real Kind cluster.

Opt-in, because it needs a container engine, network and minutes:

    RUNPROC_KIND_E2E=1 make integration-test        # or: RUNPROC_KIND_E2E=1 pytest -v tests/kind

Needs kubectl and docker (or podman) on PATH; kind is used from PATH or downloaded (pinned,
checksum-verified) into a cache directory. Settings, all optional:

    RUNPROC_BIN               binary to install (default: newest dist/runproc-*-linux-amd64, else dist/runproc)
    RUNPROC_KIND_CLUSTER      cluster name (default runproc-e2e); an existing one is reused
    RUNPROC_KIND_NODE_IMAGE   kindest/node image for a new cluster (default: kind's own)
    RUNPROC_KIND_ENGINE       docker or podman (default: docker if found)
    RUNPROC_KIND_KEEP=1       keep a cluster this run created (a reused one is always kept)
    RUNPROC_KIND_CACHE        where a downloaded kind goes (default ~/.cache/runproc-e2e)
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

if os.environ.get("RUNPROC_KIND_E2E") != "1":
    pytest.skip(
        "Kind e2e is opt-in: set RUNPROC_KIND_E2E=1 (needs kubectl, docker or podman, network)", allow_module_level=True
    )


def find_engine() -> str | None:
    wanted = os.environ.get("RUNPROC_KIND_ENGINE")
    if wanted:
        return shutil.which(wanted)
    return shutil.which("docker") or shutil.which("podman")


ENGINE = find_engine()
_missing = [what for what, ok in (("kubectl", shutil.which("kubectl")), ("docker or podman", ENGINE)) if not ok]
if _missing:
    pytest.skip(f"Kind e2e needs {' and '.join(_missing)}, not found on PATH", allow_module_level=True)
assert ENGINE is not None


def engine_problem() -> str | None:
    """Why the engine cannot run Kind nodes (e.g. a docker CLI without a daemon), or None."""
    try:
        proc = subprocess.run([ENGINE, "info"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return f"'{ENGINE} info' did not answer within 60 s"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return f"'{Path(ENGINE).name} info' failed: {last}"
    return None


_problem = engine_problem()
if _problem:
    pytest.skip(f"Kind e2e needs a working container engine: {_problem}", allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
INSTALL_SH = REPO / "packaging" / "install.sh"
K8S = REPO / "packaging" / "k8s"
CLUSTER = os.environ.get("RUNPROC_KIND_CLUSTER", "runproc-e2e")
NAMESPACE = "runproc-e2e"
# kind is pinned and verified: the test downloads and runs it as root on CI runners.
KIND_VERSION = "v0.29.0"
KIND_URL = f"https://github.com/kubernetes-sigs/kind/releases/download/{KIND_VERSION}/kind-linux-amd64"
KIND_SHA256 = "c72eda46430f065fb45c5f70e7c957cc9209402ef309294821978677c8fb3284"
POD_TIMEOUT = 300.0  # seconds; covers a busybox pull on a cold node
# kind drives podman only when told so.
KIND_ENV = {**os.environ, **({"KIND_EXPERIMENTAL_PROVIDER": "podman"} if ENGINE.endswith("podman") else {})}


def run(argv: list[str], *, timeout: float = 120, check: bool = True, input: str | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input, env=env)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def runproc_binary() -> Path:
    if os.environ.get("RUNPROC_BIN"):
        return Path(os.environ["RUNPROC_BIN"]).resolve()
    released = sorted((REPO / "dist").glob("runproc-*-linux-amd64"), key=lambda p: p.stat().st_mtime)
    return released[-1] if released else REPO / "dist" / "runproc"


def kind_binary() -> Path:
    on_path = shutil.which("kind")
    if on_path:
        return Path(on_path)
    if platform.machine() not in ("x86_64", "amd64"):
        pytest.skip(f"kind not on PATH and only linux-amd64 is pinned for download (this is {platform.machine()})")
    cache = Path(os.environ.get("RUNPROC_KIND_CACHE", Path.home() / ".cache" / "runproc-e2e"))
    target = cache / f"kind-{KIND_VERSION}"
    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == KIND_SHA256:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(KIND_URL, timeout=120) as response:  # noqa: S310 (fixed https URL)
            data = response.read()
    except OSError as err:
        pytest.fail(f"kind is not on PATH and downloading {KIND_URL} failed ({err}): install kind {KIND_VERSION}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != KIND_SHA256:
        pytest.fail(f"{KIND_URL}: sha256 {digest}, expected {KIND_SHA256}")
    partial = target.with_suffix(".part")
    partial.write_bytes(data)
    partial.chmod(0o755)
    partial.rename(target)
    return target


@dataclass
class Cluster:
    kind: Path
    kubeconfig: Path
    nodes: list[str]
    binary: Path

    def kubectl(self, *args: str, timeout: float = 120, check: bool = True,
                input: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return run(["kubectl", "--kubeconfig", str(self.kubeconfig), *args], timeout=timeout, check=check, input=input)

    def node_exec(
        self, node: str, *args: str, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        assert ENGINE is not None
        return run([ENGINE, "exec", node, *args], timeout=timeout, check=check)

    def diagnostics(self, pod: str) -> str:
        """What a failing pod test shows: the pod, its events, containerd's recent log."""
        parts = [self.kubectl("-n", NAMESPACE, "describe", "pod", pod, check=False).stdout]
        for node in self.nodes:
            journal = self.node_exec(node, "journalctl", "-u", "containerd", "--no-pager", "-n", "40", check=False)
            parts.append(f"--- containerd on {node} ---\n{journal.stdout}{journal.stderr}")
        return "\n".join(parts)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    binary = runproc_binary()
    if not binary.is_file():
        pytest.fail(f"runproc binary {binary} not found: build it (make build / make release) or set RUNPROC_BIN")
    kind = kind_binary()
    # A private kubeconfig: the test never touches the user's ~/.kube/config.
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    existing = run([str(kind), "get", "clusters"], env=KIND_ENV).stdout.split()
    created = CLUSTER not in existing
    if created:
        argv = [str(kind), "create", "cluster", "--name", CLUSTER, "--kubeconfig", str(kubeconfig), "--wait", "180s"]
        if os.environ.get("RUNPROC_KIND_NODE_IMAGE"):
            argv += ["--image", os.environ["RUNPROC_KIND_NODE_IMAGE"]]
        run(argv, timeout=600, env=KIND_ENV)
    else:
        kubeconfig.write_text(run([str(kind), "get", "kubeconfig", "--name", CLUSTER], env=KIND_ENV).stdout)
    nodes = run([str(kind), "get", "nodes", "--name", CLUSTER], env=KIND_ENV).stdout.split()
    assert nodes, f"Kind cluster {CLUSTER} has no nodes"
    try:
        yield Cluster(kind, kubeconfig, nodes, binary)
    finally:
        if created and os.environ.get("RUNPROC_KIND_KEEP") != "1":
            run([str(kind), "delete", "cluster", "--name", CLUSTER], timeout=300, check=False, env=KIND_ENV)


@pytest.fixture(scope="module")
def installed(cluster: Cluster) -> Iterator[Cluster]:
    """runproc installed on every node by packaging/install.sh, RuntimeClass and namespace applied."""
    assert ENGINE is not None
    run(
        ["sh", str(INSTALL_SH), "--binary", str(cluster.binary), "--kind-cluster", CLUSTER, "--engine", ENGINE],
        timeout=600,
    )
    # containerd restarted under the kubelet: wait until every node reports Ready again.
    cluster.kubectl("wait", "--for=condition=Ready", "nodes", "--all", "--timeout=180s", timeout=200)
    cluster.kubectl("apply", "-f", str(K8S / "runtimeclass.yaml"))
    cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    # Pods are refused until the namespace's default ServiceAccount exists.
    deadline = time.monotonic() + 60
    while cluster.kubectl("-n", NAMESPACE, "get", "serviceaccount", "default", check=False).returncode != 0:
        assert time.monotonic() < deadline, f"no default ServiceAccount in namespace {NAMESPACE}"
        time.sleep(1)
    try:
        yield cluster
    finally:
        cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=true", "--timeout=120s", timeout=150, check=False)


def run_pod(cluster: Cluster, manifest: str, name: str, expected: list[str]) -> str:
    """Applies a Pod manifest, waits until its log shows every expected line, deletes the Pod."""
    cluster.kubectl(
        "-n", NAMESPACE, "delete", "pod", name, "--ignore-not-found", "--wait=true", "--timeout=60s", timeout=90
    )
    cluster.kubectl("-n", NAMESPACE, "apply", "-f", "-", input=manifest)
    logs = ""
    try:
        deadline = time.monotonic() + POD_TIMEOUT
        while time.monotonic() < deadline:
            logs = cluster.kubectl("-n", NAMESPACE, "logs", name, check=False).stdout
            if all(line in logs.splitlines() for line in expected):
                return logs
            phase = cluster.kubectl(
                "-n", NAMESPACE, "get", "pod", name, "-o", "jsonpath={.status.phase}", check=False
            ).stdout
            if phase in ("Failed", "Succeeded"):
                break  # the command exited: its log will not change any more
            time.sleep(2)
        pytest.fail(f"pod {name}: expected {expected} in its log, got {logs!r}\n{cluster.diagnostics(name)}")
    finally:
        cluster.kubectl("-n", NAMESPACE, "delete", "pod", name, "--ignore-not-found", "--wait=true", "--timeout=60s",
                        timeout=90, check=False)  # fmt: skip


def preloaded_pause_image(cluster: Cluster, wanted: str) -> str:
    """The manifest's pause image if every node has it, else a pause image they all have."""
    common: set[str] | None = None
    for node in cluster.nodes:
        images = json.loads(cluster.node_exec(node, "crictl", "images", "-o", "json").stdout)["images"]
        tags = {
            tag for image in images for tag in image.get("repoTags") or [] if tag.startswith("registry.k8s.io/pause:")
        }
        common = tags if common is None else common & tags
    if not common:
        pytest.fail(f"no registry.k8s.io/pause image preloaded on all of {cluster.nodes}")
    return wanted if wanted in common else sorted(common)[-1]


def test_install_registers_runtime_on_every_node(installed: Cluster) -> None:
    for node in installed.nodes:
        installed.node_exec(node, "test", "-x", "/usr/local/bin/runproc")
        dumped = installed.node_exec(node, "containerd", "config", "dump").stdout
        assert "runtimes.runproc]" in dumped, f"{node}: containerd does not list runtime runproc"
        assert 'BinaryName = "/usr/local/bin/runproc"' in dumped or "BinaryName = '/usr/local/bin/runproc'" in dumped
        assert "runproc.host" in dumped, f"{node}: the runproc.host annotation is not passed through"


def test_install_again_keeps_one_runtime_section(installed: Cluster) -> None:
    assert ENGINE is not None
    node = installed.nodes[0]
    run(
        ["sh", str(INSTALL_SH), "--binary", str(installed.binary), "--kind-node", node, "--engine", ENGINE], timeout=300
    )
    config = installed.node_exec(node, "cat", "/etc/containerd/config.toml").stdout
    assert config.count("runtimes.runproc]") == 1, config
    installed.kubectl("wait", "--for=condition=Ready", "nodes", "--all", "--timeout=180s", timeout=200)


def test_normal_pod_runs_in_its_image(installed: Cluster) -> None:
    run_pod(installed, (K8S / "pod-normal.yaml").read_text(), "runproc-hello", ["hello-from-runproc", "rootfs=image"])


def test_host_mode_pod_runs_on_the_node(installed: Cluster) -> None:
    run_pod(installed, (K8S / "pod-host.yaml").read_text(), "runproc-host-hello", ["host-mode-ok", "rootfs=node"])


def test_host_mode_pause_pod_needs_no_pull(installed: Cluster) -> None:
    manifest = (K8S / "pod-host-pause.yaml").read_text()
    shipped = "registry.k8s.io/pause:3.9"
    assert shipped in manifest
    # Node images preload the pause tag their Kubernetes version uses, which may not be 3.9.
    image = preloaded_pause_image(installed, shipped)
    run_pod(installed, manifest.replace(shipped, image), "runproc-host-pause", ["host-mode-ok", "rootfs=node"])
