"""Small file-system helpers shared by the state store and the commands."""

from __future__ import annotations

import os


def write_atomic(path: str, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one.

    The temporary file sits beside the target (same file system, so rename is
    atomic) and carries our pid so that concurrent writers never share it.
    """
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def os_error_text(err: OSError) -> str:
    """The strerror of an OSError in lower case, as Go and runc print it."""
    text = err.strerror or str(err)
    return text[:1].lower() + text[1:]
