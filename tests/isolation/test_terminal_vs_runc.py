"""Terminals, differential: runc and runproc with process.terminal, through real pseudo-terminals.

- `run` in the foreground on the test's own pty (the caller's terminal);
- `create --console-socket`: the test listens, receives the master (SCM_RIGHTS), types into it;
- `exec -t -d --console-socket`, and `exec -t` in the foreground.

The test's pty is set raw before the runtime starts (as the runtime sets it
itself), so what it reads does not depend on when the runtime got there.
The bytes read are compared between the two runtimes.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import socket
import struct
import subprocess
import termios
from collections.abc import Callable
from pathlib import Path

import pytest
from isolation_probe import Probe, SpecBundle
from runproc_testlib import Runproc, error_text, make_reachable

Probes = tuple[Probe, Probe]
READ_TIMEOUT = 30  # a hang guard only: a test that gets there fails
PROGRAM = "read x; echo got:$x; tty; stty size; for n in 0 1 2; do readlink /proc/self/fd/$n; done; exit 3"


def read_to_eof(fd: int) -> bytes:
    """Everything from a pty master until the other side is closed (EIO)."""
    data = b""
    while True:
        ready, _, _ = select.select([fd], [], [], READ_TIMEOUT)
        if not ready:
            pytest.fail(f"no more output after {READ_TIMEOUT}s; got {data!r}")
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            return data
        if not chunk:
            return data
        data += chunk


def raw_keeping_output(fd: int) -> None:
    """What runc (containerd/console) and runproc make of the caller's terminal: raw, output processing on."""
    attrs = termios.tcgetattr(fd)
    attrs[0] &= ~(termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP | termios.INLCR | termios.IGNCR
                  | termios.ICRNL | termios.IXON)
    attrs[3] &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


def on_a_pty(argv: list[str], typed: bytes, rows: int = 40, columns: int = 120) -> tuple[bytes, int]:
    """Run `argv` with a new pty as its stdio (size rows x columns), type `typed`; (output, exit code)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    raw_keeping_output(slave)
    try:
        process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
        os.close(slave)
        os.write(master, typed)
        output = read_to_eof(master)
        return output, process.wait(timeout=READ_TIMEOUT)
    finally:
        os.close(master)


def tty_bundle(spec_bundle: SpecBundle, script: str, edit: Callable[[dict], None] | None = None) -> Callable[[], Path]:
    """A bundle with process.terminal true, on a fresh rootfs copy per call."""
    def terminal(config: dict) -> None:
        config["process"]["terminal"] = True
        if edit is not None:
            edit(config)

    def make() -> Path:
        bundle = spec_bundle(script, terminal)
        config = json.loads((bundle / "config.json").read_text())
        shutil.copytree(config["root"]["path"], bundle / "rootfs", symlinks=True)
        make_reachable(bundle / "rootfs")
        config["root"]["path"] = str(bundle / "rootfs")
        (bundle / "config.json").write_text(json.dumps(config))
        return bundle

    return make


def test_run_attaches_the_callers_terminal(probes: Probes, spec_bundle: SpecBundle) -> None:
    bundle = tty_bundle(spec_bundle, PROGRAM)
    results = [on_a_pty(probe.side.argv("run", "--bundle", str(bundle()), f"tty-{probe.side.name}"), b"hello\n")
               for probe in probes]
    assert results[1] == results[0]
    output, code = results[1]
    assert code == 3
    assert output == b"hello\r\ngot:hello\r\n/dev/pts/0\r\n40 120\r\n" + b"/dev/pts/0\r\n" * 3, output


class ConsoleSocket:
    """The receiving end of --console-socket, as containerd's shim listens on it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(1)

    def receive(self) -> tuple[bytes, int]:
        self.listener.settimeout(READ_TIMEOUT)
        connection, _ = self.listener.accept()
        with connection:
            data, fds, _, _ = socket.recv_fds(connection, 4096, 4)
        assert len(fds) == 1, fds
        return data, fds[0]

    def close(self) -> None:
        self.listener.close()


def console_session(side: Runproc, tmp_path: Path, argv: list[str], then: Callable[[], object]) -> tuple[bytes, bytes]:
    """Run `argv` with a console socket of the test's, take the master, `then()`, type; (data part, output)."""
    server = ConsoleSocket(tmp_path / f"console-{side.name}.sock")
    try:
        result = side(*argv[:1], "--console-socket", str(server.path), *argv[1:])
        assert result.returncode == 0, result.stderr
        data, master = server.receive()
    finally:
        server.close()
    try:
        assert os.isatty(master)
        then()
        os.write(master, b"hello\n")
        return data, read_to_eof(master)
    finally:
        os.close(master)


def test_create_sends_the_master_over_the_console_socket(probes: Probes, spec_bundle: SpecBundle,
                                                         tmp_path: Path) -> None:
    def sized(config: dict) -> None:
        config["process"]["consoleSize"] = {"height": 33, "width": 101}

    script = PROGRAM.replace("; exit 3", "; stat -c %t:%T /dev/console; ls -1 /dev/pts")
    bundle = tty_bundle(spec_bundle, script, sized)
    results = []
    for probe in probes:
        side, cid = probe.side, f"console-{probe.side.name}"
        results.append(console_session(side, tmp_path, ["create", "--bundle", str(bundle()), cid],
                                       lambda side=side, cid=cid: side.ok("start", cid)))
        side.wait_status(cid, "stopped")
        side.ok("delete", cid)
    assert results[1] == results[0]
    data, output = results[1]
    assert data == b"/dev/ptmx"  # runc's data part; containerd wants a non-empty one
    assert output == (b"hello\r\ngot:hello\r\n/dev/pts/0\r\n33 101\r\n" + b"/dev/pts/0\r\n" * 3
                      + b"88:0\r\n0\r\nptmx\r\n"), output  # /dev/console is the pty (136, 0)


def in_a_user_namespace(config: dict) -> None:
    config["linux"]["namespaces"].append({"type": "user"})
    config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]


@pytest.mark.parametrize("user_namespace", [False, True], ids=["host-ids", "user-namespace"])
def test_exec_with_a_terminal(probes: Probes, spec_bundle: SpecBundle, tmp_path: Path, user_namespace: bool) -> None:
    """exec -t -d --console-socket (what containerd does) and exec -t in the foreground, into a
    container whose init has no terminal; as another user, in a user namespace too (the pty is
    made, and given to that user, from inside it)."""
    detached, foreground = [], []
    user = ["-u", "1000:1000"] if user_namespace else []
    for probe in probes:
        side, cid = probe.side, f"exec-tty-{probe.side.name}"
        bundle = spec_bundle("exec sleep 1000", in_a_user_namespace if user_namespace else None)
        config = json.loads((bundle / "config.json").read_text())
        config["process"]["consoleSize"] = {"height": 25, "width": 80}  # exec's process is the config's
        shutil.copytree(config["root"]["path"], bundle / "rootfs", symlinks=True)
        for mount_point in ("proc", "sys", "dev"):  # root of a user namespace cannot make them
            (bundle / "rootfs" / mount_point).mkdir(exist_ok=True)
        make_reachable(bundle / "rootfs")
        config["root"]["path"] = str(bundle / "rootfs")
        (bundle / "config.json").write_text(json.dumps(config))
        side.ok("run", "--detach", "--bundle", str(bundle), cid)
        detached.append(console_session(side, tmp_path, ["exec", "--tty", "--detach", *user, cid, "sh", "-c",
                                                         PROGRAM], lambda: None))
        foreground.append(on_a_pty(side.argv("exec", "-t", *user, cid, "sh", "-c", PROGRAM), b"hello\n", 20, 60))
    assert detached[1] == detached[0]
    assert detached[1] == (b"/dev/ptmx", b"hello\r\ngot:hello\r\n/dev/pts/0\r\n25 80\r\n" + b"/dev/pts/0\r\n" * 3)
    assert foreground[1] == foreground[0]
    assert foreground[1] == (b"hello\r\ngot:hello\r\n/dev/pts/0\r\n20 60\r\n" + b"/dev/pts/0\r\n" * 3, 3)


@pytest.mark.parametrize(("terminal", "socket_flag", "text"), [
    (True, False, "cannot allocate tty if"),
    (False, True, "cannot use console socket if"),
])
def test_create_terminal_flag_errors(probes: Probes, spec_bundle: SpecBundle, tmp_path: Path, terminal: bool,
                                     socket_flag: bool, text: str) -> None:
    def edit(config: dict) -> None:
        config["process"]["terminal"] = terminal

    bundle = spec_bundle("true", edit)
    for probe in probes:
        flags = ["--console-socket", str(tmp_path / "unused.sock")] if socket_flag else []
        result = probe.side("create", *flags, "--bundle", str(bundle), f"flags-{probe.side.name}")
        assert result.returncode == 1 and text in error_text(result.stderr), (probe.side.name, result)
        assert probe.side("state", f"flags-{probe.side.name}").returncode == 1  # nothing left
