"""Delayed labels become counters: a joined label is counted per model, version and segment.

When a label meets its prediction (from the join store, a signed token or the label event
itself), the sidecar counts, per segment key/segment (and the overall ``__all__``) and label
value: the score histogram by outcome (the baseline's score edges; per-bin counts, like every
stored histogram), the scores' sum per bin (calibration error), the served rule's confusion
counts, and the squared-error and log-loss sums (exact); per model, the label delay histogram.
These are counts Prometheus can sum across sidecars and evaluate over any window, the same
counts the sidecar's own gauges are computed from (``_performance``). A label that joins a
primary's and a shadow's prediction of one request also counts the pair by who was right
(:func:`pair_samples`), McNemar's discordant cells for the version verdict.
Squared error, log loss and bin sums need a probability: scores outside [0, 1] count only in the
histogram and the confusion counts.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .. import _names as n
from .._label_hygiene import MAX_LABEL_VALUE_CHARS, label_value
from ._series import Labels, Prediction, RawSample

__all__ = [
    "JoinedLabel",
    "OutcomeCounts",
    "OutcomeVocabulary",
    "pair_samples",
    "normalize_outcome",
    "describe_kind",
    "LOG_LOSS_EPSILON",
]

_TRUE = {"true", "1", "yes", "y", "positive", "pos", "fraud"}
_FALSE = {"false", "0", "no", "n", "negative", "neg", "legit"}
LOG_LOSS_EPSILON = 1e-15  # probabilities are clipped to [eps, 1 - eps], as sklearn's log_loss does
_DELAY_LE = n.le_labels(n.LABEL_DELAY_BUCKETS)


def normalize_outcome(value: Any) -> str:
    """``true``/``false`` for booleans, 0/1 and their usual spellings; other strings as given.

    Anything else (null, an object or list, NaN, another number, an empty or over-long string)
    is a ``ValueError``: a label must be a value, not something that merely prints as one.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if value in (0, 1):
            return "true" if value else "false"
        raise ValueError("a numeric label must be 0 or 1")
    if not isinstance(value, str):
        raise ValueError(f"expected a string, boolean or 0/1, got {describe_kind(value)}")
    text = value.strip()
    if text.lower() in _TRUE:
        return "true"
    if text.lower() in _FALSE:
        return "false"
    if not text or len(text) > MAX_LABEL_VALUE_CHARS:
        raise ValueError("a label must be a non-empty string of at most 256 characters")
    return label_value(text)


def describe_kind(value: Any) -> str:
    return {type(None): "null", dict: "an object", list: "a list"}.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class OutcomeVocabulary:
    """The label values the sidecar accepts: the configured positive and negative outcome and the
    usual boolean spellings of each (``true``/``1``/``yes`` ... map to the positive one); with
    ``multiclass``, any other value too, as a class of its own (one-vs-rest against ``positive``;
    the label budget bounds how many). Binary by default, so a typo is a 400, not a new class."""

    positive: str
    negative: str
    multiclass: bool = False

    def canonical(self, text: str) -> str | None:
        if text in (self.positive, self.negative):
            return text
        low = text.lower()
        if low in _TRUE:
            return self.positive
        if low in _FALSE:
            return self.negative
        return text if self.multiclass else None


@dataclass(frozen=True)
class JoinedLabel:
    """A label that found its prediction; ``label_time`` in Unix seconds."""

    prediction: Prediction
    outcome: str
    label_time: float


class OutcomeCounts:
    """Delta samples of one model version's join-time counters, for a batch of joined labels.

    Samples are summed per series before they are returned, and a histogram touched at all gets
    every bucket (zeros included), so the model state applies it whole: a batch of 1,000 labels
    is a few hundred samples, not tens of thousands."""

    def __init__(self, score_edges: tuple[float, ...] | None, positive_outcome: str) -> None:
        self.edges = score_edges or ()
        self.les = n.le_labels(self.edges) if score_edges is not None else ()
        self.positive = positive_outcome

    def samples(self, joined: Iterable[JoinedLabel]) -> list[RawSample]:
        acc: dict[tuple[str, Labels], float] = {}
        touched: set[tuple[str, Labels, tuple[str, ...]]] = set()
        for item in joined:
            self._count(acc, touched, item)
        for name, labels, bounds in touched:  # once per histogram of the batch, not once per label
            for bound in bounds:
                acc.setdefault((name, (*labels, (n.LABEL_LE, bound))), 0.0)
        return [(name, labels, value) for (name, labels), value in acc.items()]

    def _count(
        self,
        acc: dict[tuple[str, Labels], float],
        touched: set[tuple[str, Labels, tuple[str, ...]]],
        item: JoinedLabel,
    ) -> None:
        p = item.prediction
        score = p.score if p.score is not None and math.isfinite(p.score) else None
        probability = score is not None and 0.0 <= score <= 1.0
        y = 1.0 if item.outcome == self.positive else 0.0
        decision = p.decision or "none"
        le = self.les[bisect_left(self.edges, score)] if score is not None and self.les else None
        for key, segment in ((n.ALL, n.ALL), *p.segments):
            seg = ((n.LABEL_SEGMENT_KEY, key), (n.LABEL_SEGMENT, segment))
            _add(acc, n.OUTCOMES.series, (*seg, (n.LABEL_DECISION, decision), (n.LABEL_OUTCOME, item.outcome)), 1.0)
            if le is None or score is None:
                continue
            by_outcome = (*seg, (n.LABEL_OUTCOME, item.outcome))
            _add(acc, n.LABELLED_SCORE.bucket_series, (*by_outcome, (n.LABEL_LE, le)), 1.0)
            touched.add((n.LABELLED_SCORE.bucket_series, by_outcome, self.les))
            _add(acc, n.LABELLED_SCORE.count_series, by_outcome, 1.0)
            _add(acc, n.LABELLED_SCORE.sum_series, by_outcome, score)
            if probability:
                _add(acc, n.LABELLED_SCORE_BIN_SUM.series, (*seg, (n.LABEL_BIN_UPPER, le)), score)
                _add(acc, n.OUTCOME_SQUARED_ERROR.series, seg, (score - y) ** 2)
                _add(acc, n.OUTCOME_LOG_LOSS.series, seg, _log_loss(score, y))
        if p.time > 0:
            delay = item.label_time - p.time
            if delay < 0:
                _add(acc, n.LABEL_NEGATIVE_DELAYS.series, (), 1.0)
                delay = 0.0
            _add(
                acc,
                n.LABEL_DELAY.bucket_series,
                ((n.LABEL_LE, _DELAY_LE[bisect_left(n.LABEL_DELAY_BUCKETS, delay)]),),
                1.0,
            )
            touched.add((n.LABEL_DELAY.bucket_series, (), _DELAY_LE))
            _add(acc, n.LABEL_DELAY.count_series, (), 1.0)
            _add(acc, n.LABEL_DELAY.sum_series, (), delay)


def pair_samples(
    pairs: Iterable[tuple[JoinedLabel, JoinedLabel]], positive_decision: str, positive_outcome: str, multiclass: bool
) -> dict[tuple[str, str], list[RawSample]]:
    """``ml_shadow_labelled_pairs_total`` deltas per primary (model, version), by the primary's
    segments and :data:`~otel_ml._names.PAIR_OUTCOMES`. A decision is right when it says positive
    (``positive_decision``) exactly when the label is positive; multiclass, when it names the
    label's class. A pair with no decision on either side is not a pair anyone can judge."""
    out: dict[tuple[str, str], dict[tuple[str, Labels], float]] = {}
    both, primary_only, shadow_only, neither = n.PAIR_OUTCOMES
    for primary, shadow in pairs:
        p, s = primary.prediction, shadow.prediction
        if p.decision is None or s.decision is None:
            continue
        if multiclass:
            p_right, s_right = p.decision == primary.outcome, s.decision == primary.outcome
        else:
            positive = primary.outcome == positive_outcome
            p_right, s_right = (
                (p.decision == positive_decision) == positive,
                (s.decision == positive_decision) == positive,
            )
        cell = (both if s_right else primary_only) if p_right else (shadow_only if s_right else neither)
        acc = out.setdefault((p.model, p.version), {})
        for key, segment in ((n.ALL, n.ALL), *p.segments):
            labels = (
                (n.LABEL_SHADOW_VERSION, s.version),
                (n.LABEL_SEGMENT_KEY, key),
                (n.LABEL_SEGMENT, segment),
                (n.LABEL_PAIR_OUTCOME, cell),
            )
            _add(acc, n.SHADOW_LABELLED_PAIRS.series, labels, 1.0)
    return {model: [(name, labels, value) for (name, labels), value in acc.items()] for model, acc in out.items()}


def _add(acc: dict[tuple[str, Labels], float], name: str, labels: Labels, value: float) -> None:
    key = (name, labels)
    acc[key] = acc.get(key, 0.0) + value


def _log_loss(p: float, y: float) -> float:
    p = min(max(p, LOG_LOSS_EPSILON), 1.0 - LOG_LOSS_EPSILON)
    return -math.log(p) if y else -math.log1p(-p)
