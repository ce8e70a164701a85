"""CRI end-to-end cases: Pods as kubelet runs them, through containerd's CRI plugin.

Each case takes the ``pods`` fixture (a PodFactory bound to the case's runtime handler on
the case's rig, see TARGETS in conftest.py) and so runs once per target. What a case checks
on the machine containerd runs on (this VM or the Kind-like node) it reads through
``cri_rig.host``. Traffic only ever goes to the Pods' own addresses, to 127.0.0.1 inside a
Pod, or to the test bridge's address.
"""

from __future__ import annotations

import re
import socket
import threading
import time
import uuid

import grpc
import pytest
from cri_checks import loaded_units, pod_footprint
from cri_pods import Container, PodFactory, expect_rpc_error, wait_for
from cri_hosts import CriHost
from cri_network import BRIDGE_IP, SUBNET, network_state
from cri_rig import CriRig

SLEEP = ["sleep", "3600"]
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$")


def listen_then_log(port: int) -> list[str]:
    """A container command: accept one TCP connection on ``port``, print what it sends.

    busybox nc quits when its stdin ends, and a CRI container's stdin is /dev/null, so a
    sleep keeps nc's stdin open; the received text lands in the container's log.
    """
    return ["sh", "-c", f"sleep 3600 | nc -l -p {port}; sleep 3600"]


def send_from(container: Container, host: str, port: int, text: str, timeout: float = 15.0) -> None:
    """Connect from inside ``container`` (busybox nc), retrying until the listener is up."""
    wait_for(
        f"{container.name} to reach {host}:{port}",
        lambda: container.sh(f"echo {text} | nc {host} {port}", check=False, timeout=5).exit_code == 0,
        timeout,
        interval=0.2,
    )


def ns_inode(host: CriHost, pid: int, ns: str) -> str:
    """The namespace a process of ``host`` is in (its pid as containerd reports it)."""
    return str((host.proc(pid) / "ns" / ns).readlink())


# --------------------------------------------------------------------------- namespaces


@pytest.mark.parametrize("share_pid", [False, True], ids=["pid-per-container", "shareProcessNamespace"])
def test_containers_share_the_pod_network(pods: PodFactory, cri_rig: CriRig, share_pid: bool) -> None:
    host = cri_rig.host
    pod = pods("net", share_pid=share_pid)
    server = pod.container("server", listen_then_log(8080))
    client = pod.container("client", ["sleep", "1002"])

    # One network namespace: the sandbox's, with the Pod's IP on eth0.
    sandbox_pid = int(pod.info()["pid"])
    assert ns_inode(host, server.pid(), "net") == ns_inode(host, client.pid(), "net") \
        == ns_inode(host, sandbox_pid, "net")  # fmt: skip
    assert ns_inode(host, sandbox_pid, "net") != ns_inode(host, host.reference_pid, "net")
    ip = pod.ip
    assert ip in [str(h) for h in SUBNET.hosts()]
    for c in (server, client):
        assert f"inet {ip}/{SUBNET.prefixlen}" in c.exec("ip", "-4", "addr", "show", "eth0").stdout

    # localhost inside the Pod reaches the other container.
    send_from(client, "127.0.0.1", 8080, "hello-over-localhost")
    server.wait_log("hello-over-localhost")

    # PID namespace: shared (pause is PID 1 and everyone sees everyone) or one per container.
    ps = client.exec("ps", "-o", "pid,args").stdout
    if share_pid:
        assert "sleep 1002" in ps and "nc -l -p 8080" in ps and "/pause" in ps, ps
        assert ns_inode(host, server.pid(), "pid") == ns_inode(host, client.pid(), "pid") \
            == ns_inode(host, sandbox_pid, "pid")  # fmt: skip
    else:
        assert "sleep 1002" in ps and "nc -l" not in ps and "/pause" not in ps, ps
        assert re.search(r"^\s*1\s+sleep 1002\s*$", ps, re.M), ps
        assert ns_inode(host, server.pid(), "pid") != ns_inode(host, client.pid(), "pid")
    assert ns_inode(host, client.pid(), "pid") != ns_inode(host, host.reference_pid, "pid")
    # IPC and UTS are the Pod's too.
    for ns in ("ipc", "uts"):
        assert ns_inode(host, server.pid(), ns) == ns_inode(host, client.pid(), ns) == ns_inode(host, sandbox_pid, ns)


def test_pods_reach_each_other_and_the_bridge_only(pods: PodFactory, cri_rig: CriRig) -> None:
    first = pods("first")
    second = pods("second")
    server = first.container("server", listen_then_log(8081))
    client = second.container("client", SLEEP)
    assert first.ip != second.ip

    # Pod to Pod over the bridge.
    send_from(client, first.ip, 8081, "hello-from-second-pod")
    server.wait_log("hello-from-second-pod")

    # Pod to the bridge address (the host listens there) and host to Pod; on the node, the
    # test's sockets are made in the node's network namespace, where its bridge is.
    with cri_rig.host.network_namespace():
        listener = socket.create_server((str(BRIDGE_IP), 0))
    with listener:
        listener.settimeout(15)
        received: dict[str, object] = {}
        # nc sends, half-closes, and exits only when the peer closes: serve from a thread.
        server_thread = threading.Thread(target=_serve_once, args=(listener, received), daemon=True)
        server_thread.start()
        client.sh(f"echo hello-bridge | nc {BRIDGE_IP} {listener.getsockname()[1]}", timeout=10)
        server_thread.join(15)
    assert received.get("data") == b"hello-bridge\n" and received.get("peer") == second.ip, received
    server2 = second.container("server2", listen_then_log(8082))
    with cri_rig.host.network_namespace():
        wait_for("the host to connect to the Pod", lambda: _host_send(second.ip, 8082, b"hello-from-host\n"), 15)
    server2.wait_log("hello-from-host")

    # No default route, nothing but the Pod subnet; forwarding and firewall untouched.
    routes = client.exec("ip", "-4", "route").stdout.strip().splitlines()
    assert len(routes) == 1 and routes[0].startswith(f"{SUBNET} dev eth0"), routes
    assert "default" not in client.exec("ip", "-6", "route").stdout
    assert network_state(cri_rig.host) == cri_rig.network_state_before


def _serve_once(listener: socket.socket, into: dict[str, object]) -> None:
    try:
        conn, peer = listener.accept()
        with conn:
            conn.settimeout(10)
            data = b""
            while chunk := conn.recv(4096):
                data += chunk
        into.update(data=data, peer=peer[0])
    except OSError as exc:
        into["error"] = exc


def _host_send(ip: str, port: int, data: bytes) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=2) as conn:
            conn.sendall(data)
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------- Pod files


def test_hostname_hosts_and_dns_as_the_pod_sets_them(pods: PodFactory, cri_rig: CriRig) -> None:
    dns = {
        # Written into resolv.conf only: nothing here resolves names.
        "servers": [str(BRIDGE_IP)],
        "searches": ["runproc-cri.svc.cluster.local", "svc.cluster.local", "cluster.local"],
        "options": ["ndots:5", "timeout:1"],
    }
    pod = pods("files", hostname="web-0", dns=dns)
    # kubelet manages /etc/hosts itself: it writes the Pod's file and mounts it in.
    hosts = cri_rig.shared_dir() / "etc-hosts"
    hosts.write_text(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n"
        f"{pod.ip}\tweb-0.files.runproc-cri.svc.cluster.local\tweb-0\n"
    )
    pb = pod.pb
    main = pod.container("main", SLEEP, mounts=[pb.Mount(container_path="/etc/hosts", host_path=str(hosts))])
    plain = pod.container("plain", SLEEP)

    for c in (main, plain):
        assert c.exec("hostname").stdout == "web-0\n"
        assert c.exec("cat", "/etc/hostname").stdout == "web-0\n"
        assert c.exec("cat", "/etc/resolv.conf").stdout == (
            "search runproc-cri.svc.cluster.local svc.cluster.local cluster.local\n"
            f"nameserver {BRIDGE_IP}\n"
            "options ndots:5 timeout:1\n"
        )
    assert main.exec("cat", "/etc/hosts").stdout == hosts.read_text()
    # Without kubelet's mount, containerd 1.6 gives the Pod a copy of the host's /etc/hosts.
    assert plain.exec("cat", "/etc/hosts").stdout == cri_rig.host.read_text("/etc/hosts")


def test_no_dns_config_copies_the_hosts_resolv_conf(pods: PodFactory, cri_rig: CriRig) -> None:
    pod = pods("nodns", hostname="nodns")
    c = pod.container("main", SLEEP)
    assert c.exec("cat", "/etc/resolv.conf").stdout == cri_rig.host.read_text("/etc/resolv.conf")


# --------------------------------------------------------------------------- exec


def test_exec_sync(pods: PodFactory) -> None:
    pod = pods("exec")
    c = pod.container("main", SLEEP, env={"GREETING": "hi there"}, working_dir="/tmp")
    r = c.exec("sh", "-c", 'echo "$GREETING in $(pwd)"; echo to-stderr >&2; exit 3', check=False)
    assert (r.stdout, r.stderr, r.exit_code) == ("hi there in /tmp\n", "to-stderr\n", 3)
    assert c.exec("id", "-u").stdout == "0\n"
    # A missing command is an exec error, not a crash of the container.
    err = expect_rpc_error(lambda: c.exec("/no/such-command", check=False))
    assert "no such file" in (err.details() or "").lower() or "not found" in (err.details() or "").lower(), err
    assert c.status().state == pod.pb.CONTAINER_RUNNING


def test_exec_sync_timeout_kills_the_process(pods: PodFactory, cri_rig: CriRig) -> None:
    pod = pods("exectimeout")
    c = pod.container("main", SLEEP)
    marker = str(4000 + uuid.uuid4().int % 5000)  # a unique `sleep N` to find on the host
    start = time.monotonic()
    err = expect_rpc_error(lambda: c.exec("sleep", marker, timeout=1))
    elapsed = time.monotonic() - start
    # containerd 1.6 kills the exec'd process with SIGKILL and answers with an error.
    assert "timeout" in (err.details() or "") and 1.0 <= elapsed < 15, (err, elapsed)
    target = f"sleep\0{marker}\0".encode()

    def gone() -> bool:
        return not any(b"\0".join(argv) == target for _, argv in cri_rig.host.processes())

    wait_for(f"the timed-out `sleep {marker}` to be gone", gone, timeout=5)
    # The container itself is unharmed and still takes execs.
    assert c.status().state == pod.pb.CONTAINER_RUNNING
    assert c.exec("echo", "still-here").stdout == "still-here\n"


def test_exec_sync_timeout_waits_for_output_held_by_children(pods: PodFactory) -> None:
    """containerd 1.6 kills only the exec'd process on timeout, then waits until every
    holder of its stdout/stderr pipes is gone (1.7 added drain_exec_sync_io_timeout)."""
    pod = pods("execorphan")
    c = pod.container("main", SLEEP)
    start = time.monotonic()
    err = expect_rpc_error(lambda: c.exec("sh", "-c", "sleep 3 & exec sleep 60", timeout=1))
    elapsed = time.monotonic() - start
    assert "timeout" in (err.details() or "") and 2.5 <= elapsed < 15, (err, elapsed)


# --------------------------------------------------------------------------- logs


def test_logs_through_the_cri_log_path(pods: PodFactory) -> None:
    pod = pods("logs")
    long_line = 20000  # more than max_container_log_line_size (16 KiB): split into P + F
    c = pod.container("main", ["sh", "-c",
                               f"echo out-1; echo err-1 >&2; echo out-2; head -c {long_line} /dev/zero | tr '\\0' x;"
                               " echo; printf no-newline"])  # fmt: skip
    status = c.wait_exited()
    assert status.exit_code == 0 and status.reason == "Completed", status
    assert status.log_path == str(c.log_file)
    lines = c.wait_log("no-newline")
    for line in lines:
        assert RFC3339.match(line.time), line
    full = [(ln.stream, ln.message) for ln in lines if ln.tag == "F"]
    assert ("stdout", "out-1") in full and ("stderr", "err-1") in full and ("stdout", "out-2") in full
    stdout = [ln for ln in lines if ln.stream == "stdout"]
    assert [ln.message for ln in stdout][:2] == ["out-1", "out-2"]  # order kept per stream
    # The long line: partial chunks, then the full tail, joined back it is the whole line.
    long_parts = [ln for ln in stdout if set(ln.message) == {"x"}]
    assert [ln.tag for ln in long_parts][-1] == "F" and "P" in [ln.tag for ln in long_parts], long_parts
    assert "".join(ln.message for ln in long_parts) == "x" * long_line
    # What ends without a newline is still logged when the stream closes.
    assert stdout[-1].message == "no-newline"


# --------------------------------------------------------------------------- stats


def test_container_stats(pods: PodFactory) -> None:
    pod = pods("stats")
    c = pod.container("main", ["sh", "-c", "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; exec sleep 3600"])
    stats = wait_for("CPU usage in ContainerStats",
                     lambda: (s := c.cri.container_stats(c.id)).cpu.usage_core_nano_seconds.value > 0 and s)
    assert stats.attributes.id == c.id and stats.attributes.metadata.name == "main"
    assert stats.cpu.timestamp > 0
    assert stats.memory.timestamp > 0 and stats.memory.working_set_bytes.value > 0, stats.memory


# --------------------------------------------------------------------------- stop and remove


def test_stop_and_remove_leave_nothing_behind(pods: PodFactory, cri_rig: CriRig) -> None:
    pb = pods.cri.pb
    pod = pods("teardown", share_pid=False)
    # One container stops on SIGTERM by itself, the other ignores it and needs SIGKILL.
    polite = pod.container("polite", ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"])
    stubborn = pod.container("stubborn", ["sh", "-c", "trap '' TERM; sleep 3600 & wait"])
    assert [c.status().state for c in (polite, stubborn)] == [pb.CONTAINER_RUNNING] * 2
    footprint = pod_footprint(cri_rig, pod)
    host = cri_rig.host
    # Everything the check looks for exists while the Pod runs (so its absence means something).
    assert host.existing(footprint.paths) == footprint.paths, footprint.paths
    assert footprint.netns is not None and str(footprint.netns_mount) in host.mount_points()
    assert footprint.netns.is_relative_to(cri_rig.paths.netns_dir)
    assert footprint.shim_pids and footprint.cgroups
    assert host.existing(footprint.cgroups) == footprint.cgroups, footprint.cgroups
    assert loaded_units(host, footprint.units) == footprint.units

    polite.stop(timeout=10)
    assert (s := polite.status()).state == pb.CONTAINER_EXITED and s.exit_code == 0, s
    start = time.monotonic()
    stubborn.stop(timeout=1)
    assert (s := stubborn.status()).state == pb.CONTAINER_EXITED and s.exit_code == 137, s
    assert time.monotonic() - start < 10
    for c in (polite, stubborn):
        c.remove()
        assert expect_rpc_error(lambda c=c: c.status()).code() == grpc.StatusCode.NOT_FOUND

    pod.stop()
    assert pod.status().state == pb.SANDBOX_NOTREADY
    # StopPodSandbox already released the network: netns unmounted and deleted.
    assert not host.existing([footprint.netns])
    pod.stop()  # idempotent, as kubelet relies on
    pod.remove()
    pod.remove()  # idempotent too
    assert pod.id not in [s.id for s in pods.cri.list_pod_sandbox()]
    assert footprint.wait_gone() == []


def test_remove_pod_with_running_containers(pods: PodFactory, cri_rig: CriRig) -> None:
    pod = pods("forced", share_pid=True)
    pod.container("a", SLEEP)
    pod.container("b", ["sh", "-c", "sleep 3600 & sleep 3600 & wait"])
    footprint = pod_footprint(cri_rig, pod)
    # kubelet always stops first; RemovePodSandbox alone must still refuse or clean up.
    pod.stop()
    pod.remove()
    assert pods.cri.list_containers(pod.id) == []
    assert footprint.wait_gone() == []
