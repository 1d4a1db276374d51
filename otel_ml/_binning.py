"""Binning primitives shared by the baseline fitter and the instrumentation.

Bins are right-closed, ``(edge[i-1], edge[i]]``, with open outer bins, which is exactly what a
Prometheus ``le`` bucket and an OTLP explicit-bounds bucket count. So a value's bin index is
``searchsorted(edges, value, side="left")`` and the app's histogram buckets *are* the
baseline's bins: no re-binning anywhere downstream.

Categorical features map to ``vocabulary + [__other__, __unknown__]``: ``__other__`` holds the
rare values the baseline saw, ``__unknown__`` values it never saw (a renamed category).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from ._bin_kernels import Kernel, cumulative_counts, kernel_for, prepared
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


def _bins(cumulative: npt.NDArray[np.int64], total: int) -> npt.NDArray[np.int64]:
    """Per-bin counts from the counts ``<=`` each edge and the number of values counted."""
    out = np.empty(cumulative.size + 1, dtype=np.int64)  # np.diff(prepend=, append=) costs 10 us more
    out[:-1] = cumulative
    out[-1] = total
    out[1:] -= cumulative
    return out


def bin_counts(
    edges: Any, values: Any, *, assume_sorted: bool = False, kernel: Kernel | None = None
) -> npt.NDArray[np.int64]:
    """Counts per right-closed bin (``len(edges) + 1`` bins, open at both ends); NaN is not counted.

    The same counts as ``np.bincount(bin_index(edges, values))`` on the non-NaN values (-inf
    in the first bin, +inf in the last), computed as the values ``<=`` each edge, differenced:
    Prometheus' cumulative ``le`` buckets. The kernel is chosen by the number of edges
    (:func:`~otel_ml._bin_kernels.kernel_for`) unless ``kernel`` names one. Pass
    ``assume_sorted=True`` for a column already sorted ascending (NaN last, as ``np.sort``
    leaves it): the edges are then only looked up.
    """
    e, v = prepared(edges, values)
    if assume_sorted:
        valid = int(np.searchsorted(v, np.inf, side="right"))  # NaN sorts after +inf
        return _bins(cumulative_counts("sort", e, v, sorted_valid=valid), valid)
    valid = v.size - int(np.count_nonzero(np.isnan(v)))
    return _bins(cumulative_counts(kernel or kernel_for(e.size, v.size), e, v), valid)


def finite_bin_counts(
    edges: Any, values: Any, *, kernel: Kernel | None = None
) -> tuple[npt.NDArray[np.int64], float, int]:
    """Per-bin counts, sum and number of the finite values of a column (NaN and +-inf skipped).

    One ``np.sum`` first: when it is finite the column has no NaN or inf, and the counts are
    :func:`bin_counts`' with nothing else to look at. Otherwise the infinities are counted and
    taken out of the bins they would fall in (-inf the first, +inf the first bin whose edge is
    +inf, else the last), and the sum is taken over the finite values only.
    """
    e, v = prepared(edges, values)
    cumulative = cumulative_counts(kernel or kernel_for(e.size, v.size), e, v)
    with np.errstate(over="ignore", invalid="ignore"):  # inf - inf is NaN: the sign to look closer
        total = float(np.sum(v, dtype=np.float64))
        if math.isfinite(total):
            return _bins(cumulative, v.size), total, int(v.size)
        finite = np.isfinite(v)
        total = float(np.sum(v, dtype=np.float64, where=finite))
    n_finite = int(np.count_nonzero(finite))
    low, high = int(np.count_nonzero(v == -np.inf)), int(np.count_nonzero(v == np.inf))
    counts = _bins(cumulative, n_finite + low + high)
    counts[0] -= low
    counts[int(np.searchsorted(e, np.inf, side="left"))] -= high
    return counts, total, n_finite


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
