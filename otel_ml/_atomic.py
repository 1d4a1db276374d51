"""Atomic file replacement, the way prometheus_client's ``write_to_textfile`` does it.

Write to a temporary file in the target's directory, flush it to disk, then rename it over the
target: a reader (Grafana provisioning, the next sidecar process) sees the old file or the new
one, never half of one, even after ``kill -9`` or a power cut in the middle of a write.
Such an interruption leaves the temporary file behind: :func:`clean_orphans` removes those.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["atomic_write", "clean_orphans"]


_SUFFIX = ".tmp"


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> Path:
    """Call ``write(fh)`` on a temporary binary file, then rename it to ``path``; returns the path."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=_SUFFIX)
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


def clean_orphans(path: str | os.PathLike[str]) -> list[Path]:
    """Remove temporary files an interrupted :func:`atomic_write` of ``path`` left; returns them.

    Call it at start, before any writer of ``path`` runs. Unreadable directories are skipped."""
    target = Path(path)
    removed: list[Path] = []
    try:
        candidates = list(target.parent.glob(f".{target.name}.*{_SUFFIX}"))
    except OSError:
        return removed
    for orphan in candidates:
        try:
            orphan.unlink()
            removed.append(orphan)
        except OSError:
            pass
    return removed
