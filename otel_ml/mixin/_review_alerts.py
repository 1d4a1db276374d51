"""Alerts of human review: the backlog grows, the weighted error rate leaves its band.

The error-rate alert reads :mod:`otel_ml.mixin._review_rules`: the stratified estimate p and the
z-test's standard error (strata smoothed to (e + 0.5) / (r + 1), never 0), and fires when p is
confidently outside the band, (p - upper) / se > z or (lower - p) / se > z, with at least
``review_error_rate_min_reviews`` reviews. The band is the baseline's error rate on its labelled
reference data, 1 - accuracy (``ml_reference_performance{ml_metric="accuracy"}``: an error is a
review label that differs from the served decision, the complement of the decision's accuracy),
+- a tolerance, or a configured (lower, upper). The false-alarm rate and power quoted are
simulated in ``tests/test_review_alert_sim.py``.
"""

from __future__ import annotations

from statistics import NormalDist

from .. import _names as n
from .._durations import prometheus_duration
from . import _rule_helpers as q
from ._alert_helpers import MODEL_TEXT, SEGMENT_TEXT, TICKET, Rule, alert
from .config import MixinConfig

__all__ = ["review_alerts", "review_band", "segment_z"]


def review_band(c: MixinConfig) -> tuple[str, str]:
    """The band's (lower, upper) as PromQL: numbers when configured, else per model from the baseline."""
    if c.review_error_rate_band is not None:
        lower, upper = c.review_error_rate_band
        if not 0 <= lower <= upper <= 1:
            raise ValueError(f"review_error_rate_band must be 0 <= lower <= upper <= 1, got {c.review_error_rate_band}")
        return q.num(lower), q.num(upper)
    if c.review_error_rate_tolerance < 0:
        raise ValueError(f"review_error_rate_tolerance must be >= 0, got {c.review_error_rate_tolerance}")
    m_on = q.labels(c, *q.MODEL)
    accuracy = q.sidecar(c, f'{n.LABEL_METRIC}="accuracy"')
    error = f"(1 - max by ({m_on}) ({n.REFERENCE_PERFORMANCE.series}{accuracy}))"
    tolerance = q.num(c.review_error_rate_tolerance)
    if c.review_error_rate_tolerance == 0:
        return error, error
    return f"({error} - {tolerance})", f"({error} + {tolerance})"


def segment_z(c: MixinConfig) -> float:
    """The z a segment's estimate must exceed: Bonferroni over ``review_error_rate_segments``."""
    alpha = 2 * (1 - NormalDist().cdf(c.review_error_rate_z))
    return round(NormalDist().inv_cdf(1 - alpha / (2 * c.review_error_rate_segments)), 3)


def _out_of_band(c: MixinConfig, matcher: str, z: float) -> str:
    """The test on the estimates whose ``ml_segment_key`` matches: p confidently outside the band."""
    w = c.review_error_rate_window
    s_on, m_on = q.labels(c, *q.SEGMENT), q.labels(c, *q.MODEL)
    p = n.windowed(n.REVIEW_ERROR_RATE_RECORD, w) + "{" + matcher + "}"
    se = n.windowed(n.REVIEW_ERROR_RATE_TEST_STDERR_RECORD, w)
    lower, upper = review_band(c)
    configured = c.review_error_rate_band is not None
    above = f"({p} - {upper})" if configured else f"({p} - on ({m_on}) group_left () {upper})"
    below = f"({lower} - {p})" if configured else f"({lower} - on ({m_on}) group_right () {p})"
    return f"""{p}
and on ({s_on})
(
  {above} / on ({s_on}) {se} > {q.num(z)}
  or
  {below} / on ({s_on}) {se} > {q.num(z)}
)
and on ({s_on})
{n.windowed(n.REVIEW_REVIEWED_RECORD, w)} >= {c.review_error_rate_min_reviews}"""


def _error_rate(c: MixinConfig) -> Rule:
    if not c.review_error_rate_z > 0 or c.review_error_rate_min_reviews < 1 or c.review_error_rate_segments < 1:
        raise ValueError(
            "review_error_rate_z must be > 0, review_error_rate_min_reviews and review_error_rate_segments >= 1"
        )
    w = c.review_error_rate_window
    lower, upper = review_band(c)
    z, zs = q.num(c.review_error_rate_z), q.num(segment_z(c))
    model = _out_of_band(c, f'{n.LABEL_SEGMENT_KEY}="{n.ALL}"', c.review_error_rate_z)
    segments = _out_of_band(c, f'{n.LABEL_SEGMENT_KEY}!="{n.ALL}"', segment_z(c))
    expr = f"(\n{model}\n)\nor\n(\n{segments}\n)\n"
    if c.review_error_rate_band is not None:
        band = f"the configured band [{lower}, {upper}]"
    elif c.review_error_rate_tolerance > 0:
        band = f"the baseline's error rate (1 - reference accuracy) +- {q.num(c.review_error_rate_tolerance)}"
    else:
        band = "the baseline's error rate (1 - reference accuracy)"
    alpha = q.num(round(2 * (1 - NormalDist().cdf(c.review_error_rate_z)) * 100, 3))
    return alert(
        n.ALERT_REVIEW_ERROR_RATE,
        expr,
        c.review_error_rate_for,
        TICKET,
        f"The reviewed error rate of {SEGMENT_TEXT} left its band: {{{{ $value | humanizePercentage }}}}.",
        f"Weighted by stratum populations (reviews are sampled unevenly, borderline scores more), human "
        f"reviewers found {{{{ $value | humanizePercentage }}}} of the predictions of {SEGMENT_TEXT} wrong over "
        f"the last {w}, confidently outside {band}, with at least {c.review_error_rate_min_reviews} reviews, for "
        f"{c.review_error_rate_for}. Test: two-sided z-test of the stratified estimate against the band's "
        f"edges (|z| > {z} for the model's estimate, nominal alpha {alpha}%; |z| > {zs} for each segment's, "
        f"Bonferroni over {c.review_error_rate_segments} segments), standard error sum_h (N_h/N)^2 p_h (1 - p_h) "
        "/ r_h with p_h smoothed to (e_h + 0.5) / (r_h + 1); simulated (20 strata, errors concentrated near the "
        "threshold and oversampled there, 10,000 windows of 200-2,000 reviews): false alarms <= 0.1% per model "
        "and window from the model's estimate and <= 0.1% more from 20 segments' at an unchanged error rate; "
        "the model's error rate up from 8% to 12% is caught in 57% of windows "
        "with 1,000 reviews and 99% with 2,000, a doubling to 16% in 88% with 500 and 100% with 1,000 (200 "
        "reviews see only larger changes). Above the band: the model errs more than on its reference data; "
        "below it: check that reviewers still review.",
    )


def _backlog(c: MixinConfig) -> Rule:
    if c.review_pending_sla_seconds <= 0 and c.review_backlog_growth_ratio <= 0:
        raise ValueError("review_pending_sla_seconds and review_backlog_growth_ratio are both off: nothing to alert on")
    prometheus_duration(c.review_backlog_window)
    m_on = q.labels(c, *q.MODEL)
    age = f"max by ({m_on}) ({n.REVIEW_OLDEST_PENDING.series}{q.sidecar(c)})"
    pending = f"sum by ({m_on}) ({n.REVIEW_PENDING.series}{q.sidecar(c)})"
    before = f"sum by ({m_on}) ({n.REVIEW_PENDING.series}{q.sidecar(c)} offset {c.review_backlog_window})"
    checks, bars = [], []
    if c.review_pending_sla_seconds > 0:
        checks.append(f"{age} > {q.num(c.review_pending_sla_seconds)}")
        bars.append(f"the oldest pending review is older than {q.num(c.review_pending_sla_seconds)}s")
    if c.review_backlog_growth_ratio > 0:
        ratio = q.num(c.review_backlog_growth_ratio)
        checks.append(
            f"(\n    {pending}\n    > on ({m_on})\n    {ratio} * {before}\n  )\n"
            f"  and on ({m_on})\n  {pending} >= {c.review_backlog_min_pending}"
        )
        bars.append(
            f"the pending reviews grew {ratio}x over {c.review_backlog_window} "
            f"(at least {c.review_backlog_min_pending} pending)"
        )
    expr = f"{age}\nand on ({m_on})\n(\n  " + "\n  or\n  ".join(checks) + "\n)\n"
    return alert(
        n.ALERT_REVIEW_BACKLOG,
        expr,
        c.review_backlog_for,
        TICKET,
        f"Human reviews of model {MODEL_TEXT} fall behind.",
        f"The review queue of {MODEL_TEXT} has items waiting {{{{ $value | humanizeDuration }}}}: "
        f"{' or '.join(bars)}, for {c.review_backlog_for}. No statistical test: fixed thresholds on the queue "
        "gauges. Reviews that stay pending are missing at random only within a stratum; the weighted error "
        "rate rests on fewer reviews, and items older than the queue's max_pending_age expire unreviewed.",
    )


def review_alerts(c: MixinConfig) -> list[Rule]:
    """The weighted error rate out of its band, the review backlog growing."""
    return [_error_rate(c), _backlog(c)]
