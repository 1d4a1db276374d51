"""OpenTelemetry metrics over OTLP: export the same numpy counts as OTel data points.

The OTel SDK's synchronous instruments cost microseconds per ``record`` and silently drop
negative values recorded into a Histogram (STACK.md), so feature values never go through them.
Instead the counts the collector already holds are turned into the SDK's own data model
(``MetricsData`` with cumulative ``Histogram``/``Sum`` points, bucket bounds = the baseline's
edges) and handed to a standard ``MetricExporter`` (OTLP/HTTP by default) on a timer. Names,
units and attributes come from ``_names``, so Prometheus-side translation gives exactly the
series the prometheus_client path exposes.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import REGISTRY, CollectorRegistry

from .. import _names as n
from .._version import __version__
from ._counters import CountsSnapshot
from ._prometheus import collector_for

__all__ = ["OtlpMetricsPusher", "counts_metrics_data", "start_otlp_exporter"]

_log = logging.getLogger("otel_ml.otlp")
_CUMULATIVE = AggregationTemporality.CUMULATIVE
SCOPE = InstrumentationScope("otel_ml", __version__)
_NOT_TRACKED: Any = None  # min and max are optional in OTLP and not tracked per call
INSTANCE_ID = "service.instance.id"


def _given_instance_id(resource: Resource | None) -> Any:
    """The user's own ``service.instance.id`` (the SDK's default random one does not count)."""
    if resource is not None:
        return resource.attributes.get(INSTANCE_ID)
    if INSTANCE_ID in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", ""):
        return Resource.create().attributes.get(INSTANCE_ID)
    return None


def _with_instance(resource: Resource, base: str) -> Resource:
    """``resource`` with ``service.instance.id`` = base-pid: N workers are N sources to the sidecar."""
    return resource.merge(Resource({INSTANCE_ID: f"{base}-{os.getpid()}"}))


def _histogram_point(
    attrs: Mapping[str, str], start: int, now: int, edges: Sequence[float], bins: Sequence[int], total: float
) -> HistogramDataPoint:
    counts = [int(c) for c in bins]
    return HistogramDataPoint(
        attributes=dict(attrs),
        start_time_unix_nano=start,
        time_unix_nano=now,
        count=sum(counts),
        sum=float(total),
        bucket_counts=counts,
        explicit_bounds=list(edges),
        min=_NOT_TRACKED,
        max=_NOT_TRACKED,
    )


def _metric(instrument: n.Instrument, data: Any) -> Metric:
    return Metric(name=instrument.otel_name, description=instrument.description, unit=instrument.unit, data=data)


def _sum(instrument: n.Instrument, points: list[NumberDataPoint]) -> Metric:
    return _metric(instrument, Sum(data_points=points, aggregation_temporality=_CUMULATIVE, is_monotonic=True))


def _histogram(instrument: n.Instrument, points: list[HistogramDataPoint]) -> Metric:
    return _metric(instrument, Histogram(data_points=points, aggregation_temporality=_CUMULATIVE))


_LABEL_KEY = {
    n.PREDICTION_ERRORS: n.ATTR_ERROR_TYPE,
    n.PREDICTION_FALLBACKS: n.ATTR_FALLBACK_REASON,
    n.INSTRUMENTATION_ERRORS: n.ATTR_ERROR_TYPE,
    n.CARDINALITY_OVERFLOW: n.ATTR_ATTRIBUTE,
}


def _labelled_points(
    s: CountsSnapshot,
    model: dict[str, str],
    point: Callable[[dict[str, str], int | float], NumberDataPoint],
    out: dict[n.Instrument, list[NumberDataPoint]],
) -> None:
    """The counters keyed by one label (error type, fallback reason, overflowing attribute)."""
    for instrument, counts in (
        (n.PREDICTION_ERRORS, s.errors),
        (n.PREDICTION_FALLBACKS, s.fallbacks),
        (n.INSTRUMENTATION_ERRORS, s.instrumentation_errors),
        (n.CARDINALITY_OVERFLOW, s.overflow),
    ):
        for label, count in sorted(counts.items()):
            out[instrument].append(point({**model, _LABEL_KEY[instrument]: label}, count))


def counts_metrics_data(
    snapshots: Iterable[CountsSnapshot],
    *,
    start_time_ns: int,
    resource: Resource | None = None,
    now_ns: int | None = None,
) -> MetricsData:
    """The OTel data model for these snapshots: one scope ``otel_ml``, cumulative temporality."""
    now = now_ns if now_ns is not None else time.time_ns()
    start = start_time_ns
    value: list[HistogramDataPoint] = []
    score: list[HistogramDataPoint] = []
    duration: list[HistogramDataPoint] = []
    category: list[NumberDataPoint] = []
    missing: list[NumberDataPoint] = []
    preds: list[NumberDataPoint] = []
    labelled: dict[n.Instrument, list[NumberDataPoint]] = {instrument: [] for instrument in _LABEL_KEY}

    def point(attrs: dict[str, str], v: int | float) -> NumberDataPoint:
        return NumberDataPoint(attributes=attrs, start_time_unix_nano=start, time_unix_nano=now, value=v)

    for s in snapshots:
        safe = n.label_value  # names from code or a baseline file: one lone surrogate fails the whole batch
        model = {n.ATTR_MODEL_NAME: safe(s.model_name), n.ATTR_MODEL_VERSION: safe(s.model_version)}
        for name, edges, bins, total in zip(s.numeric_names, s.numeric_edges, s.numeric_bins, s.numeric_sums.tolist()):
            attrs = {**model, n.ATTR_FEATURE: safe(name)}
            value.append(_histogram_point(attrs, start, now, edges, bins.tolist(), total))
        for name, labels, bins in zip(s.categorical_names, s.categorical_labels, s.categorical_bins):
            for label, count in zip(labels, bins.tolist()):
                if count:
                    category.append(point({**model, n.ATTR_FEATURE: safe(name), n.ATTR_CATEGORY: label}, int(count)))
        for name, count in s.missing.items():
            missing.append(point({**model, n.ATTR_FEATURE: safe(name)}, int(count)))
        score.append(_histogram_point(model, start, now, s.score_edges, s.score_bins.tolist(), s.score_sum))
        for key, segment, decision, count in s.predictions:
            attrs = {**model, n.ATTR_SEGMENT_KEY: safe(key), n.ATTR_SEGMENT: segment, n.ATTR_DECISION: decision}
            preds.append(point(attrs, count))
        duration.append(_histogram_point(model, start, now, s.duration_edges, s.duration_bins.tolist(), s.duration_sum))
        _labelled_points(s, model, point, labelled)

    metrics = [
        _histogram(n.FEATURE_VALUE, value),
        _sum(n.FEATURE_CATEGORY, category),
        _sum(n.FEATURE_MISSING, missing),
        _histogram(n.PREDICTION_SCORE, score),
        _sum(n.PREDICTIONS, preds),
        _histogram(n.PREDICTION_DURATION, duration),
        *(_sum(instrument, points) for instrument, points in labelled.items()),
    ]
    metrics = [m for m in metrics if m.data.data_points]
    scope = ScopeMetrics(scope=SCOPE, metrics=metrics, schema_url="")
    return MetricsData(
        resource_metrics=[ResourceMetrics(resource=resource or Resource.create(), scope_metrics=[scope], schema_url="")]
    )


class OtlpMetricsPusher:
    """Pushes the monitors' counts to an OTLP endpoint every ``interval`` seconds, on a daemon thread.

    ``monitors`` defaults to every monitor registered in ``registry``. ``exporter`` defaults to
    ``OTLPMetricExporter(endpoint=...)`` over HTTP/protobuf (the standard ``OTEL_EXPORTER_OTLP_*``
    environment variables apply). Export failures are logged and retried next interval; they
    never reach the application. Each process is its own source: ``service.instance.id`` is
    ``<host or given id>-<pid>``, and a forked child gets a new id, a fresh start time (its
    counts start at zero) and, like the SDK's periodic reader, its own timer thread.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        interval: float = 15.0,
        registry: CollectorRegistry = REGISTRY,
        monitors: Sequence[Any] | None = None,
        exporter: MetricExporter | None = None,
        headers: Mapping[str, str] | None = None,
        resource: Resource | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._endpoint, self._headers, self._timeout = endpoint, dict(headers or {}), timeout
        self._own_exporter = exporter is None
        self.exporter = exporter if exporter is not None else self._new_exporter()
        self.interval = interval
        self._registry = registry
        self._monitors = list(monitors) if monitors is not None else None
        given = _given_instance_id(resource)
        resource = resource or Resource.create()
        self._instance_base = str(given) if given is not None else socket.gethostname()
        self._resource = resource if given is not None else _with_instance(resource, self._instance_base)
        self._start_ns = time.time_ns()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._export_lock = threading.Lock()
        self.failures = 0
        _pushers.add(self)

    def _new_exporter(self) -> MetricExporter:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(endpoint=self._endpoint, headers=self._headers, timeout=self._timeout)

    @property
    def resource(self) -> Resource:
        """The resource sent with every export; ``service.instance.id`` is distinct per process."""
        return self._resource

    def _after_fork_in_child(self) -> None:
        """Like the SDK's periodic reader: new locks, a new timer thread, and a new identity."""
        running = self._thread is not None and not self._stop.is_set()
        self._stop = threading.Event()
        self._export_lock = threading.Lock()
        self._thread = None
        self._start_ns = time.time_ns()  # the child's counts start at zero: a new cumulative series
        self._resource = _with_instance(self._resource, self._instance_base)
        if running:
            if self._own_exporter:  # the parent's HTTP connection pool is the parent's
                self.exporter = self._new_exporter()
            self.start()

    def _snapshots(self) -> list[CountsSnapshot]:
        if self._monitors is not None:
            return [m.counters.snapshot() for m in self._monitors]
        return [c.snapshot() for c in collector_for(self._registry).counters()]

    def export_once(self) -> bool:
        """Export the current counts now; ``True`` on success."""
        with self._export_lock:
            try:
                data = counts_metrics_data(self._snapshots(), start_time_ns=self._start_ns, resource=self._resource)
                ok = self.exporter.export(data) is MetricExportResult.SUCCESS
            except Exception:
                _log.exception("otel-ml: OTLP metrics export failed")
                ok = False
            if not ok:
                self.failures += 1
            return ok

    def start(self) -> OtlpMetricsPusher:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="otel-ml-otlp", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.export_once()

    def shutdown(self, flush: bool = True) -> None:
        """Stop the timer; with ``flush`` export once more so the last counts are not lost."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 5)
        if flush:
            self.export_once()
        self.exporter.shutdown()


_pushers: weakref.WeakSet[OtlpMetricsPusher] = weakref.WeakSet()


def _reinit_after_fork() -> None:
    for pusher in list(_pushers):
        pusher._after_fork_in_child()


os.register_at_fork(after_in_child=_reinit_after_fork)


def start_otlp_exporter(endpoint: str | None = None, **kwargs: Any) -> OtlpMetricsPusher:
    """Start pushing every monitor's metrics over OTLP/HTTP: ``start_otlp_exporter("http://127.0.0.1:9464/v1/metrics")``."""
    return OtlpMetricsPusher(endpoint, **kwargs).start()
