"""The sidecar's common currency: Prometheus-style samples of the app's cumulative counters.

Both inputs (a scrape of the app's ``/metrics`` and OTLP pushed by the app or a collector)
are turned into the same :class:`Sample` list, named and labelled exactly as the app's
Prometheus exposition names them. Everything after that (reset handling, windows, drift)
has one code path, which is why both inputs produce the same state.
"""

from __future__ import annotations

import math
from typing import Final, NamedTuple

from .. import _names as n
from ..instrument._prometheus import format_le

__all__ = ["RawSample", "SeriesKey", "Labels", "ACCEPTED", "normalize_le", "HISTOGRAM_FAMILIES"]

Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs without the model labels


class SeriesKey(NamedTuple):
    name: str
    labels: Labels


# One value of one series as it arrived: sample name, labels in arrival order (without the
# model labels), value. Arrival order is stable per source, so it is a cheap cache key.
RawSample = tuple[str, Labels, float]


HISTOGRAM_FAMILIES: Final = frozenset(i.prometheus for i in n.APP_INSTRUMENTS if i.kind == "histogram")
SIDECAR_COUNTERS: Final = (n.OUTCOMES.series, n.OUTCOME_SQUARED_ERROR.series)


def _accepted() -> frozenset[str]:
    names: set[str] = set(SIDECAR_COUNTERS)
    for inst in n.APP_INSTRUMENTS:
        if inst.kind == "histogram":
            names.update({inst.prometheus + "_bucket", inst.prometheus + "_count", inst.prometheus + "_sum"})
        else:
            names.add(inst.series)
    return frozenset(names)


ACCEPTED: Final = _accepted()  # sample names the sidecar keeps; anything else is ignored


def normalize_le(le: str) -> str:
    """One spelling per bucket bound, whatever client formatted it (``1e+06`` vs ``1000000.0``)."""
    try:
        value = float(le)
    except ValueError:
        return le
    return "+Inf" if math.isinf(value) and value > 0 else format_le(value)
