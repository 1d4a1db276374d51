"""Reading one call's input and result, and counting its features, scores and decisions.

Inputs that don't match the baseline are never binned by position into the wrong features:
an array whose width differs from the feature names counts no features (its predictions and
scores are still counted), a DataFrame or dict of columns lacking a feature counts that
feature as missing; both are counted as instrumentation errors with the reason as
``error_type`` (``feature_count_mismatch``, ``missing_feature``) and logged once. A single
mapping lacking a key is an ordinary missing value (how JSON spells one).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .._frame import (
    REASON_MISSING_FEATURE,
    Columns,
    InputMismatch,
    as_float,
    canonical_label,
    is_single_row,
    missing_columns,
    to_columns,
)
from ._counters import NO_DECISION, ModelCounters
from ._errors import InstrumentationErrors

if TYPE_CHECKING:
    from ._context import CallState
    from ._review import ReviewSampler

__all__ = ["NO_INPUT", "CallCounter", "Decision", "scalar_label"]

Decision = Callable[[npt.NDArray[np.float64]], Any] | float
NO_INPUT: Any = object()  # the features could not be read (a raising ``inputs=`` callback)


class CallCounter:
    """Counts what one call saw and predicted into a model's :class:`ModelCounters`.

    ``score`` pulls the scores out of a result, ``decision`` turns scores into decisions (see
    :class:`~otel_ml.ModelMonitor` for what a threshold, a callable or ``None`` mean for a
    row and for a batch). Each step has its own guard: a failure is an instrumentation error.
    """

    __slots__ = (
        "_counters",
        "_decision",
        "_errors",
        "_feature_names",
        "_score",
        "_segments",
        "_threshold",
        "review",
    )

    def __init__(
        self,
        counters: ModelCounters,
        errors: InstrumentationErrors,
        *,
        segments: tuple[str, ...],
        decision: Decision | None,
        score: Callable[[Any], Any] | None,
        feature_names: tuple[str, ...],
    ) -> None:
        self._counters = counters
        self._errors = errors
        self._segments = segments
        self._decision = decision
        # a plain threshold, for the single row's fast path (a bool is a rule's value, not a threshold)
        plain = isinstance(decision, (int, float)) and not isinstance(decision, bool)
        self._threshold: float | None = decision if plain else None  # type: ignore[assignment]
        self._score = score
        self._feature_names = feature_names
        self.review: ReviewSampler | None = None  # human-review sampling of the predictions

    def count(
        self,
        features: Any,
        result: Any,
        duration: float | None,
        error: BaseException | None,
        cpu_ns: int = 0,
        call: CallState | None = None,
    ) -> tuple[int | None, Any, Any, float | None, Any]:
        """Count features and predictions; returns rows, scores, decisions, the duration still
        to count (``None`` once the single-row path counted it, and ``cpu_ns``, with the row)
        and the call's cost slot: a row's index, a batch's rows per slot, or ``None``."""
        if features is NO_INPUT:
            return None, None, None, duration, None
        if (type(features) is dict and type(next(iter(features.values()), None)) in _SCALARS) or is_single_row(
            features
        ):  # the first test: a plain dict row, without the Mapping ABC check
            try:
                scores, decisions, slot = self._record_row(features, result, duration, error, cpu_ns)
            except Exception as exc:
                self._errors.report("row", exc)
                return 1, None, None, duration, None
            if self.review is not None and call is not None and error is None:
                try:
                    self.review.row(call, features, scores, decisions)
                except Exception as exc:
                    self._errors.report("review", exc)
            return 1, scores, decisions, None, slot
        columns = self._columns(features)
        if columns is None:
            return None, None, None, duration, None
        scores = decisions = slots = None
        if error is None:
            try:
                scores, decisions, slots = self._count_predictions(columns, result, columns.n_rows)
            except Exception as exc:
                self._errors.report("predictions", exc)
                return columns.n_rows, None, None, duration, None
            if self.review is not None and call is not None:
                try:
                    key = self.review.config.segment
                    segment = columns.raw(key) if key is not None else None
                    self.review.batch(call, scores, decisions, segment, columns.n_rows, columns)
                except Exception as exc:
                    self._errors.report("review", exc)
        return columns.n_rows, scores, decisions, duration, slots

    def _columns(self, features: Any) -> Columns | None:
        """The batch as columns with its features counted, or rows only when they can't be attributed."""
        try:
            columns = to_columns(features, self._feature_names)
        except InputMismatch as exc:
            if self._counters.feature_names:  # nothing to attribute is not an error
                self._errors.report("features", exc, reason=exc.reason, detail=str(exc))
            return None if exc.n_rows is None else Columns(exc.n_rows, lambda name: None)
        except Exception as exc:
            self._errors.report("batch", exc)
            return None
        absent = missing_columns(columns, self._counters.feature_names)
        if absent:
            detail = f"the input has no column for feature(s) {', '.join(map(repr, absent[:5]))}; counted as missing"
            self._errors.report("features", None, reason=REASON_MISSING_FEATURE, detail=detail)
        try:
            self._counters.add_columns(columns)
        except Exception as exc:
            self._errors.report("batch", exc)
        return columns

    def _record_row(
        self, row: Mapping[str, Any], result: Any, duration: float | None, error: BaseException | None, cpu_ns: int
    ) -> tuple[Any, Any, int]:
        score: float | None = None
        decision: str | None = None  # None: count the features only
        if error is None:
            try:
                score = result if type(result) is float and self._score is None else self._row_score(result)
                threshold = self._threshold
                if threshold is not None and type(score) is float and math.isfinite(score):
                    decision = "true" if score > threshold else "false"  # what _row_decision gives
                else:
                    decision = self._row_decision(score)
            except Exception as exc:  # a raising score=/decision=: the features still count, the prediction can't
                self._errors.report("predictions", exc)
                score = None
        segments = [scalar_label(row.get(k)) for k in self._segments] if self._segments else ()
        # A failed call still saw its features, but made no prediction (decision None).
        slot = self._counters.add_row(row, score, decision, segments, duration, cpu_ns)
        return score, (None if decision == NO_DECISION else decision), slot

    def _row_decision(self, score: float | None) -> str | None:
        rule = self._decision
        if rule is not None and score is not None and math.isfinite(score):
            verdict = score > rule if isinstance(rule, (int, float)) else rule(score)  # type: ignore[arg-type]
            if verdict is True or verdict is False:  # a threshold's: skip the general label rules
                return "true" if verdict else "false"
            return scalar_label(verdict)
        return NO_DECISION

    def decide(self, score: float | None) -> str | None:
        """One score's decision label under the monitor's rule, as a row is counted; ``None``: none."""
        decision = self._row_decision(score)
        return None if decision == NO_DECISION else decision

    def _row_score(self, result: Any) -> float | None:
        raw = self._score(result) if self._score is not None else result
        if raw is None:
            return None
        if type(raw) is float:
            return raw
        scores = self._scores(raw, 1)
        return None if scores is None else float(scores[0])

    def _count_predictions(self, columns: Columns, result: Any, n: int) -> tuple[Any, Any, Any]:
        scores = self._scores(result, n)
        decisions = self._decisions(scores) if scores is not None else None
        slots = self._counters.add_predictions(scores, decisions, [columns.raw(k) for k in self._segments], n)
        return scores, decisions, slots

    def _scores(self, result: Any, n: int) -> npt.NDArray[np.float64] | None:
        raw = self._score(result) if self._score is not None else result
        return None if raw is None else _score_array(raw, n)

    def _decisions(self, scores: npt.NDArray[np.float64]) -> Any:
        rule = self._decision
        if rule is None:
            return None
        if isinstance(rule, (int, float)):
            return scores > rule
        out = np.asarray(rule(scores))
        if out.shape != scores.shape:
            if out.size == 1 and scores.size == 1:
                return out.reshape(1)
            # A rule written for one score (`if s > t: ...`): apply it per score.
            return np.asarray([rule(s) for s in scores.tolist()])
        return out


def _score_array(raw: Any, n: int) -> npt.NDArray[np.float64]:
    arr = np.asarray(raw)
    if arr.ndim == 2 and arr.shape[1] == 2:  # predict_proba of a binary classifier
        arr = arr[:, 1]
    scores = as_float(arr)
    if arr.dtype.kind == "O" and scores.size and np.isnan(scores).all():
        raise ValueError(f"cannot read a score from a {type(raw).__name__} result: pass score=lambda result: ...")
    if scores.size != n:
        raise ValueError(f"expected {n} scores for {n} rows, got {scores.size}")
    return scores


_SCALARS = frozenset({float, int, str, bool, type(None)})


def scalar_label(value: Any) -> str | None:
    """The label of one segment value or decision: the same identity as a batch column's."""
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0] if value.size == 1 else value.tolist()
    return canonical_label(value)
