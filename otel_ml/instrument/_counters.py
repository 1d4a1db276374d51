"""The numpy counters behind one model's metrics, and the vectorised step that feeds them.

Every metric otel-ml exposes for a model is a set of mergeable counts: feature bins, category
bins, missing values, score bins, predictions per segment and decision, latency buckets. They
live in a few preallocated numpy arrays laid out by the baseline. One call costs one binning
step over all features (a broadcast comparison for one row, ``searchsorted``/``bincount`` per
column for a batch) and one locked in-place add; cumulative buckets, label strings and metric
families are built at scrape/export time, never on the request path.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt

from .._binning import MISSING_CODE, CategoryEncoder, finite_bin_counts
from .._cardinality import BoundedCounter, BoundedLabels
from .._frame import Columns, as_float, as_labels
from .._names import (
    ALL,
    ATTR_DECISION,
    ATTR_ERROR_TYPE,
    ATTR_FALLBACK_REASON,
    ATTR_FEATURE_PREFIX,
    ATTR_SEGMENT_PREFIX,
    DURATION_BUCKETS,
)
from ..baseline import Baseline, CategoricalProfile, NumericProfile

__all__ = ["ModelCounters", "CountsSnapshot", "DEFAULT_SCORE_EDGES", "NO_DECISION"]

DEFAULT_SCORE_EDGES: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 10))
NO_DECISION = "none"
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class CountsSnapshot:
    """A consistent copy of one model's counters, taken under the lock at scrape/export time."""

    model_name: str
    model_version: str
    numeric_names: tuple[str, ...]
    numeric_edges: tuple[tuple[float, ...], ...]
    numeric_bins: tuple[IntArray, ...]  # per feature, per-bin (not cumulative) counts
    numeric_sums: FloatArray
    categorical_names: tuple[str, ...]
    categorical_labels: tuple[tuple[str, ...], ...]
    categorical_bins: tuple[IntArray, ...]
    missing: Mapping[str, int]
    score_edges: tuple[float, ...]
    score_bins: IntArray
    score_sum: float
    predictions: tuple[tuple[str, str, str, int], ...]  # segment key, segment, decision, count
    duration_edges: tuple[float, ...]
    duration_bins: IntArray
    duration_sum: float
    errors: Mapping[str, int]
    fallbacks: Mapping[str, int]
    instrumentation_errors: Mapping[str, int]
    overflow: Mapping[str, int]


def _split(flat: IntArray, offsets: Sequence[int]) -> tuple[IntArray, ...]:
    return tuple(flat[a:b].copy() for a, b in zip(offsets[:-1], offsets[1:]))


class ModelCounters:
    """All counts for one model version. ``add_*`` methods are thread-safe and never allocate per value."""

    def __init__(
        self,
        model_name: str,
        model_version: str,
        baseline: Baseline | None,
        segments: Sequence[str] = (),
        *,
        segment_budget: int = 50,
        decision_budget: int = 16,
        error_budget: int = 32,
    ) -> None:
        self.model_name = model_name
        self.model_version = model_version
        self._lock = threading.Lock()
        numeric: tuple[NumericProfile, ...] = baseline.numeric if baseline else ()
        categorical: tuple[CategoricalProfile, ...] = baseline.categorical if baseline else ()

        # numeric features: one flat array of bins, feature j owning [offsets[j], offsets[j+1])
        self.numeric_names = tuple(f.name for f in numeric)
        self.numeric_edges = tuple(f.edges for f in numeric)
        self._edges = [f.edges_array() for f in numeric]
        sizes = [f.bin_count for f in numeric]
        self._num_offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.intp)
        width = max((len(e) for e in self.numeric_edges), default=0)
        # For one row all features are binned at once: the first edge >= value is its bin
        # (right-closed bins); padding with +inf makes the open top bin the answer for large values.
        self._padded_edges = np.full((len(numeric), width + 1), np.inf)
        for j, e in enumerate(self._edges):
            self._padded_edges[j, : e.size] = e
        self._row_getter = itemgetter(*self.numeric_names) if len(self.numeric_names) > 1 else None
        self.bins = np.zeros(int(self._num_offsets[-1]), dtype=np.int64)
        self.sums = np.zeros(len(numeric), dtype=np.float64)

        self.categorical_names = tuple(f.name for f in categorical)
        self._encoders = [CategoryEncoder(f.vocabulary, f.rare_values) for f in categorical]
        cat_sizes = [e.size for e in self._encoders]
        self._cat_offsets = np.concatenate(([0], np.cumsum(cat_sizes))).astype(np.intp)
        self.categories = np.zeros(int(self._cat_offsets[-1]), dtype=np.int64)

        self.feature_names = self.numeric_names + self.categorical_names
        self.missing = np.zeros(len(self.feature_names), dtype=np.int64)

        score = baseline.score if baseline else None
        self.score_edges = score.edges if score else DEFAULT_SCORE_EDGES
        self._score_edges = np.asarray(self.score_edges, dtype=np.float64)
        self.score_bins = np.zeros(len(self.score_edges) + 1, dtype=np.int64)
        self.score_sum = 0.0

        self.segment_keys = (ALL, *segments)
        self.segment_labels = [BoundedLabels(1)] + [BoundedLabels(segment_budget) for _ in segments]
        self.segment_labels[0].index(ALL)
        self.decision_labels = BoundedLabels(decision_budget)
        self.predictions = np.zeros((len(self.segment_keys), segment_budget + 1, decision_budget + 1), dtype=np.int64)

        self.duration_bins = np.zeros(len(DURATION_BUCKETS) + 1, dtype=np.int64)
        self.duration_sum = 0.0

        self.errors = BoundedCounter(error_budget)
        self.fallbacks = BoundedCounter(error_budget)
        self.instrumentation_errors = BoundedCounter(error_budget)

    # -- features ---------------------------------------------------------------------------
    def row_values(self, row: Mapping[str, Any]) -> FloatArray:
        """The numeric features of one mapping as a float array (NaN where absent or invalid)."""
        if self._row_getter is not None:
            try:
                values = self._row_getter(row)
            except KeyError:
                values = tuple(row.get(n) for n in self.numeric_names)
        else:
            values = tuple(row.get(n) for n in self.numeric_names)
        try:
            return np.array(values, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            return as_float(np.array(values, dtype=object))

    def add_row(
        self,
        row: Mapping[str, Any],
        score: float | None,
        decision: str | None,
        segments: Sequence[str | None],
        duration: float | None,
    ) -> None:
        """Count one prediction made from one mapping of features: the single-row hot path.

        ``decision=None`` counts the features only (the call raised: no prediction was made).

        All numeric features are binned in one broadcast comparison against the padded edge
        matrix (``argmax`` finds the first edge >= value); scalars (score, latency) use bisect.
        """
        if self.numeric_names:
            x = self.row_values(row)
            finite = np.isfinite(x)
            idx = self._num_offsets[:-1] + (self._padded_edges >= x[:, None]).argmax(axis=1)
        cat_codes = [enc.code(_row_label(row.get(name))) for enc, name in zip(self._encoders, self.categorical_names)]
        dec = -1 if decision is None else self.decision_labels.index(decision)
        seg = [labels.index(value) for labels, value in zip(self.segment_labels[1:], segments)] if dec >= 0 else []
        score_bin = bisect_left(self.score_edges, score) if score is not None and math.isfinite(score) else -1
        with self._lock:
            if self.numeric_names:
                self.bins[idx] += finite
                np.add(self.sums, x, out=self.sums, where=finite)
                self.missing[: x.size] += ~finite
            base = len(self.numeric_names)
            for j, code in enumerate(cat_codes):
                if code == MISSING_CODE:
                    self.missing[base + j] += 1
                else:
                    self.categories[self._cat_offsets[j] + code] += 1
            if score_bin >= 0:
                self.score_bins[score_bin] += 1
                self.score_sum += score  # type: ignore[operator]
            if dec >= 0:
                self.predictions[0, 0, dec] += 1
                for k, s in enumerate(seg, start=1):
                    self.predictions[k, s, dec] += 1
            if duration is not None:
                self.duration_bins[bisect_left(DURATION_BUCKETS, duration)] += 1
                self.duration_sum += duration

    def add_columns(self, columns: Columns) -> None:
        """Count a batch: one sort-based binning per feature column, then one locked add."""
        n = columns.n_rows
        if n == 0:
            return
        bins = np.zeros_like(self.bins)
        sums = np.zeros_like(self.sums)
        missing = np.zeros_like(self.missing)
        for j, (name, edges) in enumerate(zip(self.numeric_names, self._edges)):
            x = columns.floats(name)
            if x is None:
                missing[j] = n
                continue
            lo, hi = self._num_offsets[j], self._num_offsets[j + 1]
            bins[lo:hi], sums[j], n_finite = finite_bin_counts(edges, x)
            missing[j] = x.size - n_finite
        cats = np.zeros_like(self.categories)
        base = len(self.numeric_names)
        for j, (name, enc) in enumerate(zip(self.categorical_names, self._encoders)):
            raw = columns.raw(name)
            if raw is None:
                missing[base + j] = n
                continue
            codes = enc.encode(raw)
            present = codes[codes != MISSING_CODE]
            lo, hi = self._cat_offsets[j], self._cat_offsets[j + 1]
            cats[lo:hi] = np.bincount(present, minlength=hi - lo)
            missing[base + j] = codes.size - present.size
        with self._lock:
            self.bins += bins
            self.sums += sums
            self.missing += missing
            self.categories += cats

    # -- predictions --------------------------------------------------------------------------
    def add_predictions(
        self,
        scores: FloatArray | None,
        decisions: Any,
        segment_values: Sequence[Any],
        n: int,
    ) -> None:
        """Count scores and decisions; ``segment_values[k]`` is the column of segment key k (or None)."""
        if scores is not None and scores.size:
            score_counts, score_sum, _ = finite_bin_counts(self._score_edges, scores)
        else:
            score_counts, score_sum = None, 0.0
        if n == 0:
            return
        dec = (
            np.full(n, self.decision_labels.index(NO_DECISION, n), dtype=np.intp)
            if decisions is None
            else self.decision_labels.encode(decisions)
        )
        width = self.predictions.shape[2]
        grids = []
        for k, labels in enumerate(self.segment_labels):
            if k == 0:
                seg = np.zeros(n, dtype=np.intp)
            else:
                raw = segment_values[k - 1]
                seg = labels.encode(as_labels(raw) if raw is not None else np.full(n, None, dtype=object))
            cells = np.bincount(seg * width + dec, minlength=self.predictions.shape[1] * width)
            grids.append(cells.reshape(self.predictions.shape[1:]))
        with self._lock:
            if score_counts is not None:
                self.score_bins += score_counts
                self.score_sum += score_sum
            for k, grid in enumerate(grids):
                self.predictions[k] += grid

    def add_duration(self, seconds: float) -> None:
        i = bisect_left(DURATION_BUCKETS, seconds)
        with self._lock:
            self.duration_bins[i] += 1
            self.duration_sum += seconds

    def add_error(self, error_type: str) -> None:
        self.errors.add(error_type)

    def add_fallback(self, reason: str) -> None:
        self.fallbacks.add(reason)

    # -- read side ----------------------------------------------------------------------------
    def snapshot(self) -> CountsSnapshot:
        with self._lock:
            bins = self.bins.copy()
            sums = self.sums.copy()
            cats = self.categories.copy()
            missing = self.missing.copy()
            score_bins = self.score_bins.copy()
            score_sum = self.score_sum
            predictions = self.predictions.copy()
            duration_bins = self.duration_bins.copy()
            duration_sum = self.duration_sum
        rows = []
        nonzero = np.argwhere(predictions > 0)
        for k, s, d in nonzero.tolist():
            rows.append(
                (
                    self.segment_keys[k],
                    self.segment_labels[k].label(s),
                    self.decision_labels.label(d),
                    int(predictions[k, s, d]),
                )
            )
        overflow = {
            ATTR_SEGMENT_PREFIX + key: lab.overflow for key, lab in zip(self.segment_keys[1:], self.segment_labels[1:])
        }
        overflow[ATTR_DECISION] = self.decision_labels.overflow
        overflow[ATTR_ERROR_TYPE] = self.errors.labels.overflow
        overflow[ATTR_FALLBACK_REASON] = self.fallbacks.labels.overflow
        for j, (name, enc) in enumerate(zip(self.categorical_names, self._encoders)):
            overflow[ATTR_FEATURE_PREFIX + name] = int(cats[self._cat_offsets[j] + enc.other_code])
        overflow = {k: v for k, v in overflow.items() if v}
        return CountsSnapshot(
            model_name=self.model_name,
            model_version=self.model_version,
            numeric_names=self.numeric_names,
            numeric_edges=self.numeric_edges,
            numeric_bins=_split(bins, self._num_offsets.tolist()),
            numeric_sums=sums,
            categorical_names=self.categorical_names,
            categorical_labels=tuple(enc.labels for enc in self._encoders),
            categorical_bins=_split(cats, self._cat_offsets.tolist()),
            missing=dict(zip(self.feature_names, missing.tolist())),
            score_edges=self.score_edges,
            score_bins=score_bins,
            score_sum=score_sum,
            predictions=tuple(rows),
            duration_edges=DURATION_BUCKETS,
            duration_bins=duration_bins,
            duration_sum=duration_sum,
            errors=self.errors.counts(),
            fallbacks=self.fallbacks.counts(),
            instrumentation_errors=self.instrumentation_errors.counts(),
            overflow=overflow,
        )


def _row_label(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return as_labels([value])[0]  # type: ignore[no-any-return]
