"""`runproc exec [options] ID [--] CMD [ARGS...]` or `exec -p process.json ID`: a new process
in a running container.

The process is planned from the config.json that create saved, its `process`
replaced (runproc.spec.exec_process), so it gets the container's
capabilities, seccomp filter, no_new_privs, AppArmor profile and rlimits
unless the process file or the flags say otherwise. The child that becomes it
joins the init's namespaces and root (runproc.setns_init). Errors are
`exec failed: ...`, exit status 255, as runc's; otherwise exec exits with the
program's status (128+N for signal N), or at once with --detach.

The process joins the container's cgroup before it enters anything else, or
the existing sub-cgroups `--cgroup [<controller>:]<path>` names, as runc's. Safety (the CVE-2019-5736 class): exec is
not dumpable from its start, so its child, which lives in the container's
pid namespace until it execs, shows no /proc files (exe, fds, memory) to the
container's processes, and it holds no fd of the host but its stdio.
"""

from __future__ import annotations

import os

from runproc import foreground, jsonio, terminal
from runproc.cli import Context
from runproc.create import check_pid_file, parse_preserve_fds, write_pid_file
from runproc.errors import RunprocError
from runproc.fsutil import os_error_text
from runproc.kernel import boot_lock_fd, cgroup_frozen, close_fds_except, fd_above
from runproc.linux import enter, security, syscalls
from runproc.log import report_error
from runproc.setns_init import ExecChannels, exec_in_container
from runproc.spec import ContainerPlan, plan_from_config
from runproc.spec.exec_process import exec_config, from_file, from_flags
from runproc.state import StateStore

MAX_PROCESS_FILE = 4 << 20

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

    from runproc.linux.cgroups.entry import Entry


def run(context: Context) -> int:
    try:
        return _exec(context)
    except RunprocError as err:
        report_error(context.log, f"exec failed: {err.message}")
        return 255


def _exec(context: Context) -> int:
    # First: no process of the container may open our /proc files, nor our child's before it execs.
    syscalls.prctl(syscalls.PR_SET_DUMPABLE, 0)
    values = context.values
    euid = os.geteuid()
    detach = bool(values.get("detach"))
    pid_file = check_pid_file(values.get("pid_file"))
    preserve_fds = parse_preserve_fds(values.get("preserve_fds"))
    socket_path = values.get("console_socket")
    socket_path = socket_path if isinstance(socket_path, str) and socket_path else None
    store = StateStore(context.root)
    with store.lock(str(values["id"])) as locked:
        record = store.load(locked)
        if record.status() == "stopped":
            raise enter.ContainerStopped()
        if not values.get("ignore_paused") and cgroup_frozen(record.pid):
            raise RunprocError("cannot exec in a paused container (use --ignore-paused to override)")
        config, host_env = store.load_spec(locked)
        plan = _plan(config, host_env, record.bundle, values, euid)
        terminal.check_flags(plan.terminal, detach, socket_path)
        entry = enter.open_container(record.pid, record.start_time)
        cgroup = record.cgroup
        subs = values.get("cgroup")
        if isinstance(subs, list) and subs:
            if cgroup is None:
                raise RunprocError("--cgroup: the container has no cgroup (rootless or host mode)")
            cgroup = cgroup.with_sub_cgroups(subs)
    store.close()
    cgroup_entry = None
    if cgroup is not None:
        from runproc.linux.cgroups.entry import Entry

        # Born in the v2 directory where the kernel can, then into v1 by itself (see Entry).
        cgroup_entry = Entry(cgroup, cgroup.join, joins_itself=True)
    return _spawn(plan, entry, socket_path, detach, pid_file, preserve_fds, euid, cgroup_entry)


def _plan(config: dict, host_env: bool, bundle: str, values: dict, euid: int) -> ContainerPlan:
    container_process = config.get("process") if isinstance(config.get("process"), dict) else {}
    assert isinstance(container_process, dict)
    process_file = values.get("process")
    if isinstance(process_file, str) and process_file:
        process = from_file(container_process, _read_process_file(process_file))
    else:
        process = from_flags(container_process, values)
    plan = plan_from_config(exec_config(config, process), bundle, host_env, euid)
    if plan.security is not None:
        security.prepare(plan.security, euid)
    return plan


def _read_process_file(path: str) -> object:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as err:
        raise RunprocError(f"open {path}: {os_error_text(err)}") from None
    try:
        raw = os.read(fd, MAX_PROCESS_FILE + 1)
    except OSError as err:
        raise RunprocError(f"read {path}: {os_error_text(err)}") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_PROCESS_FILE:
        raise RunprocError(f"process file {path} is larger than {MAX_PROCESS_FILE >> 20} MiB: refused")
    try:
        return jsonio.loads(raw)
    except (ValueError, RecursionError) as err:
        raise RunprocError(f"process file {path}: invalid JSON: {err}") from None


def _spawn(plan: ContainerPlan, entry: enter.ContainerEntry, socket_path: str | None, detach: bool,
           pid_file: str | None, preserve_fds: int, euid: int, cgroup: Entry | None) -> int:
    """Fork the child into the container, wait for its exec (or its error), then for its exit."""
    host_terminal = None
    console = None
    try:
        if socket_path is not None:
            console = terminal.connect(socket_path)
        elif plan.terminal:
            host_terminal = terminal.HostTerminal()
            console = host_terminal.theirs
            host_terminal.theirs = None  # ours to close, below
        # Our fds above the caller's --preserve-fds, and no other fd of the caller's kept.
        low = 3 + preserve_fds
        report_r, report_w = (fd_above(fd, low) for fd in os.pipe2(os.O_CLOEXEC))
        if console is not None:
            console = fd_above(console, low)
        entry.joined = {kind: fd_above(fd, low) for kind, fd in entry.joined.items()}
        entry.root = fd_above(entry.root, low)
        keep = {0, 1, 2, *range(3, low), report_r, report_w, *entry.fds()}
        if host_terminal is not None:
            host_terminal.ours = fd_above(host_terminal.ours, low)
            if host_terminal.host > 2:
                host_terminal.host = fd_above(host_terminal.host, low)
            keep |= {host_terminal.ours, host_terminal.host}
        keep |= {fd for fd in (console, boot_lock_fd()) if fd is not None}
        close_fds_except(keep)
        pid = enter.fork_inside(entry, cgroup.fork if cgroup is not None else os.fork)
        if pid == 0:
            _child(plan, ExecChannels(report_w, console, entry), preserve_fds, euid, cgroup)
        os.close(report_w)
    finally:
        entry.close()
        if console is not None:
            os.close(console)
    if not detach:
        foreground.forward_signals(pid)  # from the start: the program may get them at once
    report = _read_all(report_r)
    if report:
        if host_terminal is not None:
            host_terminal.close()
        foreground.exit_code(pid)  # collect it
        raise RunprocError(f"unable to start container process: {report.decode(errors='replace')}")
    if host_terminal is not None:
        host_terminal.receive()
    if pid_file:
        write_pid_file(pid_file, pid)
    if detach:
        return 0
    return foreground.wait(pid, host_terminal)


def _child(plan: ContainerPlan, channels: ExecChannels, preserve_fds: int, euid: int,
           cgroup: Entry | None) -> NoReturn:
    try:
        if cgroup is not None:
            # Into the container's cgroup first, while the host's cgroupfs is still ours to write
            # ("0": the writer itself; see Cgroup.join_self), as runc places its exec'd process before it runs.
            try:
                cgroup.join_self()  # the rest of it: v1 through tasks, v2 unless born there
            except RunprocError as err:
                os.write(channels.report, err.message.encode(errors="replace"))
                os._exit(1)
        exec_in_container(plan, channels, preserve_fds, euid)
    finally:
        os._exit(1)


def _read_all(fd: int) -> bytes:
    """The child's report: empty when it exec'd (the pipe closed on exec), else its error."""
    data = b""
    try:
        while chunk := os.read(fd, 4096):
            data += chunk
    finally:
        os.close(fd)
    return data
