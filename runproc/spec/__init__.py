"""Turn an OCI bundle's config.json into a plan of what the container init must do.

Pure: reads the bundle, checks the spec, returns a ContainerPlan. Nothing here
forks, mounts or writes, so every rule can be tested without root. The spec is
read once, at create; later commands use what create recorded. Each section
of config.json has its own module here; this one reads the file and runs them.
"""

from __future__ import annotations

import os

from runproc import jsonio
from runproc.errors import RunprocError
from runproc.fsutil import os_error_text
from runproc.spec.fields import optional, os_string
from runproc.spec.plan import ContainerPlan
from runproc.spec.process import apply_process

__all__ = ["ContainerPlan", "load_plan", "plan_from_config", "read_config"]

HOST_ANNOTATION = "runproc.host"
# containerd's CRI copies a Pod's annotations to its sandbox (pause) container
# too; the pause binary lives only in its image, so that one never runs in host mode.
CRI_CONTAINER_TYPE = "io.kubernetes.cri.container-type"


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


def plan_from_config(config: dict, bundle: str, host_env: bool, euid: int) -> ContainerPlan:
    """Check the spec and derive the plan. `host_env` is RUNPROC_HOST=1 from the caller's environment."""
    plan = ContainerPlan()
    plan.bundle = bundle
    optional(config, "ociVersion", str, "ociVersion", "a string", "")

    annotations = optional(config, "annotations", dict, "annotations", "an object", {})
    assert isinstance(annotations, dict)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()):
        raise RunprocError("config.json: annotations must map strings to strings")
    plan.annotations = annotations
    plan.host_mode = host_env or (
        annotations.get(HOST_ANNOTATION) == "1" and annotations.get(CRI_CONTAINER_TYPE) != "sandbox"
    )

    apply_process(config, plan)

    root = optional(config, "root", dict, "root", "an object", None)
    if isinstance(root, dict):
        root_path = optional(root, "path", str, "root.path", "a string", "")
        assert isinstance(root_path, str)
        if root_path:
            plan.rootfs = os.path.normpath(os.path.join(bundle, os_string(root_path, "root.path")))
    if plan.chroots(euid):
        if not plan.rootfs:
            raise RunprocError("config.json: root.path must be set (or use host mode)")
        if not os.path.isdir(plan.rootfs):
            raise RunprocError(f"rootfs {plan.rootfs}: no such directory")
    return plan


def load_plan(bundle: str, host_env: bool, euid: int) -> ContainerPlan:
    """Read and check <bundle>/config.json; `bundle` must be absolute."""
    return plan_from_config(read_config(bundle), bundle, host_env, euid)
