"""Runs runproc's rootfs set-up for a bundle as the init would, then execs process.args.

    unshare --mount --pid --fork ... python3 tests/linux/rootfs_harness.py BUNDLE [--no-pivot] [--bind-devices] [--no-openat2]

Meant to be started by the tests inside fresh namespaces (see rootfs_testlib.run_harness).
It is not the init: no user switch, capabilities or seccomp, only what the root
filesystem needs, in the init's order.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import warnings  # noqa: F401 - os.execvpe imports it lazily: after pivot_root the stdlib is out of reach

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from runproc.errors import RunprocError  # noqa: E402
from runproc.linux import paths  # noqa: E402
from runproc.linux.rootfs import finalize_rootfs, restrict_paths, setup_rootfs  # noqa: E402
from runproc.spec import plan_from_config  # noqa: E402
from runproc.spec.rootfs import apply_rootfs  # noqa: E402


def main() -> None:
    bundle = os.path.abspath(sys.argv[1])
    no_pivot = "--no-pivot" in sys.argv
    bind_devices = "--bind-devices" in sys.argv
    if "--no-openat2" in sys.argv:
        paths._openat2_ok = False  # the component-by-component walk, as on kernels before 5.6
    with open(os.path.join(bundle, "config.json"), encoding="utf-8") as stream:
        config = json.load(stream)
    try:
        plan = plan_from_config(config, bundle, False, 0)
        apply_rootfs(config, plan)
        setup = plan.rootfs_setup
        assert setup is not None, "the bundle has no mount namespace"
        setup_rootfs(setup, plan.rootfs, user_namespace=bind_devices, no_pivot=no_pivot)
        hostname = config.get("hostname")
        if hostname:
            socket.sethostname(hostname)
        finalize_rootfs(setup)
        restrict_paths(setup)
    except RunprocError as err:
        sys.stderr.write(f"{err}\n")
        sys.exit(1)
    os.chdir(plan.cwd)
    os.umask(plan.umask)
    env = dict(entry.split("=", 1) for entry in plan.env)
    os.execvpe(plan.args[0], plan.args, env)


if __name__ == "__main__":
    main()
