"""CRI cases for faults and edge configs (issue 10): processes and shims killed from
outside, images without a shell, configs a runtime refuses, sysctls, mount propagation
and runproc's host mode through its annotation.

Same rigs and handlers as test_pods.py (the ``pods`` fixture; the machine containerd runs
on through ``cri_rig.host``); where runc and runproc behave differently on purpose, the case
says so and checks each.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import cri_images
import grpc
import pytest
from cri_checks import pod_footprint
from cri_hosts import shared_mount
from cri_pods import PodFactory, expect_rpc_error, wait_for
from cri_rig import CriRig

SLEEP = ["sleep", "3600"]
NOSHELL_IMAGE = "localhost/runproc-test/noshell:1"


def _details(exc: grpc.RpcError) -> str:
    return f"{exc.code()} {exc.details()}"


# --------------------------------------------------------------------------- killed from outside


def test_container_process_killed_from_outside(pods: PodFactory, cri_rig: CriRig) -> None:
    pb = pods.cri.pb
    host = cri_rig.host
    pod = pods("killed")
    c = pod.container("main", SLEEP)
    other = pod.container("other", SLEEP)
    pid = c.pid()
    assert (host.proc(pid) / "cmdline").read_bytes().split(b"\0")[0] == b"sleep"
    host.kill(pid, signal.SIGKILL)
    status = c.wait_exited()
    assert status.exit_code == 137, status
    # The Pod and its other container go on.
    assert other.status().state == pb.CONTAINER_RUNNING
    assert pod.status().state == pb.SANDBOX_READY
    other.exec("true")


def test_shim_killed_then_stop_and_remove_clean_up(pods: PodFactory, cri_rig: CriRig) -> None:
    pb = pods.cri.pb
    pod = pods("shimkill")
    c = pod.container("main", SLEEP)
    host = cri_rig.host
    footprint = pod_footprint(cri_rig, pod)
    assert len(footprint.shim_pids) == 1, footprint.shim_pids
    shim = footprint.shim_pids[0]
    cmdline = (host.proc(shim) / "cmdline").read_bytes().split(b"\0")
    assert b"-id" in cmdline and cmdline[cmdline.index(b"-id") + 1] == pod.id.encode(), cmdline
    host.kill(shim, signal.SIGKILL)
    # containerd notices the shim's connection close: the container exits, or the Pod
    # goes NotReady (the sandbox's task went with its shim).
    wait_for("containerd to notice the shim's death",
             lambda: c.status().state == pb.CONTAINER_EXITED or pod.status().state == pb.SANDBOX_NOTREADY)
    pod.stop()
    assert pod.status().state == pb.SANDBOX_NOTREADY
    assert c.status().state == pb.CONTAINER_EXITED
    pod.remove()
    assert pod.id not in [s.id for s in pods.cri.list_pod_sandbox()]
    # Nothing is left but the dead shim's socket file: a SIGKILLed shim cannot remove it
    # and containerd 1.6 does not either (the same with both handlers). Removed here.
    socket = cri_rig.paths.shim_socket(pod.id)
    assert footprint.wait_gone() == [f"path {socket}"]
    host.run(["rm", str(socket)])
    assert footprint.leftovers() == []


# --------------------------------------------------------------------------- no /bin/sh


@pytest.fixture
def noshell_image(cri_rig: CriRig) -> str:
    """An image holding only the static pause binary (no /bin, no shell); imported into the
    rig's containerd once."""
    if cri_rig.cri.image_status(NOSHELL_IMAGE).image.id:
        return NOSHELL_IMAGE
    rootfs = cri_rig.workdir / "noshell-rootfs"
    rootfs.mkdir(exist_ok=True)
    pause = cri_rig.workdir / "pause-rootfs" / "pause"
    (rootfs / "pause").write_bytes(pause.read_bytes())
    (rootfs / "pause").chmod(0o755)
    for sub in ("proc", "sys", "dev", "etc"):
        (rootfs / sub).mkdir(exist_ok=True)
    archive = cri_images.oci_archive(NOSHELL_IMAGE, cri_images.layer_from_dir(rootfs),
                                     {"Entrypoint": ["/pause"], "WorkingDir": "/"})
    cri_rig.add_image(NOSHELL_IMAGE, archive)
    return NOSHELL_IMAGE


def test_image_without_a_shell(pods: PodFactory, noshell_image: str) -> None:
    pb = pods.cri.pb
    pod = pods("noshell")
    c = pod.container("sh", ["/bin/sh", "-c", "echo hi"], image=noshell_image, start=False)
    exc = expect_rpc_error(c.start)
    # Both runtimes word it as Go's exec does; containerd passes it on in the CRI error.
    assert 'exec: "/bin/sh": stat /bin/sh: no such file or directory' in _details(exc), _details(exc)
    assert c.status().state != pb.CONTAINER_RUNNING
    # The Pod stays usable: its own binary runs, a busybox container beside it too.
    ok = pod.container("pause", image=noshell_image)
    assert ok.status().state == pb.CONTAINER_RUNNING
    pod.container("busybox", SLEEP).exec("true")
    assert pod.status().state == pb.SANDBOX_READY


# --------------------------------------------------------------------------- refused configs


def test_unknown_capability(pods: PodFactory, handler: str) -> None:
    pb = pods.cri.pb
    pod = pods("capfoo")
    c = pod.container("main", SLEEP, start=False, security={
        "capabilities": pb.Capability(add_capabilities=["FOO"]),
    })  # fmt: skip
    if handler == "runproc":
        # runproc refuses the config; its --log message reaches the CRI error.
        exc = expect_rpc_error(c.start)
        assert "unknown capability 'CAP_FOO'" in _details(exc), _details(exc)
        assert c.status().state != pb.CONTAINER_RUNNING
    else:
        # runc warns about unknown capabilities and goes on (a difference on purpose).
        c.start()
        assert c.status().state == pb.CONTAINER_RUNNING
        c.exec("true")
    assert pod.status().state == pb.SANDBOX_READY
    pod.container("plain", SLEEP).exec("true")


# --------------------------------------------------------------------------- sysctls


def test_unsafe_namespaced_sysctl_applies(pods: PodFactory, cri_rig: CriRig) -> None:
    host = cri_rig.host.read_text("/proc/sys/kernel/msgmax").strip()
    value = "16384" if host != "16384" else "16385"
    pod = pods("unsafe", sysctls={"kernel.msgmax": value})
    c = pod.container("main", SLEEP)
    assert c.exec("cat", "/proc/sys/kernel/msgmax").stdout.strip() == value
    assert cri_rig.host.read_text("/proc/sys/kernel/msgmax").strip() == host


def test_non_namespaced_sysctl_is_refused(pods: PodFactory, cri_rig: CriRig) -> None:
    before = cri_rig.host.read_text("/proc/sys/kernel/panic")
    name = f"panic-{uuid.uuid4().hex[:6]}"
    config = pods.sandbox_config(name, sysctls={"kernel.panic": "5"})
    try:
        exc = expect_rpc_error(lambda: pods.cri.run_pod_sandbox(config, pods.handler))
    finally:
        # A failed RunPodSandbox should leave no sandbox; remove any that is left anyway.
        for s in pods.cri.list_pod_sandbox():
            if s.metadata.name == name:
                pods.cri.stop_pod_sandbox(s.id)
                pods.cri.remove_pod_sandbox(s.id)
    text = _details(exc)
    if pods.handler == "runproc":
        assert "sysctl 'kernel.panic' is not in a separate kernel namespace" in text, text
    else:
        assert 'sysctl "kernel.panic" is not in a separate kernel namespace' in text, text
    assert cri_rig.host.read_text("/proc/sys/kernel/panic") == before


# --------------------------------------------------------------------------- propagation


@pytest.fixture
def shared_dir(cri_rig: CriRig) -> Iterator[Path]:
    """A host dir that is its own shared mount."""
    with shared_mount(cri_rig.host, cri_rig.shared_dir()) as real:
        yield real


def test_mount_propagation_modes(pods: PodFactory, cri_rig: CriRig, shared_dir: Path) -> None:
    host = cri_rig.host
    pb = pods.cri.pb
    pod = pods("prop", security={"privileged": True})
    c = pod.container("main", SLEEP, security={"privileged": True}, mounts=[
        pb.Mount(container_path="/private", host_path=str(shared_dir), propagation=pb.PROPAGATION_PRIVATE),
        pb.Mount(container_path="/slave", host_path=str(shared_dir), propagation=pb.PROPAGATION_HOST_TO_CONTAINER),
        pb.Mount(container_path="/shared", host_path=str(shared_dir), propagation=pb.PROPAGATION_BIDIRECTIONAL),
    ])  # fmt: skip
    # A mount made on the host after the start...
    (shared_dir / "late").mkdir()
    host.run(["mount", "-t", "tmpfs", "-o", "size=1m", "rpcri-late", str(shared_dir / "late")], timeout=10)
    host.write_text(shared_dir / "late" / "f", "late\n")  # into the tmpfs, as the host sees it
    # ...reaches the rslave and rshared volumes, not the rprivate one.
    assert c.exec("cat", "/slave/late/f").stdout == "late\n"
    assert c.exec("cat", "/shared/late/f").stdout == "late\n"
    assert c.exec("test", "-e", "/private/late/f", check=False).exit_code != 0
    # A mount made inside the rshared volume reaches the host.
    (shared_dir / "inner").mkdir()
    c.exec("mount", "-t", "tmpfs", "-o", "size=1m", "rpcri-inner", "/shared/inner")
    c.sh("echo inner > /shared/inner/g")
    assert str(shared_dir / "inner") in host.mount_points()
    assert host.read_text(shared_dir / "inner" / "g") == "inner\n"


# --------------------------------------------------------------------------- host mode


def test_host_mode_container_via_annotation(pods: PodFactory, handler: str, cri_rig: CriRig) -> None:
    pb = pods.cri.pb
    host = cri_rig.host
    marker = cri_rig.shared_dir() / f"host-only-{uuid.uuid4().hex[:8]}"
    marker.write_text("host\n")
    pod = pods("hostmode", annotations={"runproc.host": "1"})
    c = pod.container("main", SLEEP, annotations={"runproc.host": "1"})
    assert c.status().state == pb.CONTAINER_RUNNING
    seen = c.exec("cat", str(marker), check=False)
    # The sandbox (pause) never runs in host mode: its root is the pause image's rootfs.
    host_root = os.stat(host.proc(host.reference_pid) / "root")
    sandbox_root = os.stat(host.proc(int(pod.info()["pid"])) / "root")
    assert (sandbox_root.st_dev, sandbox_root.st_ino) != (host_root.st_dev, host_root.st_ino)
    container_root = os.stat(host.proc(c.pid()) / "root")
    if handler == "runproc":
        # The annotation reaches runproc (runproc-v2.toml): the container runs in the
        # host's mount namespace and sees a file only the host has.
        assert seen.exit_code == 0 and seen.stdout == "host\n", seen
        assert (container_root.st_dev, container_root.st_ino) == (host_root.st_dev, host_root.st_ino)
    else:
        # runc's handler does not pass the annotation on; a plain container.
        assert seen.exit_code != 0, seen
        assert (container_root.st_dev, container_root.st_ino) != (host_root.st_dev, host_root.st_ino)
