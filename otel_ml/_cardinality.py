"""Bounded label values: the cardinality budget for anything that comes from user data.

Segment values, decisions and error types become Prometheus label values. Each dimension gets
a budget; the first ``budget`` distinct values keep their own series, every later one is
folded into ``__other__`` and counted, so a flood of distinct values costs one series, not
thousands. First come, first served keeps existing series stable across scrapes. Values are
stored in their exposition-safe spelling (:func:`otel_ml._names.label_value`), so a lone
surrogate in user data can never break ``/metrics`` or an OTLP export.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import numpy.typing as npt

from ._frame import factorize
from ._label_hygiene import label_value
from ._names import OTHER

__all__ = ["BoundedCounter", "BoundedLabels"]

_ALIAS_LIMIT = 4  # raw spellings remembered per budget slot, so the index dict stays bounded


class BoundedLabels:
    """Index label values up to ``budget``; index ``budget`` is ``__other__``.

    ``labels[i]`` is the value of index ``i``; ``overflow`` counts observations folded into
    ``__other__`` since creation. Thread-safe: indices are assigned under a lock, lookups of
    known values are a plain dict read.
    """

    __slots__ = ("budget", "labels", "overflow", "_index", "_lock", "missing_label")

    def __init__(self, budget: int, *, missing_label: str = "__missing__") -> None:
        if budget < 1:
            raise ValueError("a label budget must be >= 1")
        self.budget = budget
        self.labels: list[str] = []
        self.overflow = 0
        self.missing_label = missing_label
        self._index: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        """Slots an array indexed by these labels needs (the budget plus ``__other__``)."""
        return self.budget + 1

    def label(self, index: int) -> str:
        return OTHER if index == self.budget else self.labels[index]

    def index(self, value: str | None, count: int = 1) -> int:
        """Index of one value, assigning a new one while the budget lasts."""
        key = self.missing_label if value is None else value
        found = self._index.get(key)
        if found is not None:
            return found
        with self._lock:
            found = self._index.get(key)
            if found is not None:
                return found
            return self._assign(key, count)

    def _assign(self, key: str, count: int) -> int:
        """A new raw value (under the lock): its safe spelling gets the index, the raw one an alias."""
        safe = label_value(key) if isinstance(key, str) else label_value(str(key))
        found = self._index.get(safe)
        if found is None:
            if safe == OTHER or len(self.labels) >= self.budget:
                self.overflow += count
                return self.budget
            found = self._index[safe] = len(self.labels)
            self.labels.append(safe)
        if len(self._index) < _ALIAS_LIMIT * self.budget:
            self._index[key] = found  # two raw spellings of one safe label share its series
        return found

    def encode(self, values: Any) -> npt.NDArray[np.intp]:
        """Indices for a whole column: one dict lookup per distinct value, not per value."""
        codes, uniques = factorize(values)
        if len(uniques) == 1:
            return np.full(codes.shape, self.index(uniques[0], codes.size), dtype=np.intp)
        per_unique = np.bincount(codes, minlength=len(uniques))
        table = np.fromiter(
            (self.index(u, int(c)) for u, c in zip(uniques, per_unique.tolist())),
            dtype=np.intp,
            count=len(uniques),
        )
        return table[codes]


class BoundedCounter:
    """Counts per label value (error types, fallback reasons) within a cardinality budget."""

    __slots__ = ("labels", "_counts", "_lock")

    def __init__(self, budget: int) -> None:
        self.labels = BoundedLabels(budget)
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, value: str, amount: int = 1) -> None:
        label = self.labels.label(self.labels.index(value, amount))
        with self._lock:
            self._counts[label] = self._counts.get(label, 0) + amount

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)
