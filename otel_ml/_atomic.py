"""Atomic file replacement, the way prometheus_client's ``write_to_textfile`` does it.

Write to a temporary file in the target's directory, flush it to disk, then rename it over the
target: a reader (Grafana provisioning, the next sidecar process) sees the old file or the new
one, never half of one, even after ``kill -9`` or a power cut in the middle of a write.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["atomic_write"]


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> Path:
    """Call ``write(fh)`` on a temporary binary file, then rename it to ``path``; returns the path."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
