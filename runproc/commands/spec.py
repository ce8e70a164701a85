"""`runproc spec [--bundle B] [--rootless]`: write runc's default config.json into the bundle."""

from __future__ import annotations

import os

from runproc import jsonio
from runproc.cli import Context
from runproc.errors import RunprocError
from runproc.fsutil import os_error_text
from runproc.specgen import default_spec, to_rootless

CONFIG = "config.json"


def run(context: Context) -> int:
    bundle = context.values.get("bundle")
    directory = bundle if isinstance(bundle, str) and bundle else "."
    spec = default_spec()
    if context.values.get("rootless"):
        spec = to_rootless(spec, os.geteuid(), os.getegid())
    path = os.path.join(directory, CONFIG)
    if not os.path.isdir(directory):
        reason = "not a directory" if os.path.exists(directory) else "no such file or directory"
        raise RunprocError(f"chdir {directory}: {reason}")
    data = jsonio.dumps(spec, indent="\t").encode()
    try:
        # As runc: never over an existing file (O_EXCL, which also refuses a dangling symlink), mode 0666 less the umask.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except FileExistsError:
        raise RunprocError(f"File {CONFIG} exists. Remove it first") from None
    except OSError as err:
        raise RunprocError(f"open {path}: {os_error_text(err)}") from None
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except OSError as err:
        os.unlink(path)
        raise RunprocError(f"write {path}: {os_error_text(err)}") from None
    finally:
        os.close(fd)
    return 0
