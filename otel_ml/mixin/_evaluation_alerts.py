"""Alerts of the evaluation loop: is the model still good, and is the outcome pipeline healthy?

Realised and estimated performance read the recording rules of
:mod:`otel_ml.mixin._evaluation_rules` (counters summed across replicas) and page when a metric
falls below the baseline's reference band: reference - 3 standard deviations of a window this
size against the reference (NannyML's chunk standard deviation scaled by
sqrt(chunk / n + chunk / N_ref)). A quiet window has no recorded sample, so it cannot page.
Coverage, delay and join-store alerts watch the labels themselves: a broken outcome pipeline
looks like a performance change, or hides one.

False-alarm rates and power quoted in the descriptions are simulated in
``tests/test_performance_alert_sim.py`` (the bands) and ``tests/test_label_alert_sim.py``
(coverage, delay).
"""

from __future__ import annotations

from .. import _names as n
from .._durations import prometheus_duration
from . import _rule_helpers as q
from ._alert_helpers import MODEL_TEXT, SEGMENT_TEXT, TICKET, Rule, across_restarts, alert, label
from ._evaluation_rules import (
    PERFORMANCE_METRICS,
    estimated_band_record,
    estimated_record,
    online_band_record,
    online_record,
)
from .config import MixinConfig

__all__ = ["evaluation_alerts"]

METRIC = n.LABEL_METRIC
COHORT_AGES = n.COHORT_AGES  # the sidecar's ml_cohort_age values


def _check_metrics(field: str, metrics: tuple[str, ...]) -> None:
    if not metrics or set(metrics) - set(PERFORMANCE_METRICS):
        raise ValueError(f"{field} must name some of {list(PERFORMANCE_METRICS)}, got {list(metrics)!r}")


def _tagged(records: dict[str, str]) -> str:
    """The recorded metrics as one vector, each series tagged with its ``ml_metric``."""
    parts = [f'label_replace({record}, "{METRIC}", "{metric}", "", "")' for metric, record in records.items()]
    return "(\n  " + "\n  or\n  ".join(parts) + "\n)"


def _realised(c: MixinConfig) -> Rule:
    _check_metrics("performance_metrics", c.performance_metrics)
    if c.performance_coverage_cohort not in COHORT_AGES:
        raise ValueError(
            f"performance_coverage_cohort must be one of {COHORT_AGES}, got {c.performance_coverage_cohort!r}"
        )
    w = c.performance_short_window
    s_on, m_on = q.labels(c, *q.SEGMENT), q.labels(c, *q.MODEL)
    coverage = q.sidecar(c, f'{n.LABEL_COHORT_AGE}="{c.performance_coverage_cohort}"', f'{n.LABEL_DECISION}="{n.ALL}"')
    realised = _tagged({m: online_record(m, w) for m in c.performance_metrics})
    expr = f"""
{realised}
< on ({q.labels(c, *q.SEGMENT, METRIC)})
{online_band_record(w)}
and on ({s_on})
ml:labelled_predictions:increase{w} >= {c.performance_min_labels}
and on ({m_on})
max by ({m_on}) ({n.LABEL_COVERAGE.series}{coverage}) >= {q.num(c.performance_min_coverage)}
"""
    return alert(
        "MLOnlinePerformanceDrop",
        expr,
        c.performance_for,
        TICKET,
        f"Realised {label(METRIC)} of {SEGMENT_TEXT} is below its reference band.",
        f"On predictions whose labels arrived in the last {w}, the {label(METRIC)} of {SEGMENT_TEXT} is "
        '{{ $value | printf "%.3f" }}, below the baseline\'s reference performance minus 3 standard deviations '
        "of a window this size against the reference (chunk stddev x sqrt(chunk / labels + chunk / reference "
        "labels)), with at least "
        f"{c.performance_min_labels} labels and label coverage of the {c.performance_coverage_cohort} cohort "
        f"at least {q.num(c.performance_min_coverage * 100)}%, for {c.performance_for}. Test: one-sided 3-sigma "
        "band; simulated (3 models, 20,000 windows of 200-5,000 labels each): a model as good as on its "
        "reference falls below it in <= 0.3% of windows for ROC AUC and precision and <= 1% for recall, per "
        "metric and segment; an AUC drop of 0.05 is caught with power 97-100% (AUC) at 2,000 labels, by a "
        "covariate shift or by concept drift alike. The model is making more mistakes than it did on its "
        "reference data.",
    )


def _estimated(c: MixinConfig) -> Rule:
    _check_metrics("estimated_performance_metrics", c.estimated_performance_metrics)
    w = c.estimated_performance_window
    m_on = q.labels(c, *q.MODEL)
    estimated = _tagged({m: estimated_record(m, w) for m in c.estimated_performance_metrics})
    expr = f"""
{estimated}
< on ({q.labels(c, *q.MODEL, METRIC)})
{estimated_band_record("lower", w)}
and on ({m_on})
ml:score_predictions:increase{w} >= {c.estimated_performance_min_predictions}
"""
    return alert(
        "MLEstimatedPerformanceDrop",
        expr,
        c.estimated_performance_for,
        TICKET,
        f"Estimated {label(METRIC)} of model {MODEL_TEXT} is below its reference band (no labels needed).",
        f"From the scores of the last {c.estimated_performance_window} alone (CBPE: the baseline's per-bin "
        f"positive rates applied to this window's score bins), the expected {label(METRIC)} of {MODEL_TEXT} is "
        '{{ $value | printf "%.3f" }}, below the reference performance minus 3 standard deviations of a window '
        f"this size against the reference, with at least {c.estimated_performance_min_predictions} "
        f"predictions, for {c.estimated_performance_for}. Test: one-sided 3-sigma band on the estimate; "
        "simulated (3 models, 20,000 windows of 500-5,000 predictions): no false alarm in any window (the "
        "band is the realised metric's spread; an estimate has no label noise), power 100% for ROC AUC at "
        "2,000 predictions against a score shift that lowers the AUC by 0.05 (20-43% at 500). CBPE assumes "
        "the calibration still holds: it sees score shifts, not concept drift (0% power there: the "
        "estimated-vs-realised gap shows it), so it warns before labels arrive but cannot prove the model is fine.",
    )


def _coverage(c: MixinConfig) -> Rule:
    if c.label_coverage_cohort not in COHORT_AGES:
        raise ValueError(f"label_coverage_cohort must be one of {COHORT_AGES}, got {c.label_coverage_cohort!r}")
    if c.label_coverage_drop_ratio <= 0 and c.label_coverage_floor <= 0:
        raise ValueError("label_coverage_drop_ratio and label_coverage_floor are both off: nothing to alert on")
    m_on = q.labels(c, *q.MODEL)
    sel = q.sidecar(c, f'{n.LABEL_COHORT_AGE}="{c.label_coverage_cohort}"', f'{n.LABEL_DECISION}="{n.ALL}"')
    now = f"max by ({m_on}) ({n.LABEL_COVERAGE.series}{sel})"
    cohort = f"max by ({m_on}) ({n.LABEL_COHORT_PREDICTIONS.series}{sel})"
    z = q.num(c.label_coverage_z)
    checks = []
    if c.label_coverage_drop_ratio > 0:
        before = f"max by ({m_on}) (avg_over_time({n.LABEL_COVERAGE.series}{sel}[1d] offset 7d))"
        fell = f"({before} - {now}) / sqrt(2 * {before} * (1 - {before}) / {cohort}) > {z}"
        checks.append(f"{now}\n< on ({m_on})\n{q.num(c.label_coverage_drop_ratio)} * {before}\nand\n{fell}")
    if c.label_coverage_floor > 0:
        floor = q.num(c.label_coverage_floor)
        below = f"({floor} - {now}) / sqrt({floor} * (1 - {floor}) / {cohort}) > {z}"
        checks.append(f"{now} < {floor}\nand\n{below}")
    bars = []
    if c.label_coverage_drop_ratio > 0:
        bars.append(f"below {q.num(c.label_coverage_drop_ratio * 100)}% of its average a week before")
    if c.label_coverage_floor > 0:
        bars.append(f"below {q.num(c.label_coverage_floor * 100)}%")
    either = "\n  or\n  ".join(check.replace("\n", "\n  ") for check in checks)
    expr = f"""
(
  {either}
)
and on ({m_on})
max by ({m_on}) ({n.LABEL_COHORT_PREDICTIONS.series}{sel}) >= {c.label_coverage_min_predictions}
"""
    return alert(
        "MLLabelCoverageCollapsed",
        expr,
        c.label_coverage_for,
        TICKET,
        f"Labels stopped arriving for model {MODEL_TEXT} (coverage of the {c.label_coverage_cohort} cohort collapsed).",
        f"Only {{{{ $value | humanizePercentage }}}} of the predictions {MODEL_TEXT} made "
        f"{c.label_coverage_cohort} ago have their label, {' or '.join(bars)} (at least "
        f"{c.label_coverage_min_predictions} predictions in the cohort), for {c.label_coverage_for}. "
        f"Test: one-sided two-proportion z-test against the same cohort age a week earlier (z > {z}, and "
        "the coverage below the bar); simulated with 500-prediction cohorts at coverages 1-99%: false alarms "
        "<= 0.1% per cohort, power >= 90% against losing 70% of the labels at coverage >= 20% (18% at 5% "
        "coverage, 25 labels a cohort; 100% with 5,000 predictions). The outcome "
        "pipeline is probably broken: realised performance and its alert now rest on few, possibly biased labels.",
    )


def _delay(c: MixinConfig) -> Rule:
    if not 0 < c.label_delay_quantile < 1:
        raise ValueError(f"label_delay_quantile must be between 0 and 1, got {c.label_delay_quantile}")
    if c.label_delay_budget_seconds <= 0 and c.label_delay_growth_ratio <= 0:
        raise ValueError("label_delay_budget_seconds and label_delay_growth_ratio are both off: nothing to alert on")
    prometheus_duration(c.label_delay_window)
    w = c.label_delay_window
    m_on, m_le = q.labels(c, *q.MODEL), q.labels(c, *q.MODEL, n.LABEL_LE)
    delay = n.LABEL_DELAY
    quantile = q.num(c.label_delay_quantile)

    def at(offset: str = "") -> tuple[str, str]:
        buckets = f"sum by ({m_le}) (increase({delay.bucket_series}{q.sidecar(c)}[{w}]{offset}))"
        count = f"sum by ({m_on}) (increase({delay.count_series}{q.sidecar(c)}[{w}]{offset}))"
        return f"histogram_quantile({quantile}, {buckets})", count

    now, labels_now = at()
    before, labels_before = at(" offset 7d")
    checks, bars = [], []
    if c.label_delay_budget_seconds > 0:
        checks.append(f"{now} > {q.num(c.label_delay_budget_seconds)}")
        bars.append(f"above the budget of {q.num(c.label_delay_budget_seconds)}s")
    if c.label_delay_growth_ratio > 0:
        grown = f"{now}\n> on ({m_on})\n{q.num(c.label_delay_growth_ratio)} * {before}"
        checks.append(f"(\n  {grown}\n  and on ({m_on})\n  {labels_before} >= {c.label_delay_min_labels}\n)")
        bars.append(f"{q.num(c.label_delay_growth_ratio)}x its value a week before")
    expr = "(\n" + "\nor\n".join(checks) + f"\n)\nand on ({m_on})\n{labels_now} >= {c.label_delay_min_labels}\n"
    p = q.num(c.label_delay_quantile * 100)
    return alert(
        "MLLabelDelayGrowing",
        expr,
        c.label_delay_for,
        TICKET,
        f"Labels of model {MODEL_TEXT} arrive later than usual.",
        f"The p{p} delay from prediction to label of the labels {MODEL_TEXT} received in the last {w} is "
        f"{{{{ $value | humanizeDuration }}}}, {' or '.join(bars)}, with at least {c.label_delay_min_labels} "
        f"labels, for {c.label_delay_for}. Test: fixed thresholds on the p{p} of the delay histogram "
        "(interpolated within its buckets, 1m to 30d, as histogram_quantile does); simulated with 200 "
        "lognormal delays a window (median 1 day): false alarms 0.01% per window, power 99% when delays "
        "triple. Realised performance describes ever older predictions, and the coverage of young "
        "cohorts will look low.",
    )


def _join_store(c: MixinConfig) -> Rule:
    prometheus_duration(c.join_store_eviction_window)
    by = q.labels(c, "job", "instance")
    sel = q.sidecar(c, f'{n.LABEL_REASON}="cap"')
    expr = f"sum by ({by}) (increase({n.JOIN_STORE_EVICTED.series}{sel}[{c.join_store_eviction_window}])) > 0"
    return alert(
        "MLJoinStoreEvicting",
        expr,
        c.join_store_eviction_for,
        TICKET,
        "The join store of otel-ml sidecar {{ $labels.instance }} is full and samples predictions.",
        "The sidecar {{ $labels.instance }} dropped {{ $value | humanize }} predictions waiting for their label "
        f"in the last {c.join_store_eviction_window} because its join store reached its byte cap; it now keeps "
        "only request ids whose hash falls in a 2^-k sample (ml_join_sample_ratio) and counts the others' "
        "labels as sampled_out. No statistical test: any eviction by cap. Metrics stay unbiased, but rest on "
        "fewer labels (wider bands, less power).",
    )


def evaluation_alerts(c: MixinConfig) -> list[Rule]:
    """Realised and estimated performance, label coverage and delay, the join store."""
    windowed = across_restarts(c, [_realised(c), _estimated(c), _coverage(c)])
    return [*windowed, _delay(c), _join_store(c)]
