"""`runproc features`: what this runtime supports, as runc's `features` JSON.

Everything listed comes from the tables the spec step itself accepts, so the
output cannot claim more than create does. What runproc does not do yet is
marked false (the systemd cgroup driver for rootless users, AppArmor, SELinux).
"""

from __future__ import annotations

import sys

from runproc import __version__, jsonio
from runproc.cli import Context
from runproc.spec.hooks import HOOK_KINDS
from runproc.spec.mounts import EXTENSIONS, MOUNT_FLAGS, PROPAGATION, REC_ATTRS
from runproc.spec.namespaces import NAMESPACE_TYPES
from runproc.spec.seccomp import ACTIONS, ARCHITECTURES, OPERATORS
from runproc.spec.security import CAPABILITIES

OCI_VERSION_MIN = "1.0.0"
OCI_VERSION_MAX = "1.0.2-dev"


def features() -> dict:
    mount_options = sorted({*MOUNT_FLAGS, *REC_ATTRS, *EXTENSIONS, *(name for name in PROPAGATION if name)})
    return {
        "ociVersionMin": OCI_VERSION_MIN,
        "ociVersionMax": OCI_VERSION_MAX,
        "hooks": list(HOOK_KINDS),
        "mountOptions": mount_options,
        "linux": {
            "namespaces": sorted(NAMESPACE_TYPES),
            "capabilities": sorted(CAPABILITIES, key=CAPABILITIES.__getitem__),
            "cgroup": {"v1": True, "v2": True, "systemd": True, "systemdUser": False},
            "seccomp": {
                "enabled": True,
                "actions": sorted(ACTIONS),
                "operators": sorted(OPERATORS),
                "archs": sorted(ARCHITECTURES),
            },
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
        },
        "annotations": {"org.opencontainers.runproc.version": __version__},
    }


def run(context: Context) -> int:
    sys.stdout.write(jsonio.dumps(features(), indent=4) + "\n")
    return 0
