"""Error and debug records for `--log`, written with structlog.

containerd passes `--log <bundle>/log.json --log-format json` on every call and
reads the last `"level":"error"` object's `msg`. structlog costs tens of
milliseconds to import, so it is imported only when a record is written: a
successful call writes nothing and never pays for it.
"""

from __future__ import annotations

import sys


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
        with open(settings.path, "a", encoding="utf-8", errors="backslashreplace") as stream:
            logger = structlog.wrap_logger(
                structlog.PrintLogger(stream), processors=processors, cache_logger_on_first_use=False
            )
            getattr(logger, level)(msg)
    except Exception as err:  # noqa: BLE001 - a broken log must not hide the real error
        sys.stderr.write(f"runproc: cannot write log {settings.path}: {err}\n")


def report_error(settings: LogSettings, msg: str) -> None:
    """The one error line: to stderr always (the message as it is, as runc prints it), and to the log."""
    try:
        sys.stderr.write(f"{msg}\n")
        sys.stderr.flush()
    except (OSError, UnicodeError):
        pass
    write_record(settings, "error", msg)
