"""The `process` section of config.json: args, env, cwd, user, rlimits and flags."""

from __future__ import annotations

from runproc.errors import RunprocError
from runproc.spec.fields import id_value, optional, os_string, string_list, want
from runproc.spec.plan import ContainerPlan

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

# Linux's limits on a path (with its NUL) and on supplementary groups.
PATH_MAX = 4096
NGROUPS_MAX = 65536

# rlim_t is unsigned 64-bit; Python's resource module spells "unlimited" as -1.
RLIM_INFINITY_SPEC = 2**64 - 1


def apply_process(config: dict, plan: ContainerPlan) -> None:
    """Check `process` and fill the plan's process fields."""
    process = config.get("process")
    if not process:
        raise RunprocError("process property must not be empty")
    want(process, dict, "process", "an object")
    plan.args = string_list(process["args"], "process.args") if process.get("args") is not None else []
    if not plan.args or not plan.args[0]:
        raise RunprocError("args must not be empty")
    plan.env = _environment(optional(process, "env", list, "process.env", "a list of strings", []))
    cwd = optional(process, "cwd", str, "process.cwd", "a string", "")
    assert isinstance(cwd, str)
    if not cwd.startswith("/"):
        raise RunprocError(f"Cwd must be an absolute path (process.cwd is {cwd!r})")
    plan.cwd = os_string(cwd, "process.cwd")
    if len(plan.cwd.encode("utf-8", "surrogateescape")) >= PATH_MAX:
        raise RunprocError(f"config.json: process.cwd is longer than the kernel's PATH_MAX ({PATH_MAX - 1} bytes)")
    plan.terminal = optional(process, "terminal", bool, "process.terminal", "a boolean", False) is True
    plan.console_size = _console_size(optional(process, "consoleSize", dict, "process.consoleSize", "an object", None))
    plan.no_new_privileges = (
        optional(process, "noNewPrivileges", bool, "process.noNewPrivileges", "a boolean", False) is True
    )
    _user(optional(process, "user", dict, "process.user", "an object", {}), plan)
    plan.rlimits = _rlimits(optional(process, "rlimits", list, "process.rlimits", "a list", []))


def _console_size(size: object) -> tuple[int, int] | None:
    """process.consoleSize {height, width} as (rows, columns); a winsize holds 16-bit values."""
    if size is None:
        return None
    assert isinstance(size, dict)
    values = []
    for key in ("height", "width"):
        value = size.get(key, 0)
        want(value, int, f"process.consoleSize.{key}", "an integer from 0 to 65535")
        if not 0 <= value <= 0xFFFF:
            raise RunprocError(f"config.json: process.consoleSize.{key} must be an integer from 0 to 65535")
        values.append(value)
    return values[0], values[1]


def _environment(value: object) -> list[str]:
    """process.env, checked as runc checks it: NAME=value with a non-empty NAME."""
    env = string_list(value, "process.env")
    for entry in env:
        name, equals, _ = entry.partition("=")
        if not equals:
            raise RunprocError(f"config.json: invalid environment variable {entry!r}: missing '='")
        if not name:
            raise RunprocError(f"config.json: invalid environment variable {entry!r}: name cannot be empty")
    return env


def _user(user: object, plan: ContainerPlan) -> None:
    assert isinstance(user, dict)
    if user.get("uid") is not None:
        plan.uid = id_value(user["uid"], "process.user.uid")
    if user.get("gid") is not None:
        plan.gid = id_value(user["gid"], "process.user.gid")
    gids = optional(user, "additionalGids", list, "process.user.additionalGids", "a list of integers", [])
    assert isinstance(gids, list)
    if len(gids) > NGROUPS_MAX:
        raise RunprocError(f"config.json: process.user.additionalGids has {len(gids)} entries; "
                           f"the kernel allows at most {NGROUPS_MAX}")
    plan.additional_gids = [id_value(gid, "process.user.additionalGids[]") for gid in gids]
    if user.get("umask") is not None:
        want(user["umask"], int, "process.user.umask", "an integer from 0 to 0777")
        if not 0 <= user["umask"] <= 0o777:
            raise RunprocError("config.json: process.user.umask must be an integer from 0 to 0777")
        plan.umask = user["umask"]


def _rlimits(raw: object) -> list[tuple[int, int, int]]:
    assert isinstance(raw, list)
    limits = []
    seen = set()
    for n, entry in enumerate(raw):
        want(entry, dict, f"process.rlimits[{n}]", "an object")
        kind = entry.get("type")
        want(kind, str, f"process.rlimits[{n}].type", "a string")
        if kind not in RLIMITS:
            raise RunprocError(f"config.json: unknown rlimit type {kind!r} in process.rlimits")
        if kind in seen:
            raise RunprocError(f"config.json: duplicate rlimit type {kind!r} in process.rlimits")
        seen.add(kind)
        values = []
        for key in ("soft", "hard"):
            value = entry.get(key)
            want(value, int, f"{kind}.{key}", "a non-negative integer")
            # setrlimit takes up to 2**63-1, or 2**64-1 for "unlimited".
            if value < 0 or (value >= 2**63 and value != RLIM_INFINITY_SPEC):
                raise RunprocError(f"config.json: {kind}.{key} is out of range")
            values.append(-1 if value == RLIM_INFINITY_SPEC else value)
        soft, hard = values
        if hard != -1 and (soft == -1 or soft > hard):
            raise RunprocError(f"config.json: {kind} soft limit is above its hard limit")
        limits.append((RLIMITS[kind], soft, hard))
    return limits
