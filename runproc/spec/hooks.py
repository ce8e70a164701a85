"""config.json `hooks` → HooksPlan: the six kinds of OCI hooks, checked.

Imported only when config.json (or a state record) has hooks: a container
without them never loads this module. The same parser reads the hooks create
recorded, which start and delete run (the spec is read once, at create).
"""

from __future__ import annotations

from runproc.errors import RunprocError
from runproc.spec.fields import optional, os_string, string_list, want

TYPE_CHECKING = False
if TYPE_CHECKING:
    from runproc.spec.plan import ContainerPlan

# In the order they run (runtime-spec "Lifecycle"); runc's `features` lists them so.
HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")
# Go's time.Duration of N seconds must not overflow, and nothing sane waits longer.
MAX_TIMEOUT = 2**31 - 1


class Hook:
    """One hook: what to exec, with which argv and environment, and for how long at most."""

    __slots__ = ("path", "args", "env", "timeout")

    def __init__(self, path: str, args: list[str], env: list[str] | None, timeout: int | None) -> None:
        self.path = path
        self.args = args  # argv; [path] when the spec gives none (Go's exec.Cmd does so)
        self.env = env  # None: not given (the runner decides what the hook inherits)
        self.timeout = timeout  # seconds, or None: no limit

    def to_json(self) -> dict:
        data: dict[str, object] = {"path": self.path, "args": self.args}
        if self.env is not None:
            data["env"] = self.env
        if self.timeout is not None:
            data["timeout"] = self.timeout
        return data


class HooksPlan:
    """The hooks of each kind, in config.json's order; kinds without hooks are absent."""

    __slots__ = ("kinds",)

    def __init__(self, kinds: dict[str, list[Hook]]) -> None:
        self.kinds = kinds

    def of(self, kind: str) -> list[Hook]:
        return self.kinds.get(kind, [])

    def to_json(self) -> dict:
        """What create records, in config.json's shape (parse_hooks reads it back)."""
        return {kind: [hook.to_json() for hook in hooks] for kind, hooks in self.kinds.items()}


def parse_hooks(section: object, where: str = "hooks") -> HooksPlan | None:
    """Check a `hooks` object; None when it holds no hook at all. Unknown kinds are ignored, as runc does."""
    want(section, dict, where, "an object")
    assert isinstance(section, dict)
    kinds: dict[str, list[Hook]] = {}
    for kind in HOOK_KINDS:
        entries = optional(section, kind, list, f"{where}.{kind}", "an array of hooks", [])
        assert isinstance(entries, list)
        hooks = [_parse_hook(entry, f"{where}.{kind}[{n}]") for n, entry in enumerate(entries)]
        if hooks:
            kinds[kind] = hooks
    return HooksPlan(kinds) if kinds else None


def _parse_hook(entry: object, where: str) -> Hook:
    want(entry, dict, where, "an object")
    assert isinstance(entry, dict)
    path = entry.get("path")
    want(path, str, f"{where}.path", "a string")
    assert isinstance(path, str)
    if not path.startswith("/"):
        raise RunprocError(f"config.json: {where}.path must be an absolute path, got {path!r}")
    os_string(path, f"{where}.path")
    args = string_list(entry["args"], f"{where}.args") if entry.get("args") is not None else []
    env = string_list(entry["env"], f"{where}.env") if entry.get("env") is not None else None
    for n, item in enumerate(env or []):
        if "=" not in item[1:]:  # "=x" names no variable either
            raise RunprocError(f"config.json: {where}.env[{n}] must be KEY=value, got {item!r}")
    timeout = optional(entry, "timeout", int, f"{where}.timeout", "an integer number of seconds", None)
    assert timeout is None or isinstance(timeout, int)
    if timeout is not None and not 0 < timeout <= MAX_TIMEOUT:
        raise RunprocError(f"config.json: {where}.timeout must be greater than zero (and at most {MAX_TIMEOUT})")
    return Hook(path, args or [path], env, timeout)


def apply_hooks(config: dict, plan: ContainerPlan) -> None:
    """The spec step: config.json's hooks onto the plan (plan.hooks stays None without any)."""
    section = config.get("hooks")
    if section is not None:
        plan.hooks = parse_hooks(section)
