"""OOM notifications for `events`: v1 through an eventfd registered on memory.oom_control, v2 through
inotify on memory.events (its oom_kill count), as runc's notifyOnOOM does."""

from __future__ import annotations

import os

from runproc.errors import RunprocError
from runproc.linux.cgroups import UNIFIED, Cgroup, read_value, write_value


class OomWatch:
    """A readable fd (`fd`) that wakes up on memory events; `fired()` says whether an OOM kill happened."""

    def __init__(self, cgroup: Cgroup) -> None:
        self.version = cgroup.version
        self.directory = cgroup.paths.get(UNIFIED if cgroup.version == 2 else "memory")
        if self.directory is None:
            raise RunprocError("events: the memory cgroup controller is not mounted: no OOM events")
        self._files: list[int] = []
        try:
            self.fd = self._v2() if self.version == 2 else self._v1()
        except OSError as err:
            self.close()
            raise RunprocError(f"events: cannot watch {self.directory} for OOM: {err.strerror}") from None
        self.kills = self._kill_count()

    def _v1(self) -> int:
        event = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._files.append(event)
        control = os.open(os.path.join(self.directory, "memory.oom_control"), os.O_RDONLY | os.O_CLOEXEC)
        self._files.append(control)
        write_value(self.directory, "cgroup.event_control", f"{event} {control}")
        return event

    def _v2(self) -> int:
        from runproc.linux import syscalls

        watch = syscalls.inotify_init1(syscalls.IN_CLOEXEC | syscalls.IN_NONBLOCK)
        self._files.append(watch)
        syscalls.inotify_add_watch(watch, os.path.join(self.directory, "memory.events"), syscalls.IN_MODIFY)
        return watch

    def _kill_count(self) -> int:
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            for line in read_value(self.directory, name).splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def fired(self) -> bool:
        """After `fd` became readable: drain it; True if the cgroup saw an OOM (v1: any notification while
        the cgroup exists, as runc; v2: a higher oom_kill count)."""
        try:
            os.read(self.fd, 4096)
        except BlockingIOError:
            return False
        except OSError:
            return False
        if self.version == 1:
            # The eventfd also fires when the cgroup goes away.
            return os.path.exists(os.path.join(self.directory, "cgroup.event_control"))
        kills = self._kill_count()
        fired, self.kills = kills > self.kills, kills
        return fired

    def close(self) -> None:
        for fd in self._files:
            os.close(fd)
        self._files = []
