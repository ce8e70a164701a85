"""`runproc restore`: not supported (there is no CRIU in runproc); the same error as checkpoint."""

from __future__ import annotations

from runproc.commands.checkpoint import run

__all__ = ["run"]
