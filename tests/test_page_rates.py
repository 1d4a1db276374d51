"""The issue's page-rate targets, by simulation through the sidecar's own verdict functions.

A model has 8 features and a score (drift family) and 20 segments of 20 to 5,000 predictions
per window with a yes/no decision (decision family). Clean traffic: P(any page in a window)
<= 1 % at feature window sizes 50..100k and decision rates 0.02..0.5. Power: a 20 % relative
drop of a 0.2 rate is caught in one window at 5,000 predictions and within three windows at
1,000; a feature whose population PSI is 0.3 in >= 90 % of 1,000-row windows.

Families go through :func:`otel_ml.sidecar._decisions.family_verdicts` (what the sidecar's
``segment_outputs`` calls) and :func:`otel_ml.drift.compare` at the level the sidecar's
``OutputSettings.drift_alpha`` gives; the traffic, the PSI of the shifted population and the
bounds are computed here. Fixed seeds, vectorised over trials.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from otel_ml.drift import DecisionSettings, compare, family_alpha
from otel_ml.sidecar._decisions import family_verdicts
from otel_ml.sidecar._outputs import OutputSettings

SEGMENTS = np.round(np.geomspace(20, 5000, 20))
BASELINE_ROWS = 1_000_000  # training rows; a segment's reference count is its share of them
CLEAN_TRIALS = 4000
POWER_TRIALS = 1000
DRIFT_FAMILY = 9  # 8 features + the score
EQUAL = np.full(10, 0.1)
SKEWED = np.array([0.3, 0.2, 0.15, 0.1, 0.08, 0.06, 0.05, 0.03, 0.02, 0.01])
SHAPES = np.array([EQUAL, SKEWED, EQUAL, SKEWED, EQUAL, SKEWED, EQUAL, SKEWED, SKEWED])  # 8 features + score
SETTINGS = DecisionSettings()


def upper_bound(pages: int, trials: int, level: float = 0.999) -> float:
    """One-sided Clopper-Pearson upper bound on the page probability."""
    return 1.0 if pages >= trials else float(stats.beta.ppf(level, pages + 1, trials - pages))


def page_bound(trials: int, rate: float = 0.01, level: float = 0.999) -> int:
    """Most pages a page probability of ``rate`` gives in ``trials`` windows, but for 0.1 % of runs."""
    return int(stats.binom.ppf(level, trials, rate))


def reference_rates(rng: np.random.Generator, p: np.ndarray, trials: int) -> tuple[np.ndarray, np.ndarray]:
    """The baseline's per-segment rates (themselves samples) and reference counts."""
    share = SEGMENTS / SEGMENTS.sum()
    m = np.round(BASELINE_ROWS * share)
    return rng.binomial(m.astype(np.int64), p, size=(trials, SEGMENTS.size)) / m, m


def yes_no(x: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ordered like the sidecar's: per segment, decision "false" then "true"."""
    return np.stack([n - x, x], axis=-1).reshape(*x.shape[:-1], -1), np.repeat(n, 2, axis=-1)


TWIN = np.repeat(np.arange(0, 2 * SEGMENTS.size, 2), 2)


def decision_pages(windows: list[np.ndarray], base_rate: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, ...]:
    """Statuses (vs previous, vs baseline) of the newest window; ``windows`` oldest first, last three pooled."""
    n = np.broadcast_to(SEGMENTS, windows[-1].shape)
    cur_x, cur_n = yes_no(windows[-1], n)
    prev_x, prev_n = yes_no(windows[-2], n)
    pool_x, pool_n = yes_no(sum(windows[-3:]), 3 * n)
    rate = np.stack([1.0 - base_rate, base_rate], axis=-1).reshape(cur_x.shape)
    m2 = np.repeat(m, 2)
    share = prev_x / prev_n
    status_prev, _, status_base, _ = family_verdicts(
        (cur_x, cur_n, m2), (cur_x, cur_n, share, prev_n), (pool_x, pool_n, m2), rate, TWIN, SETTINGS
    )
    return status_prev, status_base


def clean_decision_pages(rate: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base_rate, m = reference_rates(rng, np.full(SEGMENTS.size, rate), CLEAN_TRIALS)
    n = SEGMENTS.astype(np.int64)
    windows = [rng.binomial(n, rate, size=(CLEAN_TRIALS, SEGMENTS.size)).astype(np.float64) for _ in range(3)]
    status_prev, status_base = decision_pages(windows, base_rate, m)
    return np.any((status_prev == 2) | (status_base == 2), axis=-1)


def drift_alpha() -> float:
    """The sidecar's per-feature level for a model with 8 features and a score."""
    settings = OutputSettings()
    assert settings.alpha == 0.005 and settings.multiplicity == "holm"
    return family_alpha(settings.alpha, DRIFT_FAMILY, settings.multiplicity)


def clean_drift_pages(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    reference = np.array([rng.multinomial(50_000, p) / 50_000 for p in SHAPES])  # fitted on 50k rows
    current = np.stack([rng.multinomial(n, p, size=CLEAN_TRIALS) for p in SHAPES], axis=1)  # trials x 9 x bins
    result = compare(np.tile(reference, (CLEAN_TRIALS, 1)), current.reshape(-1, 10), 50_000, alpha=drift_alpha())
    return np.any(result.status.reshape(CLEAN_TRIALS, DRIFT_FAMILY) == 2, axis=1)


@pytest.fixture(scope="module")
def decision_clean() -> dict[float, np.ndarray]:
    return {rate: clean_decision_pages(rate, seed=i) for i, rate in enumerate((0.02, 0.05, 0.2, 0.5))}


@pytest.fixture(scope="module")
def drift_clean() -> dict[int, np.ndarray]:
    return {n: clean_drift_pages(n, seed=100 + i) for i, n in enumerate((50, 200, 1000, 10_000, 100_000))}


@pytest.mark.parametrize("n", [50, 200, 1000, 10_000, 100_000])
@pytest.mark.parametrize("rate", [0.02, 0.05, 0.2, 0.5])
def test_a_clean_model_pages_in_at_most_one_percent_of_windows(
    n: int, rate: float, decision_clean: dict[float, np.ndarray], drift_clean: dict[int, np.ndarray]
) -> None:
    # drift and decisions are independent draws of the same windows: a page is either
    pages = int(np.sum(decision_clean[rate] | drift_clean[n]))
    # the observed rate is at most the target (measured: 0.15-0.70 %, 95 % upper bounds <= 0.97 %),
    # and a true rate of 1 % would exceed page_bound in only 0.1 % of runs
    assert pages <= 0.01 * CLEAN_TRIALS <= page_bound(CLEAN_TRIALS), (pages, upper_bound(pages, CLEAN_TRIALS))


def test_each_family_stays_within_its_half_of_the_budget(
    decision_clean: dict[float, np.ndarray], drift_clean: dict[int, np.ndarray]
) -> None:
    for pages in (*decision_clean.values(), *drift_clean.values()):
        assert int(pages.sum()) <= page_bound(CLEAN_TRIALS, 0.005)


def test_per_series_alpha_pages_on_most_clean_windows() -> None:
    """The control: without the correction the same traffic pages far above 1 % (the issue's 43 %)."""
    global SETTINGS
    saved, SETTINGS = SETTINGS, DecisionSettings(alpha=0.01, multiplicity="per_series", min_relative_change=0.3)
    try:
        pages = clean_decision_pages(0.05, seed=7)
    finally:
        SETTINGS = saved
    assert pages.mean() > 0.1


def drop_caught(
    size: float, windows_after: int, seed: int, only_previous: bool = False, after_rate: float = 0.16
) -> np.ndarray:
    """Segment 0 has ``size`` predictions per window; its 0.2 rate drops (by 20 %) for the last windows."""
    global SEGMENTS
    saved = SEGMENTS
    SEGMENTS = np.concatenate([[size], saved[1:]])
    try:
        rng = np.random.default_rng(seed)
        rates = np.full(SEGMENTS.size, 0.2)
        base_rate, m = reference_rates(rng, rates, POWER_TRIALS)
        n = SEGMENTS.astype(np.int64)
        after = rates.copy()
        after[0] = after_rate
        history = [rng.binomial(n, rates, size=(POWER_TRIALS, n.size)).astype(np.float64) for _ in range(3)]
        history += [
            rng.binomial(n, after, size=(POWER_TRIALS, n.size)).astype(np.float64) for _ in range(windows_after)
        ]
        caught = np.zeros(POWER_TRIALS, dtype=bool)
        for k in range(3, len(history)):
            status_prev, status_base = decision_pages(history[: k + 1], base_rate, m)
            hit = status_prev[:, 1] == 2  # segment 0, decision "true"
            caught |= hit if only_previous else hit | (status_base[:, 1] == 2)
        return caught
    finally:
        SEGMENTS = saved


def test_a_twenty_percent_drop_is_caught_in_one_window_at_5000_predictions() -> None:
    assert drop_caught(5000, 1, seed=21).mean() >= 0.9


def test_a_twenty_percent_drop_is_caught_within_three_windows_at_1000_predictions() -> None:
    assert drop_caught(1000, 3, seed=22).mean() >= 0.9


def test_the_previous_window_look_sees_a_30_percent_step_at_5000_predictions() -> None:
    assert drop_caught(5000, 1, seed=24, only_previous=True, after_rate=0.14).mean() >= 0.9


def test_one_window_of_1000_predictions_is_not_enough_on_its_own() -> None:
    """The honest limit: the first window after the drop alone catches it far less often."""
    assert drop_caught(1000, 1, seed=23).mean() < 0.6


def test_a_page_resolves_in_the_first_window_after_a_rollback() -> None:
    """Three windows of a 40 % drop at 5,000 predictions, then the rate is back: the pooled look forgets."""
    global SEGMENTS
    saved = SEGMENTS
    SEGMENTS = np.concatenate([[5000.0], saved[1:]])
    try:
        rng = np.random.default_rng(25)
        rates = np.full(SEGMENTS.size, 0.2)
        base_rate, m = reference_rates(rng, rates, POWER_TRIALS)
        bad = rates.copy()
        bad[0] = 0.12
        n = SEGMENTS.astype(np.int64)
        history = [rng.binomial(n, p, size=(POWER_TRIALS, n.size)).astype(np.float64) for p in (bad, bad, bad, rates)]
        during = decision_pages(history[:3], base_rate, m)[1][:, 1] == 2
        after = decision_pages(history, base_rate, m)[1][:, 1] == 2  # pooled: two bad windows, one good
    finally:
        SEGMENTS = saved
    assert during.mean() > 0.99 and after.mean() < 0.1


def hand_psi(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.sum((q - p) * np.log(q / p)))


def shifted(p: np.ndarray, target: float) -> np.ndarray:
    """``p`` tilted towards its high bins until the population PSI is ``target`` (bisection)."""
    lo, hi = 0.0, 5.0
    ramp = np.linspace(-1.0, 1.0, p.size)
    for _ in range(60):
        beta = (lo + hi) / 2
        q = p * np.exp(beta * ramp)
        q /= q.sum()
        lo, hi = (beta, hi) if hand_psi(p, q) < target else (lo, beta)
    return q


@pytest.mark.parametrize("shape", [EQUAL, SKEWED], ids=["equal", "skewed"])
def test_a_feature_with_population_psi_of_0_3_is_caught_in_1000_row_windows(shape: np.ndarray) -> None:
    q = shifted(shape, 0.3)
    assert hand_psi(shape, q) == pytest.approx(0.3, abs=1e-6)
    rng = np.random.default_rng(31)
    reference = rng.multinomial(50_000, shape) / 50_000
    result = compare(reference, rng.multinomial(1000, q, size=POWER_TRIALS), 50_000, alpha=drift_alpha())
    assert np.mean(result.status == 2) >= 0.9
