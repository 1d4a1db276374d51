"""Atomic state snapshots, so windows survive restarts and ``kill -9``.

The state is written as one ``.npz`` file (numpy arrays plus a JSON metadata entry) to a
temporary file in the same directory and renamed over the old one, the same trick as
prometheus_client's ``write_to_textfile``: a reader (the next sidecar) sees the old file or the
new one, never half of one. A model whose baseline changed since the snapshot starts fresh.
"""

from __future__ import annotations

import json
import logging
import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_write
from .._label_hygiene import label_value
from ._model_state import ModelState
from ._series import Prediction
from ._state import SidecarState

__all__ = ["save_state", "load_state", "baseline_fingerprint", "STATE_FORMAT"]

_log = logging.getLogger("otel_ml.sidecar")
STATE_FORMAT = 3  # 3: waiting predictions live in the join store; 2: per-bin buckets; 1: cumulative (converted)
_READABLE_FORMATS = (1, 2, STATE_FORMAT)
_LEGACY_JOIN_TTL = 3 * 86400.0  # formats 1-2 kept predictions in the file, with their expiry at this TTL
_MAX_STATE_BYTES = 4 * 2**30


def baseline_fingerprint(model: ModelState) -> str:
    return model.baseline.fingerprint().hex()[:16]


def _model_meta(i: int, model: ModelState, arrays: dict[str, Any]) -> dict[str, Any]:
    meta, model_arrays = model.snapshot(f"m{i}")
    arrays.update(model_arrays)
    return {"model": model.model, "version": model.version, "fingerprint": baseline_fingerprint(model), **meta}


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
            "label_seq": (covered := state.label_seq),
            "join_store_id": state.joins.store.store_id,  # whose log label_seq counts
            "unmatched_labels": dict(state.unmatched_labels),
            "labels_received": dict(state.labels_received),
            "reexport": sorted(state.reexport),
        }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    written = atomic_write(target, lambda fh: np.savez(fh, **arrays))
    state.joins.store.forget_log(covered)  # the snapshot covers them now
    return written


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


@dataclass
class _Staged:
    """A state file fully parsed and checked, not yet applied."""

    models: dict[tuple[str, str], ModelState] = field(default_factory=dict)
    legacy_join: list[Prediction] = field(default_factory=list)
    reexport: list[Any] = field(default_factory=list)
    label_seq: int = 0
    join_store_id: int | None = None
    unmatched: dict[str, int] = field(default_factory=dict)
    received: dict[str, int] = field(default_factory=dict)


def _counts(raw: Any) -> dict[str, int]:
    if not isinstance(raw, dict) or not all(isinstance(v, int) and v >= 0 for v in raw.values()):
        raise ValueError("saved label counts are not a map of non-negative integers")
    return {label_value(str(k))[:64]: int(v) for k, v in raw.items()}


def _read(state: SidecarState, target: Path) -> _Staged | None:
    """Everything the file holds, fully parsed and checked; None for another format (logged)."""
    _check_size(target)
    staged = _Staged()
    models = staged.models
    with open(target, "rb") as fh, np.load(fh, allow_pickle=False) as data:
        meta = json.loads(bytes(data["meta"]).decode())
        if meta.get("format") not in _READABLE_FORMATS:
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
            for ring in m["rings"].values():
                ring["times"] = _restored_times(ring["times"], shift)
            fresh = state.new_model(model.baseline, saved_at + shift)
            fresh.restore(m, data, f"m{i}", cumulative_buckets=meta["format"] == 1)
            models[(model.model, model.version)] = fresh
        for rid, expires, model_name, version, score, decision, segments in meta.get("join", []):
            staged.legacy_join.append(
                Prediction(
                    str(rid),
                    str(model_name),
                    str(version),
                    None if score is None else float(score),
                    None if decision is None else str(decision),
                    tuple((str(k), str(v)) for k, v in segments),
                    float(expires) - _LEGACY_JOIN_TTL,
                )
            )
        staged.reexport = [tuple(x) for x in meta.get("reexport", [])]
        staged.label_seq = int(meta.get("label_seq", 0))
        store_id = meta.get("join_store_id")
        staged.join_store_id = None if store_id is None else int(store_id)
        staged.unmatched = _counts(meta.get("unmatched_labels", {}))
        staged.received = _counts(meta.get("labels_received", {}))
    return staged


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
    with state.lock:
        state.models.update(staged.models)
        state.seed_combinations()  # the restored models' budgets count what the store holds
        state.reexport.update(staged.reexport)
        if staged.join_store_id == state.joins.store.store_id:
            state.label_seq = staged.label_seq
        else:  # the snapshot counted another store's log (replaced, moved aside, a new path): count all of this one
            _log.warning(
                "state file %s covers the log of another join store than %s: its whole log is counted",
                target,
                state.joins.store.path or "the one in memory",
            )
    state.restore_label_counts(staged.unmatched, staged.received)
    if staged.legacy_join:  # a file from before the join store: its waiting predictions move into it
        state.add_predictions(staged.legacy_join)
    return True
