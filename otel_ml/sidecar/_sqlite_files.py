"""Opening the sidecar's SQLite files (the join store, the review queue) without leaving debris.

A failed first open (a full disk, a read-only volume, a file that is not a database) must not leave
an empty database and its ``-wal``/``-shm`` files behind: the next start would find a "database"
that was never one. Only files this open created are removed; an existing database is never touched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

__all__ = ["open_cleanly"]

T = TypeVar("T")


def open_cleanly(path: Path | None, connect: Callable[[], T]) -> T:
    """``connect()``; when it raises and ``path`` did not exist before, remove what it created."""
    existed = path is not None and path.exists()
    try:
        return connect()
    except BaseException:
        if path is not None and not existed:
            for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                with contextlib.suppress(OSError):
                    leftover.unlink(missing_ok=True)
        raise
