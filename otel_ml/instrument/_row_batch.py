"""Counting single rows: buffered ones in one vectorised step, or one straight into the arrays.

One row of 20 features costs ~14 us when it is binned with numpy on its own (numpy's per-call
overhead, not the work, dominates), so the single-row path only reads what it must at call time
(the feature values packed as doubles, the category codes, the score, the decision and segment
indices, the latency) as a :data:`Row`. In process memory :class:`~._counters.ModelCounters`
buffers rows, and :func:`count_rows` turns a buffer into count deltas, vectorised over the rows
(one broadcast ``x <= edge`` over a padded edge matrix, one ``bincount`` each for predictions
and latency). In multiprocess mode :class:`RowWriter` counts each row into the file at once
with ``bisect`` and item writes. The counts are exactly those of binning each row alone: a row's
values are converted to float as the row path always did (numpy's float64 conversion of each
value; when one fails, the row's values each through ``float()``, NaN where it raises), and
right-closed bins are the same in all three.
"""

from __future__ import annotations

import math
import struct
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .._binning import MISSING_CODE
from .._frame import as_float

__all__ = ["Row", "RowCounts", "RowPlan", "RowWriter", "count_rows", "row_floats"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
# values (as doubles, or as given), category codes, score (NaN: none), decision index (-1: none),
# segment indices, duration (None: none), thread CPU nanoseconds (0: not measured)
Row = tuple[bytes | tuple[Any, ...], tuple[int, ...], float, int, tuple[int, ...], float | None, int]


@dataclass(frozen=True)
class RowPlan:
    """Where a row's counts land: the layout of a model's arrays, fixed at construction
    (:meth:`padded_edges` builds its edge matrix)."""

    edges: tuple[FloatArray, ...]
    padded: FloatArray  # features x (most edges + 1), padded with +inf: column k is edge k
    keep: npt.NDArray[np.bool_]  # the bins of ``diff(cumulative)`` that are a feature's own, in layout order
    num_offsets: tuple[int, ...]
    cat_offsets: tuple[int, ...]
    score_edges: FloatArray
    duration_edges: tuple[float, ...]
    predictions_shape: tuple[int, int, int]
    n_bins: int
    n_categories: int
    cost_key: int = 0  # the segment key (index into the segment keys) whose values split costs; 0: none
    cost_slots: int = 1

    @staticmethod
    def padded_edges(edges: Sequence[FloatArray]) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
        """The padded edge matrix and the mask of each feature's ``len(edges) + 1`` bins."""
        width = max((e.size for e in edges), default=0) + 1
        padded = np.full((len(edges), width), np.inf)
        keep = np.zeros((len(edges), width), dtype=bool)
        for j, e in enumerate(edges):
            padded[j, : e.size] = e
            keep[j, : e.size + 1] = True
        return padded, keep


@dataclass(frozen=True)
class RowCounts:
    """The count deltas of a flushed buffer, shaped like the counters' arrays."""

    bins: IntArray
    sums: FloatArray
    missing: IntArray
    categories: IntArray
    score_bins: IntArray
    score_sum: float
    predictions: IntArray
    duration_bins: IntArray
    duration_sum: float
    cpu_ns: IntArray  # per cost slot
    wall_ns: IntArray


def row_floats(values: tuple[Any, ...]) -> FloatArray:
    """One row's feature values as float64 (NaN where absent or not a number): the row path's rule.

    Never raises: a value whose own methods raise (a hostile ``__len__``, ``__iter__`` or
    ``__float__``) makes numpy fail for the whole row, and then each value is converted alone,
    NaN where it raises, so the row's prediction and latency are still counted."""
    try:
        try:
            x = np.array(values, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            x = as_float(np.array(values, dtype=object))
    except Exception:
        return np.array([_float_or_nan(v) for v in values], dtype=np.float64)
    if x.shape != (len(values),):  # a nested sequence as a value: not a number
        return np.full(len(values), np.nan)
    return x


def _float_or_nan(value: Any) -> float:
    try:
        return float(value)
    except Exception:
        return math.nan


def _matrix(values: Sequence[bytes | tuple[Any, ...]], width: int) -> FloatArray:
    """All rows' values, one row each. A row whose values all converted to doubles at call time
    (``struct``'s ``d``: the same ``float()`` of each value numpy's float64 conversion makes) is
    its bytes; any other row is its tuple, converted here as the row path always did."""
    try:
        return np.frombuffer(b"".join(values), dtype=np.float64).reshape(-1, width)  # type: ignore[arg-type]
    except TypeError:  # some rows kept their tuples
        return np.stack([np.frombuffer(v, dtype=np.float64) if isinstance(v, bytes) else row_floats(v) for v in values])


def _numeric(values: Sequence[tuple[Any, ...]], plan: RowPlan) -> tuple[IntArray, FloatArray, IntArray]:
    """Bins, sums and finite-value counts of all numeric features at once.

    Each feature's values are compared with each of its edges (``x <= edge``, the cumulative
    ``le`` counts of right-closed bins) in one broadcast over the padded edge matrix, and the
    bins are the differences: branch-free comparisons, about twice as fast here as a binary
    search per value, whose branches mispredict. A value equal to an edge lands in that edge's
    bin, as ``bisect_left`` places a single row's value. NaN and +-inf are not binned.
    """
    x = np.ascontiguousarray(_matrix(values, len(plan.edges)).T)
    finite = np.isfinite(x)
    if finite.all():
        sums = x.sum(axis=1)
    else:
        sums = np.where(finite, x, 0.0).sum(axis=1)
        x = np.where(finite, x, np.nan)  # NaN compares false with every edge, +inf padding included
    cumulative = (x[:, None, :] <= plan.padded[:, :, None]).sum(axis=2)
    bins = np.diff(cumulative, axis=1, prepend=0)[plan.keep].astype(np.int64, copy=False)
    return bins, sums, cumulative[:, -1]


def count_rows(rows: Sequence[Row], plan: RowPlan) -> RowCounts:
    """The counts of ``rows``, as if each had been counted alone."""
    n = len(rows)
    values, codes, scores, decisions, segments, durations, cpus = zip(*rows)
    n_num = len(plan.edges)
    n_cat = len(plan.cat_offsets) - 1
    bins = np.zeros(plan.n_bins, dtype=np.int64)
    sums = np.zeros(n_num, dtype=np.float64)
    missing = np.zeros(n_num + n_cat, dtype=np.int64)
    if n_num:
        bins, sums, n_finite = _numeric(values, plan)
        missing[:n_num] = n - n_finite
    categories = np.zeros(plan.n_categories, dtype=np.int64)
    if n_cat:
        c = np.array(codes, dtype=np.intp).reshape(n, n_cat).T
        for j in range(n_cat):
            present = c[j][c[j] != MISSING_CODE]
            lo, hi = plan.cat_offsets[j], plan.cat_offsets[j + 1]
            categories[lo:hi] = np.bincount(present, minlength=hi - lo)
            missing[n_num + j] = n - present.size
    score_bins, score_sum = _finite_counts(plan.score_edges, np.array(scores, dtype=np.float64))
    duration_bins, duration_sum, wall_total = _durations(durations, plan.duration_edges)
    if plan.cost_key == 0:  # the common case: one slot, totals only (C-level sums, no arrays)
        cpu_ns, wall_ns = np.array([sum(cpus)], dtype=np.int64), np.array([wall_total], dtype=np.int64)
    else:
        cpu_ns, wall_ns = _usage(cpus, durations, segments, plan)
    return RowCounts(
        bins,
        sums,
        missing,
        categories,
        score_bins,
        score_sum,
        _predictions(decisions, segments, plan.predictions_shape),
        duration_bins,
        duration_sum,
        cpu_ns,
        wall_ns,
    )


def _wall_ns(d: FloatArray) -> IntArray:
    """Each latency in whole nanoseconds (negative or not finite: 0), rounded as ``round()`` rounds."""
    with np.errstate(invalid="ignore"):
        return np.rint(np.where(np.isfinite(d) & (d >= 0), d, 0.0) * 1e9).astype(np.int64)


def _usage(
    cpus: Sequence[int], durations: Sequence[float | None], segments: Sequence[tuple[int, ...]], plan: RowPlan
) -> tuple[IntArray, IntArray]:
    """CPU and wall nanoseconds of the rows per cost slot (integers: exact sums)."""
    cpu = np.array(cpus, dtype=np.int64)
    wall_ns = _wall_ns(np.array(durations, dtype=np.float64))  # None (no latency) becomes NaN
    slot = np.array(segments, dtype=np.intp).reshape(len(cpus), -1)[:, plan.cost_key - 1]
    return _bincount_int(slot, cpu, plan.cost_slots), _bincount_int(slot, wall_ns, plan.cost_slots)


def _bincount_int(slot: npt.NDArray[np.intp], values: IntArray, size: int) -> IntArray:
    """Integer sums per slot (``bincount`` weights are float64: exact only below 2^53)."""
    out = np.zeros(size, dtype=np.int64)
    np.add.at(out, slot, values)
    return out


def _predictions(
    decisions: Sequence[int], segments: Sequence[tuple[int, ...]], shape: tuple[int, int, int]
) -> IntArray:
    """Per segment key, the (segment, decision) grid of the rows that made a prediction."""
    out = np.zeros(shape, dtype=np.int64)
    dec = np.array(decisions, dtype=np.intp)
    made = dec >= 0
    if not made.any():
        return out
    dec = dec[made]
    n_dec = shape[2]
    out[0, 0] = np.bincount(dec, minlength=n_dec)
    if shape[0] > 1:
        seg = np.array(segments, dtype=np.intp).reshape(len(decisions), shape[0] - 1)[made]
        for k in range(1, shape[0]):
            flat = seg[:, k - 1] * n_dec + dec
            out[k] = np.bincount(flat, minlength=shape[1] * n_dec).reshape(shape[1], n_dec)
    return out


def _durations(durations: Sequence[float | None], edges: tuple[float, ...]) -> tuple[IntArray, float, int]:
    """Latency buckets of the rows that carry one, placed as ``bisect_left`` places each (NaN
    first), their sum, and their total in whole nanoseconds (what GPU time is priced on)."""
    if None in durations:  # rows counted without a latency (``record()`` without one)
        given = np.array(durations, dtype=object)
        d = given[given != None].astype(np.float64)  # noqa: E711  # elementwise: the rows with a latency
    else:
        d = np.array(durations, dtype=np.float64)
    if d.size == 0:
        return np.zeros(len(edges) + 1, dtype=np.int64), 0.0, 0
    idx = np.searchsorted(np.asarray(edges), d, side="left")
    idx[np.isnan(d)] = bisect_left(edges, math.nan)  # searchsorted puts NaN last, bisect first
    bins = np.bincount(idx, minlength=len(edges) + 1).astype(np.int64, copy=False)
    return bins, float(d.sum()), int(_wall_ns(d).sum())


def _finite_counts(edges: FloatArray, values: FloatArray) -> tuple[IntArray, float]:
    """Right-closed bin counts and sum of the finite values (NaN, +-inf skipped), as a row's bisect."""
    finite = values[np.isfinite(values)]
    idx = np.searchsorted(edges, finite, side="left")
    return np.bincount(idx, minlength=edges.size + 1).astype(np.int64, copy=False), float(finite.sum())


def _cells(array: npt.NDArray[Any]) -> Any:  # memoryview of int or float items: typeshed has no such type
    """A flat memoryview of an array's int64 or float64 cells: item writes cost ~50 ns, a
    numpy scalar write several times that."""
    view: Any = memoryview(array.reshape(-1))  # type: ignore[arg-type]  # an ndarray is a buffer
    return view.cast("B").cast("q" if array.dtype == np.int64 else "d")


class RowWriter:
    """One row counted straight into the counters' arrays, with ``bisect`` over edge tuples and
    item writes: the multiprocess path, where each row must be in the file when its call
    returns. The same counts as :func:`count_rows` of that row (right-closed bins, NaN and
    +-inf not binned, the row's values converted by the same rule); the caller holds the lock."""

    __slots__ = (
        "_cat_offsets",
        "_cells",
        "_cost_key",
        "_durations",
        "_edges",
        "_grid",
        "_offsets",
        "_score_edges",
        "_unpack",
    )

    def __init__(self, plan: RowPlan, arrays: dict[str, npt.NDArray[Any]]) -> None:
        self._edges = tuple(tuple(e.tolist()) for e in plan.edges)
        self._offsets = plan.num_offsets
        self._cat_offsets = plan.cat_offsets
        self._score_edges = tuple(plan.score_edges.tolist())
        self._durations = plan.duration_edges
        _, segments, decisions = plan.predictions_shape
        self._grid = (segments * decisions, decisions)
        self._cells = {name: _cells(array) for name, array in arrays.items()}
        self._unpack = struct.Struct(f"={len(plan.edges)}d").unpack
        self._cost_key = plan.cost_key

    def add(self, row: Row) -> None:
        values, codes, score, dec, segments, duration, cpu = row
        cells = self._cells
        if self._edges:
            floats = self._unpack(values) if isinstance(values, bytes) else row_floats(values).tolist()
            bins, sums, missing = cells["bins"], cells["sums"], cells["missing"]
            for j, (v, edges, offset) in enumerate(zip(floats, self._edges, self._offsets)):
                if v - v == 0.0:  # finite (NaN and +-inf give NaN)
                    bins[offset + bisect_left(edges, v)] += 1
                    sums[j] += v
                else:
                    missing[j] += 1
        if codes:
            base = len(self._edges)
            categories, missing = cells["categories"], cells["missing"]
            for j, (code, offset) in enumerate(zip(codes, self._cat_offsets)):
                if code == MISSING_CODE:
                    missing[base + j] += 1
                else:
                    categories[offset + code] += 1
        scalars = cells["scalars"]
        if score - score == 0.0:
            cells["score_bins"][bisect_left(self._score_edges, score)] += 1
            scalars[0] += score
        if dec >= 0:
            predictions = cells["predictions"]
            per_key, per_segment = self._grid
            predictions[dec] += 1  # key __all__, segment __all__
            for k, s in enumerate(segments, start=1):
                predictions[k * per_key + s * per_segment + dec] += 1
        slot = segments[self._cost_key - 1] if self._cost_key else 0
        if duration is not None:
            cells["duration_bins"][bisect_left(self._durations, duration)] += 1
            scalars[1] += duration
            if duration - duration == 0.0 and duration >= 0:
                cells["wall_ns"][slot] += round(duration * 1e9)
        if cpu:
            cells["cpu_ns"][slot] += cpu
