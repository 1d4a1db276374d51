"""Atomic state snapshots, so windows survive restarts and ``kill -9``.

The state is written as one ``.npz`` file (numpy arrays plus a JSON metadata entry) to a
temporary file in the same directory and renamed over the old one, the same trick as
prometheus_client's ``write_to_textfile``: a reader (the next sidecar) sees the old file or the
new one, never half of one. A model whose baseline changed since the snapshot starts fresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_write
from .._cardinality import BoundedLabels
from ._model_state import ModelState, SourceState
from ._otlp_input import Prediction
from ._series import SUM_SERIES, SeriesKey
from ._state import SidecarState

__all__ = ["save_state", "load_state", "baseline_fingerprint", "STATE_FORMAT"]

_log = logging.getLogger("otel_ml.sidecar")
STATE_FORMAT = 1
_MAX_STATE_BYTES = 4 * 2**30


def baseline_fingerprint(model: ModelState) -> str:
    data = model.baseline.to_dict()
    data.pop("created", None)
    data.pop("library_version", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _model_meta(i: int, model: ModelState, arrays: dict[str, Any]) -> dict[str, Any]:
    arrays[f"m{i}_totals"] = model.current_totals().copy()
    sources = {}
    for j, (name, src) in enumerate(model.sources.items()):
        arrays[f"m{i}_s{j}"] = src.last.copy()
        sources[name] = {"array": f"m{i}_s{j}", "start_ns": src.start_ns, "seen_at": src.seen_at}
    rings = {}
    for w, (window, ring) in enumerate(model.rings.items()):
        width = max(v.size for v in ring.vectors)
        stacked = np.zeros((len(ring.vectors), width))
        for r, v in enumerate(ring.vectors):
            stacked[r, : v.size] = v
        arrays[f"m{i}_r{w}"] = stacked
        rings[window] = {"array": f"m{i}_r{w}", "times": ring.times, "sizes": [v.size for v in ring.vectors]}
    return {
        "model": model.model,
        "version": model.version,
        "fingerprint": baseline_fingerprint(model),
        "keys": [[k.name, [list(p) for p in k.labels]] for k in model.keys],
        "sources": sources,
        "rings": rings,
        "last_ingest": model.last_ingest,
        "bounded": [[label, scope, b.labels, b.overflow] for (label, scope), b in model.bounded.items()],
    }


def save_state(state: SidecarState, path: str | os.PathLike[str], now: float) -> Path:
    """Write the whole state atomically; returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {}
    with state.lock:
        meta = {
            "format": STATE_FORMAT,
            "saved_at": now,
            "models": [_model_meta(i, m, arrays) for i, m in enumerate(state.models.values())],
            "join": [
                [rid, expires, p.model, p.version, p.score, p.decision, [list(s) for s in p.segments]]
                for rid, expires, p in state.join.items()
            ],
            "reexport": sorted(state.reexport),
        }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    return atomic_write(target, lambda fh: np.savez(fh, **arrays))


def _check_values(model: ModelState, values: Any, what: str) -> None:
    """Saved counts are finite and >= 0, as ingest keeps them: a crafted NaN or negative count
    would otherwise be restored and fail every later ``/metrics``. Sums are values (negative, or
    infinite once finite sums of several sources overflow), only ever re-exposed."""
    if values.ndim == 2:
        values = np.where(np.isfinite(values), values, np.nan).min(axis=0, initial=0.0)
    counts = np.fromiter((k.name not in SUM_SERIES for k in model.keys[: values.size]), bool, values.size)
    checked = values[counts]
    if not (np.isfinite(checked) & (checked >= 0)).all():
        raise ValueError(f"{what}: counts must be finite and >= 0")


def _restore_model(model: ModelState, meta: dict[str, Any], data: Any) -> None:
    keys = [SeriesKey(name, tuple(tuple(p) for p in labels)) for name, labels in meta["keys"]]
    if keys[: model.size] != model.keys:
        raise ValueError("series layout differs from the baseline's")
    model.restore_series(keys[model.size :])  # label values made exposition-safe again
    saved = np.asarray(data[f"{meta['prefix']}_totals"], dtype=np.float64)
    if saved.shape != (model.size,):
        raise ValueError("totals do not match the series list")
    _check_values(model, saved, "totals")
    model.totals[: saved.size] = saved
    for name, src in meta["sources"].items():
        last = np.asarray(data[src["array"]], dtype=np.float64)
        if last.ndim != 1 or last.size > model.size:
            raise ValueError(f"source {name}: more values than series")
        _check_values(model, last, f"source {name}")
        model.sources[str(name)] = SourceState(last.copy(), int(src["start_ns"]), float(src["seen_at"]))
    for window, ring_meta in meta["rings"].items():
        ring = model.rings.get(window)
        if ring is None:
            continue  # a window that is no longer configured
        stacked = np.asarray(data[ring_meta["array"]], dtype=np.float64)
        sizes = [int(size) for size in ring_meta["sizes"]]
        if len(sizes) != len(ring_meta["times"]) or stacked.ndim != 2 or stacked.shape[0] != len(sizes):
            raise ValueError(f"window {window}: snapshots and their times differ")
        if any(not 0 <= size <= min(model.size, stacked.shape[1]) for size in sizes):
            raise ValueError(f"window {window}: a snapshot is longer than the series list")
        _check_values(model, stacked[:, : min(model.size, stacked.shape[1])], f"window {window}")
        ring.times = [float(t) for t in ring_meta["times"]]
        ring.vectors = [np.array(stacked[r, :size]) for r, size in enumerate(sizes)]
    model.last_ingest = float(meta["last_ingest"])
    for label, scope, labels, overflow in meta["bounded"]:
        bounded = BoundedLabels(model.segment_budget if label == "ml_segment" else model.label_budget)
        for value in labels:
            bounded.index(value)
        bounded.overflow = int(overflow)
        model.bounded[(label, scope)] = bounded


def _check_size(target: Path) -> None:
    """Refuse archives whose members claim far more than the file holds (``np.savez`` stores, never deflates)."""
    size = target.stat().st_size
    with zipfile.ZipFile(target) as archive:
        claimed = sum(info.file_size for info in archive.infolist())
    if claimed > 2 * size + 2**20 or claimed > _MAX_STATE_BYTES:
        raise ValueError(f"members claim {claimed} bytes in a {size} byte file")


def _restored_times(times: Any, shift: float) -> list[float]:
    out = [float(t) + shift for t in times]
    if not out or any(t != t or abs(t) == float("inf") for t in out) or out != sorted(out):
        raise ValueError("snapshot times are not a finite ascending list")
    return out


def _read(
    state: SidecarState, target: Path
) -> tuple[dict[tuple[str, str], ModelState], list[tuple[str, float, Prediction]], list[Any]] | None:
    """Everything the file holds, fully parsed and checked; None for another format (logged)."""
    _check_size(target)
    models: dict[tuple[str, str], ModelState] = {}
    join: list[tuple[str, float, Prediction]] = []
    with open(target, "rb") as fh, np.load(fh, allow_pickle=False) as data:
        meta = json.loads(bytes(data["meta"]).decode())
        if meta.get("format") != STATE_FORMAT:
            _log.warning(
                "state file %s has format %s, expected %s: starting fresh", target, meta.get("format"), STATE_FORMAT
            )
            return None
        saved_at = float(meta["saved_at"])
        # re-anchor: a file saved "in the future" of this process' window clock (the wall clock went
        # back across the restart) is moved so that it was saved now; windows never stretch
        shift = min(0.0, state.clock() - saved_at)
        for i, m in enumerate(meta["models"]):
            model = state.models.get((str(m["model"]), str(m["version"])))
            if model is None:
                continue
            if m["fingerprint"] != baseline_fingerprint(model):
                _log.warning(
                    "baseline of %s %s changed since the last snapshot: its windows start fresh",
                    m["model"],
                    m["version"],
                )
                continue
            m["prefix"] = f"m{i}"
            for ring in m["rings"].values():
                ring["times"] = _restored_times(ring["times"], shift)
            fresh = state._new_model(model.baseline, saved_at + shift)
            _restore_model(fresh, m, data)
            models[(model.model, model.version)] = fresh
        for rid, expires, model_name, version, score, decision, segments in meta["join"]:
            prediction = Prediction(
                str(rid), str(model_name), str(version), score, decision, tuple(tuple(s) for s in segments)
            )
            join.append((str(rid), float(expires), prediction))
        reexport = [tuple(x) for x in meta.get("reexport", [])]
    return models, join, reexport


def _move_aside(target: Path) -> Path | None:
    aside = target.with_name(f"{target.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    try:
        os.replace(target, aside)
    except OSError:
        return None
    return aside


def load_state(state: SidecarState, path: str | os.PathLike[str]) -> bool:
    """Restore what a previous run saved; ``False`` if there was nothing usable (logged).

    A corrupt or crafted file never stops the start: it is renamed ``*.corrupt-<time>`` (kept
    for a post-mortem, out of the next save's way) and the sidecar starts fresh."""
    target = Path(path)
    if not target.exists():
        return False
    try:
        staged = _read(state, target)
    except Exception as exc:  # anything a damaged or hostile file can raise, MemoryError included
        aside = _move_aside(target)
        where = f"moved it to {aside}" if aside else "could not move it aside"
        _log.error("state file %s is unreadable (%s: %s): %s; starting fresh", target, type(exc).__name__, exc, where)
        return False
    if staged is None:
        return False
    models, join, reexport = staged
    with state.lock:
        state.models.update(models)
        state.join.restore(join)
        state.reexport.update(reexport)
    return True
