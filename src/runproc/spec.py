"""Turn an OCI bundle's config.json into a plan of what the container init must do.

Pure: reads the bundle, checks the spec, returns a ContainerPlan. Nothing here
forks, mounts or writes, so every rule can be tested without root. The spec is
read once, at create; later commands use what create recorded.
"""

from __future__ import annotations

import os

from runproc import jsonio
from runproc.errors import RunprocError
from runproc.fsutil import os_error_text

# Linux's generic resource numbers (the same on x86_64 and arm64).
RLIMITS: dict[str, int] = {
    "RLIMIT_CPU": 0,
    "RLIMIT_FSIZE": 1,
    "RLIMIT_DATA": 2,
    "RLIMIT_STACK": 3,
    "RLIMIT_CORE": 4,
    "RLIMIT_RSS": 5,
    "RLIMIT_NPROC": 6,
    "RLIMIT_NOFILE": 7,
    "RLIMIT_MEMLOCK": 8,
    "RLIMIT_AS": 9,
    "RLIMIT_LOCKS": 10,
    "RLIMIT_SIGPENDING": 11,
    "RLIMIT_MSGQUEUE": 12,
    "RLIMIT_NICE": 13,
    "RLIMIT_RTPRIO": 14,
    "RLIMIT_RTTIME": 15,
}

# rlim_t is unsigned 64-bit; Python's resource module spells "unlimited" as -1.
RLIM_INFINITY_SPEC = 2**64 - 1

HOST_ANNOTATION = "runproc.host"
# containerd's CRI copies a Pod's annotations to its sandbox (pause) container
# too; the pause binary lives only in its image, so that one never runs in host mode.
CRI_CONTAINER_TYPE = "io.kubernetes.cri.container-type"


class ContainerPlan:
    """Everything create needs to start the init, derived from config.json."""

    __slots__ = (
        "bundle",
        "args",
        "env",
        "cwd",
        "uid",
        "gid",
        "additional_gids",
        "umask",
        "rlimits",
        "no_new_privileges",
        "terminal",
        "rootfs",
        "host_mode",
        "annotations",
    )

    def __init__(self) -> None:
        self.bundle = ""
        self.args: list[str] = []
        self.env: list[str] = []
        self.cwd = "/"
        self.uid = 0
        self.gid = 0
        self.additional_gids: list[int] = []
        self.umask = 0o022  # runc's default when process.user.umask is not given
        self.rlimits: list[tuple[int, int, int]] = []  # (resource, soft, hard); -1 = unlimited
        self.no_new_privileges = False
        self.terminal = False
        self.rootfs = ""  # absolute path, "" when the spec names none
        self.host_mode = False
        self.annotations: dict[str, str] = {}

    def chroots(self, euid: int) -> bool:
        """Root runs the process inside root.path, unless host mode is on; others run on the host."""
        return euid == 0 and not self.host_mode

    def has_env(self, name: str) -> bool:
        return any(entry.startswith(name + "=") for entry in self.env)

    def path_env(self) -> str | None:
        """PATH from process.env; the last one wins, as when a program sets them in order."""
        value = None
        for entry in self.env:
            if entry.startswith("PATH="):
                value = entry[5:]
        return value


def read_config(bundle: str) -> dict:
    """Load <bundle>/config.json, with errors that say which file and what is wrong."""
    if not os.path.isdir(bundle):
        if os.path.exists(bundle):
            raise RunprocError(f"bundle {bundle} is not a directory")
        raise RunprocError(f"bundle {bundle}: no such directory")
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as stream:
            raw = stream.read()
    except FileNotFoundError:
        raise RunprocError(f"JSON specification file config.json not found in bundle {bundle}") from None
    except OSError as err:
        raise RunprocError(f"cannot read {path}: {os_error_text(err)}") from None
    try:
        config = jsonio.loads(raw)
    except ValueError as err:
        raise RunprocError(f"{path}: invalid JSON: {err}") from None
    except RecursionError:
        raise RunprocError(f"{path}: invalid JSON: nested too deeply") from None
    if not isinstance(config, dict):
        raise RunprocError(f"{path}: the spec must be a JSON object")
    return config


def _want(value: object, kind: type, where: str, what: str) -> None:
    # bool is an int subclass; a spec's `true` is never a valid uid or limit.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RunprocError(f"config.json: {where} must be {what}")


def _optional(container: dict, key: str, kind: type, where: str, what: str, default: object) -> object:
    """container[key] if present and not null (checked against `kind`), else `default`."""
    value = container.get(key)
    if value is None:
        return default
    _want(value, kind, where, what)
    return value


def _os_string(value: str, where: str) -> str:
    """A string the kernel can take: no NUL byte, encodable (JSON may carry lone surrogates)."""
    if "\0" in value:
        raise RunprocError(f"config.json: {where} contains a NUL byte")
    try:
        value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise RunprocError(f"config.json: {where} is not valid text: {value!r}") from None
    return value


def _string_list(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise RunprocError(f"config.json: {where} must be a list of strings")
    return [_os_string(item, f"{where}[{n}]") for n, item in enumerate(value)]


def _environment(value: object) -> list[str]:
    """process.env, checked as runc checks it: NAME=value with a non-empty NAME."""
    env = _string_list(value, "process.env")
    for entry in env:
        name, equals, _ = entry.partition("=")
        if not equals:
            raise RunprocError(f"config.json: invalid environment variable {entry!r}: missing '='")
        if not name:
            raise RunprocError(f"config.json: invalid environment variable {entry!r}: name cannot be empty")
    return env


# uid_t and gid_t are 32-bit; (uid_t)-1 means "unchanged" to the kernel.
MAX_ID = 2**32 - 2


def _id(value: object, where: str) -> int:
    _want(value, int, where, f"an integer from 0 to {MAX_ID}")
    assert isinstance(value, int)
    if not 0 <= value <= MAX_ID:
        raise RunprocError(f"config.json: {where} must be an integer from 0 to {MAX_ID}")
    return value


def plan_from_config(config: dict, bundle: str, host_env: bool, euid: int) -> ContainerPlan:
    """Check the spec and derive the plan. `host_env` is RUNPROC_HOST=1 from the caller's environment."""
    plan = ContainerPlan()
    plan.bundle = bundle
    _optional(config, "ociVersion", str, "ociVersion", "a string", "")

    annotations = _optional(config, "annotations", dict, "annotations", "an object", {})
    assert isinstance(annotations, dict)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()):
        raise RunprocError("config.json: annotations must map strings to strings")
    plan.annotations = annotations
    plan.host_mode = host_env or (
        annotations.get(HOST_ANNOTATION) == "1" and annotations.get(CRI_CONTAINER_TYPE) != "sandbox"
    )

    process = config.get("process")
    if not process:
        raise RunprocError("process property must not be empty")
    _want(process, dict, "process", "an object")
    plan.args = _string_list(process["args"], "process.args") if process.get("args") is not None else []
    if not plan.args or not plan.args[0]:
        raise RunprocError("args must not be empty")
    plan.env = _environment(_optional(process, "env", list, "process.env", "a list of strings", []))
    cwd = _optional(process, "cwd", str, "process.cwd", "a string", "")
    assert isinstance(cwd, str)
    if not cwd.startswith("/"):
        raise RunprocError(f"Cwd must be an absolute path (process.cwd is {cwd!r})")
    plan.cwd = _os_string(cwd, "process.cwd")
    plan.terminal = _optional(process, "terminal", bool, "process.terminal", "a boolean", False) is True
    plan.no_new_privileges = (
        _optional(process, "noNewPrivileges", bool, "process.noNewPrivileges", "a boolean", False) is True
    )

    user = _optional(process, "user", dict, "process.user", "an object", {})
    assert isinstance(user, dict)
    if user.get("uid") is not None:
        plan.uid = _id(user["uid"], "process.user.uid")
    if user.get("gid") is not None:
        plan.gid = _id(user["gid"], "process.user.gid")
    gids = _optional(user, "additionalGids", list, "process.user.additionalGids", "a list of integers", [])
    assert isinstance(gids, list)
    plan.additional_gids = [_id(gid, "process.user.additionalGids[]") for gid in gids]
    if user.get("umask") is not None:
        _want(user["umask"], int, "process.user.umask", "an integer from 0 to 0777")
        if not 0 <= user["umask"] <= 0o777:
            raise RunprocError("config.json: process.user.umask must be an integer from 0 to 0777")
        plan.umask = user["umask"]

    plan.rlimits = _rlimits(_optional(process, "rlimits", list, "process.rlimits", "a list", []))

    root = _optional(config, "root", dict, "root", "an object", None)
    if isinstance(root, dict):
        root_path = _optional(root, "path", str, "root.path", "a string", "")
        assert isinstance(root_path, str)
        if root_path:
            plan.rootfs = os.path.normpath(os.path.join(bundle, _os_string(root_path, "root.path")))
    if plan.chroots(euid):
        if not plan.rootfs:
            raise RunprocError("config.json: root.path must be set (or use host mode)")
        if not os.path.isdir(plan.rootfs):
            raise RunprocError(f"rootfs {plan.rootfs}: no such directory")
    return plan


def _rlimits(raw: object) -> list[tuple[int, int, int]]:
    assert isinstance(raw, list)
    limits = []
    seen = set()
    for entry in raw:
        _want(entry, dict, "process.rlimits[]", "an object")
        kind = entry.get("type")
        if kind not in RLIMITS:
            raise RunprocError(f"config.json: unknown rlimit type {kind!r} in process.rlimits")
        if kind in seen:
            raise RunprocError(f"config.json: duplicate rlimit type {kind!r} in process.rlimits")
        seen.add(kind)
        values = []
        for key in ("soft", "hard"):
            value = entry.get(key)
            _want(value, int, f"{kind}.{key}", "a non-negative integer")
            # setrlimit takes up to 2**63-1, or 2**64-1 for "unlimited".
            if value < 0 or (value >= 2**63 and value != RLIM_INFINITY_SPEC):
                raise RunprocError(f"config.json: {kind}.{key} is out of range")
            values.append(-1 if value == RLIM_INFINITY_SPEC else value)
        soft, hard = values
        if hard != -1 and (soft == -1 or soft > hard):
            raise RunprocError(f"config.json: {kind} soft limit is above its hard limit")
        limits.append((RLIMITS[kind], soft, hard))
    return limits


def load_plan(bundle: str, host_env: bool, euid: int) -> ContainerPlan:
    """Read and check <bundle>/config.json; `bundle` must be absolute."""
    return plan_from_config(read_config(bundle), bundle, host_env, euid)
