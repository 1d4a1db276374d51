"""Prometheus exposition of the model counters: one custom collector per registry.

Following client_python's custom-collector pattern, the collector holds no metric objects:
``collect()`` takes a snapshot of each model's numpy counters and yields fresh metric
families, so the request path never touches prometheus_client. All monitors in a registry
share one collector (two collectors yielding the same family names would clash), and
:func:`counts_families` is reused by the sidecar to re-expose app counts it received over OTLP.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client import start_http_server as _start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from .. import _names as n
from ._counters import CountsSnapshot

if TYPE_CHECKING:
    from ._monitor import ModelMonitor

__all__ = ["MonitorCollector", "collector_for", "counts_families", "format_le", "le_labels", "start_http_server"]

_MODEL = [n.LABEL_MODEL_NAME, n.LABEL_MODEL_VERSION]


def format_le(value: float) -> str:
    """A bucket bound spelled the way prometheus_client spells ``le`` (Go's float formatting)."""
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


@lru_cache(maxsize=4096)
def le_labels(edges: tuple[float, ...]) -> tuple[str, ...]:
    """The ``le`` label values of a histogram with these finite edges, ``+Inf`` last."""
    return (*(format_le(e) for e in edges), "+Inf")


def _buckets(edges: tuple[float, ...], per_bin: Any) -> list[tuple[str, float]]:
    cumulative = np.cumsum(per_bin).tolist()
    return list(zip(le_labels(edges), cumulative))


def _families() -> dict[str, Any]:
    return {
        "value": HistogramMetricFamily(
            n.FEATURE_VALUE.prometheus, n.FEATURE_VALUE.description, labels=[*_MODEL, n.LABEL_FEATURE]
        ),
        "category": CounterMetricFamily(
            n.FEATURE_CATEGORY.prometheus,
            n.FEATURE_CATEGORY.description,
            labels=[*_MODEL, n.LABEL_FEATURE, n.LABEL_CATEGORY],
        ),
        "missing": CounterMetricFamily(
            n.FEATURE_MISSING.prometheus, n.FEATURE_MISSING.description, labels=[*_MODEL, n.LABEL_FEATURE]
        ),
        "score": HistogramMetricFamily(n.PREDICTION_SCORE.prometheus, n.PREDICTION_SCORE.description, labels=_MODEL),
        "predictions": CounterMetricFamily(
            n.PREDICTIONS.prometheus,
            n.PREDICTIONS.description,
            labels=[*_MODEL, n.LABEL_SEGMENT_KEY, n.LABEL_SEGMENT, n.LABEL_DECISION],
        ),
        "duration": HistogramMetricFamily(
            n.PREDICTION_DURATION.prometheus, n.PREDICTION_DURATION.description, labels=_MODEL
        ),
        "errors": CounterMetricFamily(
            n.PREDICTION_ERRORS.prometheus, n.PREDICTION_ERRORS.description, labels=[*_MODEL, n.LABEL_ERROR_TYPE]
        ),
        "fallbacks": CounterMetricFamily(
            n.PREDICTION_FALLBACKS.prometheus,
            n.PREDICTION_FALLBACKS.description,
            labels=[*_MODEL, n.LABEL_FALLBACK_REASON],
        ),
        "instrumentation": CounterMetricFamily(
            n.INSTRUMENTATION_ERRORS.prometheus,
            n.INSTRUMENTATION_ERRORS.description,
            labels=[*_MODEL, n.LABEL_ERROR_TYPE],
        ),
        "overflow": CounterMetricFamily(
            n.CARDINALITY_OVERFLOW.prometheus, n.CARDINALITY_OVERFLOW.description, labels=[*_MODEL, n.LABEL_ATTRIBUTE]
        ),
    }


def counts_families(snapshots: Iterable[CountsSnapshot]) -> list[Metric]:
    """Metric families for the given model snapshots, in the exposition's stable order."""
    fam = _families()
    for s in snapshots:
        model = [s.model_name, s.model_version]
        for name, edges, bins, total in zip(s.numeric_names, s.numeric_edges, s.numeric_bins, s.numeric_sums.tolist()):
            fam["value"].add_metric([*model, name], _buckets(edges, bins), total)
        for name, labels, bins in zip(s.categorical_names, s.categorical_labels, s.categorical_bins):
            for label, value in zip(labels, bins.tolist()):
                if value:
                    fam["category"].add_metric([*model, name, label], value)
        for name, value in s.missing.items():
            fam["missing"].add_metric([*model, name], value)
        fam["score"].add_metric(model, _buckets(s.score_edges, s.score_bins), s.score_sum)
        for key, segment, decision, value in s.predictions:
            fam["predictions"].add_metric([*model, key, segment, decision], value)
        fam["duration"].add_metric(model, _buckets(s.duration_edges, s.duration_bins), s.duration_sum)
        for family, counts in (
            ("errors", s.errors),
            ("fallbacks", s.fallbacks),
            ("instrumentation", s.instrumentation_errors),
            ("overflow", s.overflow),
        ):
            for label, value in sorted(counts.items()):
                fam[family].add_metric([*model, label], value)
    return list(fam.values())


class MonitorCollector:
    """The prometheus_client collector for every :class:`ModelMonitor` in one registry."""

    def __init__(self) -> None:
        self._monitors: dict[tuple[str, str], ModelMonitor] = {}
        self._lock = threading.Lock()

    def add(self, monitor: ModelMonitor) -> None:
        key = (monitor.model_name, monitor.model_version)
        with self._lock:
            if key in self._monitors and self._monitors[key] is not monitor:
                raise ValueError(
                    f"model {key[0]!r} version {key[1]!r} is already monitored in this registry; "
                    "reuse that monitor or pass registry=CollectorRegistry()"
                )
            self._monitors[key] = monitor

    def remove(self, monitor: ModelMonitor) -> None:
        with self._lock:
            self._monitors.pop((monitor.model_name, monitor.model_version), None)

    def monitors(self) -> Sequence[ModelMonitor]:
        with self._lock:
            return list(self._monitors.values())

    def snapshots(self) -> list[CountsSnapshot]:
        return [m.counters.snapshot() for m in self.monitors()]

    def describe(self) -> Iterator[Metric]:
        # Names only: lets the registry catch a clash with another collector at registration.
        yield from _families().values()

    def collect(self) -> Iterator[Metric]:
        yield from counts_families(self.snapshots())


_collectors: weakref.WeakKeyDictionary[CollectorRegistry, MonitorCollector] = weakref.WeakKeyDictionary()
_collectors_lock = threading.Lock()


def collector_for(registry: CollectorRegistry) -> MonitorCollector:
    """The otel-ml collector of a registry, registering it on first use."""
    with _collectors_lock:
        collector = _collectors.get(registry)
        if collector is None:
            collector = MonitorCollector()
            registry.register(collector)
            _collectors[registry] = collector
        return collector


def start_http_server(
    port: int, addr: str = "127.0.0.1", registry: CollectorRegistry = REGISTRY
) -> tuple[Any, threading.Thread]:
    """Serve ``/metrics`` for Prometheus (or the sidecar) to scrape, on loopback by default.

    Bind ``addr="0.0.0.0"`` (or the pod IP) only when Prometheus must reach the app directly.
    Returns prometheus_client's ``(server, thread)``; call ``server.shutdown()`` to stop.
    """
    return _start_http_server(port, addr=addr, registry=registry)
