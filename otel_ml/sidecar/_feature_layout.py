"""Where a baseline's series sit in a model's totals vector, as matrices for the drift statistics.

The series the baseline implies (feature buckets, categories, missing, score buckets) are
allocated up front in a known order, so a window's feature bins are one fancy index of a
vector difference: :meth:`FeatureLayout.counts` gives every feature's window counts at once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from .. import _names as n
from .._binning import DEFAULT_SCORE_EDGES
from .._label_hygiene import label_value
from .._names import DURATION_BUCKETS, LABEL_DELAY_BUCKETS, SHADOW_DIFFERENCE_BUCKETS, le_labels
from ..baseline import Baseline
from ._series import Labels, SeriesKey
from ._series_index import DELAY_SCOPE, DURATION_SCOPE, SCORE_SCOPE, SHADOW_SCOPE, SeriesIndex

__all__ = ["FeatureLayout", "NumericLayout", "CategoricalLayout", "exposition_safe"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]


@dataclass(frozen=True)
class NumericLayout:
    name: str
    buckets: IntArray  # indices of the per-bin _bucket series in le order, +Inf last
    missing: int
    reference: FloatArray
    reference_count: int


@dataclass(frozen=True)
class CategoricalLayout:
    name: str
    labels: tuple[str, ...]
    bins: IntArray
    missing: int
    reference: FloatArray
    reference_count: int


def _labels(**pairs: str) -> Labels:
    return tuple(sorted(pairs.items()))


def exposition_safe(baseline: Baseline) -> Baseline:
    """The baseline with feature names made label-safe: they become ``ml_feature`` values here,
    and the app sends them made safe the same way (a lone surrogate would fail every /metrics)."""
    if all(label_value(f.name) == f.name for f in baseline.features):
        return baseline
    features = tuple(replace(f, name=label_value(f.name)) for f in baseline.features)
    return replace(baseline, features=features)


def _numeric(baseline: Baseline, series: SeriesIndex) -> list[NumericLayout]:
    out = []
    for f in baseline.numeric:
        les = le_labels(f.edges)
        series.allowed_le[f.name] = frozenset(les)  # before the buckets: their histogram group counts them
        buckets = [
            series.add(SeriesKey(n.FEATURE_VALUE.bucket_series, _labels(le=le, ml_feature=f.name))) for le in les
        ]
        missing = series.add(SeriesKey(n.FEATURE_MISSING.series, _labels(ml_feature=f.name)))
        out.append(NumericLayout(f.name, np.asarray(buckets, dtype=np.intp), missing, f.fractions_array(), f.count))
    return out


def _categorical(baseline: Baseline, series: SeriesIndex) -> list[CategoricalLayout]:
    out = []
    for c in baseline.categorical:
        series.categories[c.name] = frozenset(c.bin_labels)
        bins = [
            series.add(SeriesKey(n.FEATURE_CATEGORY.series, _labels(ml_category=lab, ml_feature=c.name)))
            for lab in c.bin_labels
        ]
        missing = series.add(SeriesKey(n.FEATURE_MISSING.series, _labels(ml_feature=c.name)))
        out.append(
            CategoricalLayout(
                c.name, c.bin_labels, np.asarray(bins, dtype=np.intp), missing, c.fractions_array(), c.count
            )
        )
    return out


def _score_buckets(baseline: Baseline, series: SeriesIndex) -> IntArray:
    score = baseline.score
    les = le_labels(score.edges if score else DEFAULT_SCORE_EDGES)  # the app's own buckets either way
    series.allowed_le[SCORE_SCOPE] = frozenset(les)
    if score is None:
        return np.empty(0, dtype=np.intp)
    buckets = [series.add(SeriesKey(n.PREDICTION_SCORE.bucket_series, _labels(le=le))) for le in les]
    return np.asarray(buckets, dtype=np.intp)


class FeatureLayout:
    """The baseline's series, allocated in ``series`` in a fixed order, and their index matrices.

    Rows of :attr:`feature_index` pad with -1, which points at a zero appended to the delta
    vector; the store holds per-bin counts, so one fancy index gives every feature's bins.
    """

    def __init__(self, baseline: Baseline, series: SeriesIndex) -> None:
        self.numeric = _numeric(baseline, series)
        self.categorical = _categorical(baseline, series)
        self.score_buckets = _score_buckets(baseline, series)
        series.allowed_le[DURATION_SCOPE] = frozenset(le_labels(DURATION_BUCKETS))
        series.allowed_le[DELAY_SCOPE] = frozenset(le_labels(LABEL_DELAY_BUCKETS))
        series.allowed_le[SHADOW_SCOPE] = frozenset(le_labels(SHADOW_DIFFERENCE_BUCKETS))
        rows = [f.buckets for f in self.numeric] + [c.bins for c in self.categorical]
        width = max((r.size for r in rows), default=1)
        self.feature_names = tuple(f.name for f in self.numeric) + tuple(c.name for c in self.categorical)
        self.n_numeric = len(self.numeric)
        index = np.full((len(rows), width), -1, dtype=np.intp)
        reference = np.zeros((len(rows), width))
        layouts: list[NumericLayout | CategoricalLayout] = [*self.numeric, *self.categorical]
        for i, (r, layout) in enumerate(zip(rows, layouts)):
            index[i, : r.size] = r
            reference[i, : layout.reference.size] = layout.reference
        self.feature_index = index
        self.reference_matrix = reference
        self.reference_counts = np.asarray([f.reference_count for f in layouts], dtype=np.float64)
        self.missing_index = np.asarray([f.missing for f in layouts], dtype=np.intp)
        self.unknown_column = np.asarray([c.bins.size - 1 for c in self.categorical], dtype=np.intp)

    def counts(self, delta: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Window counts as a features x bins matrix (numeric rows first) and missing per feature."""
        extended = np.append(delta, 0.0)
        counts = extended[self.feature_index]
        return np.clip(counts, 0.0, None), np.clip(extended[self.missing_index], 0.0, None)
