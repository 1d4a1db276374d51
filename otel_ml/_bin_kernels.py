"""Three ways to count a column into right-closed bins, and which one to use on this machine.

All three return the same numbers: the values ``<=`` each edge (the cumulative counts of a
Prometheus ``le`` bucket), NaN never counted.

- ``cumulative``: one ``np.count_nonzero(values <= edge)`` per edge. SIMD compares, no index
  array, no sort: about 0.25 ns per value and edge on any x86 CPU, so it wins outright for the
  few edges a baseline has (10 by default) and loses only when edges run into the dozens.
- ``searchsorted``: one binary search per value plus ``np.bincount``; its cost grows with
  ``log(edges)`` only, so it wins for many edges where sorting is slow.
- ``sort``: ``np.sort`` once, then the edges are looked up in the sorted column. Fast where
  numpy's sort is vectorised (AVX-512), 7x slower elsewhere (2.0 vs 5.2 ms per 100k values
  measured on two 2-core machines), which is why it is never chosen without measuring.

:func:`kernel_for` picks one. Up to ``ALWAYS_CUMULATIVE`` edges the cumulative kernel is
cheaper than the other two on every machine we know of (it does ``edges`` compares per value;
a binary search or a sort costs tens of compares' worth), so nothing is measured. Beyond that
the three are timed once per process on a small synthetic column (:func:`calibration`, cached,
a few milliseconds, never at import) and the cheapest by the fitted cost model is taken.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "ALWAYS_CUMULATIVE",
    "KERNELS",
    "Calibration",
    "Kernel",
    "calibration",
    "cumulative_counts",
    "kernel_for",
    "prepared",
]

Kernel = Literal["cumulative", "searchsorted", "sort"]
KERNELS: Final[tuple[Kernel, ...]] = ("cumulative", "searchsorted", "sort")
ALWAYS_CUMULATIVE: Final = 16
"""Edges up to which the cumulative kernel is taken without measuring (see the module docstring)."""
_CALL_OVERHEAD: Final = 1.5e-6  # seconds per numpy call, what decides for columns of a few values
_CAL_SIZE: Final = 8_192
_CAL_EDGES: Final = (8, 64)

Values = npt.NDArray[np.floating[Any]]
Cumulative = npt.NDArray[np.int64]


def prepared(edges: Any, values: Any) -> tuple[Values, Values]:
    """Edges and values in one float dtype, so every compare is exact and needs no conversion.

    float64 and float32 columns are used as they are (a strided one is copied: 0.4 ms per 100k
    values, against 3.5 ms for ten compares on the strided view); other dtypes (ints, bools,
    objects) become float64 as everywhere else in otel-ml. For float32 values each edge becomes
    the largest float32 ``<=`` it: for a float32 ``x``, ``x <= edge`` exactly when ``x <= that
    float32``, so the counts are those of the float64 comparison without converting the column.
    """
    v = np.asarray(values)
    if v.dtype != np.float64 and v.dtype != np.float32:
        v = np.asarray(v, dtype=np.float64)
    v = v.reshape(-1)
    if not v.flags.c_contiguous:
        v = np.ascontiguousarray(v)  # a column of a C-order matrix: compares and sums on it cost 10x the copy
    e = np.asarray(edges, dtype=np.float64).reshape(-1)
    if v.dtype == np.float32:
        with np.errstate(over="ignore"):  # an edge beyond float32's range becomes +-inf, then stepped down
            e32 = e.astype(np.float32)
        too_high = e32.astype(np.float64) > e
        e = np.where(too_high, np.nextafter(e32, np.float32(-np.inf)), e32)
    return e, v


def cumulative_counts(kernel: Kernel, edges: Values, values: Values, sorted_valid: int | None = None) -> Cumulative:
    """The number of values ``<=`` each edge (NaN never counts), by the given kernel.

    ``sorted_valid`` marks ``values`` as sorted ascending with its first ``sorted_valid``
    entries not NaN (as ``np.sort`` leaves them): the edges are then only looked up.
    """
    if sorted_valid is not None:
        return np.searchsorted(values[:sorted_valid], edges, side="right").astype(np.int64)
    if kernel == "cumulative":
        return np.fromiter((np.count_nonzero(values <= t) for t in edges), dtype=np.int64, count=edges.size)
    if kernel == "searchsorted":
        index = np.searchsorted(edges, values, side="left")  # NaN lands past the last edge: not counted
        return np.cumsum(np.bincount(index, minlength=edges.size + 1)[:-1]).astype(np.int64)
    ordered = np.sort(values)  # NaN sorts last, after +inf
    valid = int(np.searchsorted(ordered, np.inf, side="right"))
    return np.searchsorted(ordered[:valid], edges, side="right").astype(np.int64)


@dataclass(frozen=True)
class Calibration:
    """Seconds per value of each kernel on this machine (the cost model of :func:`kernel_for`)."""

    compare: float  # cumulative: per value and edge
    search: float  # searchsorted + bincount: per value and log2(edges + 1)
    search_base: float  # searchsorted + bincount: per value, whatever the edges
    sort: float  # sort: per value and log2(values)

    def cost(self, kernel: Kernel, n_edges: int, n_values: int) -> float:
        if kernel == "cumulative":
            return n_edges * (_CALL_OVERHEAD + n_values * self.compare)
        if kernel == "searchsorted":
            return 3 * _CALL_OVERHEAD + n_values * (self.search_base + self.search * math.log2(n_edges + 1))
        return 3 * _CALL_OVERHEAD + n_values * self.sort * math.log2(max(n_values, 2))


def _best_time(fn: Callable[[], Any], repeats: int = 3) -> float:
    fn()  # first calls pay for lazy set-up, not for the kernel
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@functools.cache
def calibration() -> Calibration:
    """Time the kernels once per process on a synthetic column (a few ms; best of 3 runs each)."""
    # shuffled-looking values in (-1, 1) without numpy.random (whose first use alone costs ms)
    values = np.modf(np.sin(np.arange(_CAL_SIZE) * 12.9898) * 43758.5453)[0]
    few, many = (np.linspace(-0.9, 0.9, k) for k in _CAL_EDGES)
    n = float(_CAL_SIZE)
    t_cmp = _best_time(lambda: cumulative_counts("cumulative", few, values))
    t_few = _best_time(lambda: cumulative_counts("searchsorted", few, values))
    t_many = _best_time(lambda: cumulative_counts("searchsorted", many, values))
    t_sort = _best_time(lambda: cumulative_counts("sort", few, values))
    lo, hi = (math.log2(k + 1) for k in _CAL_EDGES)
    search = max(t_many - t_few, 0.0) / (hi - lo) / n
    return Calibration(
        compare=max(t_cmp / _CAL_EDGES[0] - _CALL_OVERHEAD, 0.0) / n,
        search=search,
        search_base=max(t_few / n - search * lo, 0.0),
        sort=t_sort / n / math.log2(n),
    )


def kernel_for(n_edges: int, n_values: int) -> Kernel:
    """The cheapest kernel for a column of ``n_values`` and ``n_edges`` edges on this machine."""
    if n_edges <= ALWAYS_CUMULATIVE:
        return "cumulative"
    cal = calibration()
    return min(KERNELS, key=lambda k: cal.cost(k, n_edges, n_values))
