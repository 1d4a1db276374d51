"""A capture spool as a stream of rows: one header per model version, duplicate keys, bad lines.

Rows are yielded one at a time (a raw request is dropped as soon as the pipeline has seen it);
what is kept per row is its key, to find duplicates. Unreadable lines are counted against the
model version of their file's header (stage ``record``), so a push says which version lost rows.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .._capture_format import CaptureFile, CaptureRead, _header_of, capture_files, read_capture

__all__ = ["DuplicateKeyError", "LoadStats", "SkewInputError", "VersionKey", "capture_rows"]

VersionKey = tuple[str, str]  # (model, version)
_DUPLICATES_NAMED = 5


class SkewInputError(ValueError):
    """Input a replay cannot run on: no rows, duplicate keys, a bad option; the CLI exits 2."""


class DuplicateKeyError(SkewInputError):
    """The replay key was seen on more than one row (and duplicates were not allowed)."""


@dataclass
class LoadStats:
    """What reading met besides usable rows."""

    files: int = 0
    rows_total: int = 0  # the record counts of the files' names: the progress bar's total
    filtered_out: int = 0  # rows of other models/versions than the one asked for
    duplicates: int = 0
    duplicate_ids: list[str] = field(default_factory=list)
    record_errors: dict[VersionKey, int] = field(default_factory=dict)
    unreadable: list[tuple[str, int, str]] = field(default_factory=list)
    headers: dict[VersionKey, dict[str, Any]] = field(default_factory=dict)  # first header per version


def _key_of(row: dict[str, Any], key: str) -> str | None:
    """The row's replay key: a top-level field, else a field of a mapping ``raw``."""
    value = row.get(key)
    if value is None:
        raw = row.get("raw")
        value = raw.get(key) if isinstance(raw, dict) else None
    return None if value is None else str(value)


_VANISHED = "deleted while the replay ran (the app's spool evicts its oldest files at its size cap)"


def _file_header(f: CaptureFile, stats: LoadStats) -> dict[str, Any] | None:
    try:
        with open(f.path, "rb") as fh:
            return _header_of(f.path, fh.readline())
    except FileNotFoundError:
        stats.unreadable.append((f.path.name, 0, _VANISHED))
        return None


def _rows_of(f: CaptureFile, read: CaptureRead, stats: LoadStats) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """The rows of one file; a file the app evicted since it was listed is noted and skipped (a
    live spool at its cap evicts a file every ``file_bytes``: a long replay must not fail on it)."""
    rows = read_capture([f], read)
    try:
        first = next(rows, None)  # the file is opened here
    except FileNotFoundError:
        stats.unreadable.append((f.path.name, 0, _VANISHED))
        return
    if first is not None:
        yield first
        yield from rows


def capture_rows(
    directory: str | os.PathLike[str],
    stats: LoadStats,
    *,
    key: str = "request_id",
    allow_duplicates: bool = False,
    model_name: str | None = None,
    version: str | None = None,
) -> Iterator[tuple[VersionKey, str, dict[str, Any]]]:
    """``(model version, key, row)`` for every usable row of the spool, oldest file first.

    A file whose header is not a capture header raises ``CaptureFormatError`` naming it. A key
    seen twice in one model version raises :class:`DuplicateKeyError` naming the first duplicated ids (the rest of the
    spool is scanned for them, without yielding) unless ``allow_duplicates``: then the first
    occurrence is kept and the others counted in ``stats``.
    """
    files = capture_files(directory)
    headers = [(f, head) for f in files if (head := _file_header(f, stats)) is not None]  # checked before any work
    stats.files = len(files)
    stats.rows_total = sum(f.records for f in files)
    seen: set[tuple[VersionKey, str]] = set()  # a key repeats within a version: each version is its own replay
    for f, head in headers:
        vkey: VersionKey = (str(head["model"]), str(head["version"]))
        wanted = (model_name is None or vkey[0] == model_name) and (version is None or vkey[1] == version)
        read = CaptureRead()
        for _, row in _rows_of(f, read, stats):
            if not wanted:
                stats.filtered_out += 1
                continue
            rid = _key_of(row, key)
            if rid is None:
                read.bad(f.path, 0, f"no {key!r} in the row or its raw request")
                continue
            if (vkey, rid) in seen:
                stats.duplicates += 1
                if len(stats.duplicate_ids) < _DUPLICATES_NAMED and rid not in stats.duplicate_ids:
                    stats.duplicate_ids.append(rid)
                continue
            seen.add((vkey, rid))
            if stats.duplicates and not allow_duplicates:
                continue  # failing anyway: only look for more duplicated ids
            stats.headers.setdefault(vkey, head)
            yield vkey, rid, row
        if wanted and read.unreadable_lines:
            stats.headers.setdefault(vkey, head)
            stats.record_errors[vkey] = stats.record_errors.get(vkey, 0) + read.unreadable_lines
            stats.unreadable.extend(read.unreadable[: max(0, 100 - len(stats.unreadable))])
    if stats.duplicates and not allow_duplicates:
        named = ", ".join(repr(i) for i in stats.duplicate_ids)
        raise DuplicateKeyError(
            f"{stats.duplicates} rows repeat a {key!r} already seen (first duplicated: {named}); "
            "pass --allow-duplicates to keep the first occurrence of each"
        )
