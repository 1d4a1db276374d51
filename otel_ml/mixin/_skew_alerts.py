"""Alerts of training/serving skew: the last replay's decision flips over budget, the replay stale.

A replay (``otel-ml skew replay --pushgateway``) re-scores captured serving rows through the
training pipeline; a flip is a row whose replayed decision differs from the served one. At a flip
share exactly at the budget b, the flips of R rows are Binomial(R, b), close to Poisson(R b) for a
small b, and Anscombe's transform makes a Poisson count's variance 1/4 whatever its mean:
z = 2 (sqrt(flips + 3/8) - sqrt(R b + 3/8)) is close to N(0, 1) even for a handful of flips, where
the plain z-test (flips - R b) / sqrt(R b) pages far too often (its one-sided tail is the
Poisson's long right one). The binomial's variance is below the Poisson's, so the test errs on the
quiet side. Checked in ``tests/test_skew_alert_sim.py`` (numpy binomial flips, fixed seeds, and the
exact binomial tail with scipy) at the defaults, b = 1 %, z > 3.09, at least 500 rows:

- false alarms at the budget: exactly 0.021 % (500 rows), 0.027 % (1,000), 0.054 % (5,000),
  0.069 % (20,000) per model version and replay, <= 0.1 % (the nominal alpha) for any rows;
- power at 2x the budget: 28 % with 1,000 rows, 99.6 % with 5,000; at 3x: 92 % with 1,000 and
  100 % with 5,000. With 500 rows only 3x (54 %) and larger are seen.

No alert per segment: segments would multiply false pages, and the flips of a segment are in the
dashboard's Training/serving skew row and the replay's report. The stale alert has no test: the
finished replay's own timestamp against a maximum age.
"""

from __future__ import annotations

from statistics import NormalDist

from .. import _names as n
from .._durations import prometheus_duration
from . import _rule_helpers as q
from ._alert_helpers import MODEL_TEXT, TICKET, Rule, alert
from ._skew_rules import skew_counts
from .config import MixinConfig

__all__ = ["ANSCOMBE_OFFSET", "skew_alerts"]

ANSCOMBE_OFFSET = 0.375  # 3/8: sqrt(X + 3/8) of a Poisson X has variance closest to 1/4 (Anscombe 1948)

# The figures the description quotes, as tests/test_skew_alert_sim.py measures them at the defaults.
_FIGURES = (
    "simulated and exact (binomial flips at the budget, 500-20,000 rows): false alarms <= 0.1% per model "
    "version and replay; at 2x the budget caught in 28% of replays of 1,000 rows and 99.6% of 5,000, at 3x in "
    "92% of 1,000 rows and 100% of 5,000"
)


def _count(c: MixinConfig, series: str, *matchers: str) -> str:
    """An annotation template printing one number of the last replay of the alert's model version."""
    keys = (*q.MODEL, *c.aggregation_labels)
    own = ", ".join(f"{key}=%q" for key in keys)
    sel = q.skew(c, *matchers, own).replace('"', '\\"')  # inside a template's string literal
    args = " ".join(f"$labels.{key}" for key in keys)
    value = '{{ . | first | value | printf "%.0f" }}'
    return f'{{{{ with printf "sum({series}{sel})" {args} | query }}}}{value}{{{{ end }}}}'


def _flips_over_budget(c: MixinConfig) -> Rule:
    if not 0 < c.skew_flip_budget < 1:
        raise ValueError(f"skew_flip_budget must be between 0 and 1, got {c.skew_flip_budget}")
    if not c.skew_flip_z > 0 or c.skew_min_rows < 1:
        raise ValueError("skew_flip_z must be > 0 and skew_min_rows >= 1")
    m_on = q.labels(c, *q.MODEL)
    flips, rows = skew_counts(c)
    budget, z, offset = q.num(c.skew_flip_budget), q.num(c.skew_flip_z), q.num(ANSCOMBE_OFFSET)
    expr = f"""{n.SKEW_FLIP_RATIO_RECORD}
and on ({m_on})
(
  2 * (sqrt({flips} + {offset}) - sqrt({rows} * {budget} + {offset})) > {z}
)
and on ({m_on})
{rows} >= {c.skew_min_rows}"""
    overall = f'{n.LABEL_SEGMENT_KEY}="{n.ALL}"'
    replayed = _count(c, n.SKEW_ROWS.series, overall)
    flipped = _count(c, n.SKEW_DECISION_FLIPS.series, overall, f'{n.LABEL_FLIP}!="{n.ALL}"')
    percent = q.num(c.skew_flip_budget * 100)
    return alert(
        n.ALERT_SKEW_FLIPS,
        expr,
        c.skew_flips_for,
        TICKET,
        f"Replayed through the training pipeline, {{{{ $value | humanizePercentage }}}} of the captured rows of "
        f"{MODEL_TEXT} get another decision than served.",
        f"The last training/serving skew replay of {MODEL_TEXT} ran {replayed} captured serving rows through the "
        f"training-time feature pipeline and re-scored them: {flipped} ({{{{ $value | humanizePercentage }}}}) got a "
        f"different decision than the one served, over the budget of {percent}% (skew_flip_budget). Test: "
        f"Anscombe's variance-stabilised one-sided Poisson test, 2 (sqrt(flips + 3/8) - sqrt(rows x {budget} + 3/8)) "
        f"> {z} (nominal alpha {q.num(round(_alpha(c.skew_flip_z) * 100, 3))}%), with at least {c.skew_min_rows} "
        f"rows; {_FIGURES}. The serving features differ from the training pipeline's where it matters: the "
        "dashboard's Training/serving skew row shows the flips per segment (the worst segment) and the features "
        "by result (mismatch, bin_change, missing); `otel-ml skew replay --json -` on the capture names the worst "
        "request ids.",
    )


def _alpha(z: float) -> float:
    """One-sided upper tail of the standard normal at ``z``."""
    return 1 - NormalDist().cdf(z)


def _replay_stale(c: MixinConfig) -> Rule:
    max_age = prometheus_duration(c.skew_replay_max_age)
    if not max_age > 0:
        raise ValueError(f"skew_replay_max_age must be > 0, got {c.skew_replay_max_age!r}")
    m_on = q.labels(c, *q.MODEL)
    last = f"max by ({m_on}) ({n.SKEW_LAST_RUN.series}{q.skew(c)})"
    # a replay of no row (the pipeline raised on every one) pushes no finish time: its PUT leaves the
    # group with the Pushgateway's push_time_seconds alone, and that is stale from the push on
    pushed = f"max by ({m_on}) ({n.PUSHGATEWAY_PUSH_TIME}{q.skew(c)})"
    return alert(
        n.ALERT_SKEW_STALE,
        f"time() - {last} > {q.num(max_age)}\nor\n(time() - {pushed} unless on ({m_on}) {last})",
        c.skew_stale_for,
        TICKET,
        f"No training/serving skew replay of {MODEL_TEXT} has finished for {c.skew_replay_max_age}.",
        f"The last finished training/serving skew replay of {MODEL_TEXT} is {{{{ $value | humanizeDuration }}}} "
        f"old, more than {c.skew_replay_max_age} (skew_replay_max_age), or its last push replayed no row "
        f"({{{{ $value | humanizeDuration }}}} is then the push's age), for {c.skew_stale_for}. No statistical "
        "test: the replay's own finish time against a maximum age. The scheduled replay (`otel-ml skew replay "
        "--pushgateway`, from a CronJob or a systemd timer) stopped running or fails before it finishes; until it "
        "runs, the skew row and MLSkewDecisionFlipsOverBudget show the old replay. A retired model version keeps "
        "this alert until its group is deleted from the Pushgateway.",
    )


def skew_alerts(c: MixinConfig) -> list[Rule]:
    """The last replay's flips over budget, the replay not run for too long."""
    return [_flips_over_budget(c), _replay_stale(c)]
