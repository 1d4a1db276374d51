"""Durations as Prometheus spells them, parsed and formatted in one place.

The sidecar's windows and config and the mixin's ``for:``/``keep_firing_for:`` and range
selectors read the same syntax: Prometheus' unit-ordered form (``90s``, ``1h30m``, ``7d``).
What the mixin writes into rules must be exactly that (:func:`prometheus_duration`); the
sidecar's own settings also take one decimal number with one unit (``1.5h``), as they always
have (:func:`parse_duration`). Formatting goes the other way with the largest unit that
divides exactly.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["format_duration", "parse_duration", "prometheus_duration"]

_UNITS: Final = {"y": 365 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
_PROMETHEUS: Final = re.compile(r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?")
_DECIMAL: Final = re.compile(r"(\d+\.\d+)(ms|s|m|h|d|w|y)")


def prometheus_duration(text: str) -> float:
    """Seconds in a duration exactly as Prometheus reads it (``90s``, ``1h30m``, ``7d``, ``0s``).

    For what is written into rules (``for:``, ``keep_firing_for:``, range selectors): anything
    Prometheus would reject (``1.5h``, surrounding spaces) fails here, at generation.
    """
    match = _PROMETHEUS.fullmatch(text)
    if not text or match is None:
        raise ValueError(f"not a Prometheus duration: {text!r} (use e.g. 30s, 15m, 1h30m, 7d)")
    return float(sum(int(v) * u for v, u in zip(match.groups(), _UNITS.values()) if v))


def parse_duration(text: str, *, positive: bool = False) -> float:
    """Seconds in a configured duration: Prometheus' form, or one decimal number with one unit
    (``1.5h``, as the sidecar's config has always accepted), spaces around it ignored.

    ``positive=True`` also rejects a zero duration (a window or an interval of ``0s``).
    """
    spelled = text.strip()
    decimal = _DECIMAL.fullmatch(spelled)
    seconds = float(decimal.group(1)) * _UNITS[decimal.group(2)] if decimal else prometheus_duration(spelled)
    if positive and seconds <= 0:
        raise ValueError(f"duration must be positive: {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest one-unit spelling of ``seconds`` that Prometheus reads back exactly."""
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
