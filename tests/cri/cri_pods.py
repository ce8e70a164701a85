"""Pods and containers as kubelet makes them, for the CRI test cases.

``PodFactory(...)`` (the ``pods`` fixture) runs a Pod sandbox with the test's runtime
handler; ``pod.container(...)`` creates and starts a container in it, with the namespace
options, log path and security context kubelet would give it. Everything a factory made
is stopped and removed when the test ends, pass or fail.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cri_client import CriClient
from cri_images import BUSYBOX_IMAGE
from cri_paths import CGROUP_ROOT

POD_NAMESPACE = "runproc-cri"  # the Kubernetes namespace in the Pods' metadata

# What kubelet sends for procMount "Default" (k8s.io/kubernetes pkg/securitycontext). It
# always sends them: containerd 1.6 masks nothing and makes nothing read-only when they
# are absent (the runtime spec then has no maskedPaths/readonlyPaths at all).
KUBELET_MASKED_PATHS = [
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
]  # fmt: skip
KUBELET_READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
DEFAULT_WAIT = 20.0


@dataclass(frozen=True)
class ExecResult:
    stdout: str
    stderr: str
    exit_code: int


@dataclass(frozen=True)
class LogLine:
    """One line of a CRI log file: `<RFC 3339 nano time> <stream> <F|P> <message>`."""

    time: str
    stream: str
    tag: str
    message: str

    @classmethod
    def parse(cls, raw: str) -> LogLine:
        parts = raw.split(" ", 3)
        assert len(parts) == 4 and parts[1] in ("stdout", "stderr") and parts[2] in ("F", "P"), (
            f"not a CRI log line: {raw!r}"
        )
        return cls(*parts)


def wait_for(what: str, probe: Callable[[], Any], timeout: float = DEFAULT_WAIT, interval: float = 0.1) -> Any:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` and the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {value!r}")
        time.sleep(interval)


@dataclass
class Container:
    pod: Pod
    id: str
    name: str
    config: Any

    @property
    def cri(self) -> CriClient:
        return self.pod.cri

    @property
    def log_file(self) -> Path:
        return Path(self.pod.config.log_directory) / self.config.log_path

    def status(self) -> Any:
        return self.cri.container_status(self.id).status

    def info(self) -> dict[str, Any]:
        """containerd's verbose info (pid, runtimeSpec, ...)."""
        return json.loads(self.cri.container_status(self.id, verbose=True).info["info"])

    def pid(self) -> int:
        return int(self.info()["pid"])

    def start(self) -> None:
        self.cri.start_container(self.id)

    def exec(self, *cmd: str, timeout: int = 0, check: bool = True) -> ExecResult:
        resp = self.cri.exec_sync(self.id, list(cmd), timeout=timeout)
        result = ExecResult(resp.stdout.decode(errors="replace"), resp.stderr.decode(errors="replace"),
                            resp.exit_code)
        if check:
            assert result.exit_code == 0, f"exec {list(cmd)} in {self.name} failed: {result}"
        return result

    def sh(self, script: str, **kwargs: Any) -> ExecResult:
        return self.exec("sh", "-c", script, **kwargs)

    def wait_state(self, state: int, timeout: float = DEFAULT_WAIT) -> Any:
        return wait_for(f"{self.name} in state {state}", lambda: (s := self.status()).state == state and s, timeout)

    def wait_exited(self, timeout: float = DEFAULT_WAIT) -> Any:
        return self.wait_state(self.cri.pb.CONTAINER_EXITED, timeout)

    def log_lines(self) -> list[LogLine]:
        try:
            text = self.log_file.read_text()
        except FileNotFoundError:
            return []
        return [LogLine.parse(line) for line in text.splitlines()]

    def wait_log(self, text: str, timeout: float = DEFAULT_WAIT) -> list[LogLine]:
        """Wait until some log line's message contains ``text``; all lines so far."""
        return wait_for(f"{text!r} in {self.log_file}",
                        lambda: (lines := self.log_lines()) and any(text in ln.message for ln in lines) and lines,
                        timeout)

    def stop(self, timeout: int = 0) -> None:
        self.cri.stop_container(self.id, timeout)

    def remove(self) -> None:
        self.cri.remove_container(self.id)


@dataclass
class Pod:
    cri: CriClient
    id: str
    name: str
    handler: str
    config: Any
    share_pid: bool
    containers: list[Container] = field(default_factory=list)

    @property
    def pb(self) -> Any:
        return self.cri.pb

    def status(self) -> Any:
        return self.cri.pod_sandbox_status(self.id).status

    def info(self) -> dict[str, Any]:
        """containerd's verbose sandbox info (pid, runtimeSpec, cniResult, ...)."""
        return json.loads(self.cri.pod_sandbox_status(self.id, verbose=True).info["info"])

    @property
    def ip(self) -> str:
        return self.status().network.ip

    def namespace_options(self) -> Any:
        pb = self.pb
        return pb.NamespaceOption(network=pb.POD, pid=pb.POD if self.share_pid else pb.CONTAINER, ipc=pb.POD)

    def container(
        self,
        name: str,
        command: Sequence[str] | None = None,
        args: Sequence[str] = (),
        *,
        image: str = BUSYBOX_IMAGE,
        env: Mapping[str, str] | None = None,
        mounts: Sequence[Any] = (),
        security: Mapping[str, Any] | None = None,
        resources: Any = None,
        annotations: Mapping[str, str] | None = None,
        working_dir: str = "",
        start: bool = True,
    ) -> Container:
        """Create (and by default start) a container; ``security`` are
        LinuxContainerSecurityContext fields, over kubelet's defaults (namespace options,
        masked and read-only paths)."""
        pb = self.pb
        log_dir = Path(self.config.log_directory) / name
        log_dir.mkdir(parents=True, exist_ok=True)  # kubelet makes the container's log dir
        fields: dict[str, Any] = {
            "namespace_options": self.namespace_options(),
            "masked_paths": KUBELET_MASKED_PATHS,
            "readonly_paths": KUBELET_READONLY_PATHS,
        }
        fields.update(security or {})
        security_context = pb.LinuxContainerSecurityContext(**fields)
        config = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name, attempt=0),
            image=pb.ImageSpec(image=image),
            command=list(command or []),
            args=list(args),
            working_dir=working_dir,
            envs=[pb.KeyValue(key=k, value=v) for k, v in (env or {}).items()],
            mounts=list(mounts),
            labels={"io.kubernetes.container.name": name},
            annotations=dict(annotations or {}),
            log_path=f"{name}/0.log",
            linux=pb.LinuxContainerConfig(security_context=security_context, resources=resources),
        )
        cid = self.cri.create_container(self.id, config, self.config)
        container = Container(self, cid, name, config)
        self.containers.append(container)
        if start:
            container.start()
        return container

    def stop(self) -> None:
        self.cri.stop_pod_sandbox(self.id)

    def remove(self) -> None:
        self.cri.remove_pod_sandbox(self.id)


class PodFactory:
    """Runs Pods the way kubelet does: one per call, each with its own log directory."""

    def __init__(self, cri: CriClient, handler: str, log_root: Path) -> None:
        self.cri = cri
        self.handler = handler
        self.log_root = log_root
        self.made: list[Pod] = []

    def sandbox_config(
        self,
        name: str,
        *,
        hostname: str | None = None,
        dns: Mapping[str, Sequence[str]] | None = None,
        share_pid: bool = False,
        annotations: Mapping[str, str] | None = None,
        sysctls: Mapping[str, str] | None = None,
        security: Mapping[str, Any] | None = None,
    ) -> Any:
        pb = self.cri.pb
        uid = str(uuid.uuid4())
        log_dir = self.log_root / f"{POD_NAMESPACE}_{name}_{uid}"
        log_dir.mkdir(parents=True)
        ns = pb.NamespaceOption(network=pb.POD, pid=pb.POD if share_pid else pb.CONTAINER, ipc=pb.POD)
        return pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace=POD_NAMESPACE, attempt=0),
            hostname=hostname if hostname is not None else name,
            log_directory=str(log_dir),
            dns_config=pb.DNSConfig(**{k: list(v) for k, v in (dns or {}).items()}),
            labels={"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": POD_NAMESPACE,
                    "io.kubernetes.pod.uid": uid},
            annotations=dict(annotations or {}),
            linux=pb.LinuxPodSandboxConfig(
                # cgroupfs driver: the sandbox and its containers go below this parent.
                cgroup_parent=f"/{CGROUP_ROOT}/pod{uid}",
                security_context=pb.LinuxSandboxSecurityContext(namespace_options=ns, **dict(security or {})),
                sysctls=dict(sysctls or {}),
            ),
        )

    def __call__(self, name: str = "pod", *, share_pid: bool = False, **kwargs: Any) -> Pod:
        name = f"{name}-{uuid.uuid4().hex[:6]}"
        config = self.sandbox_config(name, share_pid=share_pid, **kwargs)
        sid = self.cri.run_pod_sandbox(config, self.handler)
        pod = Pod(self.cri, sid, name, self.handler, config, share_pid)
        self.made.append(pod)
        return pod

    def cleanup(self) -> list[str]:
        """Stop and remove every Pod made (RemovePodSandbox removes its containers); errors."""
        errors = []
        for pod in self.made:
            for step in (pod.stop, pod.remove):
                try:
                    step()
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.NOT_FOUND:
                        errors.append(f"{step.__name__} {pod.name}: {exc.code()} {exc.details()}")
        return errors


def expect_rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    """Run ``call`` and return the gRPC error it raised (fail if it did not)."""
    try:
        result = call()
    except grpc.RpcError as exc:
        return exc
    raise AssertionError(f"expected a gRPC error, got {result!r}")


def suppress_rpc() -> contextlib.AbstractContextManager[None]:
    return contextlib.suppress(grpc.RpcError)
