"""How often the version verdict rolls back a good candidate, and how often it catches a bad one.

Simulated on the numpy reference (:mod:`otel_ml.evaluation._versions`, which the shipped rules
equal: tests/test_version_rules.py) with fixed seeds, and computed exactly from the binomial
where the space is small (a share exactly at its budget). The figures are quoted in the README
alerts table and in the alert descriptions.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from otel_ml.evaluation import _versions as v
from otel_ml.mixin.config import DEFAULT_CONFIG as C

pytestmark = pytest.mark.slow

Z = v.bonferroni_z(C.version_confidence, C.version_max_checks)
ALPHA = (1 - C.version_confidence) / C.version_max_checks  # per check: 0.05 %
WINDOWS = 20_000
SEGMENTS = 20
B = C.version_flip_budget


def _shadow_verdicts(rng: np.random.Generator, pairs: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """One verdict per window: flip_rate of every segment (all judged) and of __all__."""
    flips = rng.binomial(pairs, shares, size=(WINDOWS, len(pairs)))
    per_segment = v.flip_check(flips, pairs, B, C.version_min_segment_pairs, Z)
    overall = v.flip_check(flips.sum(axis=1), pairs.sum(), B, C.version_min_pairs, Z)
    return np.minimum(per_segment.min(axis=1), overall)


def test_an_identical_shadow_rolls_back_at_most_1_percent_of_windows() -> None:
    """20 judged segments (200-2,000 pairs each) flipping at half the budget: family-wise."""
    rng = np.random.default_rng(141)
    pairs = rng.integers(C.version_min_segment_pairs, 2000, SEGMENTS)
    verdicts = _shadow_verdicts(rng, pairs, np.full(SEGMENTS, B / 2))
    false_rollback = float(np.mean(verdicts == -1))
    print(f"identical shadow: P(-1) = {false_rollback:.5f}, P(1) = {np.mean(verdicts == 1):.4f}")
    assert false_rollback <= 1 - C.version_confidence


def test_an_identical_canary_rolls_back_at_most_1_percent_of_windows() -> None:
    """20 judged segments with equal positive-decision shares, equal error and slow-call shares."""
    rng = np.random.default_rng(142)
    n_c = rng.integers(C.version_min_segment_pairs, 1000, SEGMENTS)
    n_r = 10 * n_c
    share = rng.uniform(0.1, 0.6, SEGMENTS)
    pos_c, pos_r = rng.binomial(n_c, share, (WINDOWS, SEGMENTS)), rng.binomial(n_r, share, (WINDOWS, SEGMENTS))
    decision = v.equivalence_check(*v.two_proportion_bounds(pos_c, n_c, pos_r, n_r, Z), B, True)
    overall = v.equivalence_check(
        *v.two_proportion_bounds(pos_c.sum(1), n_c.sum(), pos_r.sum(1), n_r.sum(), Z), B, True
    )
    checks = [decision.min(axis=1), overall]
    for budget, share_of_calls in ((C.version_error_rate_budget, 0.005), (C.version_latency_budget, 0.01)):
        k_c, k_r = rng.binomial(n_c.sum(), share_of_calls, WINDOWS), rng.binomial(n_r.sum(), share_of_calls, WINDOWS)
        checks.append(v.noninferiority_check(*v.two_proportion_bounds(k_c, n_c.sum(), k_r, n_r.sum(), Z), budget, True))
    verdicts = np.min(np.stack(checks), axis=0)
    false_rollback = float(np.mean(verdicts == -1))
    print(f"identical canary: P(-1) = {false_rollback:.5f}, P(1) = {np.mean(verdicts == 1):.4f}")
    assert false_rollback <= 1 - C.version_confidence


def _flip_sizes(n: int) -> tuple[float, float]:
    """Exact P(-1) and P(1) of one flip_rate check with a flip share exactly at the budget."""
    k = np.arange(n + 1)
    pmf = stats.binom.pmf(k, n, B)
    check = v.flip_check(k, n, B, 0, Z)
    return float(pmf[check == -1].sum()), float(pmf[check == 1].sum())


def test_a_flip_share_at_the_budget_is_judged_at_the_per_check_level() -> None:
    """Exact over 200-60,000 pairs: P(-1) and P(1) <= (1 - confidence) / max_checks each."""
    sizes = [*range(200, 3000), *range(3000, 60_000, 997)]
    worst = np.max([_flip_sizes(n) for n in sizes], axis=0)
    print(f"flip share at the budget: max P(-1) = {worst[0]:.6f}, max P(1) = {worst[1]:.6f}")
    assert worst[0] <= ALPHA and worst[1] <= ALPHA


def _two_sample_sizes(n1: int, n2: int, p1: float, p2: float, budget: float, equivalence: bool) -> tuple[float, float]:
    k1, k2 = np.arange(n1 + 1)[:, None], np.arange(n2 + 1)[None, :]
    pmf = stats.binom.pmf(k1, n1, p1) * stats.binom.pmf(k2, n2, p2)
    bounds = v.two_proportion_bounds(k1, n1, k2, n2, Z)
    judge = v.equivalence_check if equivalence else v.noninferiority_check
    check = judge(*bounds, budget, True)
    return float(pmf[check == -1].sum()), float(pmf[check == 1].sum())


def test_a_decision_rate_difference_at_the_budget_wald_is_close_but_not_exact() -> None:
    """The two-proportion (Wald) check at |d| = budget: near the per-check level for shares of 25-55 %
    and comparable sample sizes; measured, not guaranteed (the limits asserted are the measured ones)."""
    worst_balanced = max(
        _two_sample_sizes(n, n, p + s * B, p, B, True)[0]
        for n in (200, 300, 1000, 5000)
        for p in (0.3, 0.5)
        for s in (1, -1)
    )
    skewed = _two_sample_sizes(200, 2000, 0.05, 0.10, B, True)[0]  # a rare decision, a small canary
    print(
        f"decision rate at the budget: balanced max P(-1) = {worst_balanced:.6f}, 5 % vs 10 % (200/2000) {skewed:.5f}"
    )
    assert worst_balanced <= 1.3 * ALPHA
    assert skewed <= 15 * ALPHA


def test_an_error_regression_at_the_budget_is_rarely_rolled_back() -> None:
    """P(-1) at harm = budget <= the per-check level; the other side (a false promote) is the
    Wald interval's weakness at rare errors and is quoted, not hidden."""
    sizes = [
        _two_sample_sizes(n1, n2, e + C.version_error_rate_budget, e, C.version_error_rate_budget, False)
        for n1, n2 in ((1000, 1000), (1000, 10_000), (5000, 5000))
        for e in (0.0, 0.005, 0.02)
    ]
    worst = np.max(sizes, axis=0)
    print(f"error rate at the budget: max P(-1) = {worst[0]:.6f}, max P(1) = {worst[1]:.5f}")
    assert worst[0] <= ALPHA
    assert worst[1] <= 0.011


def _paired_sizes(n: int, only_primary: float) -> tuple[float, float]:
    """Exact P(-1), P(1) of paired_accuracy with (b - c) / n exactly at the margin (trinomial b, c)."""
    margin = C.version_accuracy_margin
    b, c = np.arange(n + 1)[:, None], np.arange(n + 1)[None, :]
    possible = b + c <= n
    shares = [only_primary, only_primary - margin, 1 - 2 * only_primary + margin]
    counts = np.stack(np.broadcast_arrays(b, c, np.where(possible, n - b - c, 0)), axis=-1)
    pmf = np.where(possible, stats.multinomial.pmf(counts, n, shares), 0.0)
    check = v.noninferiority_check(*v.paired_difference_bounds(b, c, n, Z), margin, True)
    return float(pmf[possible & (check == -1)].sum()), float(pmf[possible & (check == 1)].sum())


def test_an_accuracy_loss_at_the_margin_is_rarely_rolled_back() -> None:
    """McNemar (Wald on paired differences) at harm = margin: P(-1) near the per-check level; a
    false promote is likelier when discordant pairs are few (quoted, not hidden)."""
    sizes = [_paired_sizes(n, p) for n, p in ((200, 0.02), (200, 0.1), (500, 0.05), (1000, 0.02), (1000, 0.1))]
    worst = np.max(sizes, axis=0)
    print(f"accuracy loss at the margin: max P(-1) = {worst[0]:.6f}, max P(1) = {worst[1]:.5f}")
    assert worst[0] <= 1.1 * ALPHA
    assert worst[1] <= 0.003


def test_power_twice_the_budget_in_one_segment_of_1000_pairs() -> None:
    rng = np.random.default_rng(143)
    pairs = np.full(SEGMENTS, 1000)
    shares = np.full(SEGMENTS, B / 2)
    shares[0] = 2 * B
    caught = float(np.mean(_shadow_verdicts(rng, pairs, shares) == -1))
    print(f"flip share 2x budget in one 1,000-pair segment: P(-1) = {caught:.4f}")
    assert caught >= 0.9


def test_a_good_shadow_is_promoted() -> None:
    """1 % flips in 20,000 pairs (20 segments of 1,000), every check judged."""
    rng = np.random.default_rng(144)
    verdicts = _shadow_verdicts(rng, np.full(SEGMENTS, 1000), np.full(SEGMENTS, 0.01))
    promoted = float(np.mean(verdicts == 1))
    print(f"good shadow (1 % flips, 20,000 pairs): P(1) = {promoted:.4f}")
    assert promoted >= 0.9
