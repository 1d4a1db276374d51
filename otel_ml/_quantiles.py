"""Exact quantiles of a column without sorting it, and readable bin edges from them.

``np.quantile`` (method ``linear``) needs the order statistics at ``floor(h)`` and
``floor(h) + 1`` for ``h = (n - 1) * q``. numpy's ``partition`` with several ``kth`` falls
back to a scalar introselect (2.5 ms per 100k values for nine quantiles, more than a full
vectorised sort), while a single ``kth`` is a vectorised select (0.16 ms). So the column is
partitioned one ``kth`` at a time, each time only inside the slice between the order
statistics already in place (O(n log k) work, no sort), and each upper neighbour is the minimum
of the slice above its lower one (one ``np.minimum.reduceat``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["quantiles_and_neighbours", "readable_edges"]

FloatArray = npt.NDArray[np.float64]
EDGE_DIGITS = 6


def _select(work: FloatArray, kth: npt.NDArray[np.intp]) -> None:
    """Partition ``work`` in place so each index of the sorted, distinct ``kth`` holds its order statistic."""
    pending = [(0, work.size, 0, kth.size)]  # a slice of work and the kth inside it
    while pending:
        start, stop, first, last = pending.pop()
        if first >= last:
            continue
        mid = (first + last) // 2
        k = int(kth[mid])
        work[start:stop].partition(k - start)
        pending.append((start, k, first, mid))
        pending.append((k + 1, stop, mid + 1, last))


def quantiles_and_neighbours(finite: FloatArray, qs: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``np.quantile(finite, qs)`` exactly, with the order statistics each quantile lies between.

    ``finite`` must be non-empty and free of NaN and inf; it is not modified.
    """
    n = finite.size
    h = (n - 1) * qs
    lo = np.minimum(np.floor(h).astype(np.intp), n - 1)
    work = finite.copy()
    distinct = np.unique(lo)
    _select(work, distinct)
    below = work[lo]
    upper = np.empty(distinct.size, dtype=np.float64)
    inner = distinct + 1 < n
    if inner.any():
        upper[inner] = np.minimum.reduceat(work, distinct[inner] + 1)
    upper[~inner] = work[n - 1]
    above = upper[np.searchsorted(distinct, lo)]
    gamma = h - lo
    # numpy's lerp, to the bit: a + (b - a) * g, or b - (b - a) * (1 - g) from g = 0.5 on
    diff = above - below
    q = np.where(gamma >= 0.5, above - diff * (1.0 - gamma), below + diff * gamma)
    return q, below, above


def _same_side(q: float, r: float, below: float, above: float, finite: FloatArray) -> bool:
    """Whether every value is on the same side of ``r`` as of ``q`` (right-closed bins: ``x <= edge``)."""
    if r == q:
        return True
    if below <= q < above:  # no value lies strictly between the two order statistics
        return below <= r < above
    return int(np.count_nonzero(finite <= r)) == int(np.count_nonzero(finite <= q))  # ties at q: count


def readable_edges(finite: FloatArray, qs: FloatArray) -> FloatArray:
    """The quantiles, each rounded to as few significant digits (>= six) as keep every value on
    the same side of it, de-duplicated (the baseline's ``quantile_edges``)."""
    q, below, above = quantiles_and_neighbours(finite, qs)
    out = []
    for edge, lo, hi in zip(q.tolist(), below.tolist(), above.tolist()):
        chosen = edge
        for digits in range(EDGE_DIGITS, 18):
            rounded = float(f"{edge:.{digits}g}")
            if _same_side(edge, rounded, lo, hi, finite):
                chosen = rounded
                break
        out.append(chosen)
    return np.unique(np.array(out, dtype=np.float64))
