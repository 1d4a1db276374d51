"""Summing a multiprocess directory at scrape time, and folding dead workers' files into archives.

Every worker that ever ran leaves a counter file, and gunicorn's ``max_requests`` recycles workers
all day: the directory would grow without bound and every scrape would read all of it. So once a
minute a scraping process takes the directory's lock exclusively (readers hold it shared, so no
scrape sees a half-done fold) and folds the files of dead processes on this host into one archive
per layout: counts keyed by label string, float sums kept as exact fractions so that the totals
are bit-for-bit what summing the original files gave. The archive lists the files it absorbed,
so a crash between writing it and deleting them never counts a file twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .._names import SHADOW_DIFFERENCE_BUCKETS
from ._multiproc import (
    FileSkipped,
    RawCounts,
    counter_files,
    labels_path_of,
    layout_digest,
    name_part,
    read_counter_file,
)
from ._snapshot import CounterLayout, CountsSnapshot, merge_snapshots, snapshot_of, specs_of
from ._usage import (
    UsageCounts,
    capture_from_json,
    capture_json,
    review_from_json,
    review_json,
    usage_from_json,
    usage_json,
)

__all__ = ["DirSummer"]

_log = logging.getLogger("otel_ml")
ARCHIVE_SUFFIX = ".archive.json"
LOCK_NAME = ".otel-ml.lock"


@dataclass(frozen=True)
class _Part:
    """One summand: a live file, or an archive of dead ones (with its exact float sums)."""

    digest: str
    layout: Mapping[str, Any]
    snapshot: CountsSnapshot
    exact: tuple[Fraction, ...]  # numeric sums, then score sum, then duration sum
    mtime: float
    source: Path


def _exact_of(s: CountsSnapshot) -> tuple[Fraction, ...]:
    shadow = [] if s.shadow_of is None else [s.shadow_difference_sum]
    return tuple(Fraction(v) for v in [*s.numeric_sums.tolist(), s.score_sum, s.duration_sum, *shadow])


def _merge(parts: Sequence[_Part]) -> CountsSnapshot:
    """Sum parts of one layout; float sums are the correctly rounded exact sum of all summands."""
    merged = merge_snapshots([p.snapshot for p in parts])
    exact = [sum(col, Fraction(0)) for col in zip(*(p.exact for p in parts))]
    n = len(merged.numeric_names)
    return replace(
        merged,
        numeric_sums=np.array([float(x) for x in exact[:n]], dtype=np.float64),
        score_sum=float(exact[n]),
        duration_sum=float(exact[n + 1]),
        shadow_difference_sum=float(exact[n + 2]) if merged.shadow_of is not None else 0.0,
    )


def _archive_json(layout: Mapping[str, Any], digest: str, absorbed: Sequence[str], part: _Part) -> dict[str, Any]:
    s = part.snapshot
    return {
        "layout": layout,
        "digest": digest,
        "absorbed": sorted(absorbed),
        "exact": [f"{x.numerator}/{x.denominator}" for x in part.exact],
        "numeric_bins": [b.tolist() for b in s.numeric_bins],
        "categorical_bins": [b.tolist() for b in s.categorical_bins],
        "missing": dict(s.missing),
        "score_bins": s.score_bins.tolist(),
        "predictions": [list(row) for row in s.predictions],
        "duration_bins": s.duration_bins.tolist(),
        "errors": dict(s.errors),
        "fallbacks": dict(s.fallbacks),
        "instrumentation_errors": dict(s.instrumentation_errors),
        "overflow": dict(s.overflow),
        **_shadow_json(s),
        "usage": usage_json(s.usage),
        "review": review_json(s.review),
        "capture": capture_json(s.capture),
    }


def _shadow_json(s: CountsSnapshot) -> dict[str, Any]:
    """A shadow's comparison counts in an archive (its difference sum is the last exact sum)."""
    if s.shadow_of is None or s.shadow_difference_bins is None:
        return {}
    return {
        "shadow_pairs": [list(row) for row in s.shadow_pairs],
        "shadow_difference_bins": s.shadow_difference_bins.tolist(),
        "shadow_dropped": dict(s.shadow_dropped),
    }


def _shadow_part(data: Mapping[str, Any], layout: CounterLayout, exact: Sequence[Fraction]) -> dict[str, Any]:
    if layout.shadow_of is None:
        return {}
    bins = np.asarray(data["shadow_difference_bins"], dtype=np.int64)
    return {
        "shadow_of": layout.shadow_of,
        "shadow_pairs": tuple((str(k), str(s), str(f), int(c)) for k, s, f, c in data["shadow_pairs"]),
        "shadow_difference_bins": bins.reshape(len(SHADOW_DIFFERENCE_BUCKETS) + 1),
        "shadow_difference_sum": float(exact[-1]),
        "shadow_dropped": _int_map(data["shadow_dropped"]),
    }


def _archive_part(data: Mapping[str, Any], path: Path) -> tuple[_Part, frozenset[str]]:
    """An archive back as a summand; ``ValueError``/``KeyError``/``TypeError`` when it is not one."""
    layout = CounterLayout.from_json(data["layout"])
    if data["digest"] != layout_digest(data["layout"]):
        raise ValueError("archive digest does not match its layout")
    exact = tuple(Fraction(x) for x in data["exact"])
    ints = {k: [np.asarray(b, dtype=np.int64) for b in data[k]] for k in ("numeric_bins", "categorical_bins")}
    if [b.size for b in ints["numeric_bins"]] != [len(e) + 1 for e in layout.numeric_edges] or [
        b.size for b in ints["categorical_bins"]
    ] != [len(c) for c in layout.categorical_labels]:
        raise ValueError("archive arrays do not match its layout")
    n = len(layout.numeric_names)
    if len(exact) != n + 2 + (layout.shadow_of is not None):
        raise ValueError("archive sums do not match its layout")
    snapshot = CountsSnapshot(
        model_name=layout.model_name,
        model_version=layout.model_version,
        numeric_names=layout.numeric_names,
        numeric_edges=layout.numeric_edges,
        numeric_bins=tuple(ints["numeric_bins"]),
        numeric_sums=np.array([float(x) for x in exact[:n]], dtype=np.float64),
        categorical_names=layout.categorical_names,
        categorical_labels=layout.categorical_labels,
        categorical_bins=tuple(ints["categorical_bins"]),
        missing={str(k): int(v) for k, v in data["missing"].items()},
        score_edges=layout.score_edges,
        score_bins=np.asarray(data["score_bins"], dtype=np.int64).reshape(len(layout.score_edges) + 1),
        score_sum=float(exact[n]),
        predictions=tuple((str(k), str(s), str(d), int(c)) for k, s, d, c in data["predictions"]),
        duration_edges=layout.duration_edges,
        duration_bins=np.asarray(data["duration_bins"], dtype=np.int64).reshape(len(layout.duration_edges) + 1),
        duration_sum=float(exact[n + 1]),
        errors=_int_map(data["errors"]),
        fallbacks=_int_map(data["fallbacks"]),
        instrumentation_errors=_int_map(data["instrumentation_errors"]),
        overflow=_int_map(data["overflow"]),
        **_shadow_part(data, layout, exact),
        # an archive written before costs were counted has none: its other counts still add up
        usage=usage_from_json(data["usage"]) if "usage" in data else UsageCounts(),
        review=review_from_json(data.get("review")),
        capture=capture_from_json(data.get("capture")),
    )
    part = _Part(data["digest"], data["layout"], snapshot, exact, path.stat().st_mtime, path)
    return part, frozenset(str(name) for name in data["absorbed"])


def _int_map(value: Mapping[str, Any]) -> dict[str, int]:
    return {str(k): int(v) for k, v in value.items()}


def _file_part(raw: RawCounts) -> _Part:
    snapshot = snapshot_of(CounterLayout.from_json(raw.layout), raw.arrays, raw.vocab)
    return _Part(raw.digest, raw.layout, snapshot, _exact_of(snapshot), raw.mtime, raw.path)


@contextlib.contextmanager
def _locked(directory: Path, exclusive: bool) -> Iterator[bool]:
    """The directory lock (shared for readers); yields ``False`` when it could not be had."""
    try:
        fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        yield not exclusive  # a read-only directory can still be read, never folded
        return
    _lock_fds.add(fd)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB if exclusive else fcntl.LOCK_SH)
        except OSError:
            yield False
            return
        yield True
    finally:
        _lock_fds.discard(fd)
        os.close(fd)


_lock_fds: set[int] = set()


def _close_inherited_locks() -> None:
    """A fork during a scrape or a fold must not leave the child holding the directory lock."""
    for fd in list(_lock_fds):
        with contextlib.suppress(OSError):
            os.close(fd)
    _lock_fds.clear()


os.register_at_fork(after_in_child=_close_inherited_locks)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temp_files(directory: Path, age: float = 3600.0) -> None:
    """Temp files of processes killed while creating a file or writing labels (an hour old)."""
    cutoff = time.time() - age
    for path in directory.glob(".*.tmp"):
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < cutoff:
                path.unlink()


def _unlink(path: Path) -> None:
    for p in (path, labels_path_of(path)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


class DirSummer:
    """Sums the files of a multiprocess directory; skipped files are logged and counted once."""

    def __init__(self, fold_interval: float | None = 60.0) -> None:
        """``fold_interval``: seconds between folds of dead workers' files (``None``: never fold)."""
        self._skipped: dict[Path, tuple[tuple[str, str] | None, str]] = {}
        self._lock = threading.Lock()
        self._fold_interval = fold_interval
        self._next_fold = 0.0

    def _skip(self, path: Path, model: tuple[str, str] | None, reason: str, detail: str) -> None:
        with self._lock:
            if path in self._skipped:
                return
            self._skipped[path] = (model, reason)
        _log.warning("otel-ml: multiprocess counter file skipped (%s): %s", reason, detail)

    def _archives(self, directory: Path) -> list[tuple[_Part, frozenset[str]]]:
        out = []
        for path in sorted(directory.glob("*" + ARCHIVE_SUFFIX)):
            try:
                out.append(_archive_part(json.loads(path.read_bytes()), path))
            except FileNotFoundError:
                continue
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                self._skip(path, None, "corrupt_archive", f"{path.name}: {exc}")
        return out

    def _parts(self, directory: Path) -> list[_Part]:
        """Archives, then every live file none of them absorbed, all under the shared lock."""
        with _locked(directory, exclusive=False):
            archives = self._archives(directory)
            absorbed = frozenset().union(*(names for _, names in archives))
            parts = [part for part, _ in archives]
            for path in counter_files(directory):
                if path.name in absorbed:
                    continue
                try:
                    parts.append(_file_part(read_counter_file(path, specs_of)))
                except FileSkipped as exc:
                    self._skip(path, exc.model, exc.reason, str(exc))
        return parts

    def snapshots(self, directory: Path, prefer: Mapping[tuple[str, str], str]) -> list[CountsSnapshot]:
        """One merged snapshot per model version; ``prefer`` names the layout digest this process uses."""
        if self._fold_interval is not None and time.monotonic() >= self._next_fold:
            self._next_fold = time.monotonic() + self._fold_interval
            self.fold(directory)
        groups: dict[tuple[str, str], dict[str, list[_Part]]] = {}
        for part in self._parts(directory):
            model = (part.snapshot.model_name, part.snapshot.model_version)
            groups.setdefault(model, {}).setdefault(part.digest, []).append(part)
        out = []
        for model, by_digest in groups.items():
            chosen = prefer.get(model)
            if chosen not in by_digest:  # no local monitor: the layout written most recently wins
                chosen = max(by_digest, key=lambda d: max(p.mtime for p in by_digest[d]))
            for digest, parts in by_digest.items():
                for part in parts if digest != chosen else ():
                    detail = f"{part.source.name}: layout {digest[:12]}"
                    self._skip(part.source, model, "incompatible_layout", detail)
            out.append(self._with_skips(_merge(by_digest[chosen])))
        return out

    def _with_skips(self, snapshot: CountsSnapshot) -> CountsSnapshot:
        model = (snapshot.model_name, snapshot.model_version)
        with self._lock:
            reasons = [reason for m, reason in self._skipped.values() if m == model]
        if not reasons:
            return snapshot
        errors = dict(snapshot.instrumentation_errors)
        for reason in reasons:
            key = f"multiproc_{reason}"
            errors[key] = errors.get(key, 0) + 1
        return replace(snapshot, instrumentation_errors=errors)

    def fold(self, directory: Path) -> int:
        """Fold dead processes' files (this host only) into their layout's archive; files folded."""
        with _locked(directory, exclusive=True) as locked:
            if not locked:
                return 0
            archives = {part.digest: (part, names) for part, names in self._archives(directory)}
            absorbed = frozenset().union(*(names for _, names in archives.values()))
            host, me = socket.gethostname(), os.getpid()
            dead: dict[str, list[_Part]] = {}
            names: dict[str, list[str]] = {}
            for path in counter_files(directory):
                if path.name in absorbed:  # folded before a crash, not yet deleted
                    _unlink(path)
                    continue
                try:
                    raw = read_counter_file(path, specs_of)
                except FileSkipped:
                    continue
                if raw.host != host or raw.pid in (me, -1) or _alive(raw.pid):
                    continue
                dead.setdefault(raw.digest, []).append(_file_part(raw))
                names.setdefault(raw.digest, []).append(path.name)
            for digest, parts in dead.items():
                self._write_archive(directory, digest, parts, names[digest], archives.get(digest))
            _remove_stale_temp_files(directory)
        return sum(len(v) for v in names.values())

    def _write_archive(
        self,
        directory: Path,
        digest: str,
        parts: list[_Part],
        names: list[str],
        old: tuple[_Part, frozenset[str]] | None,
    ) -> None:
        kept = {n for n in old[1] if (directory / n).exists()} if old else set()
        everything = [*parts, *([old[0]] if old else [])]
        merged = _merge(everything)
        exact = tuple(sum(col, Fraction(0)) for col in zip(*(p.exact for p in everything)))
        target = directory / f"{_stem(merged)}@archive@{digest[:16]}{ARCHIVE_SUFFIX}"
        part = _Part(digest, parts[0].layout, merged, exact, time.time(), target)
        body = json.dumps(_archive_json(parts[0].layout, digest, [*kept, *names], part)).encode()
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_bytes(body)
        os.replace(tmp, target)  # archive first: from here on readers ignore the folded files
        for name in names:
            _unlink(directory / name)


def _stem(s: CountsSnapshot) -> str:
    return f"{name_part(s.model_name)}@{name_part(s.model_version)}"
