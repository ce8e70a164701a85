"""ContainerPlan: what the container init must do, derived from config.json by runproc.spec."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from runproc.spec.namespaces import NamespacePlan
    from runproc.spec.hooks import HooksPlan
    from runproc.spec.resources import CgroupPlan
    from runproc.spec.rootfs import RootfsPlan
    from runproc.spec.security import SecurityPlan


class ContainerPlan:
    """Everything create needs to start the init, derived from config.json."""

    __slots__ = (
        "bundle",
        "args",
        "env",
        "cwd",
        "uid",
        "gid",
        "additional_gids",
        "umask",
        "rlimits",
        "no_new_privileges",
        "terminal",
        "console_size",
        "rootfs",
        "host_mode",
        "contained",
        "annotations",
        "namespaces",
        "rootfs_setup",
        "security",
        "hooks",
        "cgroup",
    )

    def __init__(self) -> None:
        self.bundle = ""
        self.args: list[str] = []
        self.env: list[str] = []
        self.cwd = "/"
        self.uid = 0
        self.gid = 0
        self.additional_gids: list[int] = []
        self.umask = 0o022  # runc's default when process.user.umask is not given
        self.rlimits: list[tuple[int, int, int]] = []  # (resource, soft, hard); -1 = unlimited
        self.no_new_privileges = False
        self.terminal = False
        self.console_size: tuple[int, int] | None = None  # process.consoleSize as (rows, columns)
        self.rootfs = ""  # absolute path, "" when the spec names none
        self.host_mode = False
        # Run in the container's own root and namespaces: as root (not in host mode), or as
        # an unprivileged user whose spec has a user namespace (a rootless container).
        self.contained = False
        self.annotations: dict[str, str] = {}
        # The linux sections, each planned by its own module in runproc.spec
        # (None: the section does not apply, e.g. host mode or no mount namespace).
        self.namespaces: NamespacePlan | None = None  # namespaces, id maps, hostname, sysctl
        self.rootfs_setup: RootfsPlan | None = None  # mounts, devices, masked/readonly paths, propagation
        self.security: SecurityPlan | None = None  # capabilities, seccomp, LSM labels, oom, scheduling
        self.hooks: HooksPlan | None = None  # OCI hooks (None: config.json has none)
        self.cgroup: CgroupPlan | None = None  # linux.cgroupsPath and linux.resources (as root, not in host mode)

    def hooks_of(self, kind: str) -> list:
        """The hooks of one kind (runproc.spec.hooks.HOOK_KINDS); [] without any."""
        return self.hooks.of(kind) if self.hooks is not None else []

    def has_env(self, name: str) -> bool:
        return any(entry.startswith(name + "=") for entry in self.env)

    def path_env(self) -> str | None:
        """PATH from process.env; the last one wins, as when a program sets them in order."""
        value = None
        for entry in self.env:
            if entry.startswith("PATH="):
                value = entry[5:]
        return value
