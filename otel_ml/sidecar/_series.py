"""The sidecar's shared types: samples, series, batches, predictions, gauges, errors and limits.

Both inputs (a scrape of the app's ``/metrics`` and OTLP pushed by the app or a collector)
are turned into the same :class:`MetricBatch` of raw samples, named and labelled exactly as
the app's Prometheus exposition names them, except that a histogram's ``_bucket{le}`` samples
hold per-bin counts (as OTLP sends them) rather than cumulative ones: the scrape converts with
:func:`bins_from_cumulative`. Everything after that (reset handling, windows, drift) has one
code path, which is why both inputs produce the same state. The types every
stage passes on live here, so the stages import them from one place and not from each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, NamedTuple

from .. import _names as n

__all__ = [
    "ACCEPTED",
    "ApplyResult",
    "BUCKET_SERIES",
    "bins_from_cumulative",
    "Gauge",
    "IngestError",
    "LimitSettings",
    "Labels",
    "MAX_SEGMENTS",
    "MetricBatch",
    "Prediction",
    "RawSample",
    "SUM_SERIES",
    "SeriesKey",
]

Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs without the model labels


class SeriesKey(NamedTuple):
    name: str
    labels: Labels


# One value of one series as it arrived: sample name, labels in arrival order (without the
# model labels), value. Arrival order is stable per source, so it is a cheap cache key.
RawSample = tuple[str, Labels, float]

Gauge = tuple[n.Instrument, dict[str, str], float]  # one output value: instrument, labels, value


_HISTOGRAMS: Final = tuple(i for i in (*n.APP_INSTRUMENTS, *n.SIDECAR_COUNTERS) if i.kind == "histogram")
BUCKET_SERIES: Final = frozenset(i.bucket_series for i in _HISTOGRAMS)
SUM_SERIES: Final = frozenset(i.sum_series for i in _HISTOGRAMS)  # the one kind of sample that may go down
ACCEPTED: Final = frozenset(  # sample names the sidecar keeps; anything else is ignored
    name for i in (*n.APP_INSTRUMENTS, *n.SIDECAR_COUNTERS) for name in i.sample_names
)
MAX_SEGMENTS: Final = 64  # segment keys kept per prediction (sorted by key)


class IngestError(Exception):
    """A rejected input: ``status`` is the HTTP status to answer, ``reason`` the counter label."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass
class MetricBatch:
    """The samples one source sent for one model version in one request."""

    source: str
    model: str
    version: str
    cumulative: bool
    start_ns: int
    samples: list[RawSample] = field(default_factory=list)
    fixes: dict[str, int] = field(default_factory=dict)  # attributes dropped or renamed, per reason


@dataclass(frozen=True)
class Prediction:
    """One prediction (an ``ml.predict`` span, a row of ``/v1/predictions``, an inline label or a
    token), kept until its label arrives. ``time`` is its Unix time; 0 means "when it arrived".
    ``shadow_of`` is the primary version when this is a shadow's prediction of the same request."""

    request_id: str
    model: str
    version: str
    score: float | None
    decision: str | None
    segments: tuple[tuple[str, str], ...]
    time: float = 0.0
    shadow_of: str | None = None


@dataclass
class ApplyResult:
    """What one payload did to a model: series values applied, and rejections per reason."""

    applied: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str, count: int = 1) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + count


@dataclass(frozen=True)
class LimitSettings:
    """How much any input can make the sidecar hold: memory is bounded by these, never by traffic."""

    segment_budget: int = 100  # segment values per segment key before ``__other__``
    label_budget: int = 32  # values of any other bounded label (decision, error type ...)
    max_series_per_model: int = 20_000
    max_sources_per_model: int = 1000  # scrape targets and OTLP resources reporting one model at once
    join_max_bytes: int = 512 * 1024 * 1024  # join store on disk; above it request ids are hash-sampled
    max_predictions_per_request: int = 100_000  # rows of one /v1/predictions body
    max_segment_combinations: int = 5_000  # per model: distinct (decision, segments) of stored predictions
    max_count: float = 2.0**53  # a count above this is an attack or a bug, never applied


def bins_from_cumulative(samples: list[RawSample]) -> list[RawSample]:
    """A scrape's cumulative ``le`` buckets as the per-bin counts the sidecar stores.

    Prometheus' text format carries cumulative buckets, OTLP per-bin ones; the store keeps one
    form, the one OTLP sends and the drift statistics use, so only the scrape converts (once,
    here). Buckets are grouped by sample name and labels without ``le`` and ordered by bound; the
    bin of ``le=b`` holds the values in ``(previous bound, b]``. Other samples pass unchanged.
    A non-monotonic histogram gives a negative bin, which ingest rejects as an invalid value.
    """
    groups: dict[tuple[str, Labels], list[tuple[float, int]]] = {}
    out = list(samples)
    for i, (name, labels, _) in enumerate(out):
        if name in BUCKET_SERIES:
            le = next((v for k, v in labels if k == "le"), None)
            try:
                bound = float(le)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                continue  # no bound: the series is rejected by its labels later
            if bound != bound:
                continue
            rest = tuple(sorted(pair for pair in labels if pair[0] != "le"))  # arrival order may differ per line
            groups.setdefault((name, rest), []).append((bound, i))
    for buckets in groups.values():
        buckets.sort()
        previous = 0.0
        for _, i in buckets:
            name, labels, value = out[i]
            out[i] = (name, labels, value - previous)
            previous = value
    return out
