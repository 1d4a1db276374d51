"""Alerts on what the model sees and decides: feature and score drift, input coverage,
segment decision rates (label-based performance is in ``_evaluation_alerts``).

Every one reads the sidecar's verdicts for one window (``alert_window``) and refuses to page on
low traffic: the drift and segment decision-rate verdicts are statistical tests, controlled
family-wise per model (Holm across its features, or across its segments x decisions) and -1
below their minimum counts (both windows when they compare two), and the coverage alerts carry
an explicit minimum count. They also carry ``keep_firing_for``, so a sidecar restart (a gap of
a few scrapes in their series) neither resolves them nor restarts their ``for:``.
"""

from __future__ import annotations

from .. import _names as n
from .._durations import prometheus_duration
from . import _rule_helpers as q
from ._alert_helpers import FEATURE_TEXT, MODEL_TEXT, PAGE, SEGMENT_TEXT, TICKET, Rule, across_restarts, alert, label
from .config import MixinConfig

__all__ = ["coverage_alerts", "decision_alerts", "drift_alerts"]

F, D = n.LABEL_FEATURE, n.LABEL_DECISION


def drift_alerts(c: MixinConfig) -> list[Rule]:
    """Feature and score distribution drift, from the sidecar's sample-size-aware verdicts."""
    win = f'{n.LABEL_WINDOW}="{c.alert_window}"'
    f_on, m_on = q.labels(c, *q.FEATURE), q.labels(c, *q.MODEL)

    def verdict(value: str, status: str, by: str) -> str:
        return f"""
max by ({by}) ({value}{q.sidecar(c, win)})
and on ({by})
(max by ({by}) ({status}{q.sidecar(c, win)}) == {n.DRIFT_STATUS_DRIFT})
"""

    return across_restarts(
        c,
        [
            alert(
                "MLFeatureDrift",
                verdict(n.FEATURE_PSI.series, n.FEATURE_DRIFT_STATUS.series, f_on),
                c.drift_for,
                TICKET,
                f"Feature {label(F)} of model {MODEL_TEXT} has drifted from its training baseline.",
                f"The sidecar's drift verdict for {FEATURE_TEXT} over the last {c.alert_window} has been "
                f"'drift' for {c.drift_for}: PSI is {{{{ $value | printf \"%.3f\" }}}}, above the drift threshold "
                "and above the critical value for this sample size, which the sidecar sets family-wise across "
                "the model's features (Holm), so a clean model with many features does not page by chance. Inputs "
                "no longer look like the training data, so predictions on them are less trustworthy.",
            ),
            alert(
                "MLScoreDistributionShift",
                verdict(n.SCORE_PSI.series, n.SCORE_DRIFT_STATUS.series, m_on),
                c.score_drift_for,
                TICKET,
                f"Score distribution of model {MODEL_TEXT} has shifted from its training baseline.",
                f"The sidecar's drift verdict for the prediction scores of {MODEL_TEXT} over the last "
                f"{c.alert_window} has been 'drift' for {c.score_drift_for}: PSI is "
                '{{ $value | printf "%.3f" }}. Decisions made on thresholds of this score change with it.',
            ),
        ],
    )


def coverage_alerts(c: MixinConfig) -> list[Rule]:
    """Features that go missing or arrive with values training never saw.

    ``missing_min_count`` counts *missing* values (the app's counter over ``alert_window``):
    a feature that is missing in every row has no non-missing observations to count.
    """
    prometheus_duration(c.alert_window)  # also used as a PromQL range here
    win = f'{n.LABEL_WINDOW}="{c.alert_window}"'
    f_on = q.labels(c, *q.FEATURE)
    missing_now = f"max by ({f_on}) ({n.FEATURE_MISSING_RATIO.series}{q.sidecar(c, win)})"
    missing_ref = f"max by ({f_on}) ({n.FEATURE_REFERENCE_MISSING_RATIO.series}{q.sidecar(c)})"
    missing = f"""
(
  {missing_now}
  - on ({f_on})
  ({missing_ref} or 0 * {missing_now})
) > {q.num(c.missing_ratio_increase_threshold)}
and on ({f_on})
sum by ({f_on}) (increase({n.FEATURE_MISSING.series}{q.app(c)}[{c.alert_window}])) >= {c.missing_min_count}
"""
    unknown = f"""
max by ({f_on}) ({n.FEATURE_UNKNOWN_RATIO.series}{q.sidecar(c, win)}) > {q.num(c.unknown_ratio_threshold)}
and on ({f_on})
max by ({f_on}) ({n.FEATURE_WINDOW_COUNT.series}{q.sidecar(c, win)}) >= {c.unknown_min_count}
"""
    return across_restarts(
        c,
        [
            alert(
                "MLFeatureMissingRatioHigh",
                missing,
                c.missing_for,
                TICKET,
                f"Feature {label(F)} of model {MODEL_TEXT} is missing far more often than in training.",
                f"Over the last {c.alert_window}, the missing share of {FEATURE_TEXT} is "
                "{{ $value | humanizePercentage }} above its share in the training data (alert above "
                f"{q.num(c.missing_ratio_increase_threshold * 100)} points, with at least {c.missing_min_count} "
                "missing values). The model imputes these values, so its predictions degrade silently.",
            ),
            alert(
                "MLUnknownCategorySurge",
                unknown,
                c.unknown_for,
                TICKET,
                f"Feature {label(F)} of model {MODEL_TEXT} receives categories never seen in training.",
                f"Over the last {c.alert_window}, {{{{ $value | humanizePercentage }}}} of the values of "
                f"{FEATURE_TEXT} were not in the training vocabulary (alert above "
                f"{q.num(c.unknown_ratio_threshold * 100)}%). Typical cause: an upstream encoding change "
                "such as 'US' becoming 'United States'.",
            ),
        ],
    )


def _kit_minimums(c: MixinConfig, change: str, rate: str, r_on: str) -> list[str]:
    """The optional extra minimum effect on the window's change (both off by default).

    Relative: ``|ml_segment_decision_rate_change| >= r``, the ratio the dashboards show.
    Absolute: with ``R`` the rate now and ``C`` its relative change the reference is
    ``R / (1 + C)``, so ``|now - ref| >= a`` is ``R |C| >= a (1 + C)``, multiplied through by
    ``1 + C`` to avoid dividing by 0 when the rate collapsed to zero.
    """
    checks = []
    if c.decision_rate_min_relative_change > 0:
        checks.append(f"abs({change}) >= {q.num(c.decision_rate_min_relative_change)}")
    if c.decision_rate_min_absolute_change > 0:
        moved = f"(\n  abs({change})\n  * on ({r_on}) group_left ()\n  {rate}\n)"
        checks.append(f"{moved}\n>= {q.num(c.decision_rate_min_absolute_change)} * (1 + {change})")
    return checks


def _decision_rate_expr(c: MixinConfig) -> str:
    """The sidecar's verdict "changed" (2) for a reference that may page; the value is the relative change.

    The verdict already needs significance after the sidecar's multiplicity correction, its
    minimum effect and minimum counts in both windows (else -1), so no count is read here.
    A reference rate of 0 has no relative change (the sidecar exports none): such a verdict
    still pages, with the value +Inf. The kit's own minimums are off by default (see
    MixinConfig: the sidecar's baseline verdict may rest on three pooled windows, which one
    window's change does not show).
    """
    refs = c.decision_rate_references
    if not refs:
        raise ValueError("decision_rate_references must name at least one ml_reference value")
    if min(c.decision_rate_min_relative_change, c.decision_rate_min_absolute_change) < 0:
        raise ValueError("decision_rate_min_relative_change and decision_rate_min_absolute_change must be >= 0")
    win = f'{n.LABEL_WINDOW}="{c.alert_window}"'
    sel = q.sidecar(c, win, f'{n.LABEL_REFERENCE}=~"{"|".join(refs)}"')
    d_on, r_on = q.labels(c, *q.DECISION, n.LABEL_REFERENCE), q.labels(c, *q.DECISION)
    change = f"max by ({d_on}) ({n.SEGMENT_DECISION_RATE_CHANGE.series}{sel})"
    changed = f"(max by ({d_on}) ({n.SEGMENT_DECISION_RATE_STATUS.series}{sel}) == {n.DRIFT_STATUS_DRIFT})"
    rate = f"max by ({r_on}) ({n.SEGMENT_DECISION_RATE.series}{q.sidecar(c, win)})"
    checks = [changed, *_kit_minimums(c, change, rate, r_on)]
    measured = f"{change}\n" + "".join(f"and on ({d_on})\n{check}\n" for check in checks)
    from_zero = f"(\n  {changed}\n  unless on ({d_on})\n  {change}\n) * 0 + Inf"
    if c.decision_rate_min_absolute_change > 0:
        minimum = q.num(c.decision_rate_min_absolute_change)
        from_zero += f"\nand on ({r_on})\n{rate} >= {minimum}"
    return f"(\n{_indent(measured)})\nor on ({d_on})\n(\n{_indent(from_zero)}\n)\n"


def _indent(text: str) -> str:
    return "".join(f"  {line}" if line.strip() else line for line in text.splitlines(keepends=True))


def _decision_rate_description(c: MixinConfig) -> str:
    """What the page means, with the kit's minimum effect when it has one."""
    bar = []
    if c.decision_rate_min_relative_change > 0:
        bar.append(f"{q.num(c.decision_rate_min_relative_change * 100)}% relative")
    if c.decision_rate_min_absolute_change > 0:
        bar.append(f"{q.num(c.decision_rate_min_absolute_change * 100)} points absolute")
    minimum = f", and by at least {' and '.join(bar)}" if bar else ""
    return (
        f"Over the last {c.alert_window}, the share of predictions with decision {label(D)} in {SEGMENT_TEXT} "
        f"changed by {{{{ $value | humanizePercentage }}}} relative to the {label(n.LABEL_REFERENCE)}, and the "
        f"sidecar's test has called it 'changed' for {c.decision_rate_for}: significant after correcting for "
        f"the model's many segments and decisions, with enough predictions in both windows{minimum}. "
        "Customers in this segment are being treated differently than before."
    )


def decision_alerts(c: MixinConfig) -> list[Rule]:
    """Decision rates per segment (label-based performance: :mod:`otel_ml.mixin._evaluation_alerts`)."""
    decision_rate = _decision_rate_expr(c)
    return across_restarts(
        c,
        [
            alert(
                "MLSegmentDecisionRateChange",
                decision_rate,
                c.decision_rate_for,
                PAGE,
                f"Rate of decision {label(D)} changed for {SEGMENT_TEXT}.",
                _decision_rate_description(c),
            ),
        ],
    )
