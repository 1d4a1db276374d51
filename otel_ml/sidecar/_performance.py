"""Performance gauges of one model and window: realised from joined labels, estimated before them.

Realised metrics come from the window's join-time counters (:mod:`._outcomes`): the labelled
score histogram per outcome gives per-bin positives and negatives for ROC AUC and the precision
/ recall / F1 curve at every score edge; per-bin score sums give the calibration error; the sums
give Brier score and log loss; the decision counter gives the served rule exactly. Estimated
metrics (CBPE) put the window's score-bin counts through the baseline's calibration. The maths
is :mod:`otel_ml.evaluation`; this module only reads the counts out of the model's vector, one
segments x bins matrix per window, so every segment is one vectorised call.

Per-edge curves are emitted for the overall ``__all__`` segment only: edges x segments x windows
would spend the series budget on numbers nobody plots (the recording rules give any segment's).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

from .. import _names as n
from .. import evaluation as ev
from .._names import le_labels
from ._decisions import grouped
from ._model_state import ModelState
from ._series import Gauge

__all__ = ["performance_outputs", "estimated_outputs", "reference_performance_gauges", "is_probability"]

FloatArray = npt.NDArray[np.float64]
_Segment = tuple[str, str]
_ALL: _Segment = (n.ALL, n.ALL)
_SEGMENT_LABELS = (n.LABEL_SEGMENT_KEY, n.LABEL_SEGMENT)


def is_probability(state: ModelState) -> bool:
    """Calibration metrics need a probability: the baseline's score edges all lie in [0, 1]."""
    score = state.baseline.score
    return score is not None and all(0.0 <= e <= 1.0 for e in score.edges)


class _Matrix:
    """Per segment, one row of per-bin values read from the window's delta."""

    def __init__(self, bins: int) -> None:
        self.bins = bins
        self.rows: dict[_Segment, FloatArray] = {}

    def add(self, segment: _Segment, column: int, value: float) -> None:
        row = self.rows.get(segment)
        if row is None:
            row = self.rows[segment] = np.zeros(self.bins)
        row[column] += max(value, 0.0)

    def of(self, segments: list[_Segment]) -> FloatArray:
        zero = np.zeros(self.bins)
        return np.stack([self.rows.get(s, zero) for s in segments]) if segments else np.zeros((0, self.bins))


def _segment(labels: dict[str, str]) -> _Segment:
    return labels.get(n.LABEL_SEGMENT_KEY, ""), labels.get(n.LABEL_SEGMENT, "")


def _per_segment(state: ModelState, name: str, delta: FloatArray) -> dict[_Segment, float]:
    """Window sum per (segment key, segment) of a counter family without further labels."""
    return {(k[0], k[1]): v.get("", 0.0) for k, v in grouped(state, name, delta, _SEGMENT_LABELS, "").items()}


def _served(
    state: ModelState, delta: FloatArray, positive_decision: str, positive_outcome: str
) -> dict[_Segment, list[float]]:
    """(tp, fp, fn, tn) per segment from the decision counter: the served rule, exactly."""
    cells: dict[_Segment, list[float]] = {}
    for i, labels in state.series_of(n.OUTCOMES.series):
        d = dict(labels)
        predicted = d.get(n.LABEL_DECISION) == positive_decision
        actual = d.get(n.LABEL_OUTCOME) == positive_outcome
        cell = cells.setdefault(_segment(d), [0.0, 0.0, 0.0, 0.0])
        cell[{(True, True): 0, (True, False): 1, (False, True): 2, (False, False): 3}[(predicted, actual)]] += max(
            float(delta[i]), 0.0
        )
    return cells


def performance_outputs(
    state: ModelState, delta: FloatArray, base: dict[str, str], positive_decision: str, positive_outcome: str
) -> Iterator[Gauge]:
    """Realised gauges per segment (and the per-edge curve for ``__all__``)."""
    served = _served(state, delta, positive_decision, positive_outcome)
    score = state.baseline.score
    les = le_labels(score.edges) if score is not None else ()
    column = {le: j for j, le in enumerate(les)}
    positives, negatives, sums = _Matrix(len(les)), _Matrix(len(les)), _Matrix(len(les))
    for i, labels in state.series_of(n.LABELLED_SCORE.bucket_series):
        d = dict(labels)
        j = column.get(d.get(n.LABEL_LE, ""))
        if j is not None:
            target = positives if d.get(n.LABEL_OUTCOME) == positive_outcome else negatives
            target.add(_segment(d), j, float(delta[i]))
    for i, labels in state.series_of(n.LABELLED_SCORE_BIN_SUM.series):
        d = dict(labels)
        j = column.get(d.get(n.LABEL_BIN_UPPER, ""))
        if j is not None:
            sums.add(_segment(d), j, float(delta[i]))
    segments = sorted(set(served) | set(positives.rows) | set(negatives.rows))
    if not segments:
        return
    pos, neg = positives.of(segments), negatives.of(segments)
    probability = is_probability(state)
    squared = _per_segment(state, n.OUTCOME_SQUARED_ERROR.series, delta)
    log_loss = _per_segment(state, n.OUTCOME_LOG_LOSS.series, delta)
    confusion = np.asarray([served.get(s, [0.0] * 4) for s in segments]).reshape(len(segments), 4)
    realised = ev.realised_metrics(
        pos,
        neg,
        score_sums=sums.of(segments) if probability else None,
        squared_error_sum=np.asarray([squared.get(s, 0.0) for s in segments]) if probability else None,
        log_loss_sum=np.asarray([log_loss.get(s, 0.0) for s in segments]) if probability else None,
        served=ev.Confusion(*confusion.T),
    )
    by_segment: list[tuple[n.Instrument, object]] = [
        (n.ONLINE_ROC_AUC, realised.roc_auc),
        (n.ONLINE_CALIBRATION_ERROR, realised.calibration_error),
        (n.ONLINE_BRIER, realised.brier_score),
        (n.ONLINE_LOG_LOSS, realised.log_loss),
    ]
    assert realised.served is not None
    served_metrics = [
        (n.ONLINE_PRECISION, realised.served.precision),
        (n.ONLINE_RECALL, realised.served.recall),
        (n.ONLINE_F1, realised.served.f1),
    ]
    for k, segment in enumerate(segments):
        out = {**base, n.LABEL_SEGMENT_KEY: segment[0], n.LABEL_SEGMENT: segment[1]}
        yield n.ONLINE_LABEL_COUNT, out, float(confusion[k].sum())
        yield from _finite(n.ONLINE_ACCURACY, out, realised.served.accuracy, k)
        for inst, values in by_segment:
            yield from _finite(inst, out, values, k)
        served_labels = {**out, n.LABEL_THRESHOLD: n.THRESHOLD_SERVED}
        for inst, values in served_metrics:
            yield from _finite(inst, served_labels, values, k)
        if segment == _ALL:
            yield from _curve(out, les, realised.curve, k)


def _finite(inst: n.Instrument, labels: dict[str, str], values: object, k: int) -> Iterator[Gauge]:
    """One segment's value, if there is one: NaN (a zero denominator) and None give no sample."""
    if values is None:
        return
    value = float(np.asarray(values).reshape(-1)[k])
    if value == value:
        yield inst, labels, value


def _curve(labels: dict[str, str], les: tuple[str, ...], curve: ev.ThresholdCurve, k: int) -> Iterator[Gauge]:
    for inst, values in (
        (n.ONLINE_PRECISION, curve.precision),
        (n.ONLINE_RECALL, curve.recall),
        (n.ONLINE_F1, curve.f1),
    ):
        row = np.asarray(values)[k].tolist()
        for le, value in zip(les[:-1], row):
            if value == value:
                yield inst, {**labels, n.LABEL_THRESHOLD: le}, value


_ESTIMATES = (
    ("roc_auc", n.ESTIMATED_ROC_AUC),
    ("precision", n.ESTIMATED_PRECISION),
    ("recall", n.ESTIMATED_RECALL),
    ("f1", n.ESTIMATED_F1),
    ("accuracy", n.ESTIMATED_ACCURACY),
)


def estimated_outputs(
    state: ModelState, delta: FloatArray, base: dict[str, str], realised: dict[str, float]
) -> Iterator[Gauge]:
    """CBPE from the window's score bins, the reference band at its size, and the gap to ``realised``."""
    score = state.baseline.score
    if score is None or score.calibration is None or not state.layout.score_buckets.size:
        return
    counts = np.clip(delta[state.layout.score_buckets], 0.0, None)
    total = float(counts.sum())
    if total <= 0:
        return
    estimate = ev.estimate_performance(counts, score.calibration_array(), score.first_positive_bin)
    reference = score.performance
    for metric, inst in _ESTIMATES:
        value = getattr(estimate, metric)
        if value is None or value != value:
            continue
        yield inst, base, float(value)
        labels = {**base, n.LABEL_METRIC: metric}
        if reference is not None and metric in reference.value:
            lower, upper = ev.reference_band(
                reference.value[metric], reference.stddev[metric], reference.chunk_size, total, score.labelled_count
            )
            if lower == lower:
                yield n.REFERENCE_BAND_LOWER, labels, float(lower)
                yield n.REFERENCE_BAND_UPPER, labels, float(upper)
        if metric in realised:
            yield n.ESTIMATED_VS_REALISED_GAP, labels, float(value) - realised[metric]


def reference_performance_gauges(state: ModelState, base: dict[str, str]) -> Iterator[Gauge]:
    """The baseline's calibration per score bin and its reference performance (no window)."""
    score = state.baseline.score
    if score is None:
        return
    bounds = [
        {**base, n.LABEL_BIN_UPPER: upper, n.LABEL_BIN_LOWER: lower} for upper, lower in n.bin_bounds(score.edges)
    ]
    if score.calibration is not None:
        for labels, q in zip(bounds, score.calibration):
            yield n.SCORE_REFERENCE_POSITIVE_RATIO, labels, float(q)
    first = score.first_positive_bin
    if first is not None:  # the served rule per bin, for the PromQL estimate of precision and recall
        for k, labels in enumerate(bounds):
            yield n.SCORE_REFERENCE_POSITIVE_DECISION, labels, 1.0 if k >= first else 0.0
    if score.performance is not None:
        p = score.performance
        yield n.REFERENCE_CHUNK, base, float(p.chunk_size)
        yield n.REFERENCE_LABELLED, base, float(score.labelled_count)
        for metric, value in p.value.items():
            yield n.REFERENCE_PERFORMANCE, {**base, n.LABEL_METRIC: metric}, float(value)
            yield n.REFERENCE_PERFORMANCE_STDDEV, {**base, n.LABEL_METRIC: metric}, float(p.stddev[metric])
