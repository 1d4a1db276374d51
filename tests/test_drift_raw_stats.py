"""KS and Wasserstein from one sort per sample, and quantile edges without a sort, against scipy and numpy.

Oracles: ``scipy.stats.ks_2samp`` (method ``auto``: exact up to 10,000 values per side, else
asymptotic), ``scipy.stats.wasserstein_distance``, ``scipy.special.smirnov`` and
``np.quantile`` on the full column, each on the finite values.
"""

from __future__ import annotations

import warnings

import numpy as np
import numpy.typing as npt
import pytest
import scipy.special
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats

from otel_ml._quantiles import quantiles_and_neighbours
from otel_ml.baseline import quantile_edges
from otel_ml.drift import ks_test, ks_wasserstein, wasserstein
from otel_ml.drift._ks import smirnov_sf

FloatArray = npt.NDArray[np.float64]


def _scipy(ref: FloatArray, cur: FloatArray) -> tuple[float, float, float]:
    r, c = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    with warnings.catch_warnings():  # heavy ties: scipy's exact method falls back to asymp
        warnings.filterwarnings("ignore", "ks_2samp: Exact calculation unsuccessful", RuntimeWarning)
        res = stats.ks_2samp(r, c)
    return float(res.statistic), float(res.pvalue), float(stats.wasserstein_distance(r, c))


def _assert_matches_scipy(ref: FloatArray, cur: FloatArray) -> None:
    d, p, w = ks_wasserstein(ref, cur)
    sd, sp, sw = _scipy(ref, cur)
    assert d == pytest.approx(sd, abs=1e-15)
    assert p == pytest.approx(sp, rel=1e-9, abs=1e-10)
    assert w == pytest.approx(sw, rel=1e-12, abs=1e-15)
    assert ks_test(ref, cur) == (d, p) and wasserstein(ref, cur) == w


@pytest.mark.parametrize(
    ("n1", "n2", "shift", "decimals"),
    [
        (300, 200, 0.0, None),
        (1000, 1000, 0.3, 1),  # heavy ties
        (9000, 10_000, 0.05, None),  # exact method, largest sizes
        (30_000, 12_000, 0.0, 2),  # asymptotic, no drift
        (100_000, 100_000, 0.02, None),  # asymptotic, n d^2 >= 2.2: the vectorised smirnov branch
        (100_000, 80_000, 0.2, 3),  # asymptotic, far out in the tail
    ],
)
def test_ks_and_wasserstein_equal_scipy(n1: int, n2: int, shift: float, decimals: int | None) -> None:
    rng = np.random.default_rng(n1 + n2)
    ref, cur = rng.normal(size=n1), rng.normal(shift, 1.0, size=n2)
    if decimals is not None:
        ref, cur = np.round(ref, decimals), np.round(cur, decimals)
    ref[:: max(n1 // 50, 1)] = np.nan  # dropped, as are the infinities
    cur = np.append(cur, [np.inf, -np.inf, np.nan])
    _assert_matches_scipy(ref, cur)


@settings(max_examples=100, deadline=None)
@given(
    ref=arrays(np.float64, st.integers(1, 60), elements=st.sampled_from([0.0, 1.0, 2.5, -3.0, np.nan, np.inf])),
    cur=arrays(np.float64, st.integers(1, 60), elements=st.floats(-5, 5, width=16)),
)
@example(ref=np.array([1.0, 0.0, 0.0, 0.0, 0.0]), cur=np.zeros(5))  # scipy's exact method gives up: no warning
def test_small_samples_with_ties_equal_scipy(ref: FloatArray, cur: FloatArray) -> None:
    if not np.isfinite(ref).any():
        assert all(np.isnan(v) for v in ks_wasserstein(ref, cur))
        return
    _assert_matches_scipy(ref, cur)


def test_empty_sides_are_nan() -> None:
    assert all(np.isnan(v) for v in ks_wasserstein([1.0, 2.0], [np.nan, np.inf]))
    assert all(np.isnan(v) for v in ks_wasserstein([], [1.0]))


@pytest.mark.parametrize(("n", "x"), [(141, 0.2), (5000, 0.03), (50_000, 0.007), (50_000, 0.02), (20_000, 0.1)])
def test_smirnov_sum_equals_scipy_special(n: int, x: float) -> None:
    assert smirnov_sf(n, x) == pytest.approx(float(scipy.special.smirnov(n, x)), rel=1e-9, abs=1e-13)


@settings(max_examples=200, deadline=None)
@given(
    values=arrays(np.float64, st.integers(1, 400), elements=st.one_of(st.floats(-1e3, 1e3), st.integers(0, 4))),
    bins=st.integers(2, 60),
)
def test_quantiles_without_a_sort_are_np_quantile(values: FloatArray, bins: int) -> None:
    qs = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    q, below, above = quantiles_and_neighbours(values, qs)
    np.testing.assert_array_equal(q, np.quantile(values, qs))
    ordered = np.sort(values)
    lo = np.floor((values.size - 1) * qs).astype(np.intp)
    np.testing.assert_array_equal(below, ordered[lo])
    np.testing.assert_array_equal(above, ordered[np.minimum(lo + 1, values.size - 1)])


def _sorted_reference_edges(values: FloatArray, bins: int) -> FloatArray:
    """The edges by a full sort and counting, as quantile_edges computed them before."""
    finite = np.sort(values[np.isfinite(values)])
    qs = np.quantile(finite, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    out = []
    for q in qs.tolist():
        below = np.searchsorted(finite, q, side="right")
        chosen = q
        for digits in range(6, 18):
            rounded = float(f"{q:.{digits}g}")
            if np.searchsorted(finite, rounded, side="right") == below:
                chosen = rounded
                break
        out.append(chosen)
    return np.unique(np.array(out))


@settings(max_examples=200, deadline=None)
@given(
    values=arrays(
        np.float64,
        st.integers(1, 300),
        elements=st.one_of(st.floats(-1e6, 1e6), st.sampled_from([np.nan, np.inf, 0.1, 0.1000001, 7.0])),
    ),
    bins=st.integers(2, 40),
)
def test_quantile_edges_equal_the_sort_based_ones(values: FloatArray, bins: int) -> None:
    if not np.isfinite(values).any():
        assert quantile_edges(values, bins).size == 0
        return
    np.testing.assert_array_equal(quantile_edges(values, bins), _sorted_reference_edges(values, bins))
