"""The version comparison's numpy reference against scipy / statsmodels and hand-worked numbers.

The recording rules are held to :mod:`otel_ml.evaluation._versions` (tests/test_version_rules.py),
so these oracles are what ties the PromQL to independent statistics.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from otel_ml.evaluation import _versions as v
from otel_ml.mixin.config import DEFAULT_CONFIG

Z = v.bonferroni_z(DEFAULT_CONFIG.version_confidence, DEFAULT_CONFIG.version_max_checks)
ALPHA = (1 - DEFAULT_CONFIG.version_confidence) / DEFAULT_CONFIG.version_max_checks


def test_z_is_the_bonferroni_one_sided_quantile() -> None:
    assert Z == pytest.approx(stats.norm.ppf(1 - 0.01 / 20), abs=1e-12)
    assert round(Z, 4) == 3.2905
    with pytest.raises(ValueError):
        v.bonferroni_z(1.0, 20)


@pytest.mark.parametrize("k, n", [(0, 10), (1, 10), (100, 5000), (591, 5000), (3, 50), (50, 50), (7, 1234)])
def test_wilson_equals_scipy(k: int, n: int) -> None:
    # A two-sided interval at 1 - 2 alpha has the one-sided bounds at alpha on each side.
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=1 - 2 * ALPHA, method="wilson")
    lower, upper = v.wilson_bounds(k, n, Z)
    assert float(lower) == pytest.approx(ci.low, abs=1e-12)
    assert float(upper) == pytest.approx(ci.high, abs=1e-12)


def test_wilson_equals_statsmodels() -> None:
    from statsmodels.stats import proportion

    k, n = np.array([0, 5, 100, 591, 3]), np.array([20, 100, 5000, 5000, 50])
    low, high = proportion.proportion_confint(k, n, alpha=2 * ALPHA, method="wilson")
    lower, upper = v.wilson_bounds(k, n, Z)
    np.testing.assert_allclose(lower, low, atol=1e-12)
    np.testing.assert_allclose(upper, high, atol=1e-12)


def test_evaluation_md_examples() -> None:
    """100 flips in 5,000 pairs -> 1 at a 5 % budget; 591 / 5,000 -> -1; 3 / 50 -> 0 (too few pairs)."""
    checks = v.flip_check([100, 591, 3], [5000, 5000, 50], 0.05, 1000, Z)
    assert checks.tolist() == [1, -1, 0]
    lower, upper = v.wilson_bounds(100, 5000, Z)
    assert (
        0.0276 < upper < 0.0277
    )  # by hand: (0.02 + z^2/10^4 -/+ z sqrt(0.02 0.98 / 5000 + z^2 / 10^8)) / (1 + z^2/5000)


def test_zero_pairs_is_zero_never_nan() -> None:
    lower, upper = v.wilson_bounds(0, 0, Z)
    assert math.isnan(lower) and math.isnan(upper)  # no sample ...
    assert v.flip_check(0, 0, 0.05, 1000, Z).tolist() == 0  # ... and the check is 0, not NaN
    assert v.noninferiority_check(*v.paired_difference_bounds(0, 0, 0, Z), 0.01, False).tolist() == 0
    assert v.verdict([]) == 0


def test_paired_bounds_equal_a_mean_of_per_pair_differences() -> None:
    """(b - c) / n with se = sqrt(b + c - (b - c)^2 / n) / n is the Wald interval of the mean of
    per-pair harms (+1 only the primary right, -1 only the shadow right, 0 otherwise)."""
    b, c, n = 150, 20, 2000
    d = np.r_[np.ones(b), -np.ones(c), np.zeros(n - b - c)]
    se = d.std() / math.sqrt(n)
    lower, upper = v.paired_difference_bounds(b, c, n, Z)
    assert float(lower) == pytest.approx(d.mean() - Z * se, abs=1e-14)
    assert float(upper) == pytest.approx(d.mean() + Z * se, abs=1e-14)
    # hand-worked: harm 0.065, se = sqrt(170 - 8.45) / 2000 = 0.0063551; lower 0.0441 > 1 %: roll back
    assert float(lower) == pytest.approx(0.065 - Z * math.sqrt(161.55) / 2000, abs=1e-15)
    assert v.noninferiority_check(lower, upper, 0.01, True) == -1
    assert v.noninferiority_check(*v.paired_difference_bounds(20, 30, 2000, Z), 0.01, True) == 1


def test_paired_bounds_equal_statsmodels_mcnemar_z_sign() -> None:
    """McNemar's statistic (b - c)^2 / (b + c) is the square of the z the rules record."""
    table = np.array([[1600, 150], [20, 230]])  # rows primary right/wrong, columns shadow right/wrong
    chi2 = (150 - 20) ** 2 / (150 + 20)
    from statsmodels.stats import contingency_tables as contingency

    result = contingency.mcnemar(table, exact=False, correction=False)
    assert result.statistic == pytest.approx(chi2)


def test_two_proportion_bounds_equal_two_samples() -> None:
    k1, n1, k2, n2 = 100, 2000, 10, 20000
    x1, x2 = np.r_[np.ones(k1), np.zeros(n1 - k1)], np.r_[np.ones(k2), np.zeros(n2 - k2)]
    se = math.sqrt(x1.var() / n1 + x2.var() / n2)
    lower, upper = v.two_proportion_bounds(k1, n1, k2, n2, Z)
    assert float(lower) == pytest.approx(x1.mean() - x2.mean() - Z * se, abs=1e-14)
    assert float(upper) == pytest.approx(x1.mean() - x2.mean() + Z * se, abs=1e-14)
    assert v.noninferiority_check(lower, upper, 0.01, True) == -1


def test_two_proportion_bounds_equal_statsmodels() -> None:
    from statsmodels.stats import proportion

    low, high = proportion.confint_proportions_2indep(600, 2000, 6000, 20000, method="wald", alpha=2 * ALPHA)
    lower, upper = v.two_proportion_bounds(600, 2000, 6000, 20000, Z)
    assert (float(lower), float(upper)) == pytest.approx((low, high), abs=1e-12)


def test_equivalence_needs_both_sides_inside() -> None:
    # d = 0, se = sqrt(0.21 / 2000 + 0.21 / 20000): |d| + z se = 0.0354 < 5 %: equivalent
    assert v.equivalence_check(*v.two_proportion_bounds(600, 2000, 6000, 20000, Z), 0.05, True) == 1
    # d = -0.2, far below: -1 whatever the sign
    assert v.equivalence_check(*v.two_proportion_bounds(200, 2000, 8000, 20000, Z), 0.05, True) == -1
    assert v.equivalence_check(*v.two_proportion_bounds(600, 2000, 6000, 20000, Z), 0.05, False) == 0


def test_verdict_is_the_minimum() -> None:
    assert v.verdict([1, 1, 1]) == 1
    assert v.verdict([1, 0, 1]) == 0
    assert v.verdict([1, 0, -1]) == -1


counts = st.integers(min_value=0, max_value=100_000)


@given(counts, counts)
def test_bounds_are_ordered_and_inside_0_1(k: int, extra: int) -> None:
    n = k + extra
    lower, upper = v.wilson_bounds(k, n, Z)
    if n == 0:
        assert math.isnan(lower) and math.isnan(upper)
        return
    assert -1e-12 <= lower <= k / n + 1e-12 <= upper + 2e-12 <= 1 + 3e-12


@given(counts, counts, counts, st.integers(min_value=1, max_value=5000))
def test_checks_are_never_nan(a: int, b: int, c: int, minimum: int) -> None:
    n = a + b + c
    checks = [
        v.flip_check(a, n, 0.05, minimum, Z),
        v.noninferiority_check(*v.paired_difference_bounds(b, c, n, Z), 0.01, n >= minimum),
        v.equivalence_check(*v.two_proportion_bounds(a, n, b, b + c, Z), 0.05, True),
        v.noninferiority_check(*v.two_proportion_bounds(a, n, b, b + c, Z), 0.01, True),
    ]
    assert all(int(x) in (-1, 0, 1) for x in checks)
    assert v.verdict(checks) in (-1, 0, 1)


@given(st.integers(min_value=0, max_value=20_000), st.integers(min_value=1, max_value=20_000))
def test_more_flips_never_improve_the_check(f: int, extra: int) -> None:
    n = f + extra
    assert v.flip_check(f + 1, n, 0.05, 1000, Z) <= v.flip_check(f, n, 0.05, 1000, Z)
