"""Error and debug records for `--log`, written with structlog.

containerd passes `--log <bundle>/log.json --log-format json` on every call and
reads the last `"level":"error"` object's `msg`. structlog costs tens of
milliseconds to import, so it is imported only when a record is written: a
successful call writes nothing and never pays for it.
"""

from __future__ import annotations

import errno
import os
import stat
import sys

from runproc.errors import RunprocError


class LogSettings:
    """Where records go: the `--log` file (or None) and its format."""

    __slots__ = ("path", "format")

    def __init__(self, path: str | None = None, format: str = "text") -> None:
        self.path = path
        self.format = format


def write_record(settings: LogSettings, level: str, msg: str) -> None:
    """Append one record to the log file; never raises (logging must not mask the error)."""
    if not settings.path:
        return
    try:
        stream = os.fdopen(_open_log(settings.path), "a", encoding="utf-8", errors="backslashreplace")
        import structlog

        # RFC 3339 UTC with a "Z": containerd parses `time` with Go's time package
        # and gives up on the whole file for a timestamp without a zone.
        processors = [
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
            structlog.processors.EventRenamer("msg"),
        ]
        if settings.format == "json":
            processors.append(structlog.processors.JSONRenderer())
        else:
            processors.append(structlog.processors.LogfmtRenderer(key_order=["time", "level", "msg"]))
        with stream:
            logger = structlog.wrap_logger(
                structlog.PrintLogger(stream), processors=processors, cache_logger_on_first_use=False
            )
            getattr(logger, level)(msg)
    except Exception as err:  # noqa: BLE001 - a broken log must not hide the real error
        reason = err.message if isinstance(err, RunprocError) else err
        sys.stderr.write(f"runproc: cannot write log {settings.path}: {reason}\n")


def _open_log(path: str) -> int:
    """Open the log for appending, refusing what someone else may have planted for us.

    The log's directory may be writable by others (containerd puts it in the
    bundle): a symbolic or hard link there must not make us append to a file
    of someone else's choosing. A symbolic link is followed only in a
    directory that no one but us or root can change (as /dev/stderr in /dev).
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW, 0o644)
    except OSError as err:
        if err.errno != errno.ELOOP:
            raise
        parent = os.stat(os.path.dirname(os.path.abspath(path)))
        if parent.st_uid not in (os.geteuid(), 0) or parent.st_mode & 0o022:
            raise RunprocError("it is a symbolic link in a directory others can write to: refused") from None
        fd = os.open(path, flags, 0o644)
    info = os.fstat(fd)
    if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
        os.close(fd)
        raise RunprocError("it is a file with other hard links: refused")
    return fd


def report_error(settings: LogSettings, msg: str) -> None:
    """The one error line: to stderr always (the message as it is, as runc prints it), and to the log."""
    try:
        sys.stderr.write(f"{msg}\n")
        sys.stderr.flush()
    except (OSError, UnicodeError):
        pass
    write_record(settings, "error", msg)


def report_warning(settings: LogSettings | None, msg: str) -> None:
    """A warning that does not fail the call (a poststart or poststop hook's): a stderr line, a log record."""
    try:
        sys.stderr.write(f"warning: {msg}\n")
        sys.stderr.flush()
    except (OSError, UnicodeError):
        pass
    if settings is not None:
        write_record(settings, "warning", msg)
