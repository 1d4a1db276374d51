"""Decision-rate tests: is a segment's share of a decision different from its reference?

A ratio with a fixed threshold pages on noise: a segment of 200 predictions at a rate of 0.05
moves by 30 % on one or two predictions. So each (segment, decision) is a test:

* **against the baseline** (reference rate ``p0`` from ``m`` training rows): a two-proportion
  test of ``x`` of ``n`` against ``round(p0 m)`` of ``m``; when ``m >= 100 n`` (the reference
  adds under 1 % to the variance) or ``m`` is unknown, the exact one-sample binomial test of
  ``x ~ Bin(n, p0)``;
* **against the previous window**: a two-proportion test of ``x1/n1`` against ``x2/n2``.

Two-proportion tests use the pooled z statistic ``(x1/n1 - x2/n2) / sqrt(p (1 - p) (1/n1 +
1/n2))`` where every cell of the 2 x 2 table expects at least ``EXACT_BELOW`` (100) counts, and
below that, where the normal tail at the 4-sigma levels a family-wise alpha needs is too light,
the exact conditional binomial test (given the s rarer outcomes of both windows, the first
window's share is Bin(s, n1 / (n1 + n2)); a conservative stand-in for Fisher's test, see
:func:`_conditional`). Exact two-sided p-values are the doubled smaller tail (``min(1, 2
min(P(X <= x), P(X >= x)))``): each tail at most alpha / 2, so the test never rejects a true
null more often than alpha (checked by enumeration in the tests). All of it is vectorised over every
segment and decision at once with ``scipy.special`` (no ``scipy.stats`` import).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from scipy.special import bdtr, bdtrc, ndtr

from .._names import DRIFT_STATUS_DRIFT, DRIFT_STATUS_INSUFFICIENT, DRIFT_STATUS_WARN
from ._multiplicity import Multiplicity, check_multiplicity, holm

__all__ = [
    "DEFAULT_DECISION_ALPHA",
    "DEFAULT_DECISION_MIN_COUNT",
    "DEFAULT_MIN_ABSOLUTE_CHANGE",
    "DEFAULT_MIN_RELATIVE_CHANGE",
    "EXACT_BELOW",
    "DecisionSettings",
    "RateVerdicts",
    "binomial_pvalue",
    "rate_pvalue",
    "rate_verdicts",
    "two_proportion_pvalue",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

EXACT_BELOW: Final = 100.0
"""Smallest expected count per cell of the 2 x 2 table from which the z-test is used."""
ONE_SAMPLE_RATIO: Final = 100.0
"""A reference this many times larger than the window is treated as exact (one-sample test)."""


def _arrays(*values: Any) -> list[FloatArray]:
    return [np.asarray(v, dtype=np.float64) for v in np.broadcast_arrays(*values)]


def _doubled(lower: FloatArray, upper: FloatArray) -> FloatArray:
    return np.asarray(np.clip(2.0 * np.minimum(lower, upper), 0.0, 1.0), dtype=np.float64)


def binomial_pvalue(x: Any, n: Any, p0: Any) -> FloatArray:
    """Exact two-sided p-value of ``x`` successes in ``n`` trials at rate ``p0`` (doubled tail).

    ``scipy.special`` binomial CDFs, vectorised; NaN where ``n`` is 0.
    """
    xs, ns, ps = _arrays(x, n, p0)
    k, size = np.round(xs), np.round(ns)
    valid = size > 0
    size = np.where(valid, size, 1.0)
    k = np.clip(k, 0.0, size).astype(np.int64)  # scipy.special wants integer counts
    trials = size.astype(np.int64)
    lower = bdtr(k, trials, ps)  # P(X <= k)
    upper = np.where(k > 0, bdtrc(np.maximum(k - 1, 0), trials, ps), 1.0)  # P(X >= k)
    return np.where(valid, _doubled(lower, upper), np.nan)


def _conditional(x1: FloatArray, n1: FloatArray, x2: FloatArray, n2: FloatArray) -> FloatArray:
    """Exact conditional test: given the s = x1 + x2 rarer outcomes, x1 ~ Bin(s, n1 / (n1 + n2)).

    Exact for Poisson counts; for two binomials the conditional law is hypergeometric (Fisher),
    which is more concentrated than this binomial by the factor (N - s) / (N - 1) (at most 2,
    as s is the rarer outcome), so in the tail that can page the p-value is at least Fisher's
    doubled one (tested below 1e-3); near 0.5 it may be up to ~10 % smaller, which never pages.
    """
    flip = (x1 + x2) * 2.0 > n1 + n2
    a = np.where(flip, n1 - x1, x1)
    s = np.where(flip, (n1 - x1) + (n2 - x2), x1 + x2)
    return binomial_pvalue(a, s, n1 / (n1 + n2))


def two_proportion_pvalue(x1: Any, n1: Any, x2: Any, n2: Any) -> FloatArray:
    """Two-sided p-value that ``x1/n1`` and ``x2/n2`` share one rate: pooled z, exact for small tables.

    NaN where either ``n`` is 0. The switch is at ``EXACT_BELOW`` expected counts per cell.
    """
    a, b, c, d = (np.round(v) for v in _arrays(x1, n1, x2, n2))
    valid = (b > 0) & (d > 0)
    b1, d1 = np.where(valid, b, 1.0), np.where(valid, d, 1.0)
    a, c = np.clip(a, 0.0, b1), np.clip(c, 0.0, d1)
    pooled = (a + c) / (b1 + d1)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (a / b1 - c / d1) / np.sqrt(pooled * (1.0 - pooled) * (1.0 / b1 + 1.0 / d1))
    p = np.where(pooled * (1.0 - pooled) > 0, 2.0 * ndtr(-np.abs(np.nan_to_num(z))), 1.0)
    expected = np.minimum(b1, d1) * np.minimum(pooled, 1.0 - pooled)
    small = valid & (expected < EXACT_BELOW) & (pooled * (1.0 - pooled) > 0)
    if np.any(small):
        p = np.array(p, dtype=np.float64)
        p[small] = _conditional(a[small], b1[small], c[small], d1[small])
    return np.where(valid, p, np.nan)


def rate_pvalue(x: Any, n: Any, reference_rate: Any, reference_count: Any) -> FloatArray:
    """p-value of ``x`` of ``n`` against a reference rate estimated from ``reference_count`` rows.

    One-sample exact binomial where the reference count is unknown (0, NaN, inf), or at least
    ``ONE_SAMPLE_RATIO`` times ``n`` with the rate strictly between 0 and 1; else the
    two-proportion test with ``round(rate * count)`` reference successes (a reference rate of 0
    or 1 from a finite sample is not certainty).
    """
    xs, ns, rate, m = _arrays(x, n, reference_rate, reference_count)
    m = np.where(np.isfinite(m), np.maximum(m, 0.0), 0.0)
    inner = (rate > 0) & (rate < 1)
    one_sample = (m <= 0) | (inner & (m >= ONE_SAMPLE_RATIO * ns))
    two = two_proportion_pvalue(xs, ns, np.round(rate * m), m)
    one = binomial_pvalue(xs, ns, np.clip(rate, 0.0, 1.0))
    return np.asarray(np.where(one_sample, one, two), dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# the verdict

DEFAULT_DECISION_ALPHA: Final = 0.005
DEFAULT_MIN_RELATIVE_CHANGE: Final = 0.10
DEFAULT_MIN_ABSOLUTE_CHANGE: Final = 0.01
DEFAULT_DECISION_MIN_COUNT: Final = 100.0


@dataclass(frozen=True)
class DecisionSettings:
    """How a segment's decision-rate change becomes a verdict; defaults are the shipped ones.

    ``alpha`` is the family-wise false-page probability of one model and window (all segments
    x decisions x references x looks, Holm). It is half of the 1 % per-model budget; drift gets
    the other half, so a clean model pages in at most 1 % of windows.

    The minimum effect gates the *observed* change. Gating the point estimate at the true effect
    passes only half of the real changes of exactly that size (the estimate falls below it half
    the time), so the default gate is half the effect the issue asks to catch: a 20 % relative
    drop of 0.2 (4 points) passes a gate of 10 % relative / 1 point in > 99 % of 3,000-
    prediction looks, while the test, not the gate, is what stops noise. Relative changes are
    taken against the rarer side, ``min(rate, 1 - rate)``, so both decisions of a yes/no segment
    get the same verdict. ``min_count`` applies to both the window and its reference.
    """

    alpha: float = DEFAULT_DECISION_ALPHA
    min_relative_change: float = DEFAULT_MIN_RELATIVE_CHANGE
    min_absolute_change: float = DEFAULT_MIN_ABSOLUTE_CHANGE
    min_count: float = DEFAULT_DECISION_MIN_COUNT
    multiplicity: Multiplicity = "holm"

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"decisions.alpha must be in (0, 1), got {self.alpha}")
        if self.min_relative_change < 0 or self.min_absolute_change < 0 or self.min_count < 1:
            raise ValueError("decisions: minimum changes must be >= 0 and min_count >= 1")
        check_multiplicity(self.multiplicity)


@dataclass(frozen=True, eq=False)
class RateVerdicts:
    """Per test (last axis): raw and family-adjusted p-value, change in rate, status code."""

    pvalue: FloatArray
    adjusted: FloatArray
    change: FloatArray
    status: IntArray


def rate_verdicts(
    x: Any,
    n: Any,
    reference_rate: Any,
    reference_count: Any,
    settings: DecisionSettings = DecisionSettings(),
    twin: Any = None,
) -> RateVerdicts:
    """Test every rate of one family (last axis; leading axes are independent families).

    ``reference_count`` is inf where it is unknown (one-sample test, always enough data).
    ``twin[i]`` names the test that test i duplicates (the two decisions of a yes/no segment
    are one test): only tests with ``twin[i] == i`` count in the family size, the others take
    their twin's adjusted p-value. Status: -1 when the window or its reference holds fewer than
    ``min_count``; 2 (changed) when the adjusted p-value < alpha and the change passes both
    minimum effects; 1 (warn) when it is significant but smaller than the minimum effect, or
    large enough and significant per series but not after the correction; else 0.
    """
    xs, ns, rate, m = _arrays(x, n, reference_rate, reference_count)
    sufficient = (ns >= settings.min_count) & (m >= settings.min_count) & np.isfinite(rate)
    p = np.where(sufficient, rate_pvalue(xs, ns, rate, m), np.nan)
    index = np.arange(p.shape[-1]) if twin is None else np.asarray(twin, dtype=np.int64)
    counted = index == np.arange(p.shape[-1])
    adjusted = np.take(holm(np.where(counted, p, np.nan), settings.multiplicity), index, axis=-1)
    adjusted = np.where(sufficient, adjusted, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        change = np.where(ns > 0, xs / np.where(ns > 0, ns, 1.0), np.nan) - rate
    gate = np.maximum(settings.min_relative_change * np.minimum(rate, 1.0 - rate), settings.min_absolute_change)
    large = np.abs(np.nan_to_num(change)) >= gate
    significant = np.nan_to_num(adjusted, nan=1.0) < settings.alpha
    raw = np.nan_to_num(p, nan=1.0) < settings.alpha
    status = np.zeros(p.shape, dtype=np.int64)
    status[(significant & ~large) | (raw & large & ~significant)] = DRIFT_STATUS_WARN
    status[significant & large] = DRIFT_STATUS_DRIFT
    status[~sufficient] = DRIFT_STATUS_INSUFFICIENT
    return RateVerdicts(pvalue=p, adjusted=adjusted, change=change, status=status)
