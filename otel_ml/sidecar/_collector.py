"""The sidecar's ``/metrics``: a custom collector over :class:`SidecarState`, and its cache.

It yields the windowed gauges, the baseline reference gauges, the sidecar's own counters and,
for models whose app pushes OTLP (Prometheus 2.42 has no OTLP receiver), the app's counters
re-exposed under the names the app would have used, so dashboards and rules work unchanged.
The lock is held only to copy counts; families are built from the copies. :class:`Exposition`
renders the text once per state change (at most once per ``ttl`` seconds otherwise) into a
cached blob, gzipped on demand, so many scrapers cost one rendering.
"""

from __future__ import annotations

import gzip
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from .. import _names as n
from ..instrument._families import prometheus_families
from ..instrument._points import Attributes, HistogramPoint, InstrumentPoints, NumberPoint
from ._join_store import STATUSES
from ._series import Gauge, Labels, SeriesKey
from ._state import SidecarState

__all__ = ["SidecarCollector", "Exposition"]

_APP_FAMILIES = frozenset(n.APP_INSTRUMENTS)
_SIDECAR_OWNED = frozenset(n.SIDECAR_COUNTERS)


# Known reasons start at 0, so rate() and increase() see the first one happen (client_python's
# advice); the store's eviction counts always carry both of theirs.
_UNMATCHED_ZERO = dict.fromkeys((s for s in STATUSES if s != "joined"), 0)

_ModelCounts = tuple[str, str, bool, list[SeriesKey], npt.NDArray[np.float64]]


@dataclass(frozen=True)
class _OwnCounts:
    """The sidecar's own counters, copied under the lock."""

    ingest_errors: dict[str, int]
    ingested: dict[str, int]
    unmatched_labels: dict[str, int]
    labels_received: dict[str, int]
    overflow: list[tuple[str, str, dict[str, int]]]
    join_rows: int
    join_bytes: int
    join_evicted: dict[str, int]
    join_sample_ratio: float
    compute_seconds: float


class SidecarCollector:
    def __init__(self, state: SidecarState) -> None:
        self.state = state

    def describe(self) -> Iterator[Metric]:
        return iter(())  # names depend on the baselines; no registration-time collect

    def collect(self) -> Iterator[Metric]:
        state = self.state
        yield from _gauge_families(state.outputs())
        with state.lock:
            store = state.joins.store  # under the lock: retry_join_store swaps it there, then closes the old one
            own = _OwnCounts(
                dict(state.ingest_errors),
                dict(state.ingested),
                dict(state.unmatched_labels),
                dict(state.labels_received),
                [(m.model, m.version, m.overflow()) for m in state.models.values()],
                store.rows,
                store.bytes,
                dict(store.evicted),
                store.sample_ratio,
                state.compute_seconds,
            )
            models = [
                (name, version, (name, version) in state.reexport, list(m.keys), m.current_totals().copy())
                for (name, version), m in state.models.items()
            ]
        yield from self._own_counters(own)
        yield from self._model_counters(models)

    def _own_counters(self, state: _OwnCounts) -> Iterator[Metric]:
        for inst, label, counts in (
            (n.SIDECAR_INGEST_ERRORS, n.LABEL_REASON, state.ingest_errors),
            (n.SIDECAR_INGESTED, n.LABEL_SOURCE, state.ingested),
            (n.LABELS_UNMATCHED, n.LABEL_REASON, {**_UNMATCHED_ZERO, **state.unmatched_labels}),
            (n.LABELS_RECEIVED, n.LABEL_SOURCE, state.labels_received),
            (n.JOIN_STORE_EVICTED, n.LABEL_REASON, state.join_evicted),
        ):
            family = CounterMetricFamily(inst.prometheus, inst.description, labels=[label])
            for value, count in sorted(counts.items()):
                family.add_metric([value], count)
            yield family
        overflow = CounterMetricFamily(
            n.SIDECAR_OVERFLOW.prometheus,
            n.SIDECAR_OVERFLOW.description,
            labels=[n.LABEL_MODEL_NAME, n.LABEL_MODEL_VERSION, n.LABEL_ATTRIBUTE],
        )
        for model_name, version, counts in state.overflow:
            for attribute, count in sorted(counts.items()):
                overflow.add_metric([model_name, version, attribute], count)
        yield overflow
        for gauge, reading in (
            (n.JOIN_STORE_ROWS, float(state.join_rows)),
            (n.JOIN_STORE_BYTES, float(state.join_bytes)),
            (n.JOIN_SAMPLE_RATIO, state.join_sample_ratio),
        ):
            yield GaugeMetricFamily(gauge.prometheus, gauge.description, value=reading)
        yield GaugeMetricFamily(
            n.SIDECAR_COMPUTE_DURATION.prometheus, n.SIDECAR_COMPUTE_DURATION.description, value=state.compute_seconds
        )

    def _model_counters(self, models: list[_ModelCounts]) -> Iterator[Metric]:
        yield from prometheus_families(p for p in _model_points(models) if p)


@dataclass
class _HistogramSeries:
    buckets: list[tuple[float, float]] = field(default_factory=list)  # (le, count of that bin)
    sum: float | None = None


def _model_points(models: list[_ModelCounts]) -> list[InstrumentPoints]:
    """The app's counters (for models fed over OTLP) and the sidecar's own, as neutral points:
    the same encoder as the app's ``/metrics`` turns them into families, so the names, types and
    help texts are the app's own."""
    out: dict[n.Instrument, InstrumentPoints] = {}
    for model_name, version, reexport, keys, totals in models:
        model = ((n.LABEL_MODEL_NAME, model_name), (n.LABEL_MODEL_VERSION, version))
        histograms: dict[tuple[n.Instrument, Labels], _HistogramSeries] = {}
        for key, value in zip(keys, totals.tolist()):
            inst = n.instrument_of_sample(key.name)
            if inst is None or not (inst in _SIDECAR_OWNED or (reexport and inst in _APP_FAMILIES)):
                continue
            points = out.setdefault(inst, InstrumentPoints(inst))
            if inst.kind != "histogram":
                points.numbers.append(NumberPoint((*model, *key.labels), value))
                continue
            labels = tuple((k, v) for k, v in key.labels if k != n.LABEL_LE)
            series = histograms.setdefault((inst, labels), _HistogramSeries())
            if key.name == inst.bucket_series:
                series.buckets.append((float(dict(key.labels)[n.LABEL_LE]), value))
            elif key.name == inst.sum_series:
                series.sum = value
        for (inst, labels), series in histograms.items():
            if series.buckets:
                out[inst].histograms.append(_histogram_point((*model, *labels), series))
    return list(out.values())


def _histogram_point(attributes: Attributes, series: _HistogramSeries) -> HistogramPoint:
    """The stored per-bin counts in ``le`` order as a point (``+Inf`` is the last bin)."""
    series.buckets.sort()
    bounds = tuple(le for le, _ in series.buckets if le != math.inf)
    return HistogramPoint(attributes, bounds, [count for _, count in series.buckets], series.sum)


def _gauge_families(gauges: list[Gauge]) -> Iterator[Metric]:
    families: dict[str, Metric] = {}
    for inst, labels, value in gauges:
        metric = families.get(inst.prometheus)
        if metric is None:
            metric = families[inst.prometheus] = Metric(inst.prometheus, inst.description, "gauge")
        metric.add_sample(inst.prometheus, labels, value)
    yield from families.values()


@dataclass
class _Rendered:
    generation: int
    at: float
    body: bytes
    gzipped: bytes | None = None


class Exposition:
    """``/metrics`` bodies, rendered once per state change or ``ttl`` seconds and shared by scrapers."""

    def __init__(self, registry: CollectorRegistry, state: SidecarState, ttl: float = 1.0) -> None:
        self.registry = registry
        self.state = state
        self.ttl = ttl
        self._lock = threading.Lock()  # one rendering at a time; never the state's lock
        self._cache: dict[str, _Rendered] = {}

    def render(self, accept: str = "", gzip_ok: bool = False) -> tuple[bytes, str, bool]:
        """(body, content type, gzipped) for one scrape."""
        encoder, content_type = choose_encoder(accept)
        with self._lock:
            hit = self._cache.get(content_type)
            generation = self.state.generation
            if hit is None or hit.generation != generation or time.monotonic() - hit.at >= self.ttl:
                hit = self._cache[content_type] = _Rendered(generation, time.monotonic(), encoder(self.registry))
            if not gzip_ok:
                return hit.body, content_type, False
            if hit.gzipped is None:
                hit.gzipped = gzip.compress(hit.body, compresslevel=6)
            return hit.gzipped, content_type, True
