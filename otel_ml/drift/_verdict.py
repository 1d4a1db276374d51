"""Sample-size-aware PSI: the critical value under no drift, and the per-feature verdict.

The maths. Let ``p`` be the true distribution over the B bins where the reference has mass,
``a`` the current fractions from n observations and ``r`` the reference fractions from m
observations, both drawn from ``p`` (no drift). Then ``a - r`` is asymptotically normal with
covariance ``(1/n + 1/m) (diag(p) - p p^T)``, and a second-order Taylor expansion of
``(a - r) ln(a / r)`` gives ``PSI ~ sum((a - r)^2 / p)``, which is ``(1/n + 1/m)`` times a
Pearson chi-square statistic with ``B - 1`` degrees of freedom. So:

* ``E[PSI] ~ (B - 1) (1/n + 1/m)``: with 10 bins and n = 100, drift-free PSI already averages
  0.09, so a fixed 0.1 threshold fires on a third of quiet hours (measured: 39 %);
* the critical value ``crit = (1/n + 1/m) * chi2.ppf(1 - alpha, B - 1)`` is exceeded by a
  drift-free PSI with probability about alpha (``1/n`` alone when m is unknown).

The approximation needs many observations in every bin: the logarithm makes nearly empty bins
heavy-tailed (one empty current bin with r = 0.05 adds 0.05 ln(0.05 / 1e-4) = 0.31 on its
own). Measured at alpha = 0.01, the chi-square value gives 2 % false alarms at n = 100 with
10 equal bins and 10-13 % with 20 bins or skewed bins, and about 1 % once every bin expects at
least 100 observations. So :func:`psi_critical_value` is used when
``min(n, m) * min(r) >= ASYMPTOTIC_MIN_EXPECTED`` (100), and below that the critical value is
the ``1 - alpha`` quantile of PSI simulated under the same null model (multinomial draws from
``r``, fixed seed, so the same inputs always give the same value; see
:func:`simulated_psi_critical_value`).

The verdict per feature: ``insufficient_data`` when the window holds fewer than ``min_count``
observations (default ``max(30, 5 * B)``, Cochran's five-per-bin rule: below it one empty bin
decides the PSI); ``drift`` when PSI >= the business threshold (0.25) *and* PSI > crit;
``warn`` when PSI >= 0.1 *and* PSI > crit; else ``ok``. The business threshold says "large
enough to matter", the critical value "not sampling noise"; both must hold.

Many features: ``alpha`` here is per feature. The sidecar and the drift report pass
``alpha / k`` for a model with k features (and the score), so that a clean model gets *any*
drift verdict with probability at most the family-wise alpha (:mod:`._multiplicity`).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from scipy.special import chdtri

from .._binning import PSI_EPSILON
from .._names import DRIFT_STATUS_DRIFT, DRIFT_STATUS_INSUFFICIENT, DRIFT_STATUS_OK, DRIFT_STATUS_WARN
from ._stats import psi

__all__ = [
    "ASYMPTOTIC_MIN_EXPECTED",
    "DEFAULT_ALPHA",
    "DEFAULT_DRIFT_THRESHOLD",
    "DEFAULT_WARN_THRESHOLD",
    "STATUS_NAMES",
    "default_min_count",
    "drift_status",
    "psi_critical_value",
    "simulated_psi_critical_value",
    "status_name",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

DEFAULT_ALPHA: Final = 0.01
DEFAULT_WARN_THRESHOLD: Final = 0.1
DEFAULT_DRIFT_THRESHOLD: Final = 0.25
ASYMPTOTIC_MIN_EXPECTED: Final = 100.0
"""Smallest expected count per bin (current and reference) from which the chi-square value is used."""
MIN_COUNT_FLOOR: Final = 30
MIN_COUNT_PER_BIN: Final = 5
DEFAULT_DRAWS: Final = 10_000
MAX_DRAWS: Final = 40_000
_CHUNK: Final = 20_000

STATUS_NAMES: Final[dict[int, str]] = {
    DRIFT_STATUS_INSUFFICIENT: "insufficient_data",
    DRIFT_STATUS_OK: "ok",
    DRIFT_STATUS_WARN: "warn",
    DRIFT_STATUS_DRIFT: "drift",
}
"""Verdict names by status code (the value of the ``ml_feature_drift_status`` gauge)."""


def status_name(status: int) -> str:
    """``ok`` / ``warn`` / ``drift`` / ``insufficient_data`` for a status code."""
    return STATUS_NAMES[int(status)]


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def _inverse_sum(n: Any, m: Any) -> FloatArray:
    """``1/n + 1/m``, with ``1/m`` left out where m is unknown (None or 0); NaN where n is 0."""
    n_arr = np.asarray(n, dtype=np.float64)
    m_arr = np.nan_to_num(np.asarray(0.0 if m is None else m, dtype=np.float64))
    with np.errstate(divide="ignore"):
        inv_n = np.where(n_arr > 0, 1.0 / np.where(n_arr > 0, n_arr, 1.0), np.nan)
        inv_m = np.where(m_arr > 0, 1.0 / np.where(m_arr > 0, m_arr, 1.0), 0.0)
    return np.asarray(inv_n + inv_m, dtype=np.float64)


def psi_critical_value(n: Any, reference_count: Any = None, bins: Any = 10, alpha: float = DEFAULT_ALPHA) -> Any:
    """Large-sample PSI critical value: ``(1/n + 1/m) * chi2.ppf(1 - alpha, bins - 1)``.

    ``n`` is the current count, ``reference_count`` (m) the reference count (None or 0: unknown,
    only ``1/n``), ``bins`` the number of bins where the reference has mass. Vectorised over
    arrays; NaN where n is 0; 0 where there is a single bin (PSI is then always 0). Valid when
    every bin expects many observations: see the module docstring, and :func:`compare`, which
    switches to the simulated value when it is not.
    """
    _check_alpha(alpha)
    dof = np.asarray(bins, dtype=np.float64) - 1.0
    q = np.where(dof >= 1, chdtri(np.maximum(dof, 1.0), alpha), 0.0)  # chi-square 1 - alpha quantile
    out = _inverse_sum(n, reference_count) * q
    return float(out) if np.ndim(out) == 0 else out


def _draw_count(alpha: float, draws: int | None) -> int:
    if draws is not None:
        if draws < 100:
            raise ValueError("draws must be >= 100")
        return int(draws)
    return int(min(MAX_DRAWS, max(DEFAULT_DRAWS, math.ceil(20.0 / alpha))))


@functools.lru_cache(maxsize=8192)
def _simulate(support: bytes, n: int, m: int, alpha: float, draws: int, seed: int) -> float:
    p = np.frombuffer(support, dtype=np.float64)
    rng = np.random.default_rng([seed, n, m])
    values = []
    for start in range(0, draws, _CHUNK):  # chunks bound the memory at _CHUNK x bins
        size = min(_CHUNK, draws - start)
        current = rng.multinomial(n, p, size=size)
        reference: Any = rng.multinomial(m, p, size=size) if m > 0 else p
        values.append(np.asarray(psi(reference, current)))
    # The order statistic one standard error above the (1 - alpha) quantile, so that the
    # simulation error makes the critical value conservative rather than anti-conservative.
    rank = min(draws, math.ceil(draws * (1.0 - alpha) + math.sqrt(draws * alpha * (1.0 - alpha))))
    return float(np.partition(np.concatenate(values), rank - 1)[rank - 1])


def _support(reference: Any) -> npt.NDArray[np.float64]:
    r = np.asarray(reference, dtype=np.float64).reshape(-1)
    if r.size == 0 or not np.all(np.isfinite(r)) or np.any(r < 0) or r.sum() <= 0:
        raise ValueError("reference: needs finite, non-negative values with a positive total")
    p = r[r > 0]
    return np.ascontiguousarray(p / p.sum())


def simulated_psi_critical_value(
    reference: Any,
    n: int,
    reference_count: int | None = None,
    *,
    alpha: float = DEFAULT_ALPHA,
    draws: int | None = None,
    seed: int = 0,
) -> float:
    """The ``1 - alpha`` quantile of drift-free PSI for one feature, by simulation.

    Draws ``draws`` current windows of ``n`` observations (multinomial over the reference
    fractions) and, when ``reference_count`` m is known, reference samples of m observations
    from the same fractions, and returns the empirical ``1 - alpha`` quantile of their PSI,
    taken one standard error high (the order statistic at ``draws (1 - alpha) +
    sqrt(draws alpha (1 - alpha))``) so that simulation noise errs on the quiet side. Valid for
    any bin layout and sample size; default draws ``max(10000, 20 / alpha)`` (20 expected
    exceedances), at most 40000 (0.1 s at family-wise levels such as 0.005 / 9).
    Deterministic for a given ``seed`` and memoised, so a sidecar that recomputes every scrape
    pays once per distinct input.
    """
    _check_alpha(alpha)
    if n <= 0:
        return float("nan")
    p = _support(reference)
    m = int(reference_count or 0)
    return _simulate(p.tobytes(), int(n), max(m, 0), float(alpha), _draw_count(alpha, draws), int(seed))


_GRID_EXACT: Final = 256
_GRID_STEPS_PER_OCTAVE: Final = 4


def _grid_floor(n: int) -> int:
    """``n`` itself up to 256, else the largest of 4 log-spaced grid points per octave <= n."""
    if n <= _GRID_EXACT:
        return n
    k = math.floor(_GRID_STEPS_PER_OCTAVE * math.log2(n))
    g = int(2.0 ** (k / _GRID_STEPS_PER_OCTAVE))
    return max(_GRID_EXACT, min(g, n))


def _canonical(reference: FloatArray, width: int) -> FloatArray:
    """Support fractions sorted descending and rounded to two significant digits, zero-padded.

    PSI's null distribution does not depend on the order of the bins and hardly on the third
    digit of a fraction, so features with similar layouts (every quantile-binned numeric
    feature) share one simulation.
    """
    p = reference[reference > 0]
    p = np.sort(p / p.sum())[::-1]
    scale = 10.0 ** (np.floor(np.log10(p)) - 1.0)
    p = np.round(p / scale) * scale
    return np.concatenate([p / p.sum(), np.zeros(width - p.size)])


def _auto_critical(reference: FloatArray, n: FloatArray, m: FloatArray, alpha: float) -> FloatArray:
    """Per feature: the chi-square value where it is valid, else the simulated one."""
    bins = np.count_nonzero(reference > 0, axis=-1)
    crit = np.asarray(psi_critical_value(n, m, bins, alpha), dtype=np.float64).reshape(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = reference / reference.sum(axis=-1, keepdims=True)
    smallest = np.min(np.where(r > 0, np.maximum(r, PSI_EPSILON), np.inf), axis=-1)
    sample = np.where(m > 0, np.minimum(n, m), n)
    small = (n > 0) & (bins > 1) & np.isfinite(smallest) & (sample * smallest < ASYMPTOTIC_MIN_EXPECTED)
    rows = np.flatnonzero(small)
    if rows.size == 0:
        return crit
    grid = np.array([_grid_floor(int(v)) for v in n[rows]], dtype=np.float64)
    # A reference from >= 100x more observations adds < 1 % to the variance: simulate it as exact.
    m_sim = np.where(m[rows] >= 100.0 * n[rows], 0.0, m[rows])
    distinct, which = np.unique(reference[rows], axis=0, return_inverse=True)
    shapes = np.array([_canonical(row, reference.shape[-1]) for row in distinct])[which.reshape(-1)]
    unique, inverse = np.unique(np.column_stack([shapes, grid, m_sim]), axis=0, return_inverse=True)
    sims = np.array(
        [  # one simulation per distinct (shape, grid point, m), memoised across calls
            simulated_psi_critical_value(key[:-2], int(key[-2]), int(key[-1]) or None, alpha=alpha) for key in unique
        ]
    )
    # PSI scales like 1/n + 1/m: rescale from the grid point at or below n (slightly conservative)
    # and put back the 1/m of a reference that was simulated as exact.
    crit[rows] = sims[inverse.reshape(-1)] * _inverse_sum(n[rows], m[rows]) / _inverse_sum(grid, m_sim)
    return crit


def default_min_count(bins: Any) -> Any:
    """``max(30, 5 * bins)``: the smallest window that gets a verdict (Cochran's 5 per bin)."""
    return np.maximum(MIN_COUNT_FLOOR, MIN_COUNT_PER_BIN * np.asarray(bins, dtype=np.int64))


def drift_status(
    psi_value: Any,
    psi_critical: Any,
    count: Any,
    min_count: Any = MIN_COUNT_FLOOR,
    *,
    warn: float = DEFAULT_WARN_THRESHOLD,
    drift: float = DEFAULT_DRIFT_THRESHOLD,
) -> IntArray:
    """Status codes per feature: -1 insufficient data, 0 ok, 1 warn, 2 drift (module docstring)."""
    if not 0.0 <= warn <= drift:
        raise ValueError(f"thresholds must satisfy 0 <= warn <= drift, got warn={warn}, drift={drift}")
    value, crit, n, least = np.broadcast_arrays(
        *(np.asarray(x, dtype=np.float64) for x in (psi_value, psi_critical, count, min_count))
    )
    significant = value > np.nan_to_num(crit, nan=np.inf)
    status = np.full(value.shape, DRIFT_STATUS_OK, dtype=np.int64)
    status[significant & (value >= warn)] = DRIFT_STATUS_WARN
    status[significant & (value >= drift)] = DRIFT_STATUS_DRIFT
    status[~(n >= least) | np.isnan(value)] = DRIFT_STATUS_INSUFFICIENT
    return status
