"""Apply a config.json's process security exactly as the container init will, then exec.

`python security_probe.py CONFIG.json` (as root) is a stand-in for the init:
spec step, prepare (create's part), apply_early, chroot into root.path (with
the host's /proc bound in, in a private mount namespace),
before_user_switch, the user switch, after_user_switch, execve of
process.args. A failure prints `ERROR: <message>` and exits 111.

The test helpers (run_probe, run_runc, status_lines) run it, and runc on the
same config, for the differential tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROBE_FAILED = 111
STATUS_KEYS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")


def run_probe(config: dict, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as stream:
        json.dump(config, stream)
    try:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(REPO)}
        return subprocess.run([sys.executable, __file__, stream.name], capture_output=True, text=True,
                              timeout=timeout, env=env, check=False)
    finally:
        os.unlink(stream.name)


def run_runc(config: dict, workdir: Path, name: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """`runc run` of `config` in a fresh bundle under `workdir` (its own --root)."""
    bundle = workdir / f"bundle-{name}"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(config))
    return subprocess.run(["runc", "--root", str(workdir / "runc-root"), "run", f"sec-{name}-{os.getpid()}"],
                          cwd=bundle, capture_output=True, text=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL)


def status_lines(output: str, keys: tuple[str, ...] = STATUS_KEYS) -> dict[str, str]:
    """The /proc/PID/status fields among `keys` from grep's output."""
    fields = {}
    for line in output.splitlines():
        key, _, value = line.partition(":")
        if key in keys:
            fields[key] = value.strip()
    return fields


def _enter_root(root: str) -> None:
    """chroot into `root` with the host's /proc bound on its /proc, in a mount namespace of our own."""
    from runproc.linux import syscalls
    from runproc.spec.mounts import MS_BIND, MS_PRIVATE, MS_REC

    syscalls.unshare(syscalls.CLONE_NEWNS)
    syscalls.mount(None, "/", None, MS_REC | MS_PRIVATE)
    syscalls.mount("/proc", os.path.join(root, "proc"), None, MS_BIND | MS_REC)
    os.chroot(root)


def _main(config_path: str) -> None:
    # Everything is imported before chroot: afterwards the modules are out of reach, as in the init.
    from runproc.errors import RunprocError
    from runproc.linux import security as apply
    from runproc.spec.plan import ContainerPlan
    from runproc.spec.process import apply_process
    from runproc.spec.security import apply_security

    with open(config_path, encoding="utf-8") as stream:
        config = json.load(stream)
    plan = ContainerPlan()
    step = "create"
    try:
        apply_process(config, plan)
        apply_security(config, plan)
        assert plan.security is not None
        apply.prepare(plan.security, os.geteuid())
        step = "init"
        apply.apply_early(plan.security)
        _enter_root(config["root"]["path"])
        os.chdir(plan.cwd)
        step = "start"
        apply.before_user_switch(plan.security, plan.no_new_privileges)
        os.setgroups(plan.additional_gids)
        os.setgid(plan.gid)
        os.setuid(plan.uid)
        apply.after_user_switch(plan.security, plan.no_new_privileges)
        os.execve(plan.args[0], plan.args, dict(entry.split("=", 1) for entry in plan.env))
    except (RunprocError, OSError) as err:
        os.write(2, f"ERROR: {step}: {err}\n".encode())
        os._exit(PROBE_FAILED)


if __name__ == "__main__":
    _main(sys.argv[1])
