"""One throttle for every "log this at most once a minute" in the sidecar.

A flood of bad requests, a target that stays down or a full disk must be counted every time
but logged rarely; each caller asks :meth:`Throttle.allow` with its own key (a reason, a target
and reason, a message template) before writing its line.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable

__all__ = ["Throttle"]


class Throttle:
    """``allow(key)`` is true at most once per ``interval`` seconds per key (monotonic clock).

    Keys are bounded: past ``max_keys`` distinct keys the memory starts over, so hostile input
    that varies the key can cost at most one extra line per key, never unbounded memory."""

    def __init__(self, interval: float = 60.0, max_keys: int = 1000) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._last: dict[Hashable, float] = {}
        self._lock = threading.Lock()

    def allow(self, key: Hashable = None) -> bool:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -self.interval) < self.interval:
                return False
            if len(self._last) >= self.max_keys:
                self._last.clear()
            self._last[key] = now
        return True
