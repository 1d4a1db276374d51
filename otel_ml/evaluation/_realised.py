"""Realised performance from labelled counts: pure numpy, no I/O, mergeable inputs only.

Every function takes counts that replicas can sum (per score bin positives ``P_b`` and
negatives ``N_b``, per-bin score sums ``S_b``, the served rule's confusion counts, sums of
squared error and log loss), never per-replica scores: the sum of two replicas' counts gives the
metrics of the union, which averaging per-replica AUCs does not (NannyML#241).

Bins sit on the last axis: a 1-D array is one population and gives a ``float``; a segments x bins
array gives one value per segment in one call. Bins are right-closed, as ``le`` counts them,
so the cumulative positives at edge ``t`` are ``C+(t)`` and ``score > t`` is predicted positive.
Every ratio guards its denominator: NaN, meaning "no sample", where it is 0, and never a
division warning; the sidecar drops NaN instead of exporting it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = [
    "Confusion",
    "ConfusionMetrics",
    "RealisedMetrics",
    "ThresholdCurve",
    "calibration_error",
    "guarded_ratio",
    "confusion_at_bin",
    "confusion_metrics",
    "mean_loss",
    "realised_metrics",
    "roc_auc",
    "threshold_curve",
]

FloatArray = npt.NDArray[np.float64]
Stat = float | FloatArray
"""A ``float`` for one population (1-D bins), an array with one value per row otherwise."""


class Confusion(NamedTuple):
    """Confusion counts (scalars or arrays of one shape): true/false positives and negatives."""

    tp: Any
    fp: Any
    fn: Any
    tn: Any


class ConfusionMetrics(NamedTuple):
    """Precision, recall, F1 and accuracy of one decision rule; NaN where undefined."""

    precision: Stat
    recall: Stat
    f1: Stat
    accuracy: Stat


class ThresholdCurve(NamedTuple):
    """Precision, recall and F1 at every finite score edge (last axis: the ``bins - 1`` edges).

    At edge ``j`` the rule is ``score > edges[j]``: bins ``j+1 ..`` are predicted positive.
    """

    precision: FloatArray
    recall: FloatArray
    f1: FloatArray


class RealisedMetrics(NamedTuple):
    """Everything the labelled counters give for one window (see :func:`realised_metrics`)."""

    labels: Stat
    roc_auc: Stat
    curve: ThresholdCurve
    calibration_error: Stat | None
    brier_score: Stat | None
    log_loss: Stat | None
    served: ConfusionMetrics | None


# ---------------------------------------------------------------------------------------------
# helpers


def _counts(values: Any, what: str) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim < 1 or arr.shape[-1] == 0:
        raise ValueError(f"{what}: expected an array with the bins on its last axis")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{what}: counts must be finite and >= 0")
    return arr


def _pair(positives: Any, negatives: Any) -> tuple[FloatArray, FloatArray]:
    pos = _counts(positives, "positives")
    neg = _counts(negatives, "negatives")
    if pos.shape != neg.shape:
        raise ValueError(f"positives have shape {pos.shape}, negatives {neg.shape}")
    return pos, neg


def guarded_ratio(numerator: Any, denominator: Any) -> FloatArray:
    """``numerator / denominator`` with NaN where the denominator is not > 0, silently."""
    num = np.asarray(numerator, dtype=np.float64)
    den = np.asarray(denominator, dtype=np.float64)
    out = np.full(np.broadcast_shapes(num.shape, den.shape), np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _out(values: FloatArray) -> Stat:
    return float(values) if values.ndim == 0 else values


# ---------------------------------------------------------------------------------------------
# metrics


def roc_auc(positives: Any, negatives: Any) -> Stat:
    """ROC AUC on bins: Mann-Whitney with ties (same bin) counted half.

    ``sum_b N_b (P - C+_b + P_b / 2) / (P N)``, where ``P - C+_b`` are the positives in bins above
    ``b``: the chance that a random positive sits in a higher bin than a random negative, plus half
    the chance they share one. Equals the exact AUC of the scores replaced by their bin index;
    NaN without a positive or without a negative.
    """
    pos, neg = _pair(positives, negatives)
    p, n = pos.sum(axis=-1), neg.sum(axis=-1)
    above = p[..., None] - np.cumsum(pos, axis=-1)
    wins = np.sum(neg * (above + 0.5 * pos), axis=-1)
    return _out(guarded_ratio(wins, p * n))


def confusion_metrics(confusion: Confusion) -> ConfusionMetrics:
    """Precision ``TP/(TP+FP)``, recall ``TP/(TP+FN)``, F1 ``2TP/(2TP+FP+FN)``, accuracy ``(TP+TN)/n``.

    F1 uses the count form (as scikit-learn >= 1.3 does), so it is 0, not undefined, when nothing
    is predicted positive but positives exist.
    """
    tp, fp, fn, tn = (np.asarray(c, dtype=np.float64) for c in confusion)
    return ConfusionMetrics(
        precision=_out(guarded_ratio(tp, tp + fp)),
        recall=_out(guarded_ratio(tp, tp + fn)),
        f1=_out(guarded_ratio(2.0 * tp, 2.0 * tp + fp + fn)),
        accuracy=_out(guarded_ratio(tp + tn, tp + fp + fn + tn)),
    )


def confusion_at_bin(positives: Any, negatives: Any, first_positive_bin: int) -> Confusion:
    """Confusion counts of the rule "bins ``first_positive_bin ..`` are predicted positive".

    With ``first_positive_bin = j + 1`` this is ``score > edges[j]``; 0 predicts everything
    positive, ``bins`` nothing.
    """
    pos, neg = _pair(positives, negatives)
    bins = pos.shape[-1]
    if not 0 <= first_positive_bin <= bins:
        raise ValueError(f"first_positive_bin must be in [0, {bins}], got {first_positive_bin}")
    k = first_positive_bin
    tp, fp = pos[..., k:].sum(axis=-1), neg[..., k:].sum(axis=-1)
    fn, tn = pos[..., :k].sum(axis=-1), neg[..., :k].sum(axis=-1)
    return Confusion(tp, fp, fn, tn)


def threshold_curve(positives: Any, negatives: Any) -> ThresholdCurve:
    """Precision, recall and F1 at every finite edge: ``TP = P - C+(t)``, ``FP = N - C-(t)``, ``FN = C+(t)``."""
    pos, neg = _pair(positives, negatives)
    c_pos = np.cumsum(pos, axis=-1)[..., :-1]
    c_neg = np.cumsum(neg, axis=-1)[..., :-1]
    p, n = pos.sum(axis=-1, keepdims=True), neg.sum(axis=-1, keepdims=True)
    tp, fp, fn = p - c_pos, n - c_neg, c_pos
    return ThresholdCurve(
        precision=guarded_ratio(tp, tp + fp),
        recall=guarded_ratio(tp, tp + fn),
        f1=guarded_ratio(2.0 * tp, 2.0 * tp + fp + fn),
    )


def calibration_error(positives: Any, negatives: Any, score_sums: Any) -> Stat:
    """Expected calibration error on the score bins: ``sum_b |S_b - P_b| / n``.

    ``S_b`` is the sum of the scores in bin ``b`` and ``P_b`` its positives, so each bin adds its
    share ``n_b / n`` times ``|mean score - positive rate|``.
    """
    pos, neg = _pair(positives, negatives)
    sums = np.asarray(score_sums, dtype=np.float64)
    if sums.shape != pos.shape or not np.all(np.isfinite(sums)):
        raise ValueError(f"score_sums: expected finite values of shape {pos.shape}")
    return _out(guarded_ratio(np.abs(sums - pos).sum(axis=-1), (pos + neg).sum(axis=-1)))


def mean_loss(loss_sum: Any, count: Any) -> Stat:
    """A summed loss over its count: Brier score from the squared-error sum, log loss from its sum."""
    return _out(guarded_ratio(loss_sum, count))


def realised_metrics(
    positives: Any,
    negatives: Any,
    *,
    score_sums: Any = None,
    squared_error_sum: Any = None,
    log_loss_sum: Any = None,
    served: Confusion | None = None,
) -> RealisedMetrics:
    """All realised metrics of a window from its labelled counters; absent inputs give None.

    ``served`` is the decision counter's exact confusion counts (independent of the bins, so a
    rule that is not a score edge is still exact).
    """
    pos, neg = _pair(positives, negatives)
    n = (pos + neg).sum(axis=-1)
    return RealisedMetrics(
        labels=_out(n),
        roc_auc=roc_auc(pos, neg),
        curve=threshold_curve(pos, neg),
        calibration_error=None if score_sums is None else calibration_error(pos, neg, score_sums),
        brier_score=None if squared_error_sum is None else mean_loss(squared_error_sum, n),
        log_loss=None if log_loss_sum is None else mean_loss(log_loss_sum, n),
        served=None if served is None else confusion_metrics(served),
    )
