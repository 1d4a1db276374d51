"""The Prometheus encoder: prometheus_client metric families from neutral points.

Shared by the app's collector and the sidecar's re-exposition of app counts received over
OTLP, so both spell every family, sample name, help text and ``le`` the same way.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import Metric

from .. import _names as n
from ._points import InstrumentPoints

__all__ = ["prometheus_families"]


def prometheus_families(points: Iterable[InstrumentPoints]) -> list[Metric]:
    """prometheus_client families for neutral points: cumulative ``le`` buckets, ``_count`` and
    ``_sum`` for histograms, ``_total`` for counters; label names from the attribute keys."""
    return [_family(p) for p in points]


def _family(points: InstrumentPoints) -> Metric:
    inst = points.instrument
    metric = Metric(inst.prometheus, inst.description, inst.kind)
    for h in points.histograms:
        labels = {n.prometheus_label(k): v for k, v in h.attributes}
        cumulative: float = 0
        for le, count in zip(n.le_labels(h.bounds), h.bins):
            cumulative += count
            metric.add_sample(inst.bucket_series, {**labels, n.LABEL_LE: le}, cumulative)
        if h.sum is not None and (not h.bounds or h.bounds[0] >= 0):  # as client_python: none with negative buckets
            metric.add_sample(inst.count_series, labels, cumulative)
            metric.add_sample(inst.sum_series, labels, h.sum)
    for x in points.numbers:
        metric.add_sample(inst.series, {n.prometheus_label(k): v for k, v in x.attributes}, x.value)
    return metric
