"""Lifecycle operations on an existing container, shared by the commands: start, signal, destroy."""

from __future__ import annotations

import errno
import os
import select
import stat
import time

from runproc.errors import RunprocError
from runproc.fsutil import os_error_text
from runproc.kernel import (
    container_processes,
    process_alive,
    signal_all,
    signal_process,
    wait_until_gone,
)
from runproc.state import (
    EXEC_FIFO,
    ContainerRecord,
    LockedContainer,
    StateStore,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from runproc.linux.cgroups import Cgroup
    from runproc.log import LogSettings

# How long start waits for the init to exec once it has the go (plus its startContainer hooks' timeouts).
START_TIMEOUT = 10


def start_container(record: ContainerRecord) -> None:
    """Release a created container's init into exec; returns once it has exec'd (or died).

    The order makes "started" durable before the program can run: open the
    fifo's write end (which fails if the init no longer waits), unlink the fifo
    (from now on the container is running, or stopped), then write the go.
    An init that sees its starter vanish without a go ends without running
    the program. So a start killed anywhere leaves a container that is
    created (killed before it opened the fifo), stopped, or running, never a
    running program reported as created; and a second start fails at once.
    A failed startContainer hook fails start with the init's message (the init exits).
    """
    status = record.status()
    if status == "stopped":
        raise RunprocError("cannot start a container that has stopped")
    if status == "running":
        raise RunprocError("cannot start an already running container")
    if status != "created":
        raise RunprocError(f"cannot start a container in the {status} state")
    hooks = None
    if record.hooks:
        from runproc import hooks
    plan = hooks.recorded_hooks(record) if hooks is not None else None
    wait = hooks.start_wait(plan, START_TIMEOUT) if hooks is not None else START_TIMEOUT
    try:
        fifo = os.open(EXEC_FIFO, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=record.dir_fd)
    except FileNotFoundError:
        raise RunprocError("cannot start an already running container") from None
    except OSError as err:
        if err.errno == errno.ENXIO:  # no reader: the init is gone, or going
            raise RunprocError("cannot start a container that has stopped") from None
        raise RunprocError(f"cannot open {record.directory}/{EXEC_FIFO}: {os_error_text(err)}") from None
    try:
        if not stat.S_ISFIFO(os.fstat(fifo).st_mode):
            raise RunprocError(f"{record.directory}/{EXEC_FIFO} is not a fifo: refused")
        os.unlink(EXEC_FIFO, dir_fd=record.dir_fd)
        try:
            os.write(fifo, b"1")
        except BrokenPipeError:
            raise RunprocError("cannot start a container that has stopped") from None
        # The init's end closes when it execs (close-on-exec) or dies.
        poller = select.poll()
        poller.register(fifo, 0)
        if not poller.poll(-1 if wait is None else wait * 1000):
            raise RunprocError(f"the container init did not run the program within {wait} s")
    finally:
        os.close(fifo)
    if hooks is not None and plan is not None and plan.of("startContainer"):
        message = hooks.read_start_errors(record.dir_fd)
        if message:
            raise RunprocError(message)


def poststart_hooks(record: ContainerRecord) -> Callable[[LogSettings | None], None]:
    """The poststart hooks of a just started container, with its state now; for the caller to run
    once it has released the container's lock (a hook may well ask runproc for the state)."""
    if not record.hooks:
        return lambda log: None
    from runproc import hooks

    return hooks.recorded_warning_hooks("poststart", record, record.status(), record.bundle)


def kill_container(record: ContainerRecord, sig: int, all_processes: bool) -> None:
    """Signal the init, or with `all_processes` every process of the container.

    `--all` on a stopped container still reaches leftovers and succeeds, as
    runc's does: containerd sends it after an init without its own pid namespace exits.
    SIGKILL to a paused container thaws it afterwards (on v1 a frozen process
    would not die before), as runc 1.1 does.
    """
    if all_processes:
        signal_container(record, sig)  # reaches only what is still alive
        return
    status = record.status()
    if status == "stopped" or not signal_process(record.pid, sig):
        raise RunprocError("container not running")
    if status == "paused" and sig == 9 and record.cgroup is not None:
        record.cgroup.set_frozen(False)


def container_pids(record: ContainerRecord) -> list[int]:
    """The container's processes: its cgroup's when it has one, else those of its pid namespace or session."""
    if record.cgroup is not None:
        return record.cgroup.pids() if record.cgroup.exists() else []
    return container_processes(record.pid, record.start_time)


def signal_container(record: ContainerRecord, sig: int) -> None:
    """Every process of the container. With a cgroup, as runc: freeze it, signal what is in it, thaw it
    (no process can fork away meanwhile); SIGKILL on v2 goes through cgroup.kill where the kernel has it."""
    cgroup = record.cgroup
    if cgroup is None:
        signal_all(record.pid, record.start_time, sig)
        return
    if not cgroup.exists() or (sig == 9 and cgroup.kill_all()):
        return
    if not cgroup.pids():
        # delete's usual case: nobody to signal, so no freeze and thaw (a process an exec adds
        # later is found by delete's check before its rmdir); but never left frozen.
        if cgroup.frozen():
            _thaw(cgroup)
        return
    try:
        cgroup.set_frozen(True)
    except RunprocError:
        pass  # runc only warns: signal them anyway
    try:
        for pid in cgroup.pids():
            signal_process(pid, sig)
    finally:
        _thaw(cgroup)


def _thaw(cgroup: Cgroup) -> None:
    try:
        cgroup.set_frozen(False)
    except RunprocError:
        pass  # runc only warns


def destroy_container(store: StateStore, locked: LockedContainer, record: ContainerRecord, force: bool,
                      log: LogSettings | None = None) -> None:
    """Delete a locked container: kill what is left of it, remove the cgroups create made, then its
    directory, then run its poststop hooks."""
    status = record.status()
    if status in ("running", "paused") and not force:
        raise RunprocError(f"cannot delete container {record.id} that is not stopped: {status}")
    if process_alive(record.pid, record.start_time):
        signal_process(record.pid, 9)
    signal_container(record, 9)
    if not wait_until_gone(record.pid, record.start_time, 5.0):
        raise RunprocError(f"container {record.id}: its process {record.pid} did not exit after SIGKILL")
    if record.cgroup is not None:
        _wait_cgroup_empty(record)
        record.cgroup.remove()
    store.remove(locked)
    if record.hooks:
        from runproc import hooks

        hooks.recorded_warning_hooks("poststop", record, "stopped", None)(log)  # in our cwd, as runc's


def _wait_cgroup_empty(record: ContainerRecord) -> None:
    """After SIGKILL the cgroup empties as its processes finish exiting; rmdir needs it empty."""
    assert record.cgroup is not None
    deadline = time.monotonic() + 5.0
    while record.cgroup.exists() and record.cgroup.pids():
        if time.monotonic() > deadline:
            raise RunprocError(f"container {record.id}: processes {record.cgroup.pids()} are still in its cgroup "
                               "after SIGKILL")
        signal_container(record, 9)
        time.sleep(0.01)
