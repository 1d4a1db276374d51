"""The series one ``otel-ml skew replay --pushgateway`` run pushes, shaped as the design contract says.

Shared by test_skew_rules_live.py (pushed to a real Pushgateway) and test_dashboards.py (scraped as the
job ``n.SKEW_JOB``); not collected (no ``test_`` prefix). Names and labels only from ``otel_ml._names``:
``ml_skew_rows_total`` and ``ml_skew_decision_flips_total`` per segment with an ``__all__`` total,
``ml_skew_feature_total`` with every result spelled (zeros included), ``ml_skew_row_errors_total`` with
every stage, the ``ml_skew_score_difference`` histogram and ``ml_skew_last_run_timestamp_seconds``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from otel_ml import _names as n

MV = [n.LABEL_MODEL_NAME, n.LABEL_MODEL_VERSION]
SEGMENT = [n.LABEL_SEGMENT_KEY, n.LABEL_SEGMENT]


@dataclass(eq=False)  # a collector: registered by identity
class Replay:
    """One replay's counts of one model version. ``flips`` maps (key, segment, ml_flip) to a count;
    segments absent from ``rows`` get no series; ``finished`` None = the run did not finish."""

    model: str
    version: str
    rows: Mapping[tuple[str, str], int]
    flips: Mapping[tuple[str, str, str], int]
    features: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    errors: Mapping[str, int] = field(default_factory=dict)
    deltas: Any = None
    finished: float | None = None

    def collect(self) -> Iterator[Any]:
        own = [self.model, self.version]
        rows = CounterMetricFamily(n.SKEW_ROWS.prometheus, n.SKEW_ROWS.description, labels=[*MV, *SEGMENT])
        for (key, segment), count in self.rows.items():
            rows.add_metric([*own, key, segment], count)
        flips = CounterMetricFamily(
            n.SKEW_DECISION_FLIPS.prometheus, n.SKEW_DECISION_FLIPS.description, labels=[*MV, *SEGMENT, n.LABEL_FLIP]
        )
        for (key, segment, flip), count in self.flips.items():
            flips.add_metric([*own, key, segment, flip], count)
        feature = CounterMetricFamily(
            n.SKEW_FEATURE.prometheus, n.SKEW_FEATURE.description, labels=[*MV, n.LABEL_FEATURE, n.LABEL_SKEW_RESULT]
        )
        for name, counts in self.features.items():
            for result in n.SKEW_RESULTS:
                feature.add_metric([*own, name, result], counts.get(result, 0))
        errors = CounterMetricFamily(
            n.SKEW_ROW_ERRORS.prometheus, n.SKEW_ROW_ERRORS.description, labels=[*MV, n.LABEL_SKEW_STAGE]
        )
        for stage in n.SKEW_STAGES:
            errors.add_metric([*own, stage], self.errors.get(stage, 0))
        yield from (rows, flips, feature, errors, self._histogram(own))
        if self.finished is not None:
            last = GaugeMetricFamily(n.SKEW_LAST_RUN.series, n.SKEW_LAST_RUN.description, labels=MV)
            last.add_metric(own, self.finished)
            yield last

    def _histogram(self, own: list[str]) -> Any:
        deltas = np.asarray(self.deltas if self.deltas is not None else [], dtype=np.float64)
        bounds = np.asarray(n.SHADOW_DIFFERENCE_BUCKETS, dtype=np.float64)
        cumulative = np.searchsorted(np.sort(deltas), bounds, side="right")
        buckets = [(repr(float(b)), float(c)) for b, c in zip(bounds, cumulative)] + [("+Inf", float(deltas.size))]
        family = HistogramMetricFamily(
            n.SKEW_SCORE_DIFFERENCE.prometheus, n.SKEW_SCORE_DIFFERENCE.description, labels=MV
        )
        family.add_metric(own, buckets, float(deltas.sum()))
        return family


def registry(*replays: Replay) -> CollectorRegistry:
    """A registry exposing these replays (one per model version), as one push or one scrape target."""
    out = CollectorRegistry(auto_describe=False)
    for replay in replays:
        out.register(replay)
    return out


def push(url: str, replay: Replay) -> None:
    """PUT the replay to a Pushgateway under job n.SKEW_JOB, grouped by model and version (as the replay does)."""
    from prometheus_client import push_to_gateway

    grouping = {n.LABEL_MODEL_NAME: replay.model, n.LABEL_MODEL_VERSION: replay.version}
    push_to_gateway(url, job=n.SKEW_JOB, registry=registry(replay), grouping_key=grouping, timeout=10)
