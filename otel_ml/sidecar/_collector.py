"""The sidecar's ``/metrics``: a custom collector over :class:`SidecarState`, and its cache.

It yields the windowed gauges, the baseline reference gauges, the sidecar's own counters and,
for models whose app pushes OTLP (Prometheus 2.42 has no OTLP receiver), the app's counters
re-exposed under the names the app would have used, so dashboards and rules work unchanged.
The lock is held only to copy counts; families are built from the copies. :class:`Exposition`
encodes the text (:mod:`._exposition`) once per page key into a cached blob, gzipped on
demand, so many scrapers cost one rendering.
"""

from __future__ import annotations

import gzip
import math
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .. import _names as n
from ..instrument._families import prometheus_families
from ..instrument._points import Attributes, HistogramPoint, InstrumentPoints, NumberPoint
from ._exposition import Encoded, PageWriter, encode_families, encode_gauges, encode_page, fast_format
from ._join_store import STATUSES
from ._review_state import ReviewCounts
from ._series import Gauge, Labels, SeriesKey
from ._state import OutputPart, SidecarState

__all__ = ["SidecarCollector", "Exposition"]

_APP_FAMILIES = frozenset(n.APP_INSTRUMENTS)
_SIDECAR_OWNED = frozenset(n.SIDECAR_COUNTERS)
_ACCEPT_VARIANTS = 8


# Known reasons start at 0, so rate() and increase() see the first one happen (client_python's
# advice); the store's eviction counts always carry both of theirs.
_UNMATCHED_ZERO = dict.fromkeys((*(s for s in STATUSES if s != "joined"), n.REVIEW_NOT_QUEUED), 0)
_MODEL_LABELS = [n.LABEL_MODEL_NAME, n.LABEL_MODEL_VERSION]

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
    models: list[tuple[str, str]]
    reviews: ReviewCounts
    app_gauges: list[Gauge]


@dataclass
class PageParts:
    """The page in parts that change independently (see :meth:`SidecarCollector.page_parts`)."""

    gauges: list[OutputPart]
    own: list[Metric]
    counters: list[tuple[tuple[str, ...], tuple[Any, ...], list[Metric]]]
    current: bool  # False: compute_ttl held a part back, so the page is not the current state's


class SidecarCollector:
    def __init__(self, state: SidecarState) -> None:
        self.state = state
        self._counters: dict[tuple[str, str], tuple[tuple[Any, ...], list[Metric]]] = {}

    def describe(self) -> Iterator[Metric]:
        return iter(())  # names depend on the baselines; no registration-time collect

    def collect(self) -> Iterator[Metric]:
        """Every family of the page, for prometheus_client (and its encoders)."""
        return self.families(self.page_parts())

    def families(self, parts: PageParts) -> Iterator[Metric]:
        """The page's parts as prometheus_client families, one per name."""
        yield from _gauge_families([g for _, _, gauges in parts.gauges for g in gauges])
        yield from parts.own
        yield from _merged(families for _, _, families in parts.counters)

    def page_parts(self) -> PageParts:
        """The computed gauges, the sidecar's own counters and, per model, its counters (the app's
        re-exported and the sidecar's per-model ones), each model's cached until it changes."""
        state = self.state
        gauges, current = state.output_parts()
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
                list(state.models),
                state.reviews.counts(),
                state.app_gauges.gauges(),
            )
            due: list[tuple[tuple[str, str], tuple[Any, ...], _ModelCounts]] = []
            keys: list[tuple[tuple[str, str], tuple[Any, ...]]] = []
            for (name, version), m in state.models.items():
                reexport = (name, version) in state.reexport
                key = (m.changes, reexport)
                keys.append(((name, version), key))
                cached = self._counters.get((name, version))
                if cached is None or cached[0] != key:
                    due.append(
                        ((name, version), key, (name, version, reexport, list(m.keys), m.current_totals().copy()))
                    )
        for model, key, counts in due:
            self._counters[model] = (key, _model_families(counts))
        for gone in self._counters.keys() - {model for model, _ in keys}:
            del self._counters[gone]
        counters: list[tuple[tuple[str, ...], tuple[Any, ...], list[Metric]]] = [
            (("counters", *model), key, self._counters[model][1]) for model, key in keys
        ]
        return PageParts(gauges, list(self._own_counters(own)), counters, current)

    def _own_counters(self, state: _OwnCounts) -> Iterator[Metric]:
        unmatched, received = _with_review_labels(state)
        for inst, label, counts in (
            (n.SIDECAR_INGEST_ERRORS, n.LABEL_REASON, state.ingest_errors),
            (n.SIDECAR_INGESTED, n.LABEL_SOURCE, state.ingested),
            (n.LABELS_UNMATCHED, n.LABEL_REASON, {**_UNMATCHED_ZERO, **unmatched}),
            (n.LABELS_RECEIVED, n.LABEL_SOURCE, received),
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
        yield from _review_families(state.models, state.reviews, time.time())
        yield from _gauge_families(state.app_gauges)


def _with_review_labels(state: _OwnCounts) -> tuple[dict[str, int], dict[str, int]]:
    """The label counters with the review labels the queue counted (they never reach the join store)."""
    unmatched, received = dict(state.unmatched_labels), dict(state.labels_received)
    for key, count in state.reviews.counts.items():
        if key[0] == "labels":
            received[n.REVIEW_SOURCE] = received.get(n.REVIEW_SOURCE, 0) + count
            if key[1] != "labelled":
                unmatched[key[1]] = unmatched.get(key[1], 0) + count
        elif key[0] == "labelled" and key[-1] == n.REVIEW_NO_DECISION:
            unmatched[n.REVIEW_NO_DECISION] = unmatched.get(n.REVIEW_NO_DECISION, 0) + count
    return unmatched, received


def _review_families(models: list[tuple[str, str]], reviews: ReviewCounts, now: float) -> Iterator[Metric]:
    """The review queue's counters (cumulative, from its file) and gauges, per model version."""
    queued = CounterMetricFamily(n.REVIEW_QUEUED.prometheus, n.REVIEW_QUEUED.description, labels=_MODEL_LABELS)
    dropped = CounterMetricFamily(
        n.REVIEW_QUEUE_DROPPED.prometheus, n.REVIEW_QUEUE_DROPPED.description, labels=[*_MODEL_LABELS, n.LABEL_REASON]
    )
    labelled = CounterMetricFamily(
        n.REVIEW_LABELLED.prometheus,
        n.REVIEW_LABELLED.description,
        labels=[*_MODEL_LABELS, n.LABEL_SEGMENT_KEY, n.LABEL_SEGMENT, n.LABEL_STRATUM, n.LABEL_OUTCOME],
    )
    pending = GaugeMetricFamily(n.REVIEW_PENDING.prometheus, n.REVIEW_PENDING.description, labels=_MODEL_LABELS)
    oldest = GaugeMetricFamily(
        n.REVIEW_OLDEST_PENDING.prometheus, n.REVIEW_OLDEST_PENDING.description, labels=_MODEL_LABELS
    )
    counts = reviews.counts
    for model in sorted(models):
        queued.add_metric(list(model), counts.get(("queued", *model), 0))
        for reason in n.REVIEW_QUEUE_DROP_REASONS:  # known reasons start at 0
            dropped.add_metric([*model, reason], counts.get(("dropped", *model, reason), 0))
        pending.add_metric(list(model), reviews.pending.get(model, 0))
        oldest.add_metric(list(model), max(0.0, now - reviews.oldest[model]) if model in reviews.oldest else 0.0)
    known = set(models)
    strata = sorted(
        {key[1:-1] for key in counts if key[0] == "labelled" and key[1:3] in known and key[-1] != n.REVIEW_NO_DECISION}
    )
    for stratum in strata:  # both outcomes from 0, so increase() sees a stratum's first error too
        for outcome in n.REVIEW_OUTCOMES:
            labelled.add_metric([*stratum, outcome], counts.get(("labelled", *stratum, outcome), 0))
    yield from (queued, dropped, labelled, pending, oldest)
    if reviews.webhook_failures is not None:
        failures = CounterMetricFamily(n.REVIEW_WEBHOOK_FAILURES.prometheus, n.REVIEW_WEBHOOK_FAILURES.description)
        failures.add_metric([], reviews.webhook_failures)
        yield failures


def _model_families(counts: _ModelCounts) -> list[Metric]:
    return prometheus_families(p for p in _model_points([counts]) if p)


def _merged(parts: Iterable[list[Metric]]) -> Iterator[Metric]:
    """One family per name from the models' families, samples in the models' order."""
    merged: dict[str, Metric] = {}
    for families in parts:
        for family in families:
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(family.name, family.documentation, family.type)
            into.samples.extend(family.samples)
    yield from merged.values()


@dataclass
class _HistogramSeries:
    buckets: list[tuple[float, float]] = field(default_factory=list)  # (le, count of that bin)
    sum: float | None = None


_NUMBER, _BUCKET, _SUM, _OTHER = range(4)


@lru_cache(maxsize=1 << 16)
def _series_plan(key: SeriesKey) -> tuple[n.Instrument | None, int, Labels, float]:
    """What one stored series is on the page: its instrument, its role, its labels without ``le``
    and its bound. Series keys repeat on every scrape, so this is worked out once per key."""
    inst = n.instrument_of_sample(key.name)
    if inst is None or inst.kind != "histogram":
        return inst, _NUMBER, key.labels, math.nan
    labels = tuple((k, v) for k, v in key.labels if k != n.LABEL_LE)
    if key.name == inst.bucket_series:
        return inst, _BUCKET, labels, float(dict(key.labels)[n.LABEL_LE])
    return inst, _SUM if key.name == inst.sum_series else _OTHER, labels, math.nan


def _model_points(models: list[_ModelCounts]) -> list[InstrumentPoints]:
    """The app's counters (for models fed over OTLP) and the sidecar's own, as neutral points:
    the same encoder as the app's ``/metrics`` turns them into families, so the names, types and
    help texts are the app's own."""
    out: dict[n.Instrument, InstrumentPoints] = {}
    for model_name, version, reexport, keys, totals in models:
        model = ((n.LABEL_MODEL_NAME, model_name), (n.LABEL_MODEL_VERSION, version))
        histograms: dict[tuple[n.Instrument, Labels], _HistogramSeries] = {}
        for key, value in zip(keys, totals.tolist()):
            inst, role, labels, le = _series_plan(key)
            if inst is None or not (inst in _SIDECAR_OWNED or (reexport and inst in _APP_FAMILIES)):
                continue
            points = out.get(inst)
            if points is None:
                points = out[inst] = InstrumentPoints(inst)
            if role == _NUMBER:
                points.numbers.append(NumberPoint((*model, *labels), value))
                continue
            series = histograms.get((inst, labels))
            if series is None:
                series = histograms[(inst, labels)] = _HistogramSeries()
            if role == _BUCKET:
                series.buckets.append((le, value))
            elif role == _SUM:
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
    key: tuple[Any, ...] | None  # None: never a hit (a part was held back)
    body: bytes
    content_type: str
    gzipped: bytes | None = None


class Exposition:
    """``/metrics`` bodies, encoded once per page key and shared by every scraper until it changes.

    The key (:meth:`SidecarState.page_key`) changes exactly when the page would, so a scrape of
    an unchanged sidecar (a second Prometheus of an HA pair, a scrape between two pushes) costs a
    key and a dictionary lookup. When it changed, only the parts that changed are encoded again
    (:class:`~._exposition.PageWriter`). Gzip is level 1: on a 900 KB page it takes 3 ms where
    level 6 takes 8 ms, for 15 % more bytes.
    """

    def __init__(self, collector: SidecarCollector) -> None:
        self.collector = collector
        self.state = collector.state
        self._lock = threading.Lock()  # one rendering at a time; never the state's lock
        self._cache: dict[str, _Rendered] = {}  # by Accept header (few distinct ones: the scrapers')
        self._writers = {False: PageWriter(), True: PageWriter()}  # by format: text, OpenMetrics

    def render(self, accept: str = "", gzip_ok: bool = False) -> tuple[bytes, str, bool]:
        """(body, content type, gzipped) for one scrape."""
        with self._lock:
            key = self.state.page_key()
            hit = self._cache.get(accept)
            if hit is None or hit.key != key:
                if len(self._cache) >= _ACCEPT_VARIANTS:
                    self._cache.clear()  # a client cycling Accept headers gets no memory for it
                body, content_type, current = self._encode(accept)
                # a page with a part compute_ttl held back is served, but never a hit for this key
                hit = self._cache[accept] = _Rendered(key if current else None, body, content_type)
            if not gzip_ok:
                return hit.body, hit.content_type, False
            if hit.gzipped is None:
                hit.gzipped = gzip.compress(hit.body, compresslevel=1)
            return hit.gzipped, hit.content_type, True

    def _encode(self, accept: str) -> tuple[bytes, str, bool]:
        """The page, its content type and whether it is the current state's."""
        parts = self.collector.page_parts()
        openmetrics_format, content_type = fast_format(accept)
        if openmetrics_format is not None:
            body = self._fast_page(parts, openmetrics_format)
            if body is not None:
                return body, content_type, parts.current
        body, content_type = encode_page(list(self.collector.families(parts)), accept)  # the library's, whole
        return body, content_type, parts.current

    def _fast_page(self, parts: PageParts, openmetrics_format: bool) -> bytes | None:
        writer = self._writers[openmetrics_format]
        encoded: list[Encoded | None] = [
            writer.part(part_id, key, partial(encode_gauges, gauges)) for part_id, key, gauges in parts.gauges
        ]
        encoded.append(encode_families(parts.own, openmetrics_format))
        encoded += [
            writer.part(part_id, key, partial(encode_families, families, openmetrics_format))
            for part_id, key, families in parts.counters
        ]
        writer.keep([p for p, _, _ in parts.gauges] + [p for p, _, _ in parts.counters])
        if any(part is None for part in encoded):
            return None
        return writer.page([p for p in encoded if p is not None], openmetrics_format)
