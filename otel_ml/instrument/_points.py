"""Neutral data points: the one step from counter snapshots to anything that exposes them.

A snapshot is turned into points once, here: per instrument, a list of number points
(attributes, value) or histogram points (attributes, bounds, per-bin counts, sum). The
encoders are thin and know nothing about the counters: ``_prometheus`` makes prometheus_client
families from points (cumulative ``le`` buckets, ``_count``, ``_sum``), ``_otlp`` makes the
OTel SDK's ``MetricsData`` (per-bin bucket counts, as OTLP carries them), and the sidecar
re-exposes what it received through the same Prometheus encoder.

Attribute keys are OpenTelemetry's (``ml.model.name``); the Prometheus encoder turns them into
label names with :func:`~otel_ml._names.prometheus_label`, which leaves a key that is already
a label name (the sidecar's) as it is. Values are label-safe by the time they are points.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .. import _names as n
from .._label_hygiene import label_value
from ._snapshot import CountsSnapshot
from ._usage import NANO, CaptureCounts, ReviewCounts, UsageCounts

__all__ = ["Attributes", "HistogramPoint", "InstrumentPoints", "NumberPoint", "snapshot_points"]

Attributes = tuple[tuple[str, str], ...]
"""(key, value) pairs in exposition order: the model first, then the instrument's own keys."""


@dataclass(frozen=True, slots=True)
class NumberPoint:
    """One monotonic count (or a gauge value) of one series."""

    attributes: Attributes
    value: float


@dataclass(frozen=True, slots=True)
class HistogramPoint:
    """One histogram series: per-bin counts over right-closed bins, ``len(bounds) + 1`` of them."""

    attributes: Attributes
    bounds: tuple[float, ...]
    bins: Sequence[int | float]
    sum: float | None  # None: not known (a re-exposed histogram whose _sum never arrived)

    @property
    def count(self) -> int | float:
        return sum(self.bins)


@dataclass(slots=True)
class InstrumentPoints:
    """Every point of one instrument, in a stable order."""

    instrument: n.Instrument
    numbers: list[NumberPoint] = field(default_factory=list)
    histograms: list[HistogramPoint] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.numbers or self.histograms)


_LABELLED = (  # counters keyed by one label besides the model: snapshot field, attribute key
    (n.PREDICTION_ERRORS, "errors", n.ATTR_ERROR_TYPE),
    (n.PREDICTION_FALLBACKS, "fallbacks", n.ATTR_FALLBACK_REASON),
    (n.INSTRUMENTATION_ERRORS, "instrumentation_errors", n.ATTR_ERROR_TYPE),
    (n.CARDINALITY_OVERFLOW, "overflow", n.ATTR_ATTRIBUTE),
)


def _add_snapshot(s: CountsSnapshot, out: dict[n.Instrument, InstrumentPoints]) -> None:
    safe = label_value  # names from code or a baseline file; label values from data already are
    model: Attributes = ((n.ATTR_MODEL_NAME, safe(s.model_name)), (n.ATTR_MODEL_VERSION, safe(s.model_version)))
    values = out[n.FEATURE_VALUE].histograms
    for name, edges, bins, total in zip(s.numeric_names, s.numeric_edges, s.numeric_bins, s.numeric_sums.tolist()):
        values.append(HistogramPoint((*model, (n.ATTR_FEATURE, safe(name))), edges, bins.tolist(), total))
    categories = out[n.FEATURE_CATEGORY].numbers
    for name, labels, bins in zip(s.categorical_names, s.categorical_labels, s.categorical_bins):
        feature = (*model, (n.ATTR_FEATURE, safe(name)))
        categories.extend(
            NumberPoint((*feature, (n.ATTR_CATEGORY, label)), count)
            for label, count in zip(labels, bins.tolist())
            if count
        )
    out[n.FEATURE_MISSING].numbers.extend(
        NumberPoint((*model, (n.ATTR_FEATURE, safe(name))), count) for name, count in s.missing.items()
    )
    out[n.PREDICTION_SCORE].histograms.append(HistogramPoint(model, s.score_edges, s.score_bins.tolist(), s.score_sum))
    out[n.PREDICTIONS].numbers.extend(
        NumberPoint(
            (*model, (n.ATTR_SEGMENT_KEY, safe(key)), (n.ATTR_SEGMENT, segment), (n.ATTR_DECISION, decision)), count
        )
        for key, segment, decision, count in s.predictions
    )
    out[n.PREDICTION_DURATION].histograms.append(
        HistogramPoint(model, s.duration_edges, s.duration_bins.tolist(), s.duration_sum)
    )
    for instrument, attr, key in _LABELLED:
        counts: dict[str, int] = getattr(s, attr)
        out[instrument].numbers.extend(
            NumberPoint((*model, (key, label)), count) for label, count in sorted(counts.items())
        )
    add_usage_points(model, s.usage, s.review, out)
    if s.capture is not None:
        _add_capture(model, s.capture, out)
    if s.shadow_of is not None:
        _add_comparison(s, out)


def _add_comparison(s: CountsSnapshot, out: dict[n.Instrument, InstrumentPoints]) -> None:
    """A shadow's comparison series: the primary's version as ``ml.model.version``, its own as
    ``ml.shadow.version``, so they sit next to the primary's ``ml_predictions_total``."""
    safe = label_value
    pair: Attributes = (
        (n.ATTR_MODEL_NAME, safe(s.model_name)),
        (n.ATTR_MODEL_VERSION, safe(s.shadow_of or "")),
        (n.ATTR_SHADOW_VERSION, safe(s.model_version)),
    )
    out[n.SHADOW_PAIRS].numbers.extend(
        NumberPoint((*pair, (n.ATTR_SEGMENT_KEY, safe(key)), (n.ATTR_SEGMENT, segment), (n.ATTR_FLIP, flip)), count)
        for key, segment, flip, count in s.shadow_pairs
    )
    if s.shadow_difference_bins is not None:
        out[n.SHADOW_SCORE_DIFFERENCE].histograms.append(
            HistogramPoint(
                pair, n.SHADOW_DIFFERENCE_BUCKETS, s.shadow_difference_bins.tolist(), s.shadow_difference_sum
            )
        )
    out[n.SHADOW_DROPPED].numbers.extend(
        NumberPoint((*pair, (n.ATTR_DROP_REASON, reason)), s.shadow_dropped.get(reason, 0))
        for reason in n.SHADOW_DROP_REASONS
    )


def _add_capture(model: Attributes, capture: CaptureCounts, out: dict[n.Instrument, InstrumentPoints]) -> None:
    """The skew capture spool's series (every drop reason from 0)."""
    out[n.CAPTURE_RECORDS].numbers.append(NumberPoint(model, capture.records))
    out[n.CAPTURE_WRITTEN].numbers.append(NumberPoint(model, capture.written_bytes))
    out[n.CAPTURE_DROPPED].numbers.extend(
        NumberPoint((*model, (n.ATTR_DROP_REASON, reason)), capture.dropped.get(reason, 0))
        for reason in n.CAPTURE_DROP_REASONS
    )


def add_usage_points(
    model: Attributes, usage: UsageCounts, review: ReviewCounts | None, out: dict[n.Instrument, InstrumentPoints]
) -> None:
    """The cost, token, price and review series of one model snapshot."""
    out[n.PREDICTION_CPU].numbers.append(NumberPoint(model, usage.cpu_ns * 1e-9))
    out[n.PROCESS_CPU].numbers.append(NumberPoint(model, usage.process_cpu_ns * 1e-9))
    for key, segment, source, basis, nano in usage.costs:
        seg: Attributes = ()
        if key is not None:
            seg = ((n.ATTR_SEGMENT_KEY, label_value(key)), (n.ATTR_SEGMENT, segment or ""))
        attrs = (*model, *seg, (n.ATTR_COST_SOURCE, source), (n.ATTR_COST_BASIS, basis))
        out[n.COST].numbers.append(NumberPoint(attrs, nano / NANO))
    if any(usage.tokens):
        out[n.TOKENS].numbers.extend(
            NumberPoint((*model, (n.ATTR_TOKEN_TYPE, kind)), count) for kind, count in zip(n.TOKEN_TYPES, usage.tokens)
        )
    for price_hash, updated, _ in usage.prices:
        info = (*model, (n.ATTR_PRICE_HASH, price_hash), (n.ATTR_PRICE_UPDATED, label_value(updated)))
        out[n.PRICE_CONFIG_INFO].numbers.append(NumberPoint(info, 1.0))
    if usage.prices:  # the stalest table decides
        out[n.PRICE_CONFIG_UPDATED].numbers.append(NumberPoint(model, min(ts for _, _, ts in usage.prices)))
    if review is None:
        return
    for key, segment, stratum, population, sampled in review.rows:
        attrs = (*model, (n.ATTR_SEGMENT_KEY, label_value(key)), (n.ATTR_SEGMENT, segment), (n.ATTR_STRATUM, stratum))
        out[n.REVIEW_POPULATION].numbers.append(NumberPoint(attrs, population))
        out[n.REVIEW_SAMPLED].numbers.append(NumberPoint(attrs, sampled))
    out[n.REVIEW_DROPPED].numbers.extend(
        NumberPoint((*model, (n.ATTR_DROP_REASON, reason)), review.dropped.get(reason, 0))
        for reason in n.REVIEW_DROP_REASONS
    )


def snapshot_points(snapshots: Iterable[CountsSnapshot]) -> list[InstrumentPoints]:
    """The points of these model snapshots, one entry per app instrument in declaration order
    (empty entries included: an encoder decides whether an empty family is worth sending)."""
    out = {instrument: InstrumentPoints(instrument) for instrument in (*n.APP_INSTRUMENTS, *n.APP_GAUGES)}
    for s in snapshots:
        _add_snapshot(s, out)
    return list(out.values())
