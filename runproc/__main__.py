"""Entry point for `python -m runproc` and for the frozen binary."""

import os
import sys

from runproc.cli import main
from runproc.kernel import BOOT_LOCK_ENV


def _keep_boot_lock_private() -> None:
    """The release binary's bootloader holds a shared lock on its cached unpack (so that
    it is not collected while in use) and hands the fd over across its exec. Keep it,
    but let no program that runproc execs inherit it; a created container's init keeps
    it until it execs the user's program."""
    raw = os.environ.get(BOOT_LOCK_ENV, "")
    if raw.isdigit():
        try:
            os.set_inheritable(int(raw), False)
        except OSError:
            pass


def _exit_now(code: int) -> None:
    """Flush what we printed and leave without the interpreter's teardown.

    Finalisation (module and object teardown, atexit) costs a few ms per call and
    does nothing runproc needs: files are closed where they are written, and locks
    go with the process.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 1  # e.g. stdout closed or full: the output is lost, say so
    os._exit(code)


if __name__ == "__main__":
    _keep_boot_lock_private()
    _exit_now(main(sys.argv[1:]))
