"""A shadow version's comparison with its primary on the same rows: the counts behind the
``ml_shadow_*`` series.

They live in the shadow's own counter block (``CounterLayout.shadow_of`` names the primary's
version), so they share its memory-mapped file, its segment labels and its lock. A comparison
of ``n`` rows costs one factorisation of the decision pairs, one ``bincount`` over segment slot
x flip code per segment key and one locked add; no Python loop over rows.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from .._binning import finite_bin_counts
from .._cardinality import BoundedLabels
from .._frame import as_labels, factorize
from .._names import FLIP_NONE, SHADOW_DIFFERENCE_BUCKETS, SHADOW_DROP_REASONS
from ._label_slots import segment_grids

__all__ = ["NO_DECISION", "PairCounts", "decision_labels", "flip_label"]

NO_DECISION = "none"  # the decision label of a row without one (missing score, no rule)
_DIFF_EDGES = np.asarray(SHADOW_DIFFERENCE_BUCKETS, dtype=np.float64)
_REASONS = {reason: i for i, reason in enumerate(SHADOW_DROP_REASONS)}
ObjectArray = npt.NDArray[np.object_]


def flip_label(primary: str, shadow: str) -> str:
    """``none`` when both versions decided alike, else ``<primary>_to_<shadow>``."""
    return FLIP_NONE if primary == shadow else f"{primary}_to_{shadow}"


def decision_labels(n: int, scores: Any, decisions: Any) -> ObjectArray:
    """One decision label per row as counted in ``ml_predictions_total``; a row whose score is
    missing or not finite, or that has no decision at all, is ``none``."""
    if decisions is None:
        out = np.full(n, NO_DECISION, dtype=object)
    else:
        out = as_labels(np.asarray(decisions, dtype=object if isinstance(decisions, str) else None).reshape(-1))
        if out.size != n:
            raise ValueError(f"expected {n} decisions, got {out.size}")
        out[out == None] = NO_DECISION  # noqa: E711  (elementwise: the rows without a decision)
    if scores is None:
        out[:] = NO_DECISION
    else:
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        if s.size == n:
            out[~np.isfinite(s)] = NO_DECISION
    return out


class PairCounts:
    """Pairs per segment and flip, score differences and drops of one shadow (thread-safe)."""

    __slots__ = ("_flips", "_lock", "_segments", "difference", "dropped", "pairs", "scalars")

    def __init__(
        self,
        segment_labels: Sequence[BoundedLabels],
        flip_labels: BoundedLabels,
        arrays: Mapping[str, npt.NDArray[Any]],
        lock: threading.Lock,
    ) -> None:
        self._segments = segment_labels  # the shadow's own, index 0 is __all__
        self._flips = flip_labels
        self._lock = lock  # the counters' lock: a snapshot copies these arrays with the others
        self.pairs: npt.NDArray[np.int64] = arrays["shadow_pairs"]
        self.difference: npt.NDArray[np.int64] = arrays["shadow_difference"]
        self.scalars: npt.NDArray[np.float64] = arrays["shadow_scalars"]
        self.dropped: npt.NDArray[np.int64] = arrays["shadow_dropped"]

    def add_row(self, segments: Sequence[str | None], primary: str, shadow: str, difference: float | None) -> None:
        """One compared row: the single-row path, no arrays built."""
        flip = self._flips.index(flip_label(primary, shadow))
        seg = [labels.index(value) for labels, value in zip(self._segments[1:], segments)]
        diff_bin = -1
        if difference is not None and math.isfinite(difference):
            diff_bin = int(np.searchsorted(_DIFF_EDGES, difference, side="left"))
        with self._lock:
            self.pairs[0, 0, flip] += 1
            for k, s in enumerate(seg, start=1):
                self.pairs[k, s, flip] += 1
            if diff_bin >= 0:
                self.difference[diff_bin] += 1
                self.scalars[0] += difference

    def add(self, segment_values: Sequence[Any], primary: ObjectArray, shadow: ObjectArray, differences: Any) -> None:
        """Count ``n`` compared rows: ``segment_values[k]`` is the column of segment key k (or None)."""
        n = primary.size
        if n == 0:
            return
        grids = segment_grids(self._segments, segment_values, self._flip_codes(primary, shadow), self.pairs.shape[1:])
        diff = None
        if differences is not None:
            diff, total, _ = finite_bin_counts(_DIFF_EDGES, np.asarray(differences, dtype=np.float64))
        with self._lock:
            for k, grid in enumerate(grids):
                self.pairs[k] += grid
            if diff is not None:
                self.difference += diff
                self.scalars[0] += total

    def _flip_codes(self, primary: ObjectArray, shadow: ObjectArray) -> npt.NDArray[np.intp]:
        """The flip slot of each row: one label lookup per distinct (primary, shadow) pair."""
        pc, pu = factorize(primary)
        sc, su = factorize(shadow)
        pairs, inverse, counts = np.unique(pc * len(su) + sc, return_inverse=True, return_counts=True)
        table = np.fromiter(
            (
                self._flips.index(flip_label(str(pu[p // len(su)]), str(su[p % len(su)])), int(c))
                for p, c in zip(pairs.tolist(), counts.tolist())
            ),
            dtype=np.intp,
            count=pairs.size,
        )
        return np.asarray(table[inverse.reshape(-1)], dtype=np.intp)

    def add_dropped(self, reason: str, amount: int = 1) -> None:
        with self._lock:
            self.dropped[_REASONS[reason]] += amount
