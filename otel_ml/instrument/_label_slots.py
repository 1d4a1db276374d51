"""Label-keyed counters in fixed array slots, and bounded labels that publish their vocabulary.

A counter keyed by one label (error type, fallback reason) is an array slot per label value,
so it can live in a memory-mapped file like every other count; the label strings travel
separately. In multiprocess mode a new label is published before its slot is first used, so
a reader never finds a count it cannot name.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from .._cardinality import BoundedLabels
from .._frame import as_labels
from ._snapshot import by_label

__all__ = ["PublishedLabels", "SlotCounts", "segment_grids"]

IntArray = npt.NDArray[np.int64]


class SlotCounts:
    """Counts per label value in a fixed array slot per label (``budget`` is ``__other__``)."""

    __slots__ = ("labels", "slots", "_lock")

    def __init__(self, labels: BoundedLabels, slots: IntArray) -> None:
        self.labels = labels
        self.slots = slots
        self._lock = threading.Lock()

    def add(self, value: str, amount: int = 1) -> None:
        i = self.labels.index(value, amount)
        with self._lock:
            self.slots[i] += amount

    def counts(self) -> dict[str, int]:
        with self._lock:
            slots = self.slots.copy()
        return by_label(slots, list(self.labels.labels), self.labels.budget)


class PublishedLabels(BoundedLabels):
    """Bounded labels that publish the vocabulary before a new index is first used (multiprocess)."""

    __slots__ = ("published", "_publish")

    def __init__(self, budget: int, publish: Callable[[], None]) -> None:
        super().__init__(budget)
        self.published = 0
        self._publish = publish

    def index(self, value: str | None, count: int = 1) -> int:
        i = BoundedLabels.index(self, value, count)
        if self.published <= i < self.budget:
            self._publish()
        return i


def segment_grids(
    segment_labels: Sequence[BoundedLabels], segment_values: Sequence[Any], codes: Any, shape: tuple[int, int]
) -> list[npt.NDArray[np.intp]]:
    """Per segment key (0 is ``__all__``), a batch's counts by (segment slot, code): one
    ``bincount`` per key. ``segment_values[k]`` is the column of key k + 1, or None (missing)."""
    n = len(codes)
    grids = []
    for k, labels in enumerate(segment_labels):
        if k == 0:
            seg = np.zeros(n, dtype=np.intp)
        else:
            raw = segment_values[k - 1]
            seg = labels.encode(as_labels(raw) if raw is not None else np.full(n, None, dtype=object))
        grids.append(np.bincount(seg * shape[1] + codes, minlength=shape[0] * shape[1]).reshape(shape))
    return grids
