"""The two-sample Kolmogorov-Smirnov p-value, as ``scipy.stats.ks_2samp`` computes it, faster.

scipy's method ``auto`` is ``exact`` when both samples have at most 10,000 values and
``asymp`` otherwise: ``kstwo.sf(d, round(n1 n2 / (n1 + n2)))``. For a shifted feature
(``n d**2 >= 2.2``) ``kstwo.sf`` is ``2 * scipy.special.smirnov(n, d)``, a scalar loop over
``n`` terms that takes 57 ms at n = 50,000: the whole drift report's budget for one feature.
Here that sum (Birnbaum and Tingey's formula) is one vectorised expression in logs; every other
case is scipy's own code. The log-factorials (``gammaln``, about 1e6 at n = 100,000) bound its
agreement with scipy: 1e-10 relative at 200,000 vs 200,000 values, growing slowly with n
(tests/test_drift_raw_stats.py).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = ["ks_pvalue", "smirnov_sf"]

EXACT_MAX_N: Final = 10_000  # scipy.stats._stats_py.MAX_AUTO_N
_SMALL_N: Final = 140  # up to here scipy's kolmogn has its own exact branches


def smirnov_sf(n: int, x: float) -> float:
    """``scipy.special.smirnov(n, x)``: P(D+_n >= x), as one vectorised sum over its terms."""
    j = np.arange(0, math.floor(n * (1.0 - x)) + 1, dtype=np.float64)
    from scipy.special import gammaln

    log_factorial = gammaln(np.arange(1, n + 2, dtype=np.float64))  # log k! at index k
    jj = j.astype(np.intp)
    log_binom = log_factorial[n] - log_factorial[jj] - log_factorial[n - jj]
    with np.errstate(divide="ignore"):
        log_terms = log_binom + (n - j) * np.log(np.maximum((n - j) / n - x, 0.0)) + (j - 1) * np.log(x + j / n)
    top = float(log_terms.max())
    if not math.isfinite(top):
        return 0.0
    return float(x * math.exp(top) * np.sum(np.exp(log_terms - top)))


def _kstwo_sf(n: int, x: float) -> float:
    """``scipy.stats.kstwo.sf(x, n)``, with its slow ``2 * smirnov`` branches vectorised."""
    t = n * x
    smirnov_branch = 0.0 < x < 1.0 and 1.0 < t < n - 1 and (x >= 0.5 or (n > _SMALL_N and t * x >= 2.2))
    if smirnov_branch:
        if x < 0.5 and t * x >= 370.0:
            return 0.0
        return min(max(2.0 * smirnov_sf(n, x), 0.0), 1.0)
    from scipy import stats

    return float(stats.kstwo.sf(x, n))


def ks_pvalue(d: float, reference: npt.NDArray[Any], current: npt.NDArray[Any]) -> float:
    """The p-value ``scipy.stats.ks_2samp(reference, current)`` gives for the statistic ``d``.

    Small samples (``exact``) go to scipy itself: sorting 10,000 values twice is cheap. When
    scipy's exact recursion gives up (heavy ties) it warns and uses its asymptotic value; that
    value is the answer here too, and the warning is scipy's note to itself, not the caller's.
    """
    n1, n2 = reference.size, current.size
    if max(n1, n2) <= EXACT_MAX_N:
        from scipy import stats

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "ks_2samp: Exact calculation unsuccessful", RuntimeWarning)
            return float(stats.ks_2samp(reference, current).pvalue)
    m, n = sorted([float(n1), float(n2)], reverse=True)
    return min(max(_kstwo_sf(int(np.round(m * n / (m + n))), d), 0.0), 1.0)
