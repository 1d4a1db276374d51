"""The serving capture's files: one home for their names, header, records and how to read them.

The app (``instrument/_spool``) writes them and ``otel-ml skew replay`` reads them. A spool is a
directory of JSON Lines files. A file is written as ``.capture-*.jsonl.open`` and renamed, once
complete, to ``capture-<started>-<pid>-<nonce>-<seq>-r<records>.jsonl``: a reader lists only
finished names, so it never sees half a file, and the record count in the name lets the writer
that evicts a file (the spool's size cap) count the records it drops without reading it.

Line 1 is the header (what wrote the file: model, version, the decision threshold, segment keys,
feature names, tags); every other line is one served row::

    {"request_id": "...", "time": 1764650000.1, "raw": {...}, "features": {...},
     "score": 0.82, "decision": "true", "segments": {"region": "EU"}}

Non-finite floats are written as ``NaN``/``Infinity`` (Python's and pandas' JSON readers accept
them); ``null`` and an absent key are both a missing value.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

__all__ = [
    "CAPTURE_FORMAT",
    "CaptureFile",
    "CaptureFormatError",
    "CaptureRead",
    "capture_files",
    "encode_line",
    "finished_name",
    "header",
    "open_name",
    "read_capture",
    "records_in_name",
]

CAPTURE_FORMAT: Final = 1
HEADER_KEY: Final = "otel_ml_capture"  # the header line's marker key; its value is the format version
OPEN_SUFFIX: Final = ".jsonl.open"
_FINISHED = re.compile(r"^capture-(\d{8}T\d{6}\d{3}Z)-(\d+)-([0-9a-f]{8})-(\d{6})-r(\d+)\.jsonl$")


class CaptureFormatError(ValueError):
    """A file in a capture directory is not a capture file this otel-ml version reads."""


def open_name(started: str, pid: int, nonce: str, seq: int) -> str:
    """The name a file is written under (hidden, never listed by a reader)."""
    return f".capture-{started}-{pid}-{nonce}-{seq:06d}{OPEN_SUFFIX}"


def finished_name(started: str, pid: int, nonce: str, seq: int, records: int) -> str:
    """The name of a complete file; ``started`` is ``YYYYmmddTHHMMSSfffZ`` (UTC), so names sort by time."""
    return f"capture-{started}-{pid}-{nonce}-{seq:06d}-r{records}.jsonl"


def records_in_name(name: str) -> int | None:
    """The record count a finished file's name carries; ``None`` for any other name."""
    m = _FINISHED.match(name)
    return int(m.group(5)) if m else None


def header(
    *,
    model: str,
    version: str,
    threshold: float | None,
    segments: tuple[str, ...],
    feature_names: tuple[str, ...],
    tags: Mapping[str, str],
    pid: int,
    host: str,
    started: float,
    library: str,
) -> dict[str, Any]:
    """The first line of a file: what wrote the rows below it (a replay needs the decision rule)."""
    return {
        HEADER_KEY: CAPTURE_FORMAT,
        "model": model,
        "version": version,
        "threshold": threshold,
        "segments": list(segments),
        "feature_names": list(feature_names),
        "tags": dict(tags),
        "pid": pid,
        "host": host,
        "started": started,
        "otel_ml": library,
    }


def encode_line(obj: Mapping[str, Any]) -> bytes:
    """One JSON line; ``TypeError``/``ValueError`` when ``obj`` holds something JSON cannot say. A
    string with a lone surrogate (``json.loads`` of a client's ``"\\ud800"`` gives one) is no UTF-8:
    that line is written with ASCII escapes instead, which every JSON reader turns back into it."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=_plain)
    try:
        return text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        return json.dumps(obj, ensure_ascii=True, separators=(",", ":"), default=_plain).encode("ascii") + b"\n"


def _plain(value: Any) -> Any:
    """numpy scalars and arrays, datetimes, sets and bytes (as text) in their plainest JSON form;
    pandas' missing values (``pd.NA``, ``pd.NaT``) are ``null``, like None and NaN."""
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", None) == ():
        return item()
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    if type(value).__name__ in ("NAType", "NaTType"):  # without importing pandas; NaT has isoformat
        return None
    isoformat = getattr(value, "isoformat", None)
    if callable(isoformat):
        return isoformat()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "backslashreplace")
    raise TypeError(f"a {type(value).__name__} is not a JSON value")


@dataclass(frozen=True)
class CaptureFile:
    """One finished file of a spool."""

    path: Path
    records: int  # as its name says


def capture_files(directory: str | os.PathLike[str]) -> list[CaptureFile]:
    """The finished files of a spool, oldest first (their names sort by start time)."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such capture directory")
    out = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        count = records_in_name(entry.name)
        if count is not None and entry.is_file():
            out.append(CaptureFile(Path(entry.path), count))
    return out


@dataclass
class CaptureRead:
    """What reading a spool met besides rows: files and lines it could not use, and why."""

    files: int = 0
    unreadable: list[tuple[str, int, str]] = field(default_factory=list)  # file, line, why (first 100)
    unreadable_lines: int = 0

    def bad(self, path: Path, line: int, why: str) -> None:
        self.unreadable_lines += 1
        if len(self.unreadable) < 100:
            self.unreadable.append((path.name, line, why))


def read_capture(
    files: list[CaptureFile], read: CaptureRead | None = None
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Every row of ``files`` with its file's header. A file whose first line is no header of this
    format raises :class:`CaptureFormatError`; a row line that is not a JSON object is counted in
    ``read`` and skipped (a replay goes on)."""
    read = read if read is not None else CaptureRead()
    for f in files:
        read.files += 1
        with open(f.path, "rb") as fh:
            head = _header_of(f.path, fh.readline())
            for number, line in enumerate(fh, start=2):
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    read.bad(f.path, number, f"not JSON: {exc}")
                    continue
                if not isinstance(row, dict) or not isinstance(row.get("request_id"), str):
                    read.bad(f.path, number, "not a row (an object with a request_id string)")
                    continue
                yield head, row


def _header_of(path: Path, line: bytes) -> dict[str, Any]:
    try:
        head = json.loads(line)
    except ValueError:
        head = None
    if not isinstance(head, dict) or HEADER_KEY not in head:
        raise CaptureFormatError(f"{path}: the first line is not an otel-ml capture header")
    if head[HEADER_KEY] != CAPTURE_FORMAT:
        raise CaptureFormatError(
            f"{path}: capture format {head[HEADER_KEY]!r}; this otel-ml reads format {CAPTURE_FORMAT}"
        )
    for key, kind in (("model", str), ("version", str), ("segments", list), ("feature_names", list)):
        if not isinstance(head.get(key), kind):
            raise CaptureFormatError(f"{path}: the header's {key!r} is not a {kind.__name__}")
    return head
