"""Drift statistics, critical values and verdicts (``otel_ml.drift``).

Expected values come from elsewhere: PSI examples are worked by hand in the comments, KL,
JS distance, chi-square and KS come from scipy, and the critical value is checked by
simulating drift-free windows (multinomial draws from the reference fractions).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import right_closed_counts
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats
from scipy.spatial.distance import jensenshannon

from otel_ml._names import DRIFT_STATUS_DRIFT, DRIFT_STATUS_INSUFFICIENT, DRIFT_STATUS_OK, DRIFT_STATUS_WARN
from otel_ml.drift import (
    PSI_EPSILON,
    chi_square_pvalue,
    compare,
    default_min_count,
    drift_status,
    hellinger,
    js_distance,
    kl_divergence,
    ks_test,
    pad_bins,
    psi,
    psi_critical_value,
    simulated_psi_critical_value,
    status_name,
    wasserstein,
)
from otel_ml.drift import (
    edge_bin_counts as bin_counts,
)

TEN_BINS = np.full(10, 0.1)  # what a baseline's 10 quantile bins hold for a continuous feature


# ---------------------------------------------------------------------------------------------
# PSI by hand


class TestPsiByHand:
    def test_two_bins(self) -> None:
        # r = (0.5, 0.5), counts (30, 70) -> a = (0.3, 0.7)
        # (0.3-0.5) ln(0.3/0.5) + (0.7-0.5) ln(0.7/0.5) = 0.2 (0.5108256 + 0.3364722) = 0.1694596
        assert psi([0.5, 0.5], [30, 70]) == pytest.approx(0.1694596, abs=1e-7)

    def test_empty_current_bin_is_floored_not_renormalised(self) -> None:
        # r = (0.25, 0.25, 0.5), counts (0, 50, 50) -> a = (0, 0.5, 0.5), a0 floored to 1e-4
        # (1e-4 - 0.25) ln(1e-4 / 0.25) = 0.2499 * 7.8240460 = 1.9552291
        # (0.5 - 0.25) ln(2)            = 0.25 * 0.6931472 = 0.1732868
        # (0.5 - 0.5) ln(1)             = 0                        -> 2.1285159
        # (renormalising after the floor would give 2.1283...: the PromQL rule does not renormalise)
        assert psi([0.25, 0.25, 0.5], [0, 50, 50]) == pytest.approx(2.1285159, abs=1e-6)

    def test_bin_the_reference_never_saw(self) -> None:
        # __unknown__-style bin: r = (0.6, 0.4, 0), counts (50, 40, 10) -> a = (0.5, 0.4, 0.1)
        # (0.5-0.6) ln(0.5/0.6) = 0.1 * 0.1823216     = 0.0182322
        # (0.1 - 1e-4) ln(0.1 / 1e-4) = 0.0999 * 6.9077553 = 0.6900848   -> 0.7083170
        assert psi([0.6, 0.4, 0.0], [50, 40, 10]) == pytest.approx(0.7083170, abs=1e-6)

    def test_counts_and_fractions_are_the_same_input(self) -> None:
        assert psi([5, 5], [3, 7]) == pytest.approx(psi([0.5, 0.5], [0.3, 0.7]), abs=1e-15)
        assert psi([0.5, 0.5], [300, 700]) == pytest.approx(psi([0.5, 0.5], [3, 7]), abs=1e-15)

    def test_epsilon_is_the_promql_constant(self) -> None:
        import re

        from otel_ml.mixin import MixinConfig
        from otel_ml.mixin.rules import recording_groups

        exprs = [r["expr"] for g in recording_groups(MixinConfig()) for r in g["rules"] if "psi" in r["record"]]
        floors = {float(f) for e in exprs for f in re.findall(r"clamp_min\(.*?,\s*([0-9.e+-]+)\)", e)}
        assert exprs and floors == {PSI_EPSILON}  # every clamp_min in a PSI rule is the numpy floor
        assert PSI_EPSILON == 1e-4  # the documented value (the hand-worked examples above use it)

    def test_padded_bins_contribute_zero(self) -> None:
        # r = 0 and a = 0 both floor to 1e-4: (1e-4 - 1e-4) ln(1) = 0
        assert psi([0.5, 0.5, 0, 0, 0], [30, 70, 0, 0, 0]) == pytest.approx(0.1694596, abs=1e-7)


# ---------------------------------------------------------------------------------------------
# the other statistics against scipy


class TestAgainstScipy:
    r = np.array([0.1, 0.2, 0.3, 0.4])
    counts = np.array([15, 25, 20, 40])  # no bin below 1e-4, so the floor changes nothing
    a = counts / counts.sum()

    def test_kl_is_scipy_entropy(self) -> None:
        assert kl_divergence(self.r, self.counts) == pytest.approx(stats.entropy(self.a, self.r), abs=1e-12)
        assert kl_divergence(self.counts, self.r) == pytest.approx(stats.entropy(self.r, self.a), abs=1e-12)

    def test_js_distance_is_scipy_jensenshannon_base_2(self) -> None:
        assert js_distance(self.r, self.counts) == pytest.approx(jensenshannon(self.r, self.a, base=2), abs=1e-12)

    def test_hellinger_by_hand(self) -> None:
        # r = (0.5, 0.5), a = (0.3, 0.7): H^2 = 1 - (sqrt(0.15) + sqrt(0.35)) = 1 - 0.9789063 = 0.0210937
        assert hellinger([0.5, 0.5], [3, 7]) == pytest.approx(math.sqrt(0.0210937), abs=1e-6)
        assert hellinger([1, 0], [0, 1]) == pytest.approx(1.0)

    def test_psi_is_the_symmetrised_kl(self) -> None:
        expected = stats.entropy(self.a, self.r) + stats.entropy(self.r, self.a)
        assert psi(self.r, self.counts) == pytest.approx(expected, abs=1e-12)

    def test_two_sample_chi_square_is_scipy_contingency(self) -> None:
        ref_counts = np.array([120, 260, 310, 310])
        cur_counts = np.array([30, 40, 60, 70])
        expected = stats.chi2_contingency(np.vstack([ref_counts, cur_counts]), correction=False).pvalue
        got = chi_square_pvalue(ref_counts / ref_counts.sum(), cur_counts, ref_counts.sum())
        assert got == pytest.approx(expected, rel=1e-9)

    def test_goodness_of_fit_chi_square_is_scipy_chisquare(self) -> None:
        expected = stats.chisquare(self.counts, self.r * self.counts.sum()).pvalue
        assert chi_square_pvalue(self.r, self.counts) == pytest.approx(expected, rel=1e-9)
        assert chi_square_pvalue(self.r, self.counts, 0) == pytest.approx(expected, rel=1e-9)

    def test_chi_square_drops_bins_empty_on_both_sides(self) -> None:
        # an untouched __unknown__ bin (reference 0, no current values) is not a degree of freedom
        expected = stats.chisquare(self.counts, self.r * self.counts.sum()).pvalue
        assert chi_square_pvalue([*self.r, 0.0], [*self.counts, 0]) == pytest.approx(expected, rel=1e-9)
        ref_counts = np.array([120, 260, 310, 310])
        two = stats.chi2_contingency(np.vstack([ref_counts, self.counts]), correction=False).pvalue
        got = chi_square_pvalue([*ref_counts / 1000, 0, 0], [*self.counts, 0, 0], 1000)
        assert got == pytest.approx(two, rel=1e-9)

    def test_chi_square_flags_a_bin_the_reference_never_had(self) -> None:
        assert chi_square_pvalue([0.5, 0.5, 0.0], [45, 45, 10]) < 1e-10

    def test_chi_square_with_a_single_bin_has_nothing_to_test(self) -> None:
        assert chi_square_pvalue([1.0, 0.0], [40, 0]) == 1.0

    def test_ks_is_scipy_ks_2samp_on_the_finite_values(self) -> None:
        rng = np.random.default_rng(3)
        ref, cur = rng.normal(size=500), rng.normal(0.3, 1.0, size=400)
        expected = stats.ks_2samp(ref, cur)
        stat, p = ks_test(np.append(ref, [np.nan, np.inf]), np.append(cur, np.nan))
        assert stat == pytest.approx(expected.statistic) and p == pytest.approx(expected.pvalue)

    def test_wasserstein_by_hand(self) -> None:
        # every value moved by +5: the earth mover's distance is 5
        assert wasserstein([0.0, 1.0, 3.0], [5.0, 6.0, 8.0, np.nan]) == pytest.approx(5.0)

    def test_raw_statistics_without_data_are_nan(self) -> None:
        assert all(math.isnan(v) for v in ks_test([1.0, 2.0], [np.nan]))
        assert math.isnan(wasserstein([], [1.0]))


# ---------------------------------------------------------------------------------------------
# shapes, empty windows, bad input


class TestShapes:
    def test_two_d_is_row_by_row(self) -> None:
        rng = np.random.default_rng(1)
        ref = rng.dirichlet(np.ones(6), size=5)
        cur = rng.integers(0, 50, size=(5, 6))
        for fn in (psi, kl_divergence, js_distance, hellinger, chi_square_pvalue):
            batch = fn(ref, cur)
            assert isinstance(batch, np.ndarray) and batch.shape == (5,)
            np.testing.assert_allclose(batch, [fn(ref[i], cur[i]) for i in range(5)], rtol=1e-12)

    def test_one_reference_broadcasts_over_many_windows(self) -> None:
        cur = np.array([[30, 70], [50, 50]])
        np.testing.assert_allclose(psi([0.5, 0.5], cur), [0.1694596, 0.0], atol=1e-7)

    def test_pad_bins_lines_up_features_of_different_widths(self) -> None:
        padded = pad_bins([[0.5, 0.5], [0.2, 0.3, 0.5]])
        np.testing.assert_array_equal(padded, [[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])

    def test_empty_window_is_no_data_not_zero(self) -> None:
        for fn in (psi, kl_divergence, js_distance, hellinger, chi_square_pvalue):
            assert math.isnan(fn([0.5, 0.5], [0, 0])), fn.__name__
        res = compare([[0.5, 0.5], [0.5, 0.5]], [[0, 0], [30, 70]])
        assert math.isnan(res.psi[0]) and math.isnan(res.pvalue[0]) and math.isnan(res.psi_critical[0])
        assert res.status[0] == DRIFT_STATUS_INSUFFICIENT and res.count[0] == 0
        assert res.verdicts[0] == "insufficient_data"
        assert math.isfinite(res.psi[1])

    @pytest.mark.parametrize("bad", [[-1, 2], [np.nan, 1], [np.inf, 1]])
    def test_bad_counts_raise(self, bad: list[float]) -> None:
        with pytest.raises(ValueError, match="finite and >= 0"):
            psi([0.5, 0.5], bad)

    def test_bin_count_mismatch_raises(self) -> None:
        with pytest.raises(ValueError, match="bins"):
            psi([0.5, 0.5], [1, 2, 3])

    def test_compare_wants_whole_counts(self) -> None:
        with pytest.raises(ValueError, match="whole numbers"):
            compare([0.5, 0.5], [0.3, 0.7])


# ---------------------------------------------------------------------------------------------
# counting


class TestBinCounts:
    def test_right_closed_by_hand(self) -> None:
        # edges (0, 1): (-inf, 0] gets -inf, -1, 0, 0; (0, 1] gets 0.5, 1; (1, inf) gets 1.5, inf; NaN is dropped
        values = [0.0, 0.0, 1.0, 0.5, 1.5, -1.0, np.nan, np.inf, -np.inf]
        assert bin_counts([0.0, 1.0], values).tolist() == [4, 2, 2]

    def test_no_edges_is_one_bin(self) -> None:
        assert bin_counts([], [1.0, np.nan, 2.0]).tolist() == [2]

    @given(
        arrays(
            np.float64,
            st.integers(0, 200),
            elements=st.one_of(
                st.floats(-5, 5, allow_nan=False), st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 1.0, -1.0])
            ),
        ),
        st.lists(st.floats(-4, 4, allow_nan=False), max_size=8, unique=True).map(sorted),
    )
    @settings(max_examples=200, deadline=None)
    def test_same_as_plain_comparisons(self, values: np.ndarray, edges: list[float]) -> None:
        e = np.asarray(edges, dtype=np.float64)
        expected = right_closed_counts(e, values)
        np.testing.assert_array_equal(bin_counts(e, values), expected)
        np.testing.assert_array_equal(bin_counts(e, np.sort(values), assume_sorted=True), expected)


# ---------------------------------------------------------------------------------------------
# properties


def _rows(width: int) -> st.SearchStrategy[np.ndarray]:
    return arrays(np.int64, width, elements=st.integers(0, 10_000))


@st.composite
def _pair(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    width = draw(st.integers(1, 12))
    ref = draw(_rows(width).filter(lambda x: x.sum() > 0))
    cur = draw(_rows(width).filter(lambda x: x.sum() > 0))
    return ref, cur


class TestProperties:
    @given(_pair())
    @settings(max_examples=200, deadline=None)
    def test_finite_and_bounded_for_non_empty_input(self, pair: tuple[np.ndarray, np.ndarray]) -> None:
        ref, cur = pair
        p, k, j, h = psi(ref, cur), kl_divergence(ref, cur), js_distance(ref, cur), hellinger(ref, cur)
        pv = chi_square_pvalue(ref, cur, ref.sum())
        assert all(math.isfinite(v) for v in (p, k, j, h, pv))
        assert p >= 0 and k >= 0
        assert 0 <= j <= 1 and 0 <= h <= 1 and 0 <= pv <= 1

    @given(_pair())
    @settings(max_examples=200, deadline=None)
    def test_symmetry_and_decomposition(self, pair: tuple[np.ndarray, np.ndarray]) -> None:
        ref, cur = pair
        assert psi(ref, cur) == pytest.approx(psi(cur, ref), rel=1e-12, abs=1e-15)
        assert js_distance(ref, cur) == pytest.approx(js_distance(cur, ref), rel=1e-12, abs=1e-15)
        # PSI = KL(a||r) + KL(r||a), also with the floor
        assert psi(ref, cur) == pytest.approx(kl_divergence(ref, cur) + kl_divergence(cur, ref), rel=1e-9, abs=1e-12)

    @given(_rows(8).filter(lambda x: x.sum() > 0), st.integers(1, 1000))
    @settings(max_examples=100, deadline=None)
    def test_identical_distributions_give_zero(self, counts: np.ndarray, factor: int) -> None:
        assert psi(counts, counts * factor) == pytest.approx(0.0, abs=1e-12)
        assert kl_divergence(counts, counts * factor) == pytest.approx(0.0, abs=1e-12)
        assert js_distance(counts, counts * factor) == pytest.approx(0.0, abs=1e-6)
        assert hellinger(counts, counts * factor) == pytest.approx(0.0, abs=1e-6)

    @given(_pair(), st.integers(1, 5))
    @settings(max_examples=100, deadline=None)
    def test_padding_changes_nothing(self, pair: tuple[np.ndarray, np.ndarray], pad: int) -> None:
        ref, cur = pair
        ref_p, cur_p = np.append(ref, np.zeros(pad)), np.append(cur, np.zeros(pad))
        for fn in (psi, kl_divergence, js_distance, hellinger, chi_square_pvalue):
            assert fn(ref_p, cur_p) == pytest.approx(fn(ref, cur), rel=1e-12, abs=1e-15), fn.__name__
        assert chi_square_pvalue(ref_p, cur_p, ref.sum()) == pytest.approx(
            chi_square_pvalue(ref, cur, ref.sum()), rel=1e-12, abs=1e-15
        )
        both = compare(pad_bins([ref, ref_p]), pad_bins([cur, cur_p]), ref.sum())
        assert both.psi[0] == pytest.approx(both.psi[1], rel=1e-12, abs=1e-15)
        assert both.psi_critical[0] == both.psi_critical[1] and both.status[0] == both.status[1]


# ---------------------------------------------------------------------------------------------
# critical value: formula, and false alarms under no drift by simulation


class TestCriticalValue:
    def test_formula(self) -> None:
        q = stats.chi2.ppf(0.99, 9)
        assert psi_critical_value(1000, None, 10, 0.01) == pytest.approx(q / 1000)
        assert psi_critical_value(1000, 0, 10, 0.01) == pytest.approx(q / 1000)
        assert psi_critical_value(1000, 4000, 10, 0.01) == pytest.approx(q * (1 / 1000 + 1 / 4000))
        assert psi_critical_value(500, None, 4, 0.05) == pytest.approx(stats.chi2.ppf(0.95, 3) / 500)
        np.testing.assert_allclose(psi_critical_value(np.array([100, 1000]), None, 10), [q / 100, q / 1000])
        assert psi_critical_value(100, None, 1) == 0.0  # one bin: PSI is always 0
        assert math.isnan(psi_critical_value(0, None, 10))

    def test_alpha_must_be_a_probability(self) -> None:
        with pytest.raises(ValueError, match="alpha"):
            psi_critical_value(100, None, 10, 1.5)

    def test_drift_free_psi_grows_like_bins_over_n(self) -> None:
        # the bias the critical value corrects for: E[PSI] ~ (B - 1) / n
        rng = np.random.default_rng(5)
        values = psi(TEN_BINS, rng.multinomial(10_000, TEN_BINS, size=20_000))
        assert np.mean(values) == pytest.approx(9 / 10_000, rel=0.03)

    @pytest.mark.parametrize("n", [100, 1000, 10_000, 100_000])
    def test_false_alarm_rate_is_alpha_at_every_sample_size(self, n: int) -> None:
        rng = np.random.default_rng(n)
        windows = rng.multinomial(n, TEN_BINS, size=20_000)  # 20,000 drift-free windows
        res = compare(TEN_BINS, windows, None, alpha=0.01, min_count=0)
        rate = float(np.mean(res.psi > res.psi_critical))
        assert 0.006 <= rate <= 0.013, rate  # 1 % +- sampling error (sd 0.0007)
        naive = float(np.mean(res.psi > 0.1))
        if n == 100:
            assert naive > 0.3  # a fixed 0.1 threshold fires on more than a third of quiet windows
            assert naive > 20 * rate
        verdict_alarms = float(np.mean(res.status >= DRIFT_STATUS_WARN))
        assert verdict_alarms <= rate  # the verdict needs PSI > critical value too

    @pytest.mark.parametrize("n", [100, 1000])
    def test_false_alarm_rate_with_uneven_bins(self, n: int) -> None:
        # a categorical-looking layout: common, rare and very rare values
        layout = np.r_[np.full(5, 0.15), np.full(20, 0.01), np.full(5, 0.001), 0.045]
        layout = layout / layout.sum()
        rng = np.random.default_rng(n + 1)
        res = compare(layout, rng.multinomial(n, layout, size=20_000), 1_000_000, min_count=0)
        rate = float(np.mean(res.psi > res.psi_critical))
        assert 0.006 <= rate <= 0.013, rate
        assert np.mean(res.psi > 0.1) > 0.5 if n == 100 else True

    def test_chi_square_value_alone_is_not_enough_for_small_samples(self) -> None:
        # why compare() simulates: 20 bins and n = 100 (5 expected per bin) with the asymptotic value
        layout = np.full(20, 0.05)
        rng = np.random.default_rng(8)
        windows = rng.multinomial(100, layout, size=20_000)
        asym = compare(layout, windows, None, critical="asymptotic", min_count=0)
        auto = compare(layout, windows, None, critical="auto", min_count=0)
        assert np.mean(asym.psi > asym.psi_critical) > 0.05
        assert np.mean(auto.psi > auto.psi_critical) <= 0.013

    def test_reference_sample_size_enters_the_critical_value(self) -> None:
        # reference and current both 2,000 draws: ignoring 1/m would alarm far more than alpha
        rng = np.random.default_rng(9)
        n = m = 2000
        refs = rng.multinomial(m, TEN_BINS, size=20_000)
        windows = rng.multinomial(n, TEN_BINS, size=20_000)
        with_m = compare(refs, windows, m, min_count=0)
        without_m = compare(refs, windows, None, min_count=0)
        assert float(np.mean(with_m.psi > with_m.psi_critical)) <= 0.013
        assert float(np.mean(without_m.psi > without_m.psi_critical)) > 0.1

    def test_simulated_value_is_deterministic_and_meets_the_asymptote(self) -> None:
        a = simulated_psi_critical_value(TEN_BINS, 300)
        assert a == simulated_psi_critical_value(TEN_BINS, 300)
        assert simulated_psi_critical_value(TEN_BINS, 300, seed=1) == pytest.approx(a, rel=0.05)
        large = simulated_psi_critical_value(TEN_BINS, 50_000)
        assert large == pytest.approx(psi_critical_value(50_000, None, 10), rel=0.05)
        assert math.isnan(simulated_psi_critical_value(TEN_BINS, 0))


# ---------------------------------------------------------------------------------------------
# verdict


class TestVerdict:
    @pytest.mark.parametrize(
        ("psi_value", "critical", "count", "expected"),
        [
            (0.30, 0.02, 1000, DRIFT_STATUS_DRIFT),  # large and significant
            (0.30, 0.40, 1000, DRIFT_STATUS_OK),  # large but within noise for this n
            (0.15, 0.02, 1000, DRIFT_STATUS_WARN),
            (0.30, 0.20, 1000, DRIFT_STATUS_DRIFT),
            (0.12, 0.13, 1000, DRIFT_STATUS_OK),
            (0.05, 0.0002, 100_000, DRIFT_STATUS_OK),  # significant but too small to matter
            (0.25, 0.01, 1000, DRIFT_STATUS_DRIFT),  # thresholds are inclusive
            (0.10, 0.01, 1000, DRIFT_STATUS_WARN),
            (0.90, 0.01, 49, DRIFT_STATUS_INSUFFICIENT),  # below min_count
            (math.nan, math.nan, 0, DRIFT_STATUS_INSUFFICIENT),  # no data
        ],
    )
    def test_rule(self, psi_value: float, critical: float, count: int, expected: int) -> None:
        assert drift_status(psi_value, critical, count, 50) == expected

    def test_vectorised_with_custom_thresholds(self) -> None:
        got = drift_status([0.06, 0.2, 0.01], [0.01, 0.01, 0.01], [500, 500, 500], 30, warn=0.05, drift=0.15)
        np.testing.assert_array_equal(got, [DRIFT_STATUS_WARN, DRIFT_STATUS_DRIFT, DRIFT_STATUS_OK])

    def test_thresholds_must_be_ordered(self) -> None:
        with pytest.raises(ValueError, match="warn"):
            drift_status(0.1, 0.01, 100, warn=0.3, drift=0.2)

    def test_default_min_count(self) -> None:
        np.testing.assert_array_equal(default_min_count([2, 10, 52]), [30, 50, 260])

    def test_status_names_match_the_gauge_codes(self) -> None:
        assert [status_name(s) for s in (-1, 0, 1, 2)] == ["insufficient_data", "ok", "warn", "drift"]

    def test_compare_end_to_end(self) -> None:
        rng = np.random.default_rng(12)
        quiet = rng.multinomial(5000, TEN_BINS)
        shifted = np.array([0, 0, 0, 0, 0, 500, 1000, 1500, 1000, 1000])  # mass moved to the upper half
        tiny = rng.multinomial(20, TEN_BINS)
        res = compare(TEN_BINS, np.vstack([quiet, shifted, tiny]), 100_000)
        assert res.verdicts == ("ok", "drift", "insufficient_data")
        assert res.psi[1] > 1 and res.pvalue[1] < 1e-100 and res.js_distance[1] > 0.5
        assert res.count.tolist() == [5000, 5000, 20] and res.bins.tolist() == [10, 10, 10]
        assert len(res) == 3
        single = compare(TEN_BINS, shifted, 100_000)  # a 1-D input is one feature
        assert single.psi.shape == (1,) and single.psi[0] == res.psi[1]

    def test_small_window_with_a_big_psi_is_not_drift(self) -> None:
        # 60 observations: a PSI of ~0.3 happens by chance; the critical value is far above it
        counts = np.array([9, 3, 7, 5, 8, 4, 6, 9, 5, 4])
        res = compare(TEN_BINS, counts, 100_000)
        assert res.psi[0] > 0.1 and res.psi_critical[0] > res.psi[0]
        assert res.verdicts == ("ok",)
