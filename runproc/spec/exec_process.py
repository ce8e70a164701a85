"""The process `exec` runs: the `process` object of config.json that exec's flags describe.

Pure, as runc's getProcess: with `--process FILE` that file's object (what it
leaves out of capabilities, apparmorProfile, selinuxLabel and rlimits comes
from the container, as runc's setns init takes them; runc 1.1.5 sets no
rlimits at all for a file without them, which lets the caller's limits into
the container: runproc keeps the container's); otherwise the
container's own `process`, changed by the flags. The result replaces
`process` in the container's saved config.json, and the usual spec step
(runproc.spec.plan_from_config) checks it and plans it.
"""

from __future__ import annotations

from runproc.errors import RunprocError

# What runc's exec takes from the container when the process file leaves it out.
INHERITED = ("capabilities", "apparmorProfile", "selinuxLabel", "rlimits")
CAP_SETS_ADDED = ("bounding", "effective", "permitted", "ambient")  # runc 1.1: --cap adds to these


def exec_config(config: dict, process: dict) -> dict:
    """The container's config with `process` in place of its own (a shallow copy)."""
    result = dict(config)
    result["process"] = process
    return result


def from_file(container_process: dict, process: object) -> dict:
    """--process FILE: its object, completed from the container's process as runc does."""
    if not isinstance(process, dict):
        raise RunprocError("process file: the process must be a JSON object")
    result = dict(process)
    for key in INHERITED:
        if not result.get(key) and container_process.get(key):
            result[key] = container_process[key]
    return result


def from_flags(container_process: dict, values: dict) -> dict:
    """exec's command line applied to the container's process (runc's getProcess, in its order)."""
    args = values.get("args") or []
    if not args:
        raise RunprocError("process args cannot be empty")
    process = dict(container_process)
    process["args"] = list(args)
    cwd = values.get("cwd")
    if isinstance(cwd, str) and cwd:
        process["cwd"] = cwd
    apparmor = values.get("apparmor")
    if isinstance(apparmor, str) and apparmor:
        process["apparmorProfile"] = apparmor
    label = values.get("process_label")
    if isinstance(label, str) and label:
        process["selinuxLabel"] = label
    caps = values.get("cap") or []
    if caps:
        sets = dict(process.get("capabilities") or {})
        for kind in CAP_SETS_ADDED:
            sets[kind] = [*(sets.get(kind) or []), *caps]
        process["capabilities"] = sets
    env = values.get("env") or []
    if env:
        process["env"] = [*(process.get("env") or []), *env]
    process["terminal"] = bool(values.get("tty"))
    if values.get("no_new_privs"):
        process["noNewPrivileges"] = True
    user = dict(process.get("user") or {})
    raw_user = values.get("user")
    if isinstance(raw_user, str) and raw_user:
        uid, colon, gid = raw_user.partition(":")
        if colon:
            user["gid"] = _number(gid, "gid")
        user["uid"] = _number(uid, "uid")
    gids = values.get("additional_gids") or []
    if gids:
        user["additionalGids"] = [*(user.get("additionalGids") or []), *(_gid(raw) for raw in gids)]
    process["user"] = user
    return process


def _number(text: str, what: str) -> int:
    """strconv.Atoi's rules and runc's message."""
    digits = text[1:] if text[:1] in ("+", "-") else text
    if not (digits.isascii() and digits.isdigit()):
        raise RunprocError(f'parsing {text} as int for {what} failed: strconv.Atoi: parsing "{text}": invalid syntax')
    return int(text)


def _gid(text: str) -> int:
    digits = text[1:] if text[:1] in ("+", "-") else text
    if not (digits.isascii() and digits.isdigit()):
        raise RunprocError(f'invalid value "{text}" for flag -additional-gids: parse error')
    value = int(text)
    if value < 0:
        raise RunprocError(f"additional-gids must be a positive number {value}")
    return value
