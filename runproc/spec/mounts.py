"""config.json `mounts`: options to mount(2) flags, data and propagation, as runc 1.1 reads them.

Pure: runproc.linux.mounts does the mounting. The tables are runc's
(libcontainer/specconv): an option that is no flag, propagation, recursive
attribute or extension is file-system data (so `defaults` reaches the kernel,
which refuses it, as with runc).
"""

from __future__ import annotations

import os
import posixpath

from runproc.errors import RunprocError
from runproc.spec.fields import optional, os_string, string_list, want

# mount(2) flags (linux/mount.h).
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_POSIXACL = 0x10000
MS_UNBINDABLE = 0x20000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MS_RELATIME = 0x200000
MS_I_VERSION = 0x800000
MS_STRICTATIME = 0x1000000
MS_LAZYTIME = 0x2000000
MNT_DETACH = 0x2  # umount2(2)

# mount_setattr(2) attributes (linux/mount.h).
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR__ATIME = 0x70
MOUNT_ATTR_RELATIME = 0x0
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_NOSYMFOLLOW = 0x200000

# option -> (clear, flag): runc's mountFlags table.
MOUNT_FLAGS: dict[str, tuple[bool, int]] = {
    "acl": (False, MS_POSIXACL),
    "async": (True, MS_SYNCHRONOUS),
    "atime": (True, MS_NOATIME),
    "bind": (False, MS_BIND),
    "defaults": (False, 0),  # flag 0: falls through to data, as in runc
    "dev": (True, MS_NODEV),
    "diratime": (True, MS_NODIRATIME),
    "dirsync": (False, MS_DIRSYNC),
    "exec": (True, MS_NOEXEC),
    "iversion": (False, MS_I_VERSION),
    "lazytime": (False, MS_LAZYTIME),
    "loud": (True, MS_SILENT),
    "mand": (False, MS_MANDLOCK),
    "noacl": (True, MS_POSIXACL),
    "noatime": (False, MS_NOATIME),
    "nodev": (False, MS_NODEV),
    "nodiratime": (False, MS_NODIRATIME),
    "noexec": (False, MS_NOEXEC),
    "noiversion": (True, MS_I_VERSION),
    "nolazytime": (True, MS_LAZYTIME),
    "nomand": (True, MS_MANDLOCK),
    "norelatime": (True, MS_RELATIME),
    "nostrictatime": (True, MS_STRICTATIME),
    "nosuid": (False, MS_NOSUID),
    "nosymfollow": (False, MS_NOSYMFOLLOW),
    "rbind": (False, MS_BIND | MS_REC),
    "relatime": (False, MS_RELATIME),
    "remount": (False, MS_REMOUNT),
    "ro": (False, MS_RDONLY),
    "rw": (True, MS_RDONLY),
    "silent": (False, MS_SILENT),
    "strictatime": (False, MS_STRICTATIME),
    "suid": (True, MS_NOSUID),
    "symfollow": (True, MS_NOSYMFOLLOW),
    "sync": (False, MS_SYNCHRONOUS),
}

# runc's mountPropagationMapping (also what linux.rootfsPropagation takes; "" is 0).
PROPAGATION: dict[str, int] = {
    "rprivate": MS_PRIVATE | MS_REC,
    "private": MS_PRIVATE,
    "rslave": MS_SLAVE | MS_REC,
    "slave": MS_SLAVE,
    "rshared": MS_SHARED | MS_REC,
    "shared": MS_SHARED,
    "runbindable": MS_UNBINDABLE | MS_REC,
    "unbindable": MS_UNBINDABLE,
    "": 0,
}

# runc's recAttrFlags: recursive attributes set with mount_setattr(AT_RECURSIVE).
REC_ATTRS: dict[str, tuple[bool, int]] = {
    "rro": (False, MOUNT_ATTR_RDONLY),
    "rrw": (True, MOUNT_ATTR_RDONLY),
    "rnosuid": (False, MOUNT_ATTR_NOSUID),
    "rsuid": (True, MOUNT_ATTR_NOSUID),
    "rnodev": (False, MOUNT_ATTR_NODEV),
    "rdev": (True, MOUNT_ATTR_NODEV),
    "rnoexec": (False, MOUNT_ATTR_NOEXEC),
    "rexec": (True, MOUNT_ATTR_NOEXEC),
    "rnodiratime": (False, MOUNT_ATTR_NODIRATIME),
    "rdiratime": (True, MOUNT_ATTR_NODIRATIME),
    "rrelatime": (False, MOUNT_ATTR_RELATIME),
    "rnorelatime": (True, MOUNT_ATTR_RELATIME),
    "rnoatime": (False, MOUNT_ATTR_NOATIME),
    "ratime": (True, MOUNT_ATTR_NOATIME),
    "rstrictatime": (False, MOUNT_ATTR_STRICTATIME),
    "rnostrictatime": (True, MOUNT_ATTR_STRICTATIME),
    "rnosymfollow": (False, MOUNT_ATTR_NOSYMFOLLOW),
    "rsymfollow": (True, MOUNT_ATTR_NOSYMFOLLOW),
}

EXTENSIONS = {"tmpcopyup"}


class MountOptions:
    """What a mount's `options` mean: flags, data, propagation calls, recursive attributes."""

    __slots__ = ("flags", "data", "propagation", "attr_set", "attr_clr", "copy_up")

    def __init__(self) -> None:
        self.flags = 0
        self.data = ""
        self.propagation: list[int] = []  # each applied by its own mount(2) call, in order
        self.attr_set = 0
        self.attr_clr = 0
        self.copy_up = False


def parse_options(options: list[str]) -> MountOptions:
    """runc's parseMountOptions: later options override earlier ones."""
    result = MountOptions()
    data: list[str] = []
    for option in options:
        flag = MOUNT_FLAGS.get(option)
        if flag is not None and flag[1]:
            clear, bits = flag
            result.flags = result.flags & ~bits if clear else result.flags | bits
        elif PROPAGATION.get(option):
            result.propagation.append(PROPAGATION[option])
        elif option in REC_ATTRS:
            clear, bits = REC_ATTRS[option]
            if clear:
                result.attr_clr |= bits
            else:
                result.attr_set |= bits
                if bits & MOUNT_ATTR__ATIME == bits:
                    # mount_setattr(2): an atime setting needs MOUNT_ATTR__ATIME in attr_clr.
                    result.attr_clr |= MOUNT_ATTR__ATIME
        elif option in EXTENSIONS:
            result.copy_up = True
        else:
            data.append(option)
    result.data = ",".join(data)
    return result


def clean_path(path: str) -> str:
    """runc's utils.CleanPath: lexically clean; a relative path stays relative but cannot climb."""
    if not path:
        return ""
    if path.startswith("/"):
        return posixpath.normpath(path).replace("//", "/")
    cleaned = posixpath.normpath("/" + path).lstrip("/")
    return cleaned or "."


class Mount:
    """One entry of `mounts`, ready for the init. `kind` is runc's Device: the type, or "bind"."""

    __slots__ = ("index", "destination", "source", "kind", "flags", "data", "propagation",
                 "attr_set", "attr_clr", "copy_up")

    def __init__(self, index: int, destination: str, source: str, kind: str, options: MountOptions) -> None:
        self.index = index  # position in config.json's mounts (-1: made by the runtime)
        self.destination = destination
        self.source = source
        self.kind = kind
        self.flags = options.flags
        self.data = options.data
        self.propagation = list(options.propagation)
        self.attr_set = options.attr_set
        self.attr_clr = options.attr_clr
        self.copy_up = options.copy_up

    def where(self) -> str:
        """How errors name this mount: `mounts[3] (destination /data)`."""
        if self.index < 0:
            return f"mount {self.destination}"
        return f"mounts[{self.index}] (destination {self.destination})"

    def __repr__(self) -> str:
        return (f"Mount({self.index}, {self.destination!r}, {self.source!r}, {self.kind!r}, "
                f"flags={self.flags:#x}, data={self.data!r}, propagation={self.propagation})")


def read_mounts(config: dict, bundle: str) -> list[Mount]:
    """Check `mounts` and convert each entry as runc's createLibcontainerMount does."""
    raw = optional(config, "mounts", list, "mounts", "a list", [])
    assert isinstance(raw, list)
    result = []
    for n, entry in enumerate(raw):
        where = f"mounts[{n}]"
        want(entry, dict, where, "an object")
        destination = optional(entry, "destination", str, f"{where}.destination", "a string", "")
        assert isinstance(destination, str)
        if not destination:
            raise RunprocError(f"config.json: {where}: destination must be set")
        os_string(destination, f"{where}.destination")
        # runc 1.1 only warns about a relative destination and mounts it relative to the rootfs.
        source = optional(entry, "source", str, f"{where}.source", "a string", "")
        kind = optional(entry, "type", str, f"{where}.type", "a string", "")
        assert isinstance(source, str) and isinstance(kind, str)
        os_string(source, f"{where}.source")
        os_string(kind, f"{where}.type")
        options_raw = entry.get("options")
        options = string_list(options_raw, f"{where}.options") if options_raw is not None else []
        parsed = parse_options(options)
        if parsed.flags & MS_BIND:
            # runc: the type of a bind mount is meaningless; a relative source is the bundle's.
            kind = "bind"
            if not source.startswith("/"):
                source = os.path.join(bundle, source)
        result.append(Mount(n, destination, source, kind, parsed))
    return result
