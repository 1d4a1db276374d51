"""OpenTelemetry metrics over OTLP: export the same numpy counts as OTel data points.

The OTel SDK's synchronous instruments cost microseconds per ``record`` and silently drop
negative values recorded into a Histogram, so feature values never go through them. Instead
the neutral points of the counts (``_points``) are encoded as the SDK's own data model
(``MetricsData`` with cumulative ``Histogram``/``Sum`` points, bucket bounds = the baseline's
edges) and handed to a standard ``MetricExporter`` (OTLP/HTTP by default) on a timer. Names,
units and attributes come from ``_names``, so Prometheus-side translation gives exactly the
series the prometheus_client path exposes.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, ParamSpec, Protocol

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value
from opentelemetry.sdk.environment_variables import OTEL_METRIC_EXPORT_INTERVAL, OTEL_METRIC_EXPORT_TIMEOUT
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
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

from .._version import __version__
from ._counters import ModelCounters
from ._points import InstrumentPoints, snapshot_points
from ._prometheus import collector_for
from ._snapshot import CountsSnapshot

__all__ = ["Monitored", "OtlpMetricsPusher", "counts_metrics_data", "otlp_metrics_data", "start_otlp_exporter"]

_log = logging.getLogger("otel_ml.otlp")
_CUMULATIVE = AggregationTemporality.CUMULATIVE
SCOPE = InstrumentationScope("otel_ml", __version__)
_NOT_TRACKED: Any = None  # min and max are optional in OTLP and not tracked per call
INSTANCE_ID = "service.instance.id"
P = ParamSpec("P")
DEFAULT_EXPORT_INTERVAL_MILLIS: Final = 15_000.0
DEFAULT_EXPORT_TIMEOUT_MILLIS: Final = 10_000.0


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


def _number_points(points: InstrumentPoints, start: int, now: int) -> list[NumberDataPoint]:
    return [
        NumberDataPoint(attributes=dict(p.attributes), start_time_unix_nano=start, time_unix_nano=now, value=p.value)
        for p in points.numbers
    ]


def _histogram_points(points: InstrumentPoints, start: int, now: int) -> list[HistogramDataPoint]:
    return [
        HistogramDataPoint(
            attributes=dict(p.attributes),
            start_time_unix_nano=start,
            time_unix_nano=now,
            count=int(p.count),
            sum=float(p.sum or 0.0),
            bucket_counts=[int(c) for c in p.bins],  # per bucket, as OTLP carries them: no cumulating
            explicit_bounds=list(p.bounds),
            min=_NOT_TRACKED,
            max=_NOT_TRACKED,
        )
        for p in points.histograms
    ]


def _metric(points: InstrumentPoints, start: int, now: int) -> Metric:
    inst = points.instrument
    data: Histogram | Sum | Gauge
    if inst.kind == "histogram":
        data = Histogram(data_points=_histogram_points(points, start, now), aggregation_temporality=_CUMULATIVE)
    elif inst.kind == "gauge":  # a per-process fact (the price table): the last value, not a sum
        data = Gauge(data_points=_number_points(points, start, now))
    else:
        data = Sum(
            data_points=_number_points(points, start, now), aggregation_temporality=_CUMULATIVE, is_monotonic=True
        )
    return Metric(name=inst.otel_name, description=inst.description, unit=inst.unit, data=data)


def otlp_metrics_data(
    points: Iterable[InstrumentPoints],
    *,
    start_time_ns: int,
    resource: Resource | None = None,
    now_ns: int | None = None,
) -> MetricsData:
    """The OTel data model for neutral points: one scope ``otel_ml``, cumulative temporality."""
    now = now_ns if now_ns is not None else time.time_ns()
    metrics = [_metric(p, start_time_ns, now) for p in points if p]
    scope = ScopeMetrics(scope=SCOPE, metrics=metrics, schema_url="")
    return MetricsData(
        resource_metrics=[ResourceMetrics(resource=resource or Resource.create(), scope_metrics=[scope], schema_url="")]
    )


def counts_metrics_data(
    snapshots: Iterable[CountsSnapshot],
    *,
    start_time_ns: int,
    resource: Resource | None = None,
    now_ns: int | None = None,
) -> MetricsData:
    """The OTel data model for these model snapshots (:func:`otlp_metrics_data` of their points)."""
    return otlp_metrics_data(snapshot_points(snapshots), start_time_ns=start_time_ns, resource=resource, now_ns=now_ns)


class Monitored(Protocol):
    """Anything with model counters (a :class:`~otel_ml.ModelMonitor`)."""

    @property
    def counters(self) -> ModelCounters: ...


def _millis_from_env(variable: str, default: float) -> float:
    """A reader setting from ``OTEL_METRIC_EXPORT_*``; a value that is not a number >= 0 is
    warned about and the default is used (as the SDK does for one ``float()`` cannot read)."""
    raw = os.environ.get(variable)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not value >= 0:  # NaN and negative numbers too
        _log.warning("otel-ml: invalid %s=%r; using %g ms", variable, raw, default)
        return default
    return value


class OtlpMetricsPusher:
    """Pushes the counts to an OTLP endpoint on a timer: a periodic metric reader over our counters.

    It speaks the OTel SDK's ``PeriodicExportingMetricReader`` vocabulary: ``export_interval_millis``
    and ``export_timeout_millis`` (default from ``OTEL_METRIC_EXPORT_INTERVAL`` and
    ``OTEL_METRIC_EXPORT_TIMEOUT``, else 15 s, a typical scrape interval, and 10 s),
    :meth:`force_flush` and a :meth:`shutdown` that runs once. Each export runs with
    instrumentation suppressed, so an instrumented HTTP client does not trace the export itself.

    ``monitors`` defaults to every model counted in ``registry``. ``exporter`` defaults to
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
        exporter: MetricExporter | None = None,
        headers: Mapping[str, str] | None = None,
        export_interval_millis: float | None = None,
        export_timeout_millis: float | None = None,
        registry: CollectorRegistry = REGISTRY,
        monitors: Sequence[Monitored] | None = None,
        resource: Resource | None = None,
    ) -> None:
        if export_interval_millis is None:
            export_interval_millis = _millis_from_env(OTEL_METRIC_EXPORT_INTERVAL, DEFAULT_EXPORT_INTERVAL_MILLIS)
        if export_timeout_millis is None:
            export_timeout_millis = _millis_from_env(OTEL_METRIC_EXPORT_TIMEOUT, DEFAULT_EXPORT_TIMEOUT_MILLIS)
        for name, value in (
            ("export_interval_millis", export_interval_millis),
            ("export_timeout_millis", export_timeout_millis),
        ):
            if not value >= 0:
                raise ValueError(f"{name} must be a number >= 0 (got {value!r})")
        self.export_interval_millis = export_interval_millis
        self.export_timeout_millis = export_timeout_millis
        self._endpoint, self._headers = endpoint, dict(headers or {})
        self._own_exporter = exporter is None
        self.exporter = exporter if exporter is not None else self._new_exporter()
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
        self._shut_down = False
        self.failures = 0
        _pushers.add(self)

    def _new_exporter(self) -> MetricExporter:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        timeout = self.export_timeout_millis / 1000
        return OTLPMetricExporter(endpoint=self._endpoint, headers=self._headers, timeout=timeout)

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

    def force_flush(self, timeout_millis: float | None = None) -> bool:
        """Export the current counts now; ``True`` on success, never raises (``False`` once shut down)."""
        if self._shut_down:
            _log.warning("otel-ml: the OTLP pusher is shut down; nothing exported")
            return False
        return self._export(self.export_timeout_millis if timeout_millis is None else timeout_millis)

    def _export(self, timeout: float) -> bool:
        with self._export_lock:
            token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
            try:
                data = counts_metrics_data(self._snapshots(), start_time_ns=self._start_ns, resource=self._resource)
                ok = self.exporter.export(data, timeout_millis=timeout) is MetricExportResult.SUCCESS
            except Exception:
                _log.exception("otel-ml: OTLP metrics export failed")
                ok = False
            finally:
                detach(token)
            if not ok:
                self.failures += 1
            return ok

    def start(self) -> OtlpMetricsPusher:
        """Start the timer thread (not for an interval of 0 or infinity: then export by hand)."""
        interval = self.export_interval_millis
        if self._thread is None and not self._shut_down and 0 < interval < math.inf:
            self._thread = threading.Thread(target=self._run, name="otel-ml-otlp", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        wait = min(self.export_interval_millis / 1000, threading.TIMEOUT_MAX)  # a huge interval: wait the most
        while not self._stop.wait(wait):
            self._export(self.export_timeout_millis)

    def shutdown(self, flush: bool = True, *, timeout_millis: float = 30_000) -> None:
        """Stop the timer and shut the exporter down, once; with ``flush`` export the last counts first."""
        if self._shut_down:
            _log.warning("otel-ml: the OTLP pusher is already shut down")
            return
        self._shut_down = True
        deadline = time.monotonic() + timeout_millis / 1000
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if flush:
            self._export(min(self.export_timeout_millis, max(0.0, deadline - time.monotonic()) * 1000))
        self.exporter.shutdown(timeout_millis=max(0.0, deadline - time.monotonic()) * 1000)


_pushers: weakref.WeakSet[OtlpMetricsPusher] = weakref.WeakSet()


def _reinit_after_fork() -> None:
    for pusher in list(_pushers):
        pusher._after_fork_in_child()


os.register_at_fork(after_in_child=_reinit_after_fork)


def _started(make: Callable[P, OtlpMetricsPusher]) -> Callable[P, OtlpMetricsPusher]:
    """A function taking exactly ``make``'s parameters (typed, and shown by ``help``) that starts the result."""

    @functools.wraps(make)
    def start(*args: P.args, **kwargs: P.kwargs) -> OtlpMetricsPusher:
        return make(*args, **kwargs).start()

    start.__signature__ = inspect.signature(make).replace(return_annotation=OtlpMetricsPusher)  # type: ignore[attr-defined]
    return start


start_otlp_exporter = _started(OtlpMetricsPusher)
start_otlp_exporter.__name__ = start_otlp_exporter.__qualname__ = "start_otlp_exporter"
start_otlp_exporter.__doc__ = """Start pushing every monitor's metrics over OTLP/HTTP and return the pusher.

``start_otlp_exporter("http://127.0.0.1:9464/v1/metrics")``; the parameters are
:class:`OtlpMetricsPusher`'s. Call ``shutdown()`` on the result at exit to push the last counts.
"""
