"""Helpers of the hooks tests: a recording hook (a shell script) and bundles whose hooks use it.

The recorder runs with /bin/sh, on the host (dash) and inside the busybox rootfs
alike. Called as `recorder OUT NAME [ARGS...]`, it writes OUT/NAME.rec (its argv,
the state on its stdin, its pid/mnt/net namespaces, cwd, uid, environment),
appends NAME to OUT/order, prints a line on stdout and stderr, and exits
$HOOK_EXIT (0 by default). With HOOK_SLEEP set it then sleeps that long first
(`exec`, so the hook's pid is the sleeper's: a timeout must kill it).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from runproc.specgen import default_spec
from runproc_testlib import make_reachable

RECORDER = r"""#!/bin/sh
out=$1
name=$2
{
  echo "argv=$*"
  echo "stdin=$(cat)"
  for ns in pid mnt net; do echo "$ns=$(readlink /proc/self/ns/$ns)"; done
  echo "cwd=$(pwd)"
  echo "uid=$(id -u)"
  echo "self=$$"
  env | sed 's/^/env:/'
} > "$out/$name.rec"
echo "$name" >> "$out/order"
echo "stdout of $name"
echo "stderr of $name" >&2
if [ -n "$HOOK_SLEEP" ]; then exec sleep "$HOOK_SLEEP"; fi
exit "${HOOK_EXIT:-0}"
"""

RUNTIME_KINDS = ("prestart", "createRuntime", "poststart", "poststop")
CONTAINER_KINDS = ("createContainer", "startContainer")
# What a shell adds to the environment it is given.
SHELL_VARIABLES = {"PWD", "SHLVL", "_", "OLDPWD"}
# Where the recorder writes from inside the container (a bind mount of the host's OUT).
INSIDE_OUT = "/hooks-out"
INSIDE_RECORDER = "/hook.sh"


def install_recorder(path: Path) -> Path:
    path.write_text(RECORDER)
    path.chmod(0o755)
    return path


def hooks_rootfs(busybox_rootfs: Path, where: Path) -> Path:
    """A copy of the busybox rootfs with the recorder at /hook.sh and a /hooks-out mount point."""
    root = where / "rootfs"
    shutil.copytree(busybox_rootfs, root, symlinks=True)
    install_recorder(root / INSIDE_RECORDER.lstrip("/"))
    (root / INSIDE_OUT.lstrip("/")).mkdir()
    make_reachable(root)
    return root


def hook(recorder: Path | str, out: Path | str, name: str, *extra: str, env: list[str] | None = None,
         timeout: int | None = None) -> dict:
    entry: dict[str, object] = {"path": str(recorder), "args": ["recorder", str(out), name, *extra]}
    if env is not None:
        entry["env"] = env
    if timeout is not None:
        entry["timeout"] = timeout
    return entry


def every_kind(recorder: Path, out: Path, env: list[str] | None = None) -> dict:
    """One recording hook of each kind: runtime ones and createContainer run the host's recorder
    (createContainer's path resolves before pivot_root), startContainer the rootfs's."""
    hooks = {kind: [hook(recorder, out, kind, "two words", env=env)] for kind in (*RUNTIME_KINDS, "createContainer")}
    hooks["startContainer"] = [hook(INSIDE_RECORDER, INSIDE_OUT, "startContainer", env=env)]
    return hooks


def hooks_config(rootfs: Path, out: Path, args: list[str], hooks: dict) -> dict:
    """runc spec's default config (namespaces, mounts) with the hooks, `out` bound at /hooks-out."""
    config = default_spec()
    config["process"]["terminal"] = False
    config["process"]["args"] = args
    config["root"] = {"path": str(rootfs), "readonly": True}
    config["linux"]["cgroupsPath"] = f"/runproc-hooks-{uuid.uuid4().hex[:16]}"  # runc's default is /<id>
    config["mounts"].append({"destination": INSIDE_OUT, "type": "bind", "source": str(out),
                             "options": ["rbind", "rw"]})
    config["annotations"] = {"org.example.hooks": "yes"}
    config["hooks"] = hooks
    return config


def write_bundle(bundle: Path, config: dict) -> Path:
    bundle.mkdir(parents=True, exist_ok=True)
    (bundle / "config.json").write_text(json.dumps(config, indent=1))
    return bundle


def read_order(out: Path) -> list[str]:
    path = out / "order"
    return path.read_text().split() if path.exists() else []


def read_record(out: Path, name: str) -> dict:
    """NAME.rec as a dict; `stdin` parsed as JSON, `env` a dict without what the shell adds."""
    record: dict = {"env": {}}
    for line in (out / f"{name}.rec").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.startswith("env:"):
            if key[4:] not in SHELL_VARIABLES:
                record["env"][key[4:]] = value
        elif key == "stdin":
            record["stdin"] = json.loads(value)
        else:
            record[key] = value
    return record


def namespaces_of(pid: int | str) -> dict[str, str]:
    return {ns: os.readlink(f"/proc/{pid}/ns/{ns}") for ns in ("pid", "mnt", "net")}


def where_it_ran(record: dict, host: dict[str, str], container: dict[str, str]) -> dict[str, str]:
    """For each namespace: "host", "container" or "other"."""
    return {ns: "host" if record[ns] == host[ns] else "container" if record[ns] == container[ns] else "other"
            for ns in ("pid", "mnt", "net")}


def process_gone(pid: int | str) -> bool:
    """No such process, or only its zombie (its parent has not collected it yet)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True
