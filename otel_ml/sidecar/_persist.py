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
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_write
from .._cardinality import BoundedLabels
from ._model_state import ModelState, SourceState
from ._otlp_input import Prediction
from ._series import SeriesKey
from ._state import SidecarState

__all__ = ["save_state", "load_state", "baseline_fingerprint", "STATE_FORMAT"]

_log = logging.getLogger("otel_ml.sidecar")
STATE_FORMAT = 1


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


def _restore_model(model: ModelState, meta: dict[str, Any], data: Any) -> None:
    keys = [SeriesKey(name, tuple(tuple(p) for p in labels)) for name, labels in meta["keys"]]
    if keys[: model.size] != model.keys:
        raise ValueError("series layout differs from the baseline's")
    for key in keys[model.size :]:
        model._add(key)
    saved = data[f"{meta['prefix']}_totals"]
    model.totals[: saved.size] = saved
    for name, src in meta["sources"].items():
        model.sources[name] = SourceState(np.array(data[src["array"]]), int(src["start_ns"]), float(src["seen_at"]))
    for window, ring_meta in meta["rings"].items():
        ring = model.rings.get(window)
        if ring is None:
            continue  # a window that is no longer configured
        stacked = data[ring_meta["array"]]
        ring.times = [float(t) for t in ring_meta["times"]]
        ring.vectors = [np.array(stacked[r, :size]) for r, size in enumerate(ring_meta["sizes"])]
    model.last_ingest = float(meta["last_ingest"])
    for label, scope, labels, overflow in meta["bounded"]:
        bounded = BoundedLabels(model.segment_budget if label == "ml_segment" else model.label_budget)
        for value in labels:
            bounded.index(value)
        bounded.overflow = int(overflow)
        model.bounded[(label, scope)] = bounded


def load_state(state: SidecarState, path: str | os.PathLike[str]) -> bool:
    """Restore what a previous run saved; ``False`` if there was nothing usable (logged)."""
    target = Path(path)
    if not target.exists():
        return False
    try:
        with open(target, "rb") as fh, np.load(fh, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            if meta.get("format") != STATE_FORMAT:
                _log.warning(
                    "state file %s has format %s, expected %s: starting fresh", target, meta.get("format"), STATE_FORMAT
                )
                return False
            with state.lock:
                for i, m in enumerate(meta["models"]):
                    model = state.models.get((m["model"], m["version"]))
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
                    fresh = state._new_model(model.baseline, float(meta["saved_at"]))
                    _restore_model(fresh, m, data)  # into a fresh model: a failure leaves the old one intact
                    state.models[(m["model"], m["version"])] = fresh
                for rid, expires, model_name, version, score, decision, segments in meta["join"]:
                    state.join.restore(
                        [
                            (
                                rid,
                                float(expires),
                                Prediction(
                                    rid, model_name, version, score, decision, tuple(tuple(s) for s in segments)
                                ),
                            )
                        ]
                    )
                state.reexport.update(tuple(x) for x in meta.get("reexport", []))
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        _log.warning("cannot read state file %s (%s): starting fresh", target, exc)
        return False
    return True
