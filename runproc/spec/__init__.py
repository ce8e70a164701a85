"""Turn an OCI bundle's config.json into a plan of what the container init must do.

Pure: reads the bundle, checks the spec, returns a ContainerPlan. Nothing here
forks, mounts or writes, so every rule can be tested without root. The spec is
read once, at create; later commands use what create recorded. Each section
of config.json has its own module here; this one reads the file and runs them.
"""

from __future__ import annotations

import os
import stat

from runproc import jsonio
from runproc.errors import RunprocError
from runproc.fsutil import file_kind, os_error_text, read_at_most
from runproc.spec.fields import optional, os_string
from runproc.spec.namespaces import apply_namespaces
from runproc.spec.plan import ContainerPlan
from runproc.spec.process import apply_process
from runproc.spec.resources import parse_cgroup_plan
from runproc.spec.rootfs import apply_rootfs
from runproc.spec.security import apply_security

__all__ = ["ContainerPlan", "load_plan", "plan_from_config", "read_config"]

HOST_ANNOTATION = "runproc.host"
# containerd's CRI copies a Pod's annotations to its sandbox (pause) container
# too; the pause binary lives only in its image, so that one never runs in host mode.
CRI_CONTAINER_TYPE = "io.kubernetes.cri.container-type"
# A real config.json is a few KiB; this bounds what a bad one (a link to /dev/zero, say) costs.
MAX_CONFIG = 4 << 20


def read_config(bundle: str) -> dict:
    """Load <bundle>/config.json, with errors that say which file and what is wrong."""
    _check_directory(bundle, "bundle")
    path = os.path.join(bundle, "config.json")
    try:
        # Looked at before it is opened: opening a device may do something. Non-blocking:
        # a fifo swapped in meanwhile must not hang create (fstat below refuses it).
        if not stat.S_ISREG(mode := os.stat(path).st_mode):
            raise RunprocError(f"{path} is {file_kind(mode)}, not a regular file")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise RunprocError(f"JSON specification file config.json not found in bundle {bundle}") from None
    except OSError as err:
        raise RunprocError(f"cannot read {path}: {os_error_text(err)}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise RunprocError(f"{path} is {file_kind(mode)}, not a regular file")
        raw = _read_bounded(fd, path)
    except OSError as err:
        raise RunprocError(f"cannot read {path}: {os_error_text(err)}") from None
    finally:
        os.close(fd)
    try:
        config = jsonio.loads(raw)
    except ValueError as err:
        raise RunprocError(f"{path}: invalid JSON: {err}") from None
    except RecursionError:
        raise RunprocError(f"{path}: invalid JSON: nested too deeply") from None
    if not isinstance(config, dict):
        raise RunprocError(f"{path}: the spec must be a JSON object")
    return config


def _read_bounded(fd: int, path: str) -> bytes:
    """The whole file, refused past MAX_CONFIG."""
    data = read_at_most(fd, MAX_CONFIG)
    if data is None:
        raise RunprocError(f"{path} is larger than {MAX_CONFIG >> 20} MiB: refused")
    return data


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
    if config.get("hooks") is not None:
        # Hooks run in every mode (host mode and unprivileged too); the module loads only for them.
        from runproc.spec.hooks import apply_hooks

        apply_hooks(config, plan)

    root = optional(config, "root", dict, "root", "an object", None)
    if isinstance(root, dict):
        root_path = optional(root, "path", str, "root.path", "a string", "")
        assert isinstance(root_path, str)
        if root_path:
            plan.rootfs = os.path.normpath(os.path.join(bundle, os_string(root_path, "root.path")))
    plan.contained = not plan.host_mode and (euid == 0 or _has_user_namespace(config))
    if plan.contained:
        if not plan.rootfs:
            raise RunprocError("config.json: root.path must be set (or use host mode)")
        _check_directory(plan.rootfs, "rootfs")
        # The linux sections apply where runproc contains the process: as root, not in host mode.
        apply_namespaces(config, plan)
        apply_rootfs(config, plan)
        apply_security(config, plan)
        if euid == 0:  # a rootless container gets no cgroup (README, Limitations)
            plan.cgroup = parse_cgroup_plan(config)
    return plan


def _has_user_namespace(config: dict) -> bool:
    """Does the spec ask for a user namespace? (Checked properly by spec.namespaces; this only decides
    whether an unprivileged caller gets a rootless container or, as before, the host.)"""
    linux = config.get("linux")
    entries = linux.get("namespaces") if isinstance(linux, dict) else None
    return isinstance(entries, list) and any(isinstance(e, dict) and e.get("type") == "user" for e in entries)


def _check_directory(path: str, what: str) -> None:
    """The bundle or rootfs must be a directory; if not, say what it is."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise RunprocError(f"{what} {path}: no such directory") from None
    except OSError as err:
        raise RunprocError(f"{what} {path}: {os_error_text(err)}") from None
    if not stat.S_ISDIR(mode):
        raise RunprocError(f"{what} {path} is not a directory: it is {file_kind(mode)}")


def load_plan(bundle: str, host_env: bool, euid: int) -> ContainerPlan:
    """Read and check <bundle>/config.json; `bundle` must be absolute."""
    return plan_from_config(read_config(bundle), bundle, host_env, euid)
