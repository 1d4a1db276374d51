"""Distribution-shift statistics over binned counts and raw samples: pure numpy, no I/O.

Binned statistics take the reference (fractions or counts) and the current counts with the bins
on the last axis: a 1-D array is one feature and gives a ``float``; a 2-D array is features x
bins and gives one value per feature, computed without a Python loop. Each row is normalised
by its own total, so counts and fractions are both accepted. A row whose total is 0 (an empty
current window) gives NaN, "no data", never 0.

Smoothing: where a logarithm appears (PSI, KL, JS) fractions are floored at
``PSI_EPSILON = 1e-4`` and *not* renormalised, exactly as the PromQL recording rule does with
``clamp_min(x, 1e-4)``, so the sidecar, the CLI and Prometheus agree on every value. A bin
empty on both sides floors to ``1e-4`` on both sides and contributes exactly 0, so features
with different bin counts can share one 2-D array padded with zero bins (:func:`pad_bins`).
Hellinger has no logarithm and uses the raw fractions.

Raw-sample statistics (two-sample Kolmogorov-Smirnov and Wasserstein) share one sort per
sample (:func:`ks_wasserstein`), drop non-finite values and return NaN when either side is empty.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from scipy.special import chdtrc

from .._binning import PSI_EPSILON
from ._ks import ks_pvalue

__all__ = [
    "PSI_EPSILON",
    "chi_square_pvalue",
    "hellinger",
    "js_distance",
    "kl_divergence",
    "ks_test",
    "ks_wasserstein",
    "pad_bins",
    "psi",
    "wasserstein",
]

FloatArray = npt.NDArray[np.float64]
Stat = float | FloatArray
"""A ``float`` for one feature (1-D input), an array with one value per feature (2-D input)."""


_LN2: Final = float(np.log(2.0))


# ---------------------------------------------------------------------------------------------
# input handling


def _as_counts(values: Any, what: str) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim not in (1, 2):
        raise ValueError(f"{what}: expected a 1-D (bins) or 2-D (features x bins) array, got {arr.ndim}-D")
    if arr.shape[-1] == 0:
        raise ValueError(f"{what}: needs at least one bin")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{what}: counts and fractions must be finite and >= 0")
    return arr


def _pair(reference: Any, current: Any) -> tuple[FloatArray, FloatArray, bool]:
    """Both inputs as 2-D arrays of the same shape, and whether the caller passed one feature."""
    ref = _as_counts(reference, "reference")
    cur = _as_counts(current, "current")
    if ref.shape[-1] != cur.shape[-1]:
        raise ValueError(f"reference has {ref.shape[-1]} bins, current has {cur.shape[-1]}")
    single = ref.ndim == 1 and cur.ndim == 1
    ref2, cur2 = np.broadcast_arrays(np.atleast_2d(ref), np.atleast_2d(cur))
    return ref2, cur2, single


def _fractions(counts: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Row-normalised fractions (NaN rows where the total is 0) and the row totals."""
    total = counts.sum(axis=-1)
    frac = np.full(counts.shape, np.nan)
    np.divide(counts, total[:, None], out=frac, where=total[:, None] > 0)
    return frac, total


def _smoothed(reference: FloatArray, current: FloatArray) -> tuple[FloatArray, FloatArray]:
    r, _ = _fractions(reference)
    a, _ = _fractions(current)
    return np.maximum(r, PSI_EPSILON), np.maximum(a, PSI_EPSILON)  # NaN rows stay NaN


def _out(values: FloatArray, single: bool) -> Stat:
    return float(values[0]) if single else values


def pad_bins(rows: Sequence[Any]) -> FloatArray:
    """Stack 1-D bin arrays of different lengths into one features x bins array, padded with 0.

    Padded bins are zero on both sides, so they floor to ``PSI_EPSILON`` on both sides and
    add exactly 0 to PSI, KL and JS, and nothing to the chi-square test (bins empty on both
    sides are dropped there).
    """
    arrays = [np.asarray(r, dtype=np.float64).reshape(-1) for r in rows]
    width = max((a.size for a in arrays), default=0)
    out = np.zeros((len(arrays), max(width, 1)), dtype=np.float64)
    for i, a in enumerate(arrays):  # one slice assignment per feature, not per value
        out[i, : a.size] = a
    return out


# ---------------------------------------------------------------------------------------------
# binned statistics


def psi(reference: Any, current: Any) -> Stat:
    """Population stability index: ``sum((a - r) * ln(a / r))`` over floored fractions.

    ``a`` and ``r`` are the current and reference fractions, each floored at ``PSI_EPSILON``.
    PSI is the symmetrised KL divergence, ``KL(a||r) + KL(r||a)``. Common reading: < 0.1 stable,
    0.1-0.25 moderate shift, > 0.25 major shift; see :func:`~otel_ml.drift.psi_critical_value`
    for why small samples need more than a fixed threshold.
    """
    ref, cur, single = _pair(reference, current)
    r, a = _smoothed(ref, cur)
    return _out(np.sum((a - r) * np.log(a / r), axis=-1), single)


def kl_divergence(reference: Any, current: Any) -> Stat:
    """``KL(current || reference)`` in nats, over the same floored fractions as :func:`psi`.

    Flooring without renormalising can make the plain sum ``sum(a ln(a/r))`` dip below zero, so
    this is the generalised (I-)divergence ``sum(a ln(a/r) - a + r)``: it equals KL whenever no
    bin needed the floor, is never negative, and keeps ``psi == kl(r, a) + kl(a, r)`` exact.
    """
    ref, cur, single = _pair(reference, current)
    r, a = _smoothed(ref, cur)
    return _out(np.sum(a * np.log(a / r) - a + r, axis=-1), single)


def js_distance(reference: Any, current: Any) -> Stat:
    """Jensen-Shannon distance (base 2, so in [0, 1]): ``sqrt`` of the JS divergence.

    Uses the same floored fractions as :func:`psi` (bins empty on one side count the way
    they count in PSI). The floor cannot push the value above 1: every floored entry sits in a
    bin whose mixture term absorbs at least the mass the floor added.
    """
    ref, cur, single = _pair(reference, current)
    r, a = _smoothed(ref, cur)
    m = 0.5 * (a + r)
    jsd = 0.5 * np.sum(a * np.log(a / m) + r * np.log(r / m), axis=-1) / _LN2
    dist = np.sqrt(np.clip(jsd, 0.0, 1.0))  # clip only absorbs rounding; NaN passes through
    return _out(dist, single)


def hellinger(reference: Any, current: Any) -> Stat:
    """Hellinger distance in [0, 1]: ``sqrt(0.5 * sum((sqrt(a) - sqrt(r))**2))``, no smoothing needed."""
    ref, cur, single = _pair(reference, current)
    r, _ = _fractions(ref)
    a, _ = _fractions(cur)
    h2 = 0.5 * np.sum((np.sqrt(a) - np.sqrt(r)) ** 2, axis=-1)
    return _out(np.sqrt(np.clip(h2, 0.0, 1.0)), single)


def chi_square_pvalue(reference: Any, current: Any, reference_count: Any = None) -> Stat:
    """p-value that the current counts come from the reference distribution (Pearson chi-square).

    With ``reference_count`` m known (> 0, a scalar or one per feature) this is the two-sample
    test of homogeneity on the 2 x bins table (reference counts ``m * r`` over current
    counts), as ``scipy.stats.chi2_contingency(..., correction=False)``: the reference is a
    sample too, which matches the ``1/n + 1/m`` in the PSI critical value. With m unknown
    (None or 0) it is the goodness-of-fit test of the current counts against
    ``n * r``, with ``r`` floored at ``PSI_EPSILON`` and renormalised, as
    ``scipy.stats.chisquare``. Either way bins empty on both sides are dropped (padding changes
    nothing) and the degrees of freedom are the remaining bins minus one; with a single
    remaining bin there is nothing to test and the p-value is 1.
    """
    ref, cur, single = _pair(reference, current)
    r, _ = _fractions(ref)
    n = cur.sum(axis=-1)
    m = np.broadcast_to(
        np.nan_to_num(np.asarray(0.0 if reference_count is None else reference_count, dtype=np.float64)), n.shape
    )
    if np.any(m < 0):
        raise ValueError("reference_count must be >= 0")
    with np.errstate(divide="ignore", invalid="ignore"):
        # Two-sample test of homogeneity.
        ref_counts = r * m[:, None]
        pooled = (ref_counts + cur) / (n + m)[:, None]
        e_cur, e_ref = pooled * n[:, None], pooled * m[:, None]
        keep2 = pooled > 0
        stat2 = np.sum(np.where(keep2, (cur - e_cur) ** 2 / e_cur + (ref_counts - e_ref) ** 2 / e_ref, 0.0), axis=-1)
        # Goodness of fit against the floored, renormalised reference.
        keep1 = (r > 0) | (cur > 0)
        floored = np.where(keep1, np.maximum(r, PSI_EPSILON), 0.0)
        expected = floored / floored.sum(axis=-1, keepdims=True) * n[:, None]
        stat1 = np.sum(np.where(keep1, (cur - expected) ** 2 / expected, 0.0), axis=-1)
    two_sample = m > 0
    stat = np.where(two_sample, stat2, stat1)
    dof = np.where(two_sample, keep2.sum(axis=-1), keep1.sum(axis=-1)) - 1
    p = np.where(dof >= 1, chdtrc(np.maximum(dof, 1), stat), 1.0)  # chi-square survival function
    p = np.where((n > 0) & np.isfinite(r).all(axis=-1), p, np.nan)
    return _out(p.astype(np.float64), single)


# ---------------------------------------------------------------------------------------------
# raw samples


def _sorted_finite(sample: Any) -> FloatArray:
    """The finite values, sorted: one sort, then -inf (first) and +inf and NaN (last) sliced off."""
    ordered = np.sort(np.asarray(sample, dtype=np.float64).reshape(-1))
    lo = int(np.searchsorted(ordered, -np.inf, side="right"))
    hi = int(np.searchsorted(ordered, np.inf, side="left"))
    return ordered[lo:hi]


def _ecdf_gaps(ref: FloatArray, cur: FloatArray) -> tuple[float, float]:
    """KS statistic and W1 distance of two sorted, non-empty samples from their pooled order.

    The stable argsort of the concatenation merges two sorted runs (linear); a running count of
    reference values gives both ECDFs at every pooled position. Inside a run of equal values
    the count is partial, so the statistic is taken only where a run ends; W1 needs no such
    care, as the gap to the next value is 0 there.
    """
    pooled = np.concatenate([ref, cur])
    order = np.argsort(pooled, kind="stable")
    values = pooled[order]
    count = np.dtype(np.int32 if pooled.size < 2**31 else np.int64)  # a 32-bit running count is 3x faster
    below_ref: npt.NDArray[np.signedinteger[Any]] = np.cumsum(order < ref.size, dtype=count)
    below_cur = np.arange(1, pooled.size + 1, dtype=count) - below_ref
    delta = below_ref / ref.size  # scipy's cdf1 - cdf2, to the bit, in place (each array is 2 MB)
    np.subtract(delta, below_cur / cur.size, out=delta)
    np.abs(delta, out=delta)
    gaps = np.diff(values)
    run_ends = gaps != 0.0
    d = float(np.max(delta[:-1], where=run_ends, initial=0.0))
    return d, float(np.vecdot(delta[:-1], gaps))  # a ufunc: BLAS dot wakes its threads


def ks_wasserstein(reference_sample: Any, current_sample: Any) -> tuple[float, float, float]:
    """KS statistic, KS p-value and Wasserstein-1 distance from one sort of each sample.

    The same numbers as ``scipy.stats.ks_2samp`` (method ``auto``) and
    ``scipy.stats.wasserstein_distance`` (to rounding of the sum), which sort each sample
    twice over: the statistic is the largest gap between the two ECDFs, W1 the area between
    them (``sum |F - G| * gap``). NaN and inf are dropped; an empty side gives NaN for all three.
    """
    ref, cur = _sorted_finite(reference_sample), _sorted_finite(current_sample)
    if ref.size == 0 or cur.size == 0:
        return math.nan, math.nan, math.nan
    d, w = _ecdf_gaps(ref, cur)
    return d, ks_pvalue(d, ref, cur), w


def ks_test(reference_sample: Any, current_sample: Any) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and p-value (as ``scipy.stats.ks_2samp``).

    Needs raw values, which a baseline file does not keep; NaN and inf are dropped, and an
    empty side gives ``(nan, nan)``. :func:`ks_wasserstein` gives the Wasserstein distance too.
    """
    d, p, _ = ks_wasserstein(reference_sample, current_sample)
    return d, p


def wasserstein(reference_sample: Any, current_sample: Any) -> float:
    """Earth mover's (Wasserstein-1) distance in the feature's own units (as scipy's); NaN if a side is empty."""
    return ks_wasserstein(reference_sample, current_sample)[2]
