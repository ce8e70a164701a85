"""A small CRI client: kubelet's side of the CRI, over containerd's unix socket.

The stubs are generated from tests/cri/api.proto (package runtime.v1) at test time with
grpcio-tools into a temp dir; containerd 1.6 serves runtime.v1 next to v1alpha2.
``pb`` is the generated message module; tests build requests from it directly.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc

CRI_DIR = Path(__file__).resolve().parent
PROTO = CRI_DIR / "api.proto"

# A hung CRI call must fail the test, never block it; RunPodSandbox with CNI and an image
# unpack is the slowest call, a second or two here.
CALL_TIMEOUT = 60.0


def generate_stubs(out_dir: Path) -> tuple[ModuleType, ModuleType]:
    """Compile api.proto into ``out_dir`` and import (api_pb2, api_pb2_grpc) from there."""
    out_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{CRI_DIR}", f"--python_out={out_dir}",
         f"--grpc_python_out={out_dir}", str(PROTO)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"protoc failed on {PROTO}:\n{proc.stderr}")
    sys.path.insert(0, str(out_dir))
    try:
        pb = importlib.import_module("api_pb2")
        pb_grpc = importlib.import_module("api_pb2_grpc")
    finally:
        sys.path.remove(str(out_dir))
    return pb, pb_grpc


class CriClient:
    """RuntimeService and ImageService calls, each with a deadline; responses are messages."""

    def __init__(self, socket: Path, pb: ModuleType, pb_grpc: ModuleType) -> None:
        self.pb = pb
        self.channel = grpc.insecure_channel(f"unix://{socket}")
        self.runtime = pb_grpc.RuntimeServiceStub(self.channel)
        self.images = pb_grpc.ImageServiceStub(self.channel)
        self.sandbox_ids: set[str] = set()  # every sandbox ever made, for the teardown

    def close(self) -> None:
        self.channel.close()

    def call(self, service: str, method: str, request: Any, timeout: float = CALL_TIMEOUT) -> Any:
        stub = self.runtime if service == "runtime" else self.images
        return getattr(stub, method)(request, timeout=timeout)

    def wait_ready(self, timeout: float = 30.0) -> Any:
        """Wait until the CRI plugin answers Version and reports RuntimeReady and NetworkReady."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                self.call("runtime", "Version", self.pb.VersionRequest(version="v1"), timeout=5)
                status = self.call("runtime", "Status", self.pb.StatusRequest(), timeout=5)
                conditions = {c.type: c.status for c in status.status.conditions}
                if conditions.get("RuntimeReady") and conditions.get("NetworkReady"):
                    return status
                last = status
            except grpc.RpcError as exc:
                last = exc
            time.sleep(0.1)
        raise RuntimeError(f"CRI not ready after {timeout}s: {last}")

    # -- RuntimeService, thin wrappers ---------------------------------------------------

    def version(self) -> Any:
        return self.call("runtime", "Version", self.pb.VersionRequest(version="v1"))

    def run_pod_sandbox(self, config: Any, handler: str) -> str:
        resp = self.call("runtime", "RunPodSandbox",
                         self.pb.RunPodSandboxRequest(config=config, runtime_handler=handler))
        self.sandbox_ids.add(resp.pod_sandbox_id)
        return resp.pod_sandbox_id

    def stop_pod_sandbox(self, sid: str) -> None:
        self.call("runtime", "StopPodSandbox", self.pb.StopPodSandboxRequest(pod_sandbox_id=sid))

    def remove_pod_sandbox(self, sid: str) -> None:
        self.call("runtime", "RemovePodSandbox", self.pb.RemovePodSandboxRequest(pod_sandbox_id=sid))

    def pod_sandbox_status(self, sid: str, verbose: bool = False) -> Any:
        return self.call("runtime", "PodSandboxStatus",
                         self.pb.PodSandboxStatusRequest(pod_sandbox_id=sid, verbose=verbose))

    def list_pod_sandbox(self) -> list[Any]:
        return list(self.call("runtime", "ListPodSandbox", self.pb.ListPodSandboxRequest()).items)

    def create_container(self, sid: str, config: Any, sandbox_config: Any) -> str:
        resp = self.call("runtime", "CreateContainer", self.pb.CreateContainerRequest(
            pod_sandbox_id=sid, config=config, sandbox_config=sandbox_config))
        return resp.container_id

    def start_container(self, cid: str) -> None:
        self.call("runtime", "StartContainer", self.pb.StartContainerRequest(container_id=cid))

    def stop_container(self, cid: str, timeout: int = 0) -> None:
        self.call("runtime", "StopContainer", self.pb.StopContainerRequest(container_id=cid, timeout=timeout),
                  timeout=CALL_TIMEOUT + timeout)

    def remove_container(self, cid: str) -> None:
        self.call("runtime", "RemoveContainer", self.pb.RemoveContainerRequest(container_id=cid))

    def container_status(self, cid: str, verbose: bool = False) -> Any:
        return self.call("runtime", "ContainerStatus",
                         self.pb.ContainerStatusRequest(container_id=cid, verbose=verbose))

    def list_containers(self, sid: str | None = None) -> list[Any]:
        flt = self.pb.ContainerFilter(pod_sandbox_id=sid) if sid else None
        return list(self.call("runtime", "ListContainers", self.pb.ListContainersRequest(filter=flt)).containers)

    def exec_sync(self, cid: str, cmd: list[str], timeout: int = 0) -> Any:
        # Our deadline outlives the CRI timeout so that containerd's own handling is seen.
        return self.call("runtime", "ExecSync", self.pb.ExecSyncRequest(container_id=cid, cmd=cmd, timeout=timeout),
                         timeout=CALL_TIMEOUT + timeout)

    def container_stats(self, cid: str) -> Any:
        return self.call("runtime", "ContainerStats", self.pb.ContainerStatsRequest(container_id=cid)).stats

    # -- ImageService ---------------------------------------------------------------------

    def image_status(self, image: str) -> Any:
        return self.call("image", "ImageStatus", self.pb.ImageStatusRequest(image=self.pb.ImageSpec(image=image)))
