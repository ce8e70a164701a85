"""Terminals: the container's pseudo-terminal and its master, as runc makes and hands them out.

With `process.terminal: true` the pty is made inside the container, from the
container's own devpts (`/dev/ptmx` there), once its root is in place: the
slave becomes the program's stdio and controlling terminal (and, for a
container's init, is bind-mounted over `/dev/console`), and the master goes to
whoever asked for it over `--console-socket`: one sendmsg, one SCM_RIGHTS fd,
the data part `/dev/ptmx` (runc's). The runtime connects to that socket on the
host, before anything moves into the container, and hands the connected fd on.

`run` (and `exec`) in the foreground with a terminal and no socket keep the
master themselves (HostTerminal): the caller's terminal is set raw while the
program runs and bytes are copied both ways, as `runc run -t` does.

No `socket`/`tty` modules: `_socket` and `termios` are enough, and the init
must import everything before it forks.
"""

from __future__ import annotations

import _signal
import _socket
import errno
import fcntl
import os
import select
import struct
import termios

from runproc.errors import RunprocError
from runproc.fsutil import os_error_text
from runproc.linux import syscalls
from runproc.spec.mounts import MS_BIND

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    # wait_status(pid, nohang) -> exit code, or None while it runs (nohang only)
    WaitStatus = Callable[[int, bool], "int | None"]

TIOCGPTN = 0x80045430
TIOCSPTLCK = 0x40045431
TIOCGPTPEER = 0x5441  # Linux 4.13: open the slave from the master, no path to race on
SCM_DATA = b"/dev/ptmx"  # what runc sends beside the fd (containerd wants a non-empty data part)
_NONE = b"\0" * 8


def check_flags(terminal: bool, detach: bool, console_socket: str | None) -> None:
    """runc's two rules for process.terminal / --tty and --console-socket."""
    if detach and terminal and not console_socket:
        raise RunprocError("cannot allocate tty if runproc will detach without setting console socket")
    if (not detach or not terminal) and console_socket:
        raise RunprocError("cannot use console socket if runproc will not detach or allocate tty")


def connect(path: str) -> int:
    """Connect to the --console-socket (on the host, before entering anything); the connected fd."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
    except OSError as err:
        sock.close()
        raise RunprocError(f"dial unix {path}: connect: {os_error_text(err)}") from None
    return sock.detach()


def setup_console(console: int, size: tuple[int, int] | None, uid: int, mount_console: bool) -> None:
    """In the container: make the pty, send its master over `console`, make the slave our
    stdio and controlling terminal (the caller is a session leader). `size` is (rows, columns).

    Raises OSError with runc-like context; closes `console`.
    """
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        slave_path = f"/dev/pts/{struct.unpack('I', fcntl.ioctl(master, TIOCGPTN, b'0000'))[0]}"
        if size is not None:
            fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
        slave = _open_slave(master, slave_path)
        try:
            if mount_console:
                _mount_console(slave_path)
            send_fd(console, master)
            # As runc's fixStdioPermissions: the program's user owns its terminal.
            os.fchown(slave, uid, -1)
            for fd in (0, 1, 2):
                os.dup2(slave, fd)
        finally:
            os.close(slave)
    finally:
        os.close(master)
        os.close(console)
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _open_slave(master: int, path: str) -> int:
    try:
        return fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTTY):
            raise
    return os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)


def _mount_console(slave_path: str) -> None:
    """runc's mountConsole: the slave bind-mounted over /dev/console (made if missing)."""
    old = os.umask(0)
    try:
        fd = os.open("/dev/console", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC, 0o666)
        os.close(fd)
    except FileExistsError:
        pass
    except OSError as err:
        if err.errno != errno.ENXIO:  # a device node without a driver: still a mount point
            raise OSError(err.errno, f"create /dev/console: {err.strerror}") from None
    finally:
        os.umask(old)
    syscalls.mount(slave_path, "/dev/console", None, MS_BIND)


def send_fd(sock_fd: int, fd: int) -> None:
    sock = _socket.socket(fileno=sock_fd)
    try:
        sock.sendmsg([SCM_DATA], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack("i", fd))])
    finally:
        sock.detach()


def receive_fd(sock_fd: int) -> int:
    """The one fd sent over a stream socket with SCM_RIGHTS (closing any extra ones)."""
    sock = _socket.socket(fileno=sock_fd)
    try:
        _, ancillary, _, _ = sock.recvmsg(4096, _socket.CMSG_SPACE(4 * 4))
    finally:
        sock.detach()
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds += [value for (value,) in struct.iter_unpack("i", data[: len(data) - len(data) % 4])]
    if not fds:
        raise RunprocError("the container's process sent no terminal")
    for extra in fds[1:]:
        os.close(extra)
    os.set_inheritable(fds[0], False)
    return fds[0]


class HostTerminal:
    """`run`/`exec` in the foreground with a terminal and no --console-socket: the runtime keeps
    the master and joins it to the caller's terminal (runc's recvtty and initHostConsole)."""

    def __init__(self) -> None:
        ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        self.ours: int = ours.detach()
        self.theirs: int | None = theirs.detach()  # the container's end, given as its console socket
        self.master = -1
        self.host = _host_console()

    def close(self) -> None:
        """Give up (the container was not made)."""
        self.close_theirs()
        for fd in (self.ours, self.master, self.host if self.host > 2 else -1):
            if fd >= 0:
                os.close(fd)
        self.ours = self.master = self.host = -1

    def close_theirs(self) -> None:
        if self.theirs is not None:
            os.close(self.theirs)
            self.theirs = None

    def receive(self) -> None:
        """Take the master the container's process sent (it has, once it reported ready)."""
        self.close_theirs()
        try:
            self.master = receive_fd(self.ours)
        finally:
            os.close(self.ours)
            self.ours = -1
        # As runc: no CR added to the program's newlines (the caller's raw terminal shows them as sent).
        attrs = termios.tcgetattr(self.master)
        attrs[1] &= ~termios.ONLCR
        termios.tcsetattr(self.master, termios.TCSANOW, attrs)

    def relay(self, pid: int, wait_status: WaitStatus) -> int:
        """Copy stdin -> master and master -> stdout until the program `pid` exits; its exit code.

        `wait_status(pid, nohang)` returns the exit code, or None while it runs (nohang).
        The caller's terminal is raw meanwhile and restored afterwards; SIGWINCH resizes the pty.
        """
        saved = _make_raw(self.host)
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        old_wakeup = _signal.set_wakeup_fd(wake_w)
        old_chld = _signal.signal(_signal.SIGCHLD, lambda *_: None)
        old_winch = _signal.signal(_signal.SIGWINCH, lambda *_: None)
        try:
            self._resize()
            return self._copy(pid, wait_status, wake_r)
        finally:
            _signal.signal(_signal.SIGCHLD, old_chld)
            _signal.signal(_signal.SIGWINCH, old_winch)
            _signal.set_wakeup_fd(old_wakeup)
            os.close(wake_r)
            os.close(wake_w)
            if saved is not None:
                termios.tcsetattr(self.host, termios.TCSADRAIN, saved)
            self.close()

    def _copy(self, pid: int, wait_status: WaitStatus, wake: int) -> int:
        poller = select.poll()
        poller.register(self.master, select.POLLIN)
        poller.register(wake, select.POLLIN)
        stdin_open = _is_readable(0)
        if stdin_open:
            poller.register(0, select.POLLIN)
        while True:
            for fd, events in poller.poll():
                if fd == self.master:
                    if not self._pump(self.master, 1):
                        poller.unregister(self.master)
                        code = wait_status(pid, False)
                        assert code is not None
                        return code
                elif fd == 0:
                    if not self._pump(0, self.master):
                        poller.unregister(0)  # as runc: the program's stdin stays open
                elif fd == wake:
                    signals = os.read(wake, 256)
                    if _signal.SIGWINCH in signals:
                        self._resize()
                    code = wait_status(pid, True)
                    if code is not None:
                        self._drain()
                        return code

    @staticmethod
    def _pump(source: int, target: int) -> bool:
        """One read from `source` written whole to `target`; False at EOF (or EIO: the slave is closed)."""
        try:
            data = os.read(source, 65536)
        except OSError as err:
            if err.errno == errno.EIO:
                return False
            raise
        if not data:
            return False
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(target, view):]
            except BlockingIOError:
                select.select([], [target], [])
        return True

    def _drain(self) -> None:
        """What the program wrote before it exited, still in the pty."""
        os.set_blocking(self.master, False)
        try:
            while self._pump(self.master, 1):
                pass
        except BlockingIOError:
            pass

    def _resize(self) -> None:
        if self.host < 0:
            return
        try:
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, fcntl.ioctl(self.host, termios.TIOCGWINSZ, _NONE))
        except OSError:
            pass  # as runc: resizing is best effort


def _host_console() -> int:
    """The caller's terminal: stderr, stdout or stdin (runc's order), else /dev/tty."""
    for fd in (2, 1, 0):
        if os.isatty(fd):
            return fd
    try:
        return os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as err:
        raise RunprocError(f"open /dev/tty: {os_error_text(err)}") from None


def _make_raw(fd: int) -> list | None:
    """cfmakeraw on `fd`, output processing kept (containerd/console, which runc uses); the attributes to restore."""
    try:
        saved = termios.tcgetattr(fd)
    except termios.error as err:
        raise RunprocError(f"failed to set the terminal from the stdin: {err}") from None
    attrs = [*saved[:6], list(saved[6])]
    attrs[0] &= ~(termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP | termios.INLCR
                  | termios.IGNCR | termios.ICRNL | termios.IXON)
    attrs[1] |= termios.OPOST  # as containerd/console's SetRaw: output processing stays (LF -> CRLF)
    attrs[3] &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
    attrs[2] = attrs[2] & ~(termios.CSIZE | termios.PARENB) | termios.CS8
    attrs[6][termios.VMIN] = 1
    attrs[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    return saved


def _is_readable(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False
