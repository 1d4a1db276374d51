"""Two versions compared: confidence bounds, three-way checks and the verdict, in numpy.

The reference implementation of the ``ml:version_check:<w>`` / ``ml:version_verdict:<w>``
recording rules (:mod:`otel_ml.mixin._version_rules`): the tests hold the PromQL to these
functions, and the simulations that justify the defaults run on them. Every function takes
counts (arrays broadcast), never raises on zero counts, and returns checks in {-1, 0, 1}
without NaN: a check with too little data is 0 (inconclusive), never a pass.

Checks compare the confidence bounds of a harm with a budget: 1 when the upper bound is below
it (confidently safe), -1 when the lower bound is above it (confidently harmful), else 0.
"""

from __future__ import annotations

from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "bonferroni_z",
    "equivalence_check",
    "flip_check",
    "flip_skew",
    "noninferiority_check",
    "paired_difference_bounds",
    "two_proportion_bounds",
    "verdict",
    "wilson_bounds",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def bonferroni_z(confidence: float, max_checks: int) -> float:
    """One-sided z so that ``max_checks`` checks together err with probability <= 1 - confidence."""
    if not 0 < confidence < 1 or max_checks < 1:
        raise ValueError(f"need 0 < confidence < 1 and max_checks >= 1, got {confidence}, {max_checks}")
    return NormalDist().inv_cdf(1 - (1 - confidence) / max_checks)


def _f(x: Any) -> FloatArray:
    return np.asarray(x, dtype=np.float64)


def wilson_bounds(k: Any, n: Any, z: float) -> tuple[FloatArray, FloatArray]:
    """Wilson score bounds of k successes in n trials at z; NaN where n = 0 (no sample)."""
    k, n = _f(k), _f(n)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        z2n = z * z / n
        centre = (p + z2n / 2) / (1 + z2n)
        half = z / (1 + z2n) * np.sqrt(p * (1 - p) / n + z2n / (4 * n))
    return centre - half, centre + half


def paired_difference_bounds(b: Any, c: Any, n: Any, z: float) -> tuple[FloatArray, FloatArray]:
    """Bounds of the paired difference (b - c) / n (McNemar's discordant pairs, Wald form).

    se = sqrt(b + c - (b - c)^2 / n) / n, the variance of a mean of per-pair differences in {-1, 0, 1}.
    """
    b, c, n = _f(b), _f(c), _f(n)
    with np.errstate(invalid="ignore", divide="ignore"):
        harm = (b - c) / n
        se = np.sqrt(np.maximum(b + c - (b - c) ** 2 / n, 0.0)) / n
    return harm - z * se, harm + z * se


def two_proportion_bounds(k1: Any, n1: Any, k2: Any, n2: Any, z: float) -> tuple[FloatArray, FloatArray]:
    """Wald bounds of p1 - p2 for independent samples (unpooled variance)."""
    k1, n1, k2, n2 = _f(k1), _f(n1), _f(k2), _f(n2)
    with np.errstate(invalid="ignore", divide="ignore"):
        p1, p2 = k1 / n1, k2 / n2
        se = np.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    d = p1 - p2
    return d - z * se, d + z * se


def _three_way(safe: Any, harmful: Any, judged: Any) -> IntArray:
    """(safe) - (harmful), times judged; NaN comparisons are False, as PromQL's ``bool`` gives 0."""
    out = (np.asarray(safe, dtype=bool).astype(np.int64) - np.asarray(harmful, dtype=bool).astype(np.int64)) * (
        np.asarray(judged, dtype=bool)
    )
    return np.asarray(out, dtype=np.int64)


def flip_check(flips: Any, pairs: Any, budget: float, minimum: int, z: float) -> IntArray:
    """flip_rate: the one-sided score tests of the flip share at the budget, 0 below ``minimum`` pairs.

    "Wilson lower bound > budget" is the score test (f - n B) / sqrt(n B (1 - B)) > z; at small
    budgets the binomial is right-skewed and that test rejects a share exactly at the budget up
    to 2.5 times too often at z = 3.29 (exact: 0.13 % instead of 0.05 % at 300 pairs). So both
    tails get a continuity correction (1/2) and the Cornish-Fisher skewness term
    (z^2 - 1)(1 - 2B) / 6, which is a constant in counts: -1 when f - 1/2 > n B + z sd + skew,
    1 when f + 1/2 < n B - z sd + skew, sd = sqrt(n B (1 - B)). Exact sizes at the budget stay
    <= 0.05 % on both sides for 200 to 60,000 pairs (tests/test_version_alert_sim.py).
    """
    f, n = _f(flips), _f(pairs)
    sd, skew = np.sqrt(n * budget * (1 - budget)), flip_skew(budget, z)
    return _three_way(f + 0.5 < n * budget - z * sd + skew, f - 0.5 > n * budget + z * sd + skew, n >= minimum)


def flip_skew(budget: float, z: float) -> float:
    """The Cornish-Fisher skewness correction of a binomial quantile at share ``budget``, in counts."""
    return (z * z - 1) * (1 - 2 * budget) / 6


def noninferiority_check(lower: Any, upper: Any, budget: float, judged: Any) -> IntArray:
    """A one-sided harm (b - c for accuracy, candidate - reference for errors and latency)."""
    with np.errstate(invalid="ignore"):
        return _three_way(_f(upper) < budget, _f(lower) > budget, judged)


def equivalence_check(lower: Any, upper: Any, budget: float, judged: Any) -> IntArray:
    """A two-sided difference (decision rates): |d| + z se below the budget, |d| - z se above it."""
    lower, upper = _f(lower), _f(upper)
    d, half = (lower + upper) / 2, (upper - lower) / 2
    with np.errstate(invalid="ignore"):
        return _three_way(np.abs(d) + half < budget, np.abs(d) - half > budget, judged)


def verdict(checks: Any) -> int:
    """The minimum of the present checks: -1 if any is -1, 1 only if all are 1, else 0; 0 for none."""
    values = np.asarray(checks, dtype=np.int64).ravel()
    return int(values.min()) if values.size else 0
