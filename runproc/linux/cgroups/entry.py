"""create's side of the container's cgroup: where it goes and what is checked before anything is
made (`prepare`); making it and setting its limits, before the fork (`make_before_fork`); and how
the container's first process gets in (`Entry`, which runproc.linux.spawn uses).

Why the way in matters: a write of a pid to cgroup.procs takes the kernel's global
cgroup_threadgroup_rwsem for writing, and its first taker waits for an RCU grace period,
10 to 40 ms on every create (runc pays it too). Two ways in need neither, and runproc takes them:
  - v2 (and a hybrid host's unified hierarchy): the process is born in its directory
    (clone3 with CLONE_INTO_CGROUP; Linux 6.3+, or 5.7+ where the hierarchy has no cpuset
    controller): there is nothing to migrate;
  - v1: the new process moves itself, writing "0" to `tasks`: recent kernels (6.18 here)
    take no global lock for a thread that moves itself, and a fresh fork has exactly one
    thread (a kernel that takes it anyway makes this cost what the old write did).
Where neither can be used (the systemd driver, whose unit systemd fills by pid; no clone3, or a
seccomp filter that refuses it) the child waits while create writes its pid, as before.
"""

from __future__ import annotations

import os

from runproc.errors import RunprocError
from runproc.linux.cgroups import (
    CGROUP_ROOT,
    HYBRID_MOUNT,
    UNIFIED,
    Cgroup,
    Layout,
    apply_resources,
    container_paths,
    detect_layout,
    inner_path,
    read_value,
    systemd_placement,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from runproc.spec.resources import CgroupPlan


def prepare(plan: CgroupPlan, container_id: str, systemd: bool) -> tuple[Layout, Cgroup]:
    """Where the container's cgroup goes, and every check that needs no change on the host (create,
    before it forks)."""
    layout = detect_layout()
    if not layout.unified and not layout.v1_mounts:
        raise RunprocError("cgroup: no cgroup hierarchy is mounted under /sys/fs/cgroup")
    if systemd:
        slice_name, unit, inner = systemd_placement(plan.path, container_id)
    else:
        slice_name, unit, inner = "", None, inner_path(plan.path, container_id)
    cgroup = Cgroup(2 if layout.unified else 1, container_paths(layout, inner), unit=unit)
    cgroup.slice = slice_name
    resources = plan.resources
    if cgroup.version == 1 and resources.unified is not None:
        raise RunprocError("linux.resources.unified: invalid configuration: cannot use unified on cgroup v1")
    if cgroup.version == 2:
        from runproc.linux.cgroups import v2

        v2.check(resources, "linux.resources")
    from runproc.linux.cgroups import devices

    devices.build(plan.devices)  # a rule v1 could not hold fails here, as in runc, on either layout
    return layout, cgroup


def make_before_fork(layout: Layout, cgroup: Cgroup, plan: CgroupPlan, record_plan: Callable[[Cgroup], None]
                     ) -> Entry:
    """The fs driver: make the directories (after `record_plan` has saved which) and set the limits,
    while nothing is in them yet; the Entry then puts the first process in. On failure the caller
    calls cgroup.remove()."""
    _record_directories(layout, cgroup, record_plan)
    _make_and_limit(layout, cgroup, plan)
    return Entry(cgroup, cgroup.join, joins_itself=True)


def systemd_entry(layout: Layout, cgroup: Cgroup, plan: CgroupPlan, record_plan: Callable[[Cgroup], None]
                  ) -> Entry:
    """The systemd driver: everything happens once the first process exists, since its unit is
    started with its pid."""

    def by_pid(pid: int) -> None:
        _record_directories(layout, cgroup, record_plan)
        from runproc.linux.cgroups import systemd

        # As runc's systemd managers: the unit first (systemd puts `pid` in it), then the fs driver
        # for the hierarchies and settings systemd leaves alone.
        try:
            systemd.start_unit(cgroup.unit, cgroup.slice, pid, plan.resources, cgroup.version)
        except systemd.UnitExistsError:
            cgroup.unit = None  # not ours: neither this create's clean-up nor a delete may stop it
            record_plan(cgroup.missing(layout))
            raise
        _make_and_limit(layout, cgroup, plan)
        cgroup.join(pid)

    return Entry(cgroup, by_pid, joins_itself=False)


def _record_directories(layout: Layout, cgroup: Cgroup, record_plan: Callable[[Cgroup], None]) -> None:
    """Save which directories create is about to make (delete removes those), after checking that
    the cgroup is not one left frozen."""
    if cgroup.exists() and cgroup.frozen():  # checked under the container's lock: no delete of its id is running
        raise RunprocError(f"container's cgroup unexpectedly frozen: {cgroup.freezer_dir}")
    record_plan(cgroup.missing(layout))


def _make_and_limit(layout: Layout, cgroup: Cgroup, plan: CgroupPlan) -> None:
    cgroup.make(layout)
    apply_resources(cgroup, plan.resources, plan.devices, "linux.resources")


def kernel_version() -> tuple[int, int]:
    """(major, minor) of the running kernel ("6.18.44-fc-v669" -> (6, 18)), without importing re."""
    major, _, rest = os.uname().release.partition(".")
    minor = rest[: len(rest) - len(rest.lstrip("0123456789"))]
    return int(major), int(minor or 0)


class Entry:
    """How the container's first process (the init, or the namespace stage that forks it) gets in.

    runproc.linux.spawn forks it with `fork`; then either `joins_itself` and the child calls
    `join_self` first thing, or the child waits while create calls `join(pid)`.
    """

    def __init__(self, cgroup: Cgroup, join: Callable[[int], None], joins_itself: bool) -> None:
        self.cgroup = cgroup
        self.join = join
        self.joins_itself = joins_itself
        self.born_in: str | None = None  # the v2 directory the child was born in

    def fork(self) -> int:
        """os.fork, the child born in the v2 directory if there is one and the kernel can; if it
        cannot, create joins the child by pid instead (`joins_itself` turns False)."""
        birth_dir = self.cgroup.paths.get(UNIFIED) if self.joins_itself else None
        if birth_dir is None:
            return os.fork()
        pid = self._fork_into(birth_dir)
        if pid is None:
            self.joins_itself = False  # runc's way: create's join by pid (which names any problem)
            return os.fork()
        self.born_in = birth_dir
        return pid

    def _fork_into(self, birth_dir: str) -> int | None:
        """clone3 into `birth_dir`; None where that cannot be done (or not safely, before 6.3),
        or the kernel refuses (before Linux 5.7, or a seccomp filter)."""
        if not self._birth_keeps_cpuset():
            return None
        from runproc.linux import syscalls

        try:
            fd = os.open(birth_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            return syscalls.fork_into_cgroup(fd)
        except OSError:
            return None
        finally:
            os.close(fd)

    def _birth_keeps_cpuset(self) -> bool:
        """Before Linux 6.3 a child born into another cgroup kept its parent's cpus and memory nodes
        (fixed by "cgroup/cpuset: Make cpuset_fork() handle CLONE_INTO_CGROUP properly"): there, be
        born in the cgroup only on a hierarchy without the cpuset controller (a hybrid host's)."""
        if kernel_version() >= (6, 3):
            return True
        root = CGROUP_ROOT if self.cgroup.version == 2 else HYBRID_MOUNT
        try:
            return "cpuset" not in read_value(root, "cgroup.controllers").split()
        except OSError:
            return False

    def join_self(self) -> None:
        """In the child, before it does anything else: into the rest of the cgroup by itself."""
        self.cgroup.join_self(born_in=self.born_in)
