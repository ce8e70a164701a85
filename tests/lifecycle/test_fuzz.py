"""Fuzzed bundles and command lines: exit 0 or 1, one clear line, no exception text, no hang, nothing left.

Bounded and seeded (RUNPROC_FUZZ_SEED; every failure message prints it).
Config mutations replace, delete or add values anywhere in a valid
config.json (wrong types, huge or negative numbers, NUL bytes, lone
surrogates, deep nesting, long paths), or damage the file itself; each
mutated bundle goes through create, state, start and delete --force.
Command-line mutations mix known and unknown flags, good and bad values and
ids.
"""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
import uuid
from pathlib import Path

from chaos_testlib import TAG_ENV, exception_text, kill_tagged, leftovers, wait_for_no_processes
from runproc_testlib import MakeBundle, Runproc

CONFIG_CASES = 220
ARGV_CASES = 120

VALUES: list[object] = [
    None, True, False, 0, 1, -1, 7, 2**31, 2**32 - 1, 2**32, 2**63, 2**64 - 1, 2**64, -(2**63), 1.5, 1e308,
    "", "/", "a", "x" * 5000, "/" + "a/" * 2100, "\0", "a\0b", "\udcff", "\ud800", "/proc/self/fd/3", "../..",
    "RLIMIT_NOFILE", "RLIMIT_AS", "PATH=/bin", "=x", "/bin/true", "/etc/passwd", [], {}, [1, "a", None],
    {"a": "b"}, {"": None}, ["/bin/true"], [0] * 70000,
]


def random_value(rng: random.Random) -> object:
    roll = rng.random()
    if roll < 0.7:
        return copy.deepcopy(rng.choice(VALUES))  # a copy: later mutations must not change the table
    if roll < 0.8:
        depth = rng.choice([10, 500, 3000])
        return json.loads("[" * depth + "]" * depth) if depth < 900 else {"deep": "[" * depth}
    if roll < 0.9:
        return "".join(chr(rng.randrange(1, 0x3000)) for _ in range(rng.randrange(1, 40)))
    return [random_value(rng) for _ in range(rng.randrange(0, 4))]


def nodes(value: object, path: tuple = ()) -> list[tuple]:
    """Paths to the containers (dicts and lists) in a JSON value, down to a depth worth mutating."""
    found = []
    if isinstance(value, (dict, list)) and len(path) < 12:
        found.append(path)
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, child in items:
            found.extend(nodes(child, (*path, key)))
    return found


def mutate(config: dict, rng: random.Random) -> None:
    for _ in range(rng.randrange(1, 4)):
        path = rng.choice(nodes(config))
        target: object = config
        for key in path:
            target = target[key]  # type: ignore[index]
        if isinstance(target, dict):
            keys = list(target)
            op = rng.random()
            if keys and op < 0.5:
                target[rng.choice(keys)] = random_value(rng)
            elif keys and op < 0.7:
                del target[rng.choice(keys)]
            else:
                key = rng.choice(["type", "soft", "hard", "uid", "gid", "additionalGids", "umask", "path", "cwd",
                                  "args", "env", "rlimits", "user", "terminal", "noNewPrivileges", "x"])
                target[key] = random_value(rng)
        elif isinstance(target, list):
            if target and rng.random() < 0.6:
                target[rng.randrange(len(target))] = random_value(rng)
            else:
                target.append(random_value(rng))


def base_config(rootfs: Path, tag: str) -> dict:
    return {
        "ociVersion": "1.0.2",
        "process": {
            "args": ["/bin/true"], "cwd": "/", "env": ["PATH=/bin", f"{TAG_ENV}={tag}"],
            "user": {"uid": 0, "gid": 0, "additionalGids": [1]},
            "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs)},
        "annotations": {"a": "b"},
    }


def write_config(bundle: Path, config: dict, rng: random.Random) -> None:
    raw = json.dumps(config).encode("utf-8", "surrogatepass")
    roll = rng.random()
    if roll < 0.08:
        raw = raw[: rng.randrange(len(raw))]  # truncated
    elif roll < 0.12:
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))  # garbage
    (bundle / "config.json").write_bytes(raw)


class Checker:
    def __init__(self, runproc: Runproc, seed: int, tag: str, cwd: Path) -> None:
        self.runproc, self.seed, self.tag, self.cwd = runproc, seed, tag, cwd
        self.env = {**os.environ, TAG_ENV: tag}

    def __call__(self, *args: str, case: int) -> int:
        result = self.runproc(*args, env=self.env, cwd=self.cwd, timeout=30)
        where = f"seed {self.seed}, case {case}: {list(args)!r} -> {result.returncode} {result.stderr!r}"
        assert result.returncode in (0, 1), where
        assert exception_text(result.stderr) is None, where
        if result.returncode:
            assert len(result.stderr.splitlines()) == 1, where
        return result.returncode


def test_fuzzed_bundles(runproc: Runproc, busybox_rootfs: Path, state_root: Path, tmp_path: Path) -> None:
    seed = int(os.environ.get("RUNPROC_FUZZ_SEED") or random.randrange(1 << 32))
    rng = random.Random(seed)
    tag = uuid.uuid4().hex
    check = Checker(runproc, seed, tag, tmp_path)
    # A copy of its own: a fuzzed process.cwd (say /proc/self/fd/3, in a container without /proc) is
    # made in the rootfs, as runc makes it, and the other tests share busybox_rootfs.
    rootfs = tmp_path / "rootfs"
    shutil.copytree(busybox_rootfs, rootfs, symlinks=True)
    try:
        for case in range(CONFIG_CASES):
            bundle = tmp_path / f"b{case}"
            bundle.mkdir()
            config = base_config(rootfs, tag)
            mutate(config, rng)
            write_config(bundle, config, rng)
            container_id = f"f{case}"
            if check("create", "--pid-file", str(tmp_path / f"{container_id}.pid"), container_id, str(bundle),
                     case=case) == 0:
                check("state", container_id, case=case)
                check("start", container_id, case=case)
            assert check("delete", "--force", container_id, case=case) == 0
        assert os.listdir(state_root) == [], f"seed {seed}: entries left"
        assert leftovers(state_root, tmp_path) == [], f"seed {seed}: temporary files left"
        assert wait_for_no_processes(tag) == [], f"seed {seed}: processes left"
    finally:
        kill_tagged(tag)


FLAGS = ["--bundle", "-b", "--pid-file", "--console-socket", "--preserve-fds", "--no-pivot", "--no-new-keyring",
         "--detach", "-d", "--keep", "--force", "-f", "--all", "-a", "--format", "--help", "-h", "--bogus", "-x",
         "--", "--debug", "--systemd-cgroup"]
COMMANDS = ["create", "start", "state", "kill", "delete", "ps", "run", "nosuch", "help", ""]


def test_fuzzed_command_lines(runproc: Runproc, make_bundle: MakeBundle, state_root: Path, tmp_path: Path) -> None:
    seed = int(os.environ.get("RUNPROC_FUZZ_SEED") or random.randrange(1 << 32))
    rng = random.Random(seed)
    tag = uuid.uuid4().hex
    check = Checker(runproc, seed, tag, tmp_path)
    bundle = make_bundle(["/bin/true"], env=["PATH=/bin", f"{TAG_ENV}={tag}"])
    values = [str(bundle), "", "x", "-1", "0", "3", "99999999999999999999", "KILL", "SIGFOO", "json", "table",
              str(tmp_path / "pid"), str(tmp_path / "no" / "pid"), "relative.pid", str(tmp_path), "true", "=x"]
    ids = ["c1", "c2", "c1", "", "a/b", "..", "x" * 300, "-", "bad id", "c\u00e9"]
    used: set[str] = set()
    try:
        for case in range(ARGV_CASES):
            argv: list[str] = []
            if rng.random() < 0.2:
                argv += rng.choice([["--log", str(tmp_path / "log.json")], ["--log-format", rng.choice(values)],
                                    ["--debug"], ["--rootless", "x"], ["--bogus"]])
            argv.append(rng.choice(COMMANDS))
            for _ in range(rng.randrange(0, 5)):
                roll = rng.random()
                if roll < 0.45:
                    flag = rng.choice(FLAGS)
                    argv += [f"{flag}={rng.choice(values)}"] if rng.random() < 0.3 else [flag, rng.choice(values)]
                elif roll < 0.8:
                    argv.append(rng.choice(ids))
                else:
                    argv.append(rng.choice(values))
            used.update(arg for arg in argv if arg in ("c1", "c2"))
            check(*argv, case=case)
        for container_id in sorted(used):
            assert check("delete", "--force", container_id, case=-1) == 0
        assert os.listdir(state_root) == [], f"seed {seed}: entries left"
        assert leftovers(state_root, tmp_path) == [], f"seed {seed}: temporary files left"
        assert wait_for_no_processes(tag) == [], f"seed {seed}: processes left"
    finally:
        kill_tagged(tag)
