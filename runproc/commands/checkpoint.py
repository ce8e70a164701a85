"""`runproc checkpoint` and `runproc restore`: not supported (there is no CRIU in runproc); one clear error."""

from __future__ import annotations

from runproc.cli import Context
from runproc.errors import RunprocError


def run(context: Context) -> int:
    raise RunprocError("checkpoint and restore are not supported: runproc has no CRIU support")
