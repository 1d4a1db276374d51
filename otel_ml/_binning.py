"""Binning primitives shared by the baseline fitter and the instrumentation.

Bins are right-closed, ``(edge[i-1], edge[i]]``, with open outer bins, which is exactly what a
Prometheus ``le`` bucket and an OTLP explicit-bounds bucket count. So a value's bin index is
``searchsorted(edges, value, side="left")`` and the app's histogram buckets *are* the
baseline's bins: no re-binning anywhere downstream.

Categorical features map to ``vocabulary + [__other__, __unknown__]``: ``__other__`` holds the
rare values the baseline saw, ``__unknown__`` values it never saw (a renamed category).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from ._frame import canonical_label, factorize
from ._names import OTHER, UNKNOWN

__all__ = [
    "DEFAULT_SCORE_EDGES",
    "PSI_EPSILON",
    "bin_counts",
    "bin_index",
    "finite_bin_counts",
    "CategoryEncoder",
    "MISSING_CODE",
]

IntArray = npt.NDArray[np.intp]
MISSING_CODE = -1
DEFAULT_SCORE_EDGES: Final[tuple[float, ...]] = tuple(round(0.1 * i, 1) for i in range(1, 10))
"""Score bins when the baseline has no score profile: the app counts into them, the sidecar accepts them."""
PSI_EPSILON: Final = 1e-4
"""Floor for bin fractions inside logarithms (PSI, KL, JS): the drift statistics and the mixin's
PromQL ``clamp_min(x, ...)`` both take it from here, so the sidecar and Prometheus agree."""


def bin_index(edges: npt.NDArray[np.float64], values: npt.NDArray[np.float64]) -> IntArray:
    """Bin of each value for right-closed bins with open outer bins (``len(edges) + 1`` bins)."""
    return np.searchsorted(edges, values, side="left")


def _sorted_counts(edges: npt.NDArray[np.float64], ordered: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """Per-bin counts of a sorted column without NaN: the values ``<=`` each edge, differenced."""
    cumulative = np.searchsorted(ordered, edges, side="right")  # right-closed bins, like ``le``
    return np.diff(cumulative, prepend=0, append=ordered.size).astype(np.int64)


def bin_counts(edges: Any, values: Any, *, assume_sorted: bool = False) -> npt.NDArray[np.int64]:
    """Counts per right-closed bin (``len(edges) + 1`` bins, open at both ends); NaN is not counted.

    The same counts as ``np.bincount(bin_index(edges, values))`` on the non-NaN values, but the
    column is sorted once and the few edges are looked up in it, which beats one binary search
    per value. Pass ``assume_sorted=True`` for a column already sorted ascending (NaN last, as
    ``np.sort`` leaves it).
    """
    e = np.asarray(edges, dtype=np.float64).reshape(-1)
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    ordered = v if assume_sorted else np.sort(v)
    valid = int(np.searchsorted(ordered, np.inf, side="right"))  # NaN sorts after +inf
    return _sorted_counts(e, ordered[:valid])


def finite_bin_counts(
    edges: npt.NDArray[np.float64], values: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.int64], float, int]:
    """Per-bin counts, sum and number of the finite values of a column (NaN and +-inf skipped).

    The same sort-and-look-up as :func:`bin_counts`; the finite values are a contiguous slice of
    the sorted column, so their sum and count come for free.
    """
    ordered = np.sort(values)  # NaN sorts last, after +inf
    lo = int(np.searchsorted(ordered, -np.inf, side="right"))
    hi = int(np.searchsorted(ordered, np.inf, side="left"))
    finite = ordered[lo:hi]
    return _sorted_counts(edges, finite), float(finite.sum()), int(finite.size)


class CategoryEncoder:
    """Maps label values to bin codes: vocabulary index, then ``__other__``, then ``__unknown__``.

    Labels are compared by their canonical identity (:func:`~otel_ml._frame.canonical_label`):
    ``"True"`` finds a vocabulary entry ``"true"``, and a baseline fitted before labels were
    canonical (vocabulary ``"True"``) still finds ``True``.
    """

    __slots__ = ("vocabulary", "labels", "other_code", "unknown_code", "_lookup")

    def __init__(self, vocabulary: Sequence[str], rare_values: Sequence[str] = ()) -> None:
        self.vocabulary = tuple(vocabulary)
        self.other_code = len(self.vocabulary)
        self.unknown_code = self.other_code + 1
        self.labels: tuple[str, ...] = (*self.vocabulary, OTHER, UNKNOWN)
        lookup: dict[str, int] = {}
        for i, v in enumerate(self.vocabulary):
            lookup.setdefault(v, i)
        for value in rare_values:
            lookup.setdefault(value, self.other_code)
        for key, code in list(lookup.items()):
            canonical = canonical_label(key)
            if canonical is not None:
                lookup.setdefault(canonical, code)
        self._lookup = lookup

    @property
    def size(self) -> int:
        return len(self.labels)

    def code(self, label: str | None) -> int:
        if label is None:
            return MISSING_CODE
        code = self._lookup.get(label)
        if code is None:
            canonical = canonical_label(label)
            if canonical is None:
                return MISSING_CODE
            code = self._lookup.get(canonical, self.unknown_code)
        return code

    def encode(self, values: Any) -> IntArray:
        """Codes for a column; ``MISSING_CODE`` for None/NaN. One dict lookup per *distinct* value."""
        codes, uniques = factorize(values)
        table = np.fromiter((self.code(u) for u in uniques), dtype=np.intp, count=len(uniques))
        return table[codes]
