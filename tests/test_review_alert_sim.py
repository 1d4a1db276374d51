"""False-alarm rate and power of MLReviewErrorRateOutOfBand, by simulation.

A model's predictions fall into 20 review strata (score bins plus the bins touching the decision
threshold) whose error rates are low far from the threshold and high near it (0.5-45 %; 8 % overall).
Each window draws the strata's populations N_h ~ Multinomial(N, w_h), selects each prediction with
the sidecar's inclusion probability pi_h = min(1, quota_h / E[N_h]) as the hash sampler does
(independently, so r_h ~ Binomial(N_h, pi_h)), and reviews find e_h ~ Binomial(r_h, p_h) errors.
The alert's logic is evaluated on every window exactly as the shipped rules compute it
(:mod:`otel_ml.mixin._review_rules`, checked against promtool in ``tests/rules/review_test.yaml``):
the stratified estimate p over strata with r_h > 0, the z-test's standard error with p_h smoothed to
(e_h + 0.5) / (r_h + 1), and a page when (p - upper) / se > z or (lower - p) / se > z with at least
``review_error_rate_min_reviews`` reviews, at the shipped defaults (band = the reference error rate).

Reviews per window are set by the quotas: about 200, 500, 1,000 and 2,000. The figures are
printed in the assertion messages and quoted in the alert's description and runbook.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from otel_ml.mixin._review_alerts import segment_z
from otel_ml.mixin.config import DEFAULT_CONFIG

WINDOWS = 10_000
VOLUME = 50_000  # predictions per window (a day at ~0.6 / s)
Z = DEFAULT_CONFIG.review_error_rate_z
MIN_REVIEWS = DEFAULT_CONFIG.review_error_rate_min_reviews
FloatArray = npt.NDArray[np.float64]

# 20 strata: share of predictions and error rate; the middle six touch the threshold.
SHARE = np.array([14, 12, 10, 9, 8, 7, 6, 5, 2, 1.5, 1.5, 2, 4, 4, 3, 3, 2.5, 2.5, 1.5, 1.5])
SHARE = SHARE / SHARE.sum()
NEAR = np.zeros(20, dtype=bool)
NEAR[8:14] = True
BASE_ERRORS = np.array(
    [
        0.005,
        0.01,
        0.02,
        0.03,
        0.05,
        0.07,
        0.09,
        0.12,
        0.3,
        0.42,
        0.45,
        0.4,
        0.2,
        0.15,
        0.1,
        0.08,
        0.06,
        0.04,
        0.03,
        0.02,
    ]
)
REVIEW_BUDGETS = (200, 500, 1000, 2000)  # reviews per window the quotas aim at


def reference_error(errors: FloatArray = BASE_ERRORS) -> float:
    return float(np.sum(SHARE * errors))


def inclusion(budget: int) -> FloatArray:
    """pi_h = min(1, k_h / E[N_h]) with threshold strata getting 2.5x the quota of the others."""
    quota = np.where(NEAR, 2.5, 1.0)
    quota = quota * budget / quota.sum()
    return np.asarray(np.minimum(1.0, quota / (VOLUME * SHARE)))


def windows(errors: FloatArray, budget: int, seed: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    rng = np.random.default_rng([seed, budget])
    population = rng.multinomial(VOLUME, SHARE, size=WINDOWS).astype(np.float64)
    reviewed = rng.binomial(population.astype(np.int64), inclusion(budget)).astype(np.float64)
    wrong = rng.binomial(reviewed.astype(np.int64), errors).astype(np.float64)
    return population, reviewed, wrong


def fires(
    population: FloatArray, reviewed: FloatArray, wrong: FloatArray, lower: float, upper: float, z: float = Z
) -> FloatArray:
    """The alert's expression on every window (rows): the rules' p, smoothed stderr, band and minimum
    (``z``: the model's estimate's; a segment's is the Bonferroni one)."""
    used = reviewed > 0
    n_used = np.sum(np.where(used, population, 0.0), axis=1, keepdims=True)
    weight = np.where(used, population, 0.0) / np.maximum(n_used, 1)
    rate = wrong / np.maximum(reviewed, 1)
    p = np.sum(weight * rate, axis=1)
    smoothed = (wrong + 0.5) / (reviewed + 1)
    se = np.sqrt(np.sum(np.where(used, weight**2 * smoothed * (1 - smoothed) / np.maximum(reviewed, 1), 0.0), axis=1))
    out = ((p - upper) / se > z) | ((lower - p) / se > z)
    return np.asarray(out & (reviewed.sum(axis=1) >= MIN_REVIEWS), dtype=np.float64)


def _rates(errors: FloatArray, seed: int) -> dict[int, float]:
    e0 = reference_error()
    return {budget: float(fires(*windows(errors, budget, seed), e0, e0).mean()) for budget in REVIEW_BUDGETS}


def test_the_simulated_population_is_the_documented_one() -> None:
    assert reference_error() == pytest.approx(0.08, abs=0.005)
    assert float(np.sum(SHARE[NEAR] * BASE_ERRORS[NEAR]) / reference_error()) > 0.4  # errors near the threshold
    reviews = {b: float(windows(BASE_ERRORS, b, 0)[1].sum(axis=1).mean()) for b in REVIEW_BUDGETS}
    assert all(abs(reviews[b] - b) < 0.1 * b for b in REVIEW_BUDGETS), reviews


def test_false_alarms_at_an_unchanged_error_rate() -> None:
    rates = _rates(BASE_ERRORS, 1)
    assert max(rates.values()) <= 0.001, f"false-alarm rate per model, segment and window: {rates}"
    print(f"false alarms (reviews per window: rate): {rates}")


def test_many_review_segments_do_not_multiply_false_alarms() -> None:
    """20 review segments (the config's family), each reviewed like a model of its own: with each
    segment tested at the Bonferroni z, some segment of the model pages falsely in <= 0.1 % of
    windows, not 20 x 0.1 %; at the model's z it would be several times that."""
    k = DEFAULT_CONFIG.review_error_rate_segments
    z_segment = segment_z(DEFAULT_CONFIG)
    e0 = reference_error()
    for budget in (500, 1000):
        per_segment = [fires(*windows(BASE_ERRORS, budget, 100 + j), e0, e0, z_segment) for j in range(k)]
        naive = [fires(*windows(BASE_ERRORS, budget, 100 + j), e0, e0) for j in range(k)]
        any_segment = float(np.max(per_segment, axis=0).mean())
        uncorrected = float(np.max(naive, axis=0).mean())
        assert any_segment <= 0.001, f"{k} segments, {budget} reviews each: {any_segment}"
        assert uncorrected > any_segment, (uncorrected, any_segment)
        print(f"{k} segments x {budget} reviews: any pages in {any_segment:.4%} (uncorrected {uncorrected:.4%})")


def test_power_when_the_error_rate_rises_by_half() -> None:
    """8 % -> 12 % (every stratum's error rate x 1.5): the documented effect size. Oversampling the
    threshold strata costs the overall estimate efficiency (unequal weights), so it takes 1,000+ reviews."""
    raised = BASE_ERRORS * 1.5
    assert reference_error(raised) == pytest.approx(1.5 * reference_error())
    rates = _rates(raised, 2)
    assert rates[1000] >= 0.5 and rates[2000] >= 0.95, f"power: {rates}"
    print(f"power, error rate x 1.5 (reviews per window: rate): {rates}")


def test_power_when_the_error_rate_doubles() -> None:
    """8 % -> 16 %: caught with 500 reviews; 200 reviews only see far larger changes."""
    rates = _rates(BASE_ERRORS * 2, 4)
    assert rates[500] >= 0.8 and rates[1000] >= 0.99, f"power: {rates}"
    print(f"power, error rate x 2 (reviews per window: rate): {rates}")


def estimates(population: FloatArray, reviewed: FloatArray, wrong: FloatArray) -> FloatArray:
    """The stratified estimate p of every window (the rules' ml:review_error_rate), as in ``fires``."""
    used = reviewed > 0
    weight = np.where(used, population, 0.0)
    weight = weight / weight.sum(axis=1, keepdims=True)
    return np.asarray(np.sum(weight * wrong / np.maximum(reviewed, 1), axis=1))


def test_the_weighted_estimate_is_unbiased_and_the_raw_share_is_not() -> None:
    """Why the weights: reviews favour the threshold strata, where the errors are, so the raw share of
    errors among reviews is about twice the true rate; the stratified estimate is on it (99 %: 2.58 SE)."""
    population, reviewed, wrong = windows(BASE_ERRORS, 1000, 3)
    truth = np.sum(population * BASE_ERRORS, axis=1) / population.sum(axis=1)
    p = estimates(population, reviewed, wrong)
    bias, se = float(np.mean(p - truth)), float(np.std(p - truth) / np.sqrt(WINDOWS))
    assert abs(bias) < 2.58 * se, f"bias {bias:.5f} (Monte-Carlo SE {se:.5f})"
    raw = wrong.sum(axis=1) / reviewed.sum(axis=1)
    assert float(np.mean(raw)) > 2 * reference_error(), f"raw share {np.mean(raw):.3f} vs {reference_error():.3f}"
