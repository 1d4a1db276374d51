"""Scheduled mode: a report's series for one model version, pushed to a Pushgateway.

Each push is a PUT of the group ``job=otel_ml_skew, ml_model_name, ml_model_version``, so the
group then holds exactly the last replay of that version (a rerun replaces, never adds). Results
and stages are spelled out with zeros, so a query for one always finds a sample. The score
difference histogram has buckets below 0; ``HistogramMetricFamily`` then leaves out ``_sum`` and
``_count``, and the Pushgateway would re-expose them as 0 (checked: a count of 0 over 600 rows), so
they are written explicitly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from .. import _names as n
from .._label_hygiene import label_value
from ._report import SkewReport, VersionSkew

__all__ = ["grouping_key", "push", "registry_for"]

_MODEL = (n.LABEL_MODEL_NAME, n.LABEL_MODEL_VERSION)
# ml_feature values pushed besides the capture header's feature names; the rest are summed as __other__
EXTRA_FEATURE_BUDGET = 100


class _VersionCollector:
    """The families of one version's replay (a custom collector: built once, collected on push)."""

    def __init__(self, v: VersionSkew, finished: float) -> None:
        self._v = v
        self._finished = finished

    def collect(self) -> Iterator[Metric]:
        v = self._v
        model = [label_value(v.model), label_value(v.version)]
        rows = CounterMetricFamily(
            n.SKEW_ROWS.prometheus, n.SKEW_ROWS.description, labels=[*_MODEL, n.LABEL_SEGMENT_KEY, n.LABEL_SEGMENT]
        )
        flips = CounterMetricFamily(
            n.SKEW_DECISION_FLIPS.prometheus,
            n.SKEW_DECISION_FLIPS.description,
            labels=[*_MODEL, n.LABEL_SEGMENT_KEY, n.LABEL_SEGMENT, n.LABEL_FLIP],
        )
        spelled = _flip_labels(v)
        for f in v.flips:
            rows.add_metric([*model, label_value(f.key), label_value(f.segment)], f.rows)
            for flip in spelled:
                flips.add_metric(
                    [*model, label_value(f.key), label_value(f.segment), label_value(flip)], f.flips.get(flip, 0)
                )
        yield rows
        if v.decision_rule is not None:
            yield flips
        yield from self._features(model)
        d = v.score_difference
        hist = HistogramMetricFamily(
            n.SKEW_SCORE_DIFFERENCE.prometheus, n.SKEW_SCORE_DIFFERENCE.description, labels=list(_MODEL)
        )
        les = [*(n.format_le(b) for b in d.bucket_bounds), "+Inf"]
        hist.add_metric(model, list(zip(les, [float(c) for c in d.bucket_counts])), sum_value=None)
        labels = dict(zip(_MODEL, model))
        hist.add_sample(n.SKEW_SCORE_DIFFERENCE.count_series, labels, float(d.count))
        hist.add_sample(n.SKEW_SCORE_DIFFERENCE.sum_series, labels, d.total)
        yield hist
        if self._finished and v.rows:  # no row replayed (a pipeline raising on all): no replay finished
            last = GaugeMetricFamily(n.SKEW_LAST_RUN.prometheus, n.SKEW_LAST_RUN.description, labels=list(_MODEL))
            last.add_metric(model, self._finished)
            yield last

    def _features(self, model: list[str]) -> Iterator[Metric]:
        v = self._v
        feature = CounterMetricFamily(
            n.SKEW_FEATURE.prometheus,
            n.SKEW_FEATURE.description,
            labels=[*_MODEL, n.LABEL_FEATURE, n.LABEL_SKEW_RESULT],
        )
        by_label: dict[str, dict[str, int]] = {}  # names alike once made label-safe are one series
        declared = {label_value(name) for name in v.declared_features}
        extra: set[str] = set()
        for f in v.features:
            label = label_value(f.name)
            if label not in declared and label not in extra:
                if len(extra) >= EXTRA_FEATURE_BUDGET:
                    label = n.OTHER  # a pipeline keyed by request values (one-hot keys) must not choose the series
                else:
                    extra.add(label)
            counts = by_label.setdefault(label, dict.fromkeys(n.SKEW_RESULTS, 0))
            for result in n.SKEW_RESULTS:
                counts[result] += f.counts[result]
        for label, counts in by_label.items():
            for result in n.SKEW_RESULTS:
                feature.add_metric([*model, label, result], counts[result])
        yield feature
        errors = CounterMetricFamily(
            n.SKEW_ROW_ERRORS.prometheus, n.SKEW_ROW_ERRORS.description, labels=[*_MODEL, n.LABEL_SKEW_STAGE]
        )
        for stage in n.SKEW_STAGES:
            errors.add_metric([*model, stage], v.errors[stage])
        yield errors


def _flip_labels(v: VersionSkew) -> list[str]:
    """Every flip label of the version, zeros included: a threshold's two directions always, so the
    flip ratio has a flips sample (0) even when nothing flipped."""
    seen = {label for f in v.flips for label in f.flips}
    if v.decision_rule is not None and v.decision_rule.startswith("score >"):
        seen |= {"false_to_true", "true_to_false"}
    return sorted(seen)


def registry_for(version: VersionSkew, finished: float) -> CollectorRegistry:
    """A fresh registry holding one version's series (``finished`` 0, or no row replayed: no
    last-run timestamp, so MLSkewReplayStale sees a gate that measures nothing)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_VersionCollector(version, finished))
    return registry


def grouping_key(version: VersionSkew) -> dict[str, str]:
    return {n.LABEL_MODEL_NAME: label_value(version.model), n.LABEL_MODEL_VERSION: label_value(version.version)}


def push(report: SkewReport, gateway: str, *, timeout: float = 30.0, **kwargs: Any) -> int:
    """PUT every version's series to ``gateway`` (job ``n.SKEW_JOB``); the number of groups pushed.
    ``kwargs`` go to ``prometheus_client.push_to_gateway`` (e.g. ``handler`` for auth)."""
    from prometheus_client import push_to_gateway

    for v in report.versions:
        push_to_gateway(
            gateway,
            job=n.SKEW_JOB,
            registry=registry_for(v, report.finished),
            grouping_key=grouping_key(v),
            timeout=timeout,
            **kwargs,
        )
    return len(report.versions)
