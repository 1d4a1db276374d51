"""Counts over a version's rows: decision flips per segment (label budgets applied) and the
score-difference distribution. numpy over rows; a loop per segment key only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from .. import _names as n
from .._cardinality import BoundedLabels
from ._report import FlipCount, ScoreDifference

__all__ = ["FLIP_BUDGET", "SEGMENT_BUDGET", "flip_counts", "score_difference"]

SEGMENT_BUDGET: Final = 50  # values per segment key, as the app's monitor: the rest is __other__
FLIP_BUDGET: Final = 32  # "<served>_to_<replayed>" labels, as the app's shadow flips


def _labels(values: Sequence[Any]) -> tuple[npt.NDArray[np.intp], list[str]]:
    """Budgeted label codes of ``values`` and the label of each code."""
    bounded = BoundedLabels(SEGMENT_BUDGET)
    codes = (
        bounded.encode(np.fromiter(values, dtype=object, count=len(values))) if len(values) else np.zeros(0, np.intp)
    )
    return codes, list(bounded.labels)


def _present(values: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    return np.asarray(values != None, dtype=bool)  # noqa: E711 (elementwise on an object array)


def _flip_labels(
    served: Sequence[Any], replayed: npt.NDArray[Any] | None, ok: npt.NDArray[np.bool_]
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.intp], list[str]]:
    """Which rows flipped, the budgeted code of each row's flip label, and the labels."""
    if replayed is None:
        return np.zeros(ok.size, dtype=bool), np.zeros(ok.size, dtype=np.intp), []
    s = np.fromiter((None if v is None else str(v) for v in served), dtype=object, count=len(served))
    present = ok & _present(s) & _present(replayed)
    flipped = np.zeros(ok.size, dtype=bool)
    at = np.flatnonzero(present)
    flipped[at] = s[at] != replayed[at]
    labels = np.full(ok.size, "", dtype=object)
    labels[flipped] = s[flipped] + "_to_" + replayed[flipped]
    bounded = BoundedLabels(FLIP_BUDGET)
    codes = np.zeros(ok.size, dtype=np.intp)
    codes[flipped] = bounded.encode(labels[flipped]) if flipped.any() else 0
    return flipped, codes, [*bounded.labels, *([n.OTHER] if bounded.overflow else [])]


def _count(
    key: str,
    seg_codes: npt.NDArray[np.intp],
    seg_labels: list[str],
    flipped: npt.NDArray[np.bool_],
    flip_codes: npt.NDArray[np.intp],
    flip_labels: list[str],
    ok: npt.NDArray[np.bool_],
) -> list[FlipCount]:
    size, width = max(len(seg_labels), int(seg_codes.max(initial=-1)) + 1), max(len(flip_labels), 1)
    rows = np.bincount(seg_codes[ok], minlength=size)
    pairs = np.bincount(seg_codes[flipped] * width + flip_codes[flipped], minlength=size * width).reshape(size, width)
    out = []
    for code in np.flatnonzero(rows).tolist():  # a loop per segment value (at most the budget)
        by_flip = {flip_labels[j]: int(c) for j, c in enumerate(pairs[code].tolist()) if c and j < len(flip_labels)}
        label = n.OTHER if code == SEGMENT_BUDGET else seg_labels[code]
        out.append(FlipCount(key, label, int(rows[code]), by_flip))
    return out


def flip_counts(
    header: Mapping[str, Any],
    segments: Sequence[Mapping[str, Any]],
    served: Sequence[Any],
    replayed: npt.NDArray[Any] | None,
    ok: npt.NDArray[np.bool_],
) -> tuple[FlipCount, ...]:
    """Rows and flips overall (``__all__``) and per value of every segment key of the header.
    A flip: served and replayed decisions both present and different, on a row the model re-scored."""
    flipped, flip_codes, flip_labels = _flip_labels(served, replayed, ok)
    everything = np.zeros(ok.size, dtype=np.intp)
    out = _count(n.ALL, everything, [n.ALL], flipped, flip_codes, flip_labels, ok)
    if not out:
        out = [FlipCount(n.ALL, n.ALL, 0, {})]
    for key in [str(k) for k in header.get("segments") or ()]:
        codes, labels = _labels([s.get(key) for s in segments])
        out.extend(_count(key, codes, labels, flipped, flip_codes, flip_labels, ok))
    return tuple(out)


def score_difference(delta: npt.NDArray[np.float64]) -> ScoreDifference:
    """Distribution of replayed - served over the finite differences (NaN: not comparable)."""
    d = delta[np.isfinite(delta)]
    bounds = n.SHADOW_DIFFERENCE_BUCKETS
    ordered = np.sort(d)
    cumulative = [*np.searchsorted(ordered, np.asarray(bounds), side="right").tolist(), int(d.size)]
    if d.size == 0:
        return ScoreDifference(0, None, None, None, None, None, bounds, tuple(cumulative), 0.0)
    q50, q90, q99 = np.quantile(np.abs(d), [0.5, 0.9, 0.99]).tolist()
    return ScoreDifference(
        count=int(d.size),
        mean=float(np.mean(d)),
        p50_abs=float(q50),
        p90_abs=float(q90),
        p99_abs=float(q99),
        max_abs=float(np.max(np.abs(d))),
        bucket_bounds=bounds,
        bucket_counts=tuple(int(c) for c in cumulative),
        total=float(np.sum(d)),
    )
