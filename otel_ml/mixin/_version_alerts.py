"""Alerts on two versions side by side: a shadow that disagrees, a canary to roll back, a shadow
that cannot keep up.

The first two read the checks and the verdict of :mod:`otel_ml.mixin._version_rules` over the
shortest of ``version_windows``; they fire only on -1 (confident harm), never on 0
(inconclusive: too few pairs, no traffic, missing data). The false-alarm rates and power quoted
are simulated in ``tests/test_version_alert_sim.py`` on :mod:`otel_ml.evaluation._versions`.
"""

from __future__ import annotations

from .. import _names as n
from .._durations import prometheus_duration
from ..evaluation._versions import bonferroni_z
from . import _rule_helpers as q
from ._alert_helpers import PAGE, TICKET, Rule, alert, label
from ._version_rules import check_record, verdict_record, version_windows
from .config import MixinConfig

__all__ = ["version_alerts"]

PAIR_TEXT = (
    f"candidate {label(n.LABEL_CANDIDATE_VERSION)} of model {label(n.LABEL_MODEL_NAME)} "
    f"(reference {label(n.LABEL_REFERENCE_VERSION)})"
)
SHADOW_TEXT = (
    f"shadow {label(n.LABEL_SHADOW_VERSION)} of model {label(n.LABEL_MODEL_NAME)} {label(n.LABEL_MODEL_VERSION)}"
)


def _disagreement(c: MixinConfig, w: str) -> Rule:
    pct = q.num(c.version_flip_budget * 100)
    conf = q.num(c.version_confidence * 100)
    return alert(
        n.ALERT_SHADOW_DISAGREEMENT,
        f'{check_record(w)}{{{n.LABEL_CHECK}="{n.CHECK_FLIP_RATE}"}} == -1',
        c.version_alert_for,
        TICKET,
        f"The decisions of {PAIR_TEXT} differ in more than {pct}% of segment "
        f"{label(n.LABEL_SEGMENT_KEY)}={label(n.LABEL_SEGMENT)}.",
        f"Over the last {w}, the share of requests in segment {label(n.LABEL_SEGMENT_KEY)}={label(n.LABEL_SEGMENT)} "
        f"on which {PAIR_TEXT} decided differently is confidently above the flip budget of {pct}% "
        f"(ml:shadow_flip_ratio:{w} and its Wilson bounds show it), with at least {c.version_min_pairs} pairs "
        f"overall or {c.version_min_segment_pairs} in a segment, for {c.version_alert_for}. Test: one-sided "
        f"score test at the budget (continuity and skewness corrected) at {conf}% family-wise confidence "
        f"(Bonferroni over {c.version_max_checks} checks); simulated: a shadow flipping at half the budget in "
        "20 segments rolled back in 0 of 20,000 windows; a share exactly at the budget is judged -1 in at "
        "most 0.05% of windows per check (exact, 200-60,000 pairs); twice the budget in one 1,000-pair "
        "segment is caught in 99.7% of windows. Disagreement has no direction: look at what the flips are "
        "before promoting anything.",
    )


def _rollback(c: MixinConfig, w: str) -> Rule:
    return alert(
        n.ALERT_VERSION_ROLLBACK,
        f"{verdict_record(w)} == -1",
        c.version_rollback_for,
        PAGE,
        f"Roll back {PAIR_TEXT}: a check is confidently outside its budget.",
        f"The verdict ml:version_verdict:{w} of {PAIR_TEXT} is -1 (roll back) for {c.version_rollback_for}: "
        f"at least one check of ml:version_check:{w} (flip_rate per segment, paired_accuracy with labels, "
        "decision_rate per segment, error_rate, latency) is confidently outside its budget at "
        f"{q.num(c.version_confidence * 100)}% family-wise confidence. Test: one-sided bounds at z = "
        f"{bonferroni_z(c.version_confidence, c.version_max_checks):.2f} (Bonferroni over {c.version_max_checks} "
        "checks); simulated: an identical candidate (20 segments) rolled back in 0 of 20,000 windows, as shadow "
        "or canary; a decision-rate difference exactly at the budget is judged -1 in <= 0.06% of windows per "
        "check at shares of 25-55% (0.7% for a rare decision, 5% vs 10% with 200 vs 2,000 predictions); an "
        "error regression at the budget in <= 0.04%. A rollout controller reading the same query aborts; pin "
        "the reference version if it does not.",
    )


def _dropping(c: MixinConfig) -> Rule:
    prometheus_duration(c.shadow_drop_window)
    w = c.shadow_drop_window
    k = q.labels(c, n.LABEL_MODEL_NAME, n.LABEL_MODEL_VERSION, n.LABEL_SHADOW_VERSION)
    drops = f"sum by ({k}) (increase({n.SHADOW_DROPPED.series}{q.app(c)}[{w}]))"
    full = q.app(c, f'{n.LABEL_REASON}="queue_full"')
    once = q.app(c, f'{n.LABEL_SEGMENT_KEY}="{n.ALL}"')  # every pair once, not once per segment key
    pairs = f"sum by ({k}) (increase({n.SHADOW_PAIRS.series}{once}[{w}]))"
    submitted = f"(({pairs}) or 0 * {drops})\n+ on ({k})\n({drops} or 0 * {pairs})"
    expr = f"""
sum by ({k}) (increase({n.SHADOW_DROPPED.series}{full}[{w}]))
/ on ({k})
(
  {submitted}
  >= {c.shadow_drop_min_requests}
)
> {q.num(c.shadow_drop_ratio_threshold)}
"""
    return alert(
        n.ALERT_SHADOW_DROPPING,
        expr,
        c.shadow_drop_for,
        TICKET,
        f"The {SHADOW_TEXT} drops {{{{ $value | humanizePercentage }}}} of its requests (queue full).",
        f"Over the last {w}, {{{{ $value | humanizePercentage }}}} of the requests submitted to the "
        f"{SHADOW_TEXT} were dropped because its queue was full (alert above "
        f"{q.num(c.shadow_drop_ratio_threshold * 100)}%, with at least {c.shadow_drop_min_requests} requests "
        f"submitted), for {c.shadow_drop_for}. No statistical test: a fixed share. The served calls are "
        "unaffected, but the comparison rests on fewer pairs and on the requests that arrive when "
        "the shadow is idle, which may not be representative.",
    )


def version_alerts(c: MixinConfig) -> list[Rule]:
    """Shadow disagreement, the roll-back verdict, shadow dropping."""
    w = version_windows(c)[0]
    return [_disagreement(c, w), _rollback(c, w), _dropping(c)]
