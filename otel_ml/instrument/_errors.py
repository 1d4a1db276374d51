"""Failures of otel-ml itself: counted in ``ml_instrumentation_errors_total`` and logged once.

Every step otel-ml takes around a monitored call runs behind a guard that hands its exception
here instead of letting it reach the caller; the prediction is unaffected.
"""

from __future__ import annotations

import logging

from ._counters import ModelCounters

__all__ = ["InstrumentationErrors"]

_log = logging.getLogger("otel_ml")
_WARN_KEYS = 64  # distinct log-once keys per monitor, so hostile input can't grow the set


class InstrumentationErrors:
    """Counts and logs (once per stage and kind) what went wrong inside one monitor."""

    __slots__ = ("_counters", "_owner", "_warned")

    def __init__(self, counters: ModelCounters, owner: object) -> None:
        self._counters = counters
        self._owner = owner  # named in the log line (its repr is the model and version)
        self._warned: set[str] = set()

    def report(
        self, stage: str, exc: BaseException | None, *, reason: str | None = None, detail: str | None = None
    ) -> None:
        """Count a failure (``error_type`` = ``reason`` or the exception's class) and log it once
        per stage and kind; never raises."""
        try:
            kind = reason or type(exc).__qualname__
            self._counters.instrumentation_errors.add(kind)
            key = f"{stage}:{kind}"
            if key not in self._warned and len(self._warned) < _WARN_KEYS:
                self._warned.add(key)
                _log.warning(
                    "otel-ml %s: %s failed (%s%s); the prediction is unaffected, this is logged once",
                    self._owner,
                    stage,
                    kind,
                    f": {detail}" if detail else "",
                )
        except Exception:
            pass
