"""Decision-rate tests and Holm's correction against scipy.stats and hand formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from otel_ml.drift import (
    DecisionSettings,
    binomial_pvalue,
    family_alpha,
    holm,
    rate_pvalue,
    rate_verdicts,
    two_proportion_pvalue,
)


def doubled(lower: float, upper: float) -> float:
    return min(1.0, 2.0 * min(lower, upper))


class TestBinomial:
    @pytest.mark.parametrize(("x", "n", "p"), [(0, 50, 0.02), (3, 100, 0.1), (40, 100, 0.2), (990, 1000, 0.98)])
    def test_doubled_exact_tail_as_scipy_stats(self, x: int, n: int, p: float) -> None:
        expected = doubled(stats.binom.cdf(x, n, p), stats.binom.sf(x - 1, n, p))
        assert binomial_pvalue(x, n, p) == pytest.approx(expected, rel=1e-9)

    @pytest.mark.parametrize(("n", "p"), [(20, 0.02), (100, 0.05), (1000, 0.2), (5000, 0.5)])
    @pytest.mark.parametrize("alpha", [1e-4, 0.005, 0.05])
    def test_the_test_has_its_level_exactly_enumerated(self, n: int, p: float, alpha: float) -> None:
        x = np.arange(n + 1)
        rejected = binomial_pvalue(x, n, p) <= alpha
        assert stats.binom.pmf(x, n, p)[rejected].sum() <= alpha

    def test_an_empty_window_has_no_pvalue(self) -> None:
        assert np.isnan(binomial_pvalue(0, 0, 0.2))


class TestTwoProportion:
    def test_large_tables_are_the_pooled_z_test(self) -> None:
        x1, n1, x2, n2 = 300, 1000, 350, 1000
        p = (x1 + x2) / (n1 + n2)
        z = (x1 / n1 - x2 / n2) / math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
        assert two_proportion_pvalue(x1, n1, x2, n2) == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), rel=1e-9)

    def test_small_tables_are_exact_and_conservative_in_the_tail(self) -> None:
        rng = np.random.default_rng(4)
        checked = 0
        for _ in range(600):
            n1, n2 = (int(v) for v in rng.integers(20, 2000, 2))
            base = float(rng.choice([0.01, 0.02, 0.05]))
            x1, x2 = int(rng.binomial(n1, base * float(rng.choice([0.2, 3.0])))), int(rng.binomial(n2, base))
            table = [[x1, n1 - x1], [x2, n2 - x2]]
            fisher = doubled(
                stats.fisher_exact(table, alternative="less").pvalue,
                stats.fisher_exact(table, alternative="greater").pvalue,
            )
            if 1e-9 < fisher < 1e-3:
                checked += 1
                ours = float(two_proportion_pvalue(x1, n1, x2, n2))
                assert fisher <= ours <= 20 * fisher, (table, ours, fisher)
        assert checked > 50

    def test_equal_rates_give_one_and_empty_windows_nan(self) -> None:
        assert two_proportion_pvalue(0, 100, 0, 300) == 1.0
        assert np.isnan(two_proportion_pvalue(5, 0, 5, 100))


def test_rate_pvalue_uses_the_one_sample_test_for_a_huge_reference() -> None:
    assert rate_pvalue(30, 200, 0.2, 10**7) == pytest.approx(binomial_pvalue(30, 200, 0.2))
    assert rate_pvalue(30, 200, 0.2, np.inf) == pytest.approx(binomial_pvalue(30, 200, 0.2))
    # a 0.2 rate from 500 rows is itself uncertain: the two-sample test is less sure
    assert rate_pvalue(30, 200, 0.2, 500) > rate_pvalue(30, 200, 0.2, np.inf)


def hand_holm(p: list[float]) -> list[float]:
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


class TestHolm:
    def test_matches_a_hand_written_step_down(self) -> None:
        rng = np.random.default_rng(5)
        for _ in range(50):
            p = rng.uniform(0, 0.05, int(rng.integers(1, 30))).tolist()
            assert holm(p) == pytest.approx(hand_holm(p))

    def test_untested_entries_do_not_count(self) -> None:
        assert holm([0.01, np.nan, 0.04]) == pytest.approx([0.02, np.nan, 0.04], nan_ok=True)

    def test_rows_are_families_and_per_series_is_unchanged(self) -> None:
        p = np.array([[0.01, 0.02], [0.5, 0.001]])
        assert holm(p) == pytest.approx(np.array([hand_holm([0.01, 0.02]), hand_holm([0.5, 0.001])]))
        assert holm(p, "per_series") == pytest.approx(p)
        assert holm(p, "bonferroni") == pytest.approx(np.minimum(2 * p, 1))

    def test_family_alpha(self) -> None:
        assert family_alpha(0.005, 9) == pytest.approx(0.005 / 9)
        assert family_alpha(0.005, 9, "per_series") == 0.005
        with pytest.raises(ValueError, match="multiplicity"):
            family_alpha(0.005, 9, "sidak")  # type: ignore[arg-type]


class TestVerdict:
    settings = DecisionSettings(alpha=0.005, min_relative_change=0.1, min_absolute_change=0.01, min_count=100)

    def test_changed_needs_significance_and_the_minimum_effect(self) -> None:
        # 5,000 predictions: 0.16 vs 0.2 (z = 7), 0.195 vs 0.2 (significant? no), 0.4 of 99 (too few)
        result = rate_verdicts([800, 975, 40], [5000, 5000, 99], [0.2, 0.2, 0.2], np.inf, self.settings)
        assert result.status.tolist() == [2, 0, -1]

    def test_significant_but_small_is_a_warning(self) -> None:
        # 1M predictions: a 2 % relative change is highly significant but under the 10 % gate
        result = rate_verdicts([196_000], [1_000_000], [0.2], np.inf, self.settings)
        assert result.adjusted[0] < 1e-10 and result.status.tolist() == [1]

    def test_significant_only_before_the_correction_is_a_warning(self) -> None:
        p = float(binomial_pvalue(70, 500, 0.2))
        assert 0.005 / 40 < p < 0.005  # one family of 40 such tests: significant alone, not after Holm
        result = rate_verdicts(np.full(40, 70.0), np.full(40, 500.0), np.full(40, 0.2), np.inf, self.settings)
        assert set(result.status.tolist()) == {1}

    def test_a_small_reference_is_insufficient(self) -> None:
        result = rate_verdicts([0], [1000], [0.2], [50], self.settings)
        assert result.status.tolist() == [-1] and np.isnan(result.adjusted[0])

    def test_twins_count_once(self) -> None:
        # decision "false" and "true" of one segment: the same test, so the family has one member
        x, n = np.array([4200.0, 800.0]), np.array([5000.0, 5000.0])
        single = rate_verdicts(x[1:], n[1:], [0.2], np.inf, self.settings)
        pair = rate_verdicts(x, n, [0.8, 0.2], np.inf, self.settings, twin=[0, 0])
        assert pair.adjusted.tolist() == pytest.approx([single.adjusted[0]] * 2)
        assert pair.status.tolist() == [2, 2]

    def test_settings_are_validated(self) -> None:
        with pytest.raises(ValueError, match="alpha"):
            DecisionSettings(alpha=0)
        with pytest.raises(ValueError, match="multiplicity"):
            DecisionSettings(multiplicity="none")  # type: ignore[arg-type]
