"""The app's gauges pushed over OTLP (``n.APP_GAUGES``: the price table in use and its date).

A gauge is a per-process fact, not a count: each source's last value is kept (never summed,
never windowed, never in the counter path), forgotten when the source has been silent for
``source_ttl`` like the counters' sources, and re-exposed with its labels for Prometheus, which
cannot receive OTLP itself. Sources reporting the same series (the replicas of one model) are
shown once, with the smallest value: for ``ml_price_config_updated_timestamp_seconds`` that is
the oldest price table still in use, the one a staleness alert must see.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from .. import _names as n
from ._otlp_input import AppGaugePoint
from ._series import Gauge, Labels

__all__ = ["AppGauges", "MAX_GAUGE_SERIES_PER_SOURCE"]

MAX_GAUGE_SERIES_PER_SOURCE = 64  # price info series of one process: one or two in practice


@dataclass
class _Source:
    seen_at: float
    values: dict[tuple[n.Instrument, Labels], float] = field(default_factory=dict)


class AppGauges:
    """Last gauge values per (model, version) and source; bounded by the source budget."""

    def __init__(self, max_sources: int) -> None:
        self.max_sources = max_sources
        self._models: dict[tuple[str, str], dict[str, _Source]] = {}

    def apply(self, points: Iterable[AppGaugePoint], models: Collection[tuple[str, str]], now: float) -> int:
        """Take the points of one push (a source's push replaces its previous values); how many were kept."""
        pushed: dict[tuple[str, str], dict[str, _Source]] = {}
        for p in points:
            if (p.model, p.version) not in models:
                continue
            source = pushed.setdefault((p.model, p.version), {}).setdefault(p.source, _Source(now))
            if len(source.values) < MAX_GAUGE_SERIES_PER_SOURCE:
                source.values[(p.instrument, p.labels)] = p.value
        kept = 0
        for key, sources in pushed.items():
            held = self._models.setdefault(key, {})
            for name, source in sources.items():
                if name in held or len(held) < self.max_sources:
                    held[name] = source
                    kept += len(source.values)
        return kept

    def expire(self, now: float, ttl: float) -> bool:
        gone = False
        for key, sources in list(self._models.items()):
            for name in [s for s, src in sources.items() if now - src.seen_at > ttl]:
                del sources[name]
                gone = True
            if not sources:
                del self._models[key]
        return gone

    def gauges(self) -> list[Gauge]:
        shown: dict[tuple[n.Instrument, tuple[str, str], Labels], float] = {}
        for (model, version), sources in self._models.items():
            for source in sources.values():
                for (inst, labels), value in source.values.items():
                    key = (inst, (model, version), labels)
                    shown[key] = min(value, shown.get(key, value))
        return [
            (inst, {n.LABEL_MODEL_NAME: model, n.LABEL_MODEL_VERSION: version, **dict(labels)}, value)
            for (inst, (model, version), labels), value in sorted(shown.items(), key=lambda kv: repr(kv[0]))
        ]
