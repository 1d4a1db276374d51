"""Rolling windows from snapshots of cumulative counts.

A window of length W is "totals now minus totals at now - W". Each window keeps a ring of
snapshots of the model's totals vector taken every W / resolution seconds and reaching back
3W: the previous window of the same length is needed for rate changes, and the last three
windows pooled are the second look of the decision-rate test (evidence that builds up over
three windows, see :mod:`otel_ml.sidecar._decisions`). Memory is
windows x snapshots x series: it depends on the model's shape, never on request volume.
A sidecar younger than W compares with its first (all-zero) snapshot: a partial window.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .._durations import parse_duration

__all__ = ["WindowSpec", "SnapshotRing", "DEFAULT_WINDOWS", "DEFAULT_RESOLUTION"]

FloatArray = npt.NDArray[np.float64]
POOLED_WINDOWS = 3
"""How many windows back the ring reaches: the pooled look of the decision-rate test."""
DEFAULT_WINDOWS = ("1h", "24h", "7d")
DEFAULT_RESOLUTION = 60  # snapshots per window length


@dataclass(frozen=True)
class WindowSpec:
    """A window's label value (``ml_window``), its length and its snapshot spacing."""

    name: str
    seconds: float
    resolution: int = DEFAULT_RESOLUTION

    @classmethod
    def parse(cls, text: str, resolution: int = DEFAULT_RESOLUTION) -> WindowSpec:
        return cls(text.strip(), parse_duration(text, positive=True), resolution)

    @property
    def step(self) -> float:
        return self.seconds / self.resolution


class SnapshotRing:
    """Snapshots of one model's totals for one window, oldest first."""

    __slots__ = ("spec", "times", "vectors")

    def __init__(self, spec: WindowSpec, start: float, size: int) -> None:
        self.spec = spec
        self.times: list[float] = [start]
        self.vectors: list[FloatArray] = [np.zeros(size)]

    def copy(self) -> SnapshotRing:
        """The same snapshots in new lists (the arrays are never modified once taken)."""
        other = SnapshotRing.__new__(SnapshotRing)
        other.spec, other.times, other.vectors = self.spec, list(self.times), list(self.vectors)
        return other

    def maybe_take(self, now: float, totals: FloatArray) -> bool:
        """Take a snapshot if one is due; drop those no window computation can need any more."""
        if now - self.times[-1] < self.spec.step:
            return False
        self.times.append(now)
        self.vectors.append(totals.copy())
        horizon = now - POOLED_WINDOWS * self.spec.seconds
        # keep the newest snapshot at or before the horizon as the anchor of the pooled windows
        drop = 0
        while drop + 1 < len(self.times) and self.times[drop + 1] <= horizon:
            drop += 1
        if drop:
            del self.times[:drop]
            del self.vectors[:drop]
        return True

    def at(self, t: float) -> tuple[float, FloatArray]:
        """The newest snapshot taken at or before ``t`` (the oldest one if none is that old)."""
        i = int(np.searchsorted(np.asarray(self.times), t, side="right")) - 1
        i = max(i, 0)
        return self.times[i], self.vectors[i]

    def selection(self, now: float) -> tuple[int, int, int]:
        """Which snapshots the windows at ``now`` start from (``window`` and ``pooled`` read
        these three): the outputs change with time only when one of them moves."""
        times, w = self.times, self.spec.seconds
        return (bisect_right(times, now - w), bisect_right(times, now - 2 * w), bisect_right(times, now - 3 * w))

    def window(self, now: float, totals: FloatArray) -> tuple[FloatArray, FloatArray | None]:
        """Counts in [now - W, now] and in the previous window [now - 2W, now - W] (None if unknown)."""
        t1, v1 = self.at(now - self.spec.seconds)
        current = totals - _pad(v1, totals.size)
        t2, v2 = self.at(now - 2 * self.spec.seconds)
        previous = None if t2 == t1 else _pad(v1, totals.size) - _pad(v2, totals.size)
        return current, previous

    def pooled(self, now: float, totals: FloatArray) -> FloatArray | None:
        """Counts in [now - 3W, now], or None while the ring does not reach further back than W."""
        t1, _ = self.at(now - self.spec.seconds)
        t3, v3 = self.at(now - POOLED_WINDOWS * self.spec.seconds)
        return None if t3 == t1 else totals - _pad(v3, totals.size)


def _pad(vector: FloatArray, size: int) -> FloatArray:
    """Series only ever get appended, so an older snapshot is a prefix: pad it with zeros."""
    if vector.size == size:
        return vector
    out = np.zeros(size)
    out[: vector.size] = vector
    return out
