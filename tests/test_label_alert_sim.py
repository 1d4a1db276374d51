"""False-alarm rate and power of the outcome-pipeline alerts, by simulation with fixed seeds.

MLLabelCoverageCollapsed: a day's cohort of ``n`` predictions, each labelled with probability ``c``,
compared with the same cohort age a week earlier; the alert needs the coverage below half of that
and a one-sided two-proportion z above 3.09. MLLabelDelayGrowing: the p90 of the label delays
of a day, read from the delay histogram the way Prometheus' ``histogram_quantile`` interpolates,
above 14 days or twice the p90 a week earlier. The formulas are the rules' own (the shipped
defaults of ``MixinConfig``), evaluated on simulated counts.
"""

from __future__ import annotations

import numpy as np
import pytest

from otel_ml import _names as n
from otel_ml.mixin import DEFAULT_CONFIG as C

pytestmark = pytest.mark.slow
TRIALS = 200_000


def coverage_fires(now: np.ndarray, before: np.ndarray, cohort: int) -> np.ndarray:
    """The alert's condition on the two cohorts' coverage ratios (both of ``cohort`` predictions)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (before - now) / np.sqrt(2 * before * (1 - before) / cohort)
    return (now < C.label_coverage_drop_ratio * before) & (z > C.label_coverage_z)


@pytest.mark.parametrize(
    ("coverage", "cohort", "min_power"),
    [
        (0.01, 500, 0.0),  # 5 labels a cohort: no test can tell a loss, and none pages falsely
        (0.05, 500, 0.1),  # 25 labels: weak (about 18 %)
        (0.05, 5_000, 0.9),
        (0.2, 500, 0.9),
        (0.5, 500, 0.9),
        (0.9, 500, 0.9),
        (0.99, 500, 0.9),
    ],
)
def test_coverage_alert_false_alarms_and_power(coverage: float, cohort: int, min_power: float) -> None:
    assert cohort >= C.label_coverage_min_predictions
    rng = np.random.default_rng([int(coverage * 1000), cohort])
    before = rng.binomial(cohort, coverage, TRIALS) / cohort
    same = rng.binomial(cohort, coverage, TRIALS) / cohort
    false_alarms = float(coverage_fires(same, before, cohort).mean())
    assert false_alarms <= 0.001, f"coverage {coverage}: false-alarm rate {false_alarms:.4%} per cohort"
    collapsed = rng.binomial(cohort, coverage * 0.3, TRIALS) / cohort  # the pipeline lost 70 % of its labels
    power = float(coverage_fires(collapsed, before, cohort).mean())
    assert power >= min_power, f"coverage {coverage}, cohort {cohort}: power {power:.2%} against a 70 % loss"
    print(f"coverage {coverage}, cohort {cohort}: false alarms {false_alarms:.4%}, power {power:.2%}")


def histogram_quantile(q: float, counts: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Prometheus' histogram_quantile on per-bin counts (rows), finite upper bounds then +Inf."""
    cumulative = np.cumsum(counts, axis=1)
    rank = q * cumulative[:, -1:]
    b = np.argmax(cumulative >= rank, axis=1)
    rows = np.arange(counts.shape[0])
    upper = np.append(bounds, bounds[-1])[b]  # the +Inf bucket answers the last finite bound
    lower = np.where(b == 0, 0.0, np.append([0.0], bounds)[b])
    below = np.where(b == 0, 0.0, cumulative[rows, b - 1])
    inside = counts[rows, b]
    share = np.divide(rank[:, 0] - below, inside, out=np.zeros(len(rows)), where=inside > 0)
    return np.where(b == len(bounds), bounds[-1], lower + (upper - lower) * share)


def delays(rng: np.random.Generator, median_days: float, labels: int) -> np.ndarray:
    bounds = np.asarray(n.LABEL_DELAY_BUCKETS)
    seconds = rng.lognormal(np.log(median_days * 86400), 1.0, (TRIALS // 20, labels))
    counts = np.stack([np.bincount(np.searchsorted(bounds, row), minlength=bounds.size + 1) for row in seconds])
    return histogram_quantile(C.label_delay_quantile, counts, bounds)


def test_delay_alert_false_alarms_and_power() -> None:
    rng = np.random.default_rng(5)
    labels = C.label_delay_min_labels
    before = delays(rng, 1.0, labels)  # labels a day after the prediction, heavy tail (p90 ~ 3.6 days)
    same = delays(rng, 1.0, labels)
    budget, growth = C.label_delay_budget_seconds, C.label_delay_growth_ratio
    false_alarms = float(((same > budget) | (same > growth * before)).mean())
    assert false_alarms <= 0.001, f"false-alarm rate {false_alarms:.4%} per window"
    slower = delays(rng, 3.0, labels)  # the pipeline runs a third as often: delays triple
    power = float(((slower > budget) | (slower > growth * before)).mean())
    assert power >= 0.9, f"power {power:.2%} against tripled delays"
    print(f"delay: false alarms {false_alarms:.4%}, power {power:.2%} (delays tripled)")
