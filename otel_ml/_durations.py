"""Durations as Prometheus spells them, parsed and formatted in one place.

The sidecar's windows and config, the mixin's ``for:``/``keep_firing_for:`` and range
selectors all read the same syntax: Prometheus' unit-ordered form (``90s``, ``1h30m``,
``7d``), plus one decimal number with one unit (``1.5h``) that the sidecar's config has always
accepted. Formatting goes the other way with the largest unit that divides exactly.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["parse_duration", "format_duration"]

_UNITS: Final = {"y": 365 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
_PROMETHEUS: Final = re.compile(r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?")
_DECIMAL: Final = re.compile(r"(\d+\.\d+)(ms|s|m|h|d|w|y)")


def parse_duration(text: str, *, positive: bool = False) -> float:
    """Seconds in a duration (``90s``, ``1h30m``, ``7d``, ``1.5h``); ``ValueError`` on anything else.

    ``positive=True`` also rejects a zero duration (a window or an interval of ``0s``).
    """
    spelled = text.strip()
    seconds: float
    match = _PROMETHEUS.fullmatch(spelled)
    if spelled and match is not None:
        seconds = sum(int(v) * u for v, u in zip(match.groups(), _UNITS.values()) if v)
    elif (decimal := _DECIMAL.fullmatch(spelled)) is not None:
        seconds = float(decimal.group(1)) * _UNITS[decimal.group(2)]
    else:
        raise ValueError(f"not a Prometheus duration: {text!r} (use e.g. 30s, 15m, 1h30m, 7d)")
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
