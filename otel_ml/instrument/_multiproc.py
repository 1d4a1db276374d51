"""Multiprocess mode: one memory-mapped counter file per process, summed at scrape time.

Model servers run several worker processes (``gunicorn -w N``, ``uvicorn --workers N``), and a
scrape reaches one of them. As with prometheus_client's ``PROMETHEUS_MULTIPROC_DIR``, setting
``OTEL_ML_MULTIPROC_DIR`` (or calling :func:`set_multiproc_dir`) makes every process keep its
dense counters in its own file in that directory, so whichever process serves ``/metrics``
sums all files, those of dead workers included. This module only knows the file format; what
the arrays mean is the counters' business.

A file is ``<model>@<version>@<pid>@<nonce>.counts``: a fixed header (magic, format version,
length of a JSON description), the JSON description (the layout: feature names, bin edges,
vocabularies, budgets, array shapes, and its SHA-256), then the arrays, 8-byte aligned. Label
values that grow at runtime (segments, decisions, error types) get their index per process, so
each process also writes ``<same stem>.labels.json`` (atomically, before the first count at a
new index) and the reader joins counts to labels by string, never by index. Files of dead
workers are folded into archives by ``_dirsum``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import socket
import struct
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import numpy as np
import numpy.typing as npt

__all__ = [
    "MULTIPROC_DIR_ENV",
    "CounterFile",
    "FileSkipped",
    "RawCounts",
    "counter_files",
    "layout_digest",
    "multiproc_dir",
    "read_counter_file",
    "set_multiproc_dir",
]

MULTIPROC_DIR_ENV = "OTEL_ML_MULTIPROC_DIR"
MAGIC = b"OTELMLC\x00"
FORMAT_VERSION = 2  # 2: the usage arrays (CPU, costs, tokens) in every file
_HEADER = struct.Struct("<8sII")  # magic, format version, JSON length
_ALIGN = 64
SUFFIX = ".counts"
LABELS_SUFFIX = ".labels.json"
_NAME_LIMIT = 96  # quoted model/version longer than this are replaced by a hash in file names
_DTYPES = {"i8": np.dtype("<i8"), "f8": np.dtype("<f8")}
_log = logging.getLogger("otel_ml.multiproc")
_UNSET: Any = object()
_override: Any = _UNSET
_unlistable: set[Path] = set()
Spec = tuple[str, str, tuple[int, ...]]  # array name, dtype code ("i8"/"f8"), shape


def set_multiproc_dir(path: str | os.PathLike[str] | None) -> None:
    """Turn multiprocess mode on (a directory) or off (``None``) for monitors created afterwards.

    Overrides ``OTEL_ML_MULTIPROC_DIR``. Call it before creating monitors, in the parent process
    when the server forks workers after importing the app (``gunicorn --preload``).
    """
    global _override
    _override = None if path is None else Path(path)


def multiproc_dir() -> Path | None:
    """The multiprocess directory in effect, or ``None`` for in-memory counters."""
    if _override is not _UNSET:
        return _override  # type: ignore[no-any-return]
    value = os.environ.get(MULTIPROC_DIR_ENV)
    return Path(value) if value else None


def layout_digest(layout: Mapping[str, Any]) -> str:
    """SHA-256 of a layout's canonical JSON: files with different digests never get summed."""
    canonical = json.dumps(layout, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def name_part(value: str) -> str:
    """A model name or version as it appears in file names (quoted; hashed when very long)."""
    quoted = quote(value, safe="")
    return quoted if len(quoted) <= _NAME_LIMIT else "h" + hashlib.sha256(value.encode()).hexdigest()[:24]


def _data_bytes(specs: Sequence[Spec]) -> int:
    return sum(int(np.prod(shape, dtype=np.int64)) * 8 for _, _, shape in specs)


def _header(meta: Mapping[str, Any]) -> bytes:
    body = json.dumps(meta, sort_keys=True, allow_nan=False).encode()
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, len(body)) + body
    return head + b"\x00" * (-len(head) % _ALIGN)


def _views(buffer: Any, offset: int, specs: Sequence[Spec]) -> dict[str, npt.NDArray[Any]]:
    arrays: dict[str, npt.NDArray[Any]] = {}
    for name, code, shape in specs:
        count = int(np.prod(shape, dtype=np.int64))
        arrays[name] = np.frombuffer(buffer, dtype=_DTYPES[code], count=count, offset=offset).reshape(shape)
        offset += count * 8
    return arrays


class CounterFile:
    """This process's counter file for one model: writable array views into a shared mapping."""

    def __init__(self, path: Path, digest: str, arrays: dict[str, npt.NDArray[Any]], mapping: mmap.mmap) -> None:
        self.path = path
        self.digest = digest
        self.arrays = arrays
        self._mapping = mapping  # kept alive with the views; never closed while they exist
        self._labels_lock = threading.Lock()

    @classmethod
    def create(
        cls, directory: Path, layout: Mapping[str, Any], specs: Sequence[Spec], vocab: Mapping[str, Any]
    ) -> CounterFile:
        """A new zeroed file for this process (unique name: a reused pid never reopens a dead file)."""
        digest = layout_digest(layout)
        pid = os.getpid()
        meta = {"layout": layout, "digest": digest, "pid": pid, "host": socket.gethostname()}
        stem = "@".join(
            (name_part(layout["model_name"]), name_part(layout["model_version"]), str(pid), os.urandom(4).hex())
        )
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / (stem + SUFFIX)
        header = _header(meta)
        size = len(header) + _data_bytes(specs)
        tmp = directory / f".{stem}.tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, header)
            os.ftruncate(fd, max(size, 1))
            mapping = mmap.mmap(fd, max(size, 1), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        counter_file = cls(path, digest, _views(mapping, len(header), specs), mapping)
        counter_file.write_labels(vocab)  # labels exist before the counts file is visible
        os.replace(tmp, path)
        return counter_file

    @property
    def labels_path(self) -> Path:
        return self.path.with_name(self.path.name[: -len(SUFFIX)] + LABELS_SUFFIX)

    def write_labels(self, vocab: Mapping[str, Any]) -> None:
        """Replace the label sidecar atomically (rename): readers see the old list or the new one."""
        body = json.dumps(vocab, sort_keys=True).encode()
        with self._labels_lock:
            tmp = self.labels_path.with_name(f".{self.labels_path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(body)
            os.replace(tmp, self.labels_path)


class FileSkipped(Exception):
    """A counter file that cannot be summed; ``reason`` is a short label-safe word."""

    def __init__(self, reason: str, model: tuple[str, str] | None, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.model = model


@dataclass(frozen=True)
class RawCounts:
    """One process's counts as read from its file: layout, digest, array copies, label vocabulary."""

    path: Path
    layout: Mapping[str, Any]
    digest: str
    arrays: Mapping[str, npt.NDArray[Any]]
    vocab: Mapping[str, Any]
    mtime: float
    pid: int
    host: str


def counter_files(directory: Path) -> list[Path]:
    """Every counter file in the directory (temp files start with a dot and are never listed)."""
    try:
        return sorted(p for p in directory.iterdir() if p.name.endswith(SUFFIX) and not p.name.startswith("."))
    except OSError as exc:
        if directory not in _unlistable:
            _unlistable.add(directory)
            _log.warning("otel-ml: cannot list the multiprocess directory %s (%s)", directory, exc)
        return []


def labels_path_of(path: Path) -> Path:
    return path.with_name(path.name[: -len(SUFFIX)] + LABELS_SUFFIX)


def model_of_name(path: Path) -> tuple[str, str] | None:
    """The model and version a file name carries (hashed long names give ``None``)."""
    parts = path.name[: -len(SUFFIX)].split("@")
    if len(parts) != 4 or any(p.startswith("h") and len(p) == 25 for p in parts[:2]):
        return None
    return unquote(parts[0]), unquote(parts[1])


def read_counter_file(path: Path, specs_of: Any) -> RawCounts:
    """Read one file (counts first, then labels, so every label a count needs is already there).

    ``specs_of(layout)`` turns the JSON layout into array specs and raises ``ValueError`` when the
    layout is not one this version understands. Raises :class:`FileSkipped` for anything unusable.
    """
    guess = model_of_name(path)
    try:
        data = path.read_bytes()
        mtime = path.stat().st_mtime
    except OSError as exc:
        raise FileSkipped("unreadable", guess, f"{path.name}: {exc}") from exc
    if len(data) < _HEADER.size:
        raise FileSkipped("truncated", guess, f"{path.name}: {len(data)} bytes, shorter than a header")
    magic, version, length = _HEADER.unpack_from(data)
    if magic != MAGIC or version != FORMAT_VERSION:
        detail = f"{path.name}: not an otel-ml counter file of format {FORMAT_VERSION}"
        raise FileSkipped("incompatible_format", guess, detail)
    try:
        meta = json.loads(data[_HEADER.size : _HEADER.size + length])
        layout = meta["layout"]
        specs = specs_of(layout)
    except (ValueError, KeyError, TypeError) as exc:
        raise FileSkipped("corrupt_header", guess, f"{path.name}: {exc}") from exc
    model = (str(layout.get("model_name")), str(layout.get("model_version")))
    if meta.get("digest") != layout_digest(layout):
        raise FileSkipped("corrupt_header", model, f"{path.name}: layout digest does not match its layout")
    offset = _HEADER.size + length + (-(_HEADER.size + length) % _ALIGN)
    if len(data) < offset + _data_bytes(specs):
        raise FileSkipped(
            "truncated", model, f"{path.name}: {len(data)} bytes, layout needs {offset + _data_bytes(specs)}"
        )
    arrays = {k: v.copy() for k, v in _views(data, offset, specs).items()}
    labels_path = labels_path_of(path)
    try:
        vocab = json.loads(labels_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise FileSkipped("missing_labels", model, f"{labels_path.name}: {exc}") from exc
    if not isinstance(vocab, dict):
        raise FileSkipped("missing_labels", model, f"{labels_path.name}: not a JSON object")
    pid, host = meta.get("pid"), meta.get("host")
    return RawCounts(path, layout, meta["digest"], arrays, vocab, mtime, pid if isinstance(pid, int) else -1, str(host))
