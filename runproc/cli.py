"""The command line: runc-shaped global flags, one subcommand, its flags and arguments.

Parsing is hand-written on purpose: argparse costs several milliseconds to
import, and containerd runs this binary for every container operation. The
command's own module is imported only once it is known which one runs.
"""

from __future__ import annotations

import os
import sys

from runproc.errors import RunprocError
from runproc.log import LogSettings, report_error

# flag spelling -> (destination, takes a value)
Options = dict[str, tuple[str, bool]]

GLOBAL_OPTIONS: Options = {
    "--root": ("root", True),
    "--log": ("log", True),
    "--log-format": ("log_format", True),
    "--debug": ("debug", False),
    "--systemd-cgroup": ("systemd_cgroup", False),
    # runc's flags that change nothing here yet; accepted so callers need not care.
    "--rootless": ("rootless", True),
    "--criu": ("criu", True),
}

_CREATE_OPTIONS: Options = {
    "--bundle": ("bundle", True),
    "-b": ("bundle", True),
    "--pid-file": ("pid_file", True),
    "--console-socket": ("console_socket", True),
    "--preserve-fds": ("preserve_fds", True),
    "--no-pivot": ("no_pivot", False),
    "--no-new-keyring": ("no_new_keyring", False),
    "--pidfd-socket": ("pidfd_socket", True),
}


# runc update's flags (runproc.commands.update maps them onto LinuxResources).
_UPDATE_OPTIONS: Options = {
    "--resources": ("resources", True), "-r": ("resources", True),
    **{f"--{name}": (name.replace("-", "_"), True) for name in (
        "blkio-weight", "cpu-period", "cpu-quota", "cpu-share", "cpu-rt-period", "cpu-rt-runtime", "cpuset-cpus",
        "cpuset-mems", "kernel-memory", "kernel-memory-tcp", "memory", "memory-reservation", "memory-swap",
        "pids-limit", "l3-cache-schema", "mem-bw-schema")},
}


# runc's checkpoint/restore flags: accepted so that the error is the one below, not a flag error.
_CRIU_OPTIONS: Options = {
    "--image-path": ("image_path", True),
    "--work-path": ("work_path", True),
    "--parent-path": ("parent_path", True),
    "--leave-running": ("leave_running", False),
    "--tcp-established": ("tcp_established", False),
    "--ext-unix-sk": ("ext_unix_sk", False),
    "--shell-job": ("shell_job", False),
    "--lazy-pages": ("lazy_pages", False),
    "--status-fd": ("status_fd", True),
    "--page-server": ("page_server", True),
    "--file-locks": ("file_locks", False),
    "--pre-dump": ("pre_dump", False),
    "--manage-cgroups-mode": ("manage_cgroups_mode", True),
    "--empty-ns": ("empty_ns", True),
    "--auto-dedup": ("auto_dedup", False),
}


class CommandSpec:
    """What one subcommand accepts: its flags and its positional arguments.

    `rest`: the name under which every argument after the last positional is kept,
    as given (exec's command line, ps's options for ps(1)); a `--` right before
    them only ends the flags. `repeated`: flags that may be given several times
    (their values are kept as a list).
    """

    __slots__ = ("options", "positionals", "required", "summary", "rest", "repeated")

    def __init__(self, summary: str, options: Options, positionals: tuple[str, ...], required: int,
                 rest: str = "", repeated: frozenset[str] = frozenset()) -> None:
        self.summary = summary
        self.options = options
        self.positionals = positionals
        self.required = required
        self.rest = rest
        self.repeated = repeated


COMMANDS: dict[str, CommandSpec] = {
    "create": CommandSpec("create a container, its process waiting for start", _CREATE_OPTIONS, ("id", "bundle"), 1),
    "start": CommandSpec("run the user program of a created container", {}, ("id",), 1),
    "state": CommandSpec("print the state of a container as JSON", {}, ("id",), 1),
    "kill": CommandSpec(
        "send a signal (default SIGTERM) to the container's process",
        {"--all": ("all", False), "-a": ("all", False)},
        ("id", "signal"),
        1,
    ),
    "delete": CommandSpec(
        "delete a container's state (and, with --force, its process)",
        {"--force": ("force", False), "-f": ("force", False)},
        ("id",),
        1,
    ),
    "ps": CommandSpec(
        "list the container's processes (ps -ef, or ps with the options after the id)",
        {"--format": ("format", True), "-f": ("format", True)},
        ("id",),
        1,
        rest="ps_args",
    ),
    "list": CommandSpec(
        "list the containers",
        {"--format": ("format", True), "-f": ("format", True), "--quiet": ("quiet", False), "-q": ("quiet", False)},
        (),
        0,
    ),
    "exec": CommandSpec(
        "run a new process in a running container",
        {
            "--process": ("process", True), "-p": ("process", True),
            "--tty": ("tty", False), "-t": ("tty", False),
            "--console-socket": ("console_socket", True),
            "--cwd": ("cwd", True),
            "--env": ("env", True), "-e": ("env", True),
            "--user": ("user", True), "-u": ("user", True),
            "--additional-gids": ("additional_gids", True), "-g": ("additional_gids", True),
            "--cap": ("cap", True), "-c": ("cap", True),
            "--no-new-privs": ("no_new_privs", False),
            "--apparmor": ("apparmor", True),
            "--process-label": ("process_label", True),
            "--detach": ("detach", False), "-d": ("detach", False),
            "--pid-file": ("pid_file", True),
            "--preserve-fds": ("preserve_fds", True),
            "--ignore-paused": ("ignore_paused", False),
            "--cgroup": ("cgroup", True),
            "--pidfd-socket": ("pidfd_socket", True),
        },
        ("id",),
        1,
        rest="args",
        repeated=frozenset({"env", "additional_gids", "cap", "cgroup"}),
    ),
    "pause": CommandSpec("suspend every process of the container (cgroup freezer)", {}, ("id",), 1),
    "resume": CommandSpec("resume the processes of a paused container", {}, ("id",), 1),
    "update": CommandSpec("change the container's cgroup limits", _UPDATE_OPTIONS, ("id",), 1),
    "events": CommandSpec(
        "print the container's cgroup stats and OOM events as JSON",
        {"--interval": ("interval", True), "--stats": ("stats", False)},
        ("id",),
        1,
    ),
    "features": CommandSpec("print what this runtime supports, as JSON", {}, (), 0),
    "checkpoint": CommandSpec("not supported: runproc has no CRIU support", _CRIU_OPTIONS, ("id",), 1),
    "restore": CommandSpec("not supported: runproc has no CRIU support",
                           {**_CRIU_OPTIONS, **_CREATE_OPTIONS, "--detach": ("detach", False), "-d": ("detach", False),
                            "--no-subreaper": ("no_subreaper", False), "--lsm-profile": ("lsm_profile", True),
                            "--lsm-mount-context": ("lsm_mount_context", True)}, ("id",), 1),
    "spec": CommandSpec(
        "write runc's default config.json into the bundle",
        {"--bundle": ("bundle", True), "-b": ("bundle", True), "--rootless": ("rootless", False)},
        (),
        0,
    ),
    "run": CommandSpec(
        "create and start a container, then wait for it to exit",
        {
            **_CREATE_OPTIONS,
            "--detach": ("detach", False),
            "-d": ("detach", False),
            "--keep": ("keep", False),
            "--no-subreaper": ("no_subreaper", False),
        },
        ("id", "bundle"),
        1,
    ),
}

USAGE = """\
usage: runproc [global options] COMMAND [command options] ID [ARGS]

runproc is a runc-compatible OCI runtime: it runs an OCI bundle's process.

commands:
{commands}

global options:
  --root DIR           state directory (default $RUNPROC_STATE_DIR, else /run/runproc)
  --log PATH           append error records to PATH
  --log-format FORMAT  text (default) or json
  --systemd-cgroup     cgroupsPath is slice:prefix:name (needs systemd as PID 1)
  --debug, --rootless VALUE, --criu PATH
                       accepted for runc compatibility
  -h, --help           show this help
  -v, --version        show the version
"""


class ParsedArgs:
    """The result of parsing: global settings, the command, and its values."""

    __slots__ = ("globals", "command", "values")

    def __init__(self) -> None:
        self.globals: dict[str, str | bool] = {}
        self.command: str = ""
        self.values: dict[str, str | bool | list[str]] = {}


class HelpRequested(Exception):
    """--help was given: print this text and exit 0."""


_TRUE = {"true", "1", "t", "yes"}
_FALSE = {"false", "0", "f", "no"}


def _take_option(options: Options, argv: list[str], i: int, into: dict, repeated: frozenset[str] = frozenset()) -> int:
    """Parse the option at argv[i] into `into`; return the index after it.

    Accepts `--flag value`, `--flag=value` and, like runc's CLI library, a single
    dash for long flags (`-bundle`). Boolean flags take an optional `=true|false`.
    """
    token = argv[i]
    name, eq, inline = token.partition("=")
    spec = options.get(name)
    if spec is None and name.startswith("-") and not name.startswith("--") and len(name) > 2:
        spec = options.get("-" + name)
    if spec is None:
        raise RunprocError(f"flag provided but not defined: {name}")
    dest, takes_value = spec
    if takes_value:
        if eq:
            value, after = inline, i + 1
        elif i + 1 >= len(argv):
            raise RunprocError(f"flag needs an argument: {name}")
        else:
            value, after = argv[i + 1], i + 2
        if dest in repeated:
            into.setdefault(dest, []).append(value)
        else:
            into[dest] = value
        return after
    if eq:
        lowered = inline.lower()
        if lowered not in _TRUE and lowered not in _FALSE:
            raise RunprocError(f"invalid boolean value {inline!r} for flag {name}")
        into[dest] = lowered in _TRUE
    else:
        into[dest] = True
    return i + 1


def parse_args(argv: list[str]) -> ParsedArgs:
    """Parse a runc-style command line. Raises RunprocError or HelpRequested."""
    parsed = ParsedArgs()
    i = 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "-":
        token = argv[i]
        if token in ("-h", "--help"):
            raise HelpRequested(main_usage())
        if token in ("-v", "--version"):
            parsed.command = "version"
            return parsed
        i = _take_option(GLOBAL_OPTIONS, argv, i, parsed.globals)
    if i >= len(argv):
        raise HelpRequested(main_usage())
    command = argv[i]
    if command == "help":
        raise HelpRequested(main_usage())
    spec = COMMANDS.get(command)
    if spec is None:
        raise RunprocError(f"no such command: {command!r} (see runproc --help)")
    parsed.command = command
    positionals: list[str] = []
    i += 1
    only_positionals = False
    # Flags may come before, between or after the positional arguments.
    rest: list[str] | None = None
    while i < len(argv):
        token = argv[i]
        if spec.rest and len(positionals) == len(spec.positionals):
            # exec's command line, ps's options: everything after the id, as given.
            rest = argv[i + 1:] if token == "--" and not only_positionals else argv[i:]
            break
        if only_positionals or not token.startswith("-") or token == "-":
            positionals.append(token)
            i += 1
        elif token == "--":
            only_positionals = True
            i += 1
        elif token in ("-h", "--help"):
            raise HelpRequested(command_usage(command))
        else:
            i = _take_option(spec.options, argv, i, parsed.values, spec.repeated)
    if len(positionals) < spec.required or len(positionals) > len(spec.positionals):
        raise RunprocError(f"{command!r} takes arguments {_arguments_text(spec)}, got {len(positionals)}")
    for name, value in zip(spec.positionals, positionals):
        if name == "bundle":
            _set_bundle(parsed.values, value)
        else:
            parsed.values[name] = value
    if spec.rest:
        parsed.values[spec.rest] = rest or []
    return parsed


def _set_bundle(values: dict[str, str | bool | list[str]], positional: str) -> None:
    """The bundle may be `--bundle B` or a positional after the id, not two different ones."""
    flagged = values.get("bundle")
    if flagged is not None and flagged != positional:
        raise RunprocError(f"bundle given twice: --bundle {flagged} and {positional}")
    values["bundle"] = positional


def main_usage() -> str:
    lines = [f"  {name:<8} {spec.summary}" for name, spec in COMMANDS.items()]
    return USAGE.format(commands="\n".join(lines))


def command_usage(command: str) -> str:
    spec = COMMANDS[command]
    flags = " ".join(sorted(spec.options)) or "none"
    return f"usage: runproc {command} [options] {_arguments_text(spec)}\n\n{spec.summary}\n\noptions: {flags}\n"


def _arguments_text(spec: CommandSpec) -> str:
    """ID [BUNDLE]: required positionals bare, optional ones in brackets."""
    names = [name.upper() if n < spec.required else f"[{name.upper()}]" for n, name in enumerate(spec.positionals)]
    return " ".join(names) or "none"


def version_text() -> str:
    from runproc import OCI_VERSION, __version__

    python = ".".join(str(part) for part in sys.version_info[:3])
    return f"runproc version {__version__}\nspec: {OCI_VERSION}\npython: {python}\n"


class Context:
    """What every command needs besides its own arguments."""

    __slots__ = ("root", "log", "values", "systemd_cgroup")

    def __init__(self, root: str, log: LogSettings, values: dict[str, str | bool | list[str]],
                 systemd_cgroup: bool = False) -> None:
        self.root = root
        self.log = log
        self.values = values
        self.systemd_cgroup = systemd_cgroup  # --systemd-cgroup: cgroupsPath is slice:prefix:name


def state_root(cli_root: str | bool | None) -> str:
    """--root, else $RUNPROC_STATE_DIR, else /run/runproc (as runc: $XDG_RUNTIME_DIR for non-root)."""
    if isinstance(cli_root, str) and cli_root:
        return os.path.abspath(cli_root)
    env_root = os.environ.get("RUNPROC_STATE_DIR")
    if env_root:
        return os.path.abspath(env_root)
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if os.geteuid() != 0 and runtime_dir:
        return os.path.join(runtime_dir, "runproc")
    return "/run/runproc"


def main(argv: list[str]) -> int:
    log = LogSettings()
    try:
        parsed = parse_args(argv)
        log_path = parsed.globals.get("log")
        log.path = log_path if isinstance(log_path, str) and log_path else None
        log_format = parsed.globals.get("log_format", "text")
        if log_format not in ("text", "json"):
            raise RunprocError(f"invalid log format {log_format!r}: want text or json")
        log.format = str(log_format)
        if parsed.command == "version":
            sys.stdout.write(version_text())
            return 0
        context = Context(state_root(parsed.globals.get("root")), log, parsed.values,
                          bool(parsed.globals.get("systemd_cgroup")))
        # One module per command, imported only when it runs.
        module = __import__(f"runproc.commands.{parsed.command}", fromlist=["run"])
        return module.run(context)
    except HelpRequested as help_text:
        sys.stdout.write(str(help_text))
        return 0
    except RunprocError as err:
        report_error(log, err.message)
        return 1
    except KeyboardInterrupt:
        report_error(log, "interrupted")
        return 130
    except Exception as err:  # noqa: BLE001 - never show a traceback to the user
        report_error(log, f"internal error: {type(err).__name__}: {err}")
        return 1
