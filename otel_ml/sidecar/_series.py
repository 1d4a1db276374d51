"""The sidecar's common currency: Prometheus-style samples of the app's cumulative counters.

Both inputs (a scrape of the app's ``/metrics`` and OTLP pushed by the app or a collector)
are turned into the same :class:`Sample` list, named and labelled exactly as the app's
Prometheus exposition names them. Everything after that (reset handling, windows, drift)
has one code path, which is why both inputs produce the same state.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from .. import _names as n

__all__ = ["RawSample", "SeriesKey", "Labels", "ACCEPTED", "BUCKET_SERIES", "SUM_SERIES"]

Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs without the model labels


class SeriesKey(NamedTuple):
    name: str
    labels: Labels


# One value of one series as it arrived: sample name, labels in arrival order (without the
# model labels), value. Arrival order is stable per source, so it is a cheap cache key.
RawSample = tuple[str, Labels, float]


_HISTOGRAMS: Final = tuple(i for i in n.APP_INSTRUMENTS if i.kind == "histogram")
BUCKET_SERIES: Final = frozenset(i.bucket_series for i in _HISTOGRAMS)
SUM_SERIES: Final = frozenset(i.sum_series for i in _HISTOGRAMS)  # the one kind of sample that may go down
ACCEPTED: Final = frozenset(  # sample names the sidecar keeps; anything else is ignored
    name for i in (*n.APP_INSTRUMENTS, *n.SIDECAR_COUNTERS) for name in i.sample_names
)
