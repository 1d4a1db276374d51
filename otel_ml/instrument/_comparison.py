"""One shadowed request as a pair: the primary's and the shadow's counted answers on the same rows.

The request path hands over what the primary's call counted (rows, scores, decisions) and its
features; the shadow's own call gives the same for the shadow. This turns the two into segment
values, a decision label per side and score differences, and counts them in the shadow's
:class:`~._pairs.PairCounts`: one row without building arrays, a batch vectorised.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .._frame import InputMismatch, as_labels, is_single_row, to_columns
from ._call import Counted
from ._counting import scalar_label
from ._pairs import NO_DECISION, PairCounts, decision_labels

if TYPE_CHECKING:
    from ._counters import ModelCounters

__all__ = ["PairCounter", "Segments"]

Segments = tuple[bool, list[Any]]  # (one row?, its segment labels or the batch's segment columns)


class PairCounter:
    """Counts pairs into one shadow's comparison counters, by the primary's segment values."""

    __slots__ = ("_counters", "_feature_names", "_segments")

    def __init__(self, counters: ModelCounters, segments: tuple[str, ...], feature_names: tuple[str, ...]) -> None:
        self._counters = counters  # its ``pairs`` read per count: a forked child rebinds them
        self._segments = segments
        self._feature_names = feature_names  # to read a batch's segment columns as the counters do

    def segments(self, features: Any, n: int | None) -> Segments:
        """The primary's segment values of a request (one row's labels, or a batch's columns as
        labels), read before the shadow runs: a shadow may rewrite the input it is handed."""
        if n == 1 and is_single_row(features):
            return True, [scalar_label(features.get(k)) for k in self._segments]
        if n is None:
            return False, []
        return False, [None if c is None else as_labels(c) for c in self._segment_columns(features)]

    def count(self, served: Segments, primary: Counted, shadow: Counted) -> None:
        """Count one request's pair(s) by its :meth:`segments`; ``ValueError`` when there is
        nothing to compare."""
        n, scores, decisions = primary
        _, shadow_scores, shadow_decisions = shadow
        pairs = self._pairs()
        if n is None:
            raise ValueError("the primary's input could not be read: no rows to compare")
        one_row, segments = served
        if one_row:
            difference = None
            if isinstance(scores, float) and isinstance(shadow_scores, float):
                difference = shadow_scores - scores
            pairs.add_row(
                segments, _row_label(scores, decisions), _row_label(shadow_scores, shadow_decisions), difference
            )
            return
        labels = decision_labels(n, scores, decisions), decision_labels(n, shadow_scores, shadow_decisions)
        difference = None
        if scores is not None and shadow_scores is not None and len(scores) == len(shadow_scores) == n:
            difference = shadow_scores - scores
        pairs.add(segments, *labels, difference)

    def _pairs(self) -> PairCounts:
        pairs = self._counters.pairs
        if pairs is None:
            raise ValueError("a shadow's counters need the comparison block")
        return pairs

    def _segment_columns(self, features: Any) -> list[Any]:
        if not self._segments:
            return []
        try:
            columns = to_columns(features, self._feature_names)
        except InputMismatch:  # e.g. an array of another width: segments unknown, the pair still counts
            return [None] * len(self._segments)
        return [columns.raw(k) for k in self._segments]


def _row_label(score: Any, decision: Any) -> str:
    if decision is None or not isinstance(score, float) or not math.isfinite(score):
        return NO_DECISION
    return str(decision)
