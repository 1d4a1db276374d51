"""Compute every sidecar output of one model for each window, from its totals and snapshots.

For a window, the counts are ``totals - snapshot(now - W)``; the store holds histogram buckets
per bin, so feature and score bins are read off that difference directly. All features of a model go through the drift
statistics in one vectorised call (a features x bins matrix, padded bins contribute nothing).
Drift is controlled per model: the features and the score of a model share one family-wise
alpha (Bonferroni per feature, which pages on the same windows as Holm; see
:mod:`otel_ml.drift._multiplicity`), and ``ml_feature_psi_critical`` is the critical value at
that adjusted level. Segment decision rates are tests too (:mod:`._decisions`); delayed
labels give realised performance and the score bins an estimate before them (:mod:`._performance`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from itertools import chain, islice

import numpy as np
import numpy.typing as npt

from .. import _names as n
from ..drift import (
    DEFAULT_DRIFT_THRESHOLD,
    DEFAULT_WARN_THRESHOLD,
    DecisionSettings,
    DriftResult,
    Multiplicity,
    compare,
    family_alpha,
)
from ._decisions import segment_outputs
from ._model_state import ModelState
from ._performance import estimated_outputs, performance_outputs, reference_performance_gauges
from ._series import Gauge

__all__ = ["model_outputs", "reference_outputs", "OutputSettings"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class OutputSettings:
    alpha: float = 0.005  # family-wise: any feature or the score of one model, per window
    multiplicity: Multiplicity = "holm"  # "per_series": each feature at alpha (before 0.x)
    warn: float = DEFAULT_WARN_THRESHOLD  # PSI business thresholds, the same as the offline report's
    drift: float = DEFAULT_DRIFT_THRESHOLD
    positive_decision: str = "true"  # the decision whose precision/recall is reported
    positive_outcome: str = "true"  # the label value that means "positive"
    decisions: DecisionSettings = field(default_factory=DecisionSettings)

    def drift_alpha(self, state: ModelState) -> float:
        """The per-feature level: ``alpha`` split over the model's features and its score."""
        score = 1 if state.layout.score_buckets.size and state.baseline.score is not None else 0
        return family_alpha(self.alpha, len(state.layout.feature_names) + score, self.multiplicity)


def _compared(
    reference: FloatArray,
    counts: list[FloatArray],
    reference_counts: FloatArray,
    settings: OutputSettings,
    alpha: float,
) -> list[DriftResult]:
    """:func:`compare` of every window's counts in one call (rows are independent, so stacking
    the windows changes no number), split back per window: a third of the calls, whose fixed
    cost dominates at sidecar sizes."""
    rows = reference.shape[0]
    result = compare(
        np.tile(reference, (len(counts), 1)),
        np.vstack(counts),
        np.tile(reference_counts, len(counts)),
        alpha=alpha,
        warn=settings.warn,
        drift=settings.drift,
    )
    return [
        DriftResult(**{f.name: getattr(result, f.name)[w * rows : (w + 1) * rows] for f in fields(DriftResult)})
        for w in range(len(counts))
    ]


def _drift_gauges(
    result: DriftResult, labels: list[dict[str, str]], instruments: tuple[n.Instrument, ...]
) -> Iterator[Gauge]:
    psi, crit, js, pvalue, status, count = instruments
    columns = [
        (inst, values.tolist())
        for inst, values in (
            (psi, result.psi),
            (crit, result.psi_critical),
            (js, result.js_distance),
            (pvalue, result.pvalue),
        )
    ]
    for i, (c, st) in enumerate(zip(result.count.tolist(), result.status.tolist())):
        yield count, labels[i], float(c)
        yield status, labels[i], float(st)
        for inst, values in columns:
            if values[i] == values[i]:  # not NaN: "no data" has no statistic
                yield inst, labels[i], values[i]


FEATURE_DRIFT = (
    n.FEATURE_PSI,
    n.FEATURE_PSI_CRITICAL,
    n.FEATURE_JS_DISTANCE,
    n.FEATURE_DRIFT_PVALUE,
    n.FEATURE_DRIFT_STATUS,
    n.FEATURE_WINDOW_COUNT,
)
SCORE_DRIFT = (
    n.SCORE_PSI,
    n.SCORE_PSI_CRITICAL,
    n.SCORE_JS_DISTANCE,
    n.SCORE_DRIFT_PVALUE,
    n.SCORE_DRIFT_STATUS,
    n.SCORE_WINDOW_COUNT,
)


def _feature_outputs(
    state: ModelState, deltas: list[FloatArray], bases: list[dict[str, str]], settings: OutputSettings
) -> list[list[Gauge]]:
    """Per window: the drift gauges of every feature and of the score, and the missing and
    unknown-category shares."""
    layout = state.layout
    alpha = settings.drift_alpha(state)
    split = [layout.counts(delta) for delta in deltas]
    names = layout.feature_names
    drift = (
        _compared(layout.reference_matrix, [c for c, _ in split], layout.reference_counts, settings, alpha)
        if names
        else [None] * len(deltas)
    )
    score = state.baseline.score if layout.score_buckets.size else None
    score_drift = (
        _compared(
            score.fractions_array()[None, :],
            [np.clip(delta[layout.score_buckets], 0.0, None)[None, :] for delta in deltas],
            np.asarray([float(score.count)]),
            settings,
            alpha,
        )
        if score is not None
        else [None] * len(deltas)
    )
    out: list[list[Gauge]] = []
    for (counts, missing), base, result, score_result in zip(split, bases, drift, score_drift):
        labels = [{**base, n.LABEL_FEATURE: name} for name in names]
        gauges = [] if result is None else list(_drift_gauges(result, labels, FEATURE_DRIFT))
        seen = counts.sum(axis=1)
        total = seen + missing
        ratios = np.divide(missing, total, out=np.full_like(total, np.nan), where=total > 0).tolist()
        gauges += [(n.FEATURE_MISSING_RATIO, labels[i], r) for i, r in enumerate(ratios) if r == r]
        first = layout.n_numeric
        for j, column in enumerate(layout.unknown_column.tolist()):
            if seen[first + j] > 0:
                unknown = float(counts[first + j, column] / seen[first + j])
                gauges.append((n.FEATURE_UNKNOWN_RATIO, labels[first + j], unknown))
        if score_result is not None:
            gauges += _drift_gauges(score_result, [base], SCORE_DRIFT)
        out.append(gauges)
    return out


def model_outputs(state: ModelState, now: float, settings: OutputSettings) -> list[Gauge]:
    """Every windowed gauge of one model version.

    The series budget bounds the output too: per window, segment and performance gauges stop at
    ``max_series`` (in segment order), so a flood of segment keys cannot blow up ``/metrics``."""
    out: list[Gauge] = []
    totals = state.current_totals()
    windows = [(window, ring, *ring.window(now, totals)) for window, ring in state.rings.items()]
    bases = [
        {n.LABEL_MODEL_NAME: state.model, n.LABEL_MODEL_VERSION: state.version, n.LABEL_WINDOW: window}
        for window, *_ in windows
    ]
    features = _feature_outputs(state, [delta for _, _, delta, _ in windows], bases, settings)
    for (_, ring, delta, previous), base, feature_gauges in zip(windows, bases, features):
        out.extend(feature_gauges)
        segments = segment_outputs(state, delta, previous, ring.pooled(now, totals), base, settings.decisions)
        realised = list(performance_outputs(state, delta, base, settings.positive_decision, settings.positive_outcome))
        out.extend(islice(chain(segments, realised), state.max_series))
        out.extend(estimated_outputs(state, delta, base, _overall(realised)))
    return out


_REALISED_OVERALL = {
    n.ONLINE_ROC_AUC: "roc_auc",
    n.ONLINE_PRECISION: "precision",
    n.ONLINE_RECALL: "recall",
    n.ONLINE_F1: "f1",
    n.ONLINE_ACCURACY: "accuracy",
}


def _overall(gauges: list[Gauge]) -> dict[str, float]:
    """The realised metrics of the ``__all__`` segment at the served rule, by ``ml_metric`` name."""
    out = {}
    for inst, labels, value in gauges:
        metric = _REALISED_OVERALL.get(inst)
        if (
            metric is not None
            and labels.get(n.LABEL_SEGMENT_KEY) == n.ALL
            and labels.get(n.LABEL_THRESHOLD, n.THRESHOLD_SERVED) == n.THRESHOLD_SERVED
        ):
            out[metric] = value
    return out


def _bin_labels(edges: tuple[float, ...]) -> list[dict[str, str]]:
    return [{n.LABEL_BIN_UPPER: u, n.LABEL_BIN_LOWER: lo} for u, lo in n.bin_bounds(edges)]


def reference_outputs(state: ModelState) -> list[Gauge]:
    """The baseline as gauges: bin fractions (for PromQL PSI) and missing shares. No window."""
    if state.reference_gauges is None:
        state.reference_gauges = _reference_gauges(state)
    return state.reference_gauges


def _reference_gauges(state: ModelState) -> list[Gauge]:
    base = {n.LABEL_MODEL_NAME: state.model, n.LABEL_MODEL_VERSION: state.version}
    out: list[Gauge] = []
    for f in state.baseline.numeric:
        for labels, fraction in zip(_bin_labels(f.edges), f.fractions):
            out.append((n.FEATURE_REFERENCE_RATIO, {**base, n.LABEL_FEATURE: f.name, **labels}, fraction))
    for c in state.baseline.categorical:
        for label, fraction in zip(c.bin_labels, c.fractions_array().tolist()):
            out.append(
                (n.FEATURE_REFERENCE_RATIO, {**base, n.LABEL_FEATURE: c.name, n.LABEL_CATEGORY: label}, fraction)
            )
    for feature in state.baseline.features:
        out.append(
            (n.FEATURE_REFERENCE_MISSING_RATIO, {**base, n.LABEL_FEATURE: feature.name}, feature.missing_fraction)
        )
    score = state.baseline.score
    if score is not None:
        for labels, fraction in zip(_bin_labels(score.edges), score.fractions):
            out.append((n.SCORE_REFERENCE_RATIO, {**base, **labels}, fraction))
    out.extend(reference_performance_gauges(state, base))
    return out
