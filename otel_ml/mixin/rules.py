"""Recording rules, as data: each group a pure function of :class:`MixinConfig`.

Recording rules exist for two reasons: the dashboards' heavier queries (rates, decision
shares, latency quantiles over many replicas) and computations Prometheus can do fleet-wide
that the sidecar only sees per pod, mainly PSI from the summed bin counters of every replica,
with the same 1e-4 smoothing of empty bins as the sidecar, and the realised and estimated
performance of :mod:`otel_ml.mixin._evaluation_rules`, the version comparison of
:mod:`otel_ml.mixin._version_rules`, cost per 1K predictions (:mod:`otel_ml.mixin._cost_rules`)
and the stratified review error rate (:mod:`otel_ml.mixin._review_rules`) and the decision flips of
the last training/serving skew replay (:mod:`otel_ml.mixin._skew_rules`). The alerting rules of
:mod:`otel_ml.mixin.alerts` read the serving recordings, so both files are loaded together;
:mod:`otel_ml.mixin.generate` writes them.
"""

from __future__ import annotations

from typing import Any

from .. import _names as n
from .._durations import prometheus_duration
from . import _rule_helpers as q
from ._cost_rules import cost_rules
from ._evaluation_rules import evaluation_rules
from ._review_rules import review_rules
from ._rule_helpers import Rule, latency_burn_rate_record, ratio_record, record
from ._skew_rules import skew_rules
from ._version_rules import version_rules
from .config import MixinConfig

__all__ = [
    "LATENCY_QUANTILES",
    "latency_burn_rate_record",
    "ratio_record",
    "recording_groups",
]

LATENCY_QUANTILES = (0.5, 0.9, 0.99)  # the dashboards' latency percentiles


def _sorted_windows(*windows: str) -> list[str]:
    return sorted(set(windows), key=prometheus_duration)


def serving_rules(c: MixinConfig) -> list[Rule]:
    """Traffic, decision shares, errors, fallbacks and latency quantiles per model version."""
    m_on, s_on, d_on = q.labels(c, *q.MODEL), q.labels(c, *q.SEGMENT), q.labels(c, *q.DECISION)
    duration = n.PREDICTION_DURATION
    calls = duration.count_series
    rules: list[Rule] = []
    for w in _sorted_windows(c.recording_window, c.error_rate_window):
        calls_rate = f"ml:prediction_calls:rate{w}"
        rules.append(record(calls_rate, f"sum by ({m_on}) (rate({calls}{q.app(c)}[{w}]))"))
        for counter in (n.PREDICTION_ERRORS, n.PREDICTION_FALLBACKS):
            # "or 0 *": a model without errors has no error series; record 0, not nothing.
            rules.append(
                record(
                    ratio_record(counter.prometheus, w),
                    f"""
(
  sum by ({m_on}) (rate({counter.series}{q.app(c)}[{w}]))
  or
  0 * {calls_rate}
)
/ ({calls_rate} > 0)
""",
                )
            )
    w = c.recording_window
    decisions = f"ml:segment_decisions:rate{w}"
    buckets = f"ml:{q.short(duration.bucket_series)}:rate{w}"
    all_segments = f'{n.LABEL_SEGMENT_KEY}="{n.ALL}"'
    rules += [
        record(
            f"ml:predictions:rate{w}", f"sum by ({m_on}) (rate({n.PREDICTIONS.series}{q.app(c, all_segments)}[{w}]))"
        ),
        record(decisions, f"sum by ({d_on}) (rate({n.PREDICTIONS.series}{q.app(c)}[{w}]))"),
        record(
            f"ml:segment_decisions:ratio_rate{w}",
            f"{decisions}\n/ on ({s_on}) group_left ()\n(sum by ({s_on}) ({decisions}) > 0)",
        ),
        record(
            buckets,
            f"sum by ({q.labels(c, *q.MODEL, n.LABEL_LE)}) (rate({duration.bucket_series}{q.app(c)}[{w}]))",
        ),
    ]
    rules += [
        record(
            f"ml:{q.short(duration.prometheus)}:quantile_rate{w}",
            f"histogram_quantile({q.num(quantile)}, {buckets})",
            quantile=q.num(quantile),
        )
        for quantile in LATENCY_QUANTILES
    ]
    return rules


def latency_slo_rules(c: MixinConfig) -> list[Rule]:
    """Share of calls slower than the SLO threshold, and burn rates, for every alert window."""
    if c.latency_slo_threshold_seconds not in n.DURATION_BUCKETS:
        raise ValueError(
            f"latency_slo_threshold_seconds={c.latency_slo_threshold_seconds} is not a bucket bound of "
            f"{n.PREDICTION_DURATION.prometheus} ({n.DURATION_BUCKETS}); the SLI needs an exact bucket"
        )
    if not 0 < c.latency_slo_target < 1:
        raise ValueError(f"latency_slo_target must be between 0 and 1, got {c.latency_slo_target}")
    m_on = q.labels(c, *q.MODEL)
    duration = n.PREDICTION_DURATION
    fast = q.app(c, f'{n.LABEL_LE}="{q.le_value(c.latency_slo_threshold_seconds)}"')
    budget = q.num(1 - c.latency_slo_target)
    rules: list[Rule] = []
    for w in _sorted_windows(*c.latency_page_windows, *c.latency_ticket_windows):
        slow_share = f"ml:prediction_latency_slo_errors:ratio_rate{w}"
        rules.append(
            record(
                slow_share,
                f"""
1 - (
  sum by ({m_on}) (rate({duration.bucket_series}{fast}[{w}]))
  / (sum by ({m_on}) (rate({duration.count_series}{q.app(c)}[{w}])) > 0)
)
""",
            )
        )
        rules.append(record(latency_burn_rate_record(w), f"{slow_share} / {budget}"))
    return rules


def _numeric_psi_rules(
    c: MixinConfig, w: str, family: n.Instrument, reference: str, keys: tuple[str, ...], psi: str, **psi_labels: str
) -> list[Rule]:
    """Per-bin counts from cumulative buckets, their shares and PSI against the reference gauge.

    The reference gauge labels each bin with ``ml_bin_upper`` (spelt like the bucket's ``le``)
    and ``ml_bin_lower``, which maps each bin to the bucket below it:
    bin count = bucket(le = upper) - bucket(le = lower); the first bin (lower "-Inf") is its bucket.
    Bins are recorded with ``ml_bin_upper``/``ml_bin_lower``, like the reference, not ``le``.
    """
    le, upper, lower = n.LABEL_LE, n.LABEL_BIN_UPPER, n.LABEL_BIN_LOWER
    k, k_le, k_upper = q.labels(c, *keys), q.labels(c, *keys, le), q.labels(c, *keys, upper)
    k_lower, k_bin = q.labels(c, *keys, lower), q.labels(c, *keys, upper, lower)
    short = q.short(family.prometheus)
    bucket = f"ml:{q.short(family.bucket_series)}:increase{w}"
    bins, share = f"ml:{short}_bin:increase{w}", f"ml:{short}_bin:share{w}"
    ref, first = reference + q.sidecar(c, f'{upper}!=""'), reference + q.sidecar(c, f'{lower}="-Inf"')
    ref_share = f"clamp_min(max by ({k_upper}) ({ref}), {q.PSI_EPSILON})"
    own_share = f"clamp_min({share}, {q.PSI_EPSILON})"

    def bucket_as(label: str) -> str:
        """The recorded buckets with their le moved into ``label``."""
        return f'label_replace(label_replace({bucket}, "{label}", "$1", "{le}", "(.+)"), "{le}", "", "{le}", ".*")'

    return [
        record(bucket, f"sum by ({k_le}) (increase({family.bucket_series}{q.app(c)}[{w}]))"),
        record(
            bins,
            f"""
(
  {bucket_as(upper)}
  + on ({k_upper}) group_left ({lower})
  (0 * max by ({k_bin}) ({ref}))
)
- on ({k_lower}) group_left ()
(
  {bucket_as(lower)}
  or
  0 * max by ({k_lower}) ({first})
)
""",
        ),
        record(share, f"{bins}\n/ on ({k}) group_left ()\n(sum by ({k}) ({bins}) > 0)"),
        record(
            psi,
            f"""
sum by ({k}) (
    ({own_share} - on ({k_upper}) group_left () {ref_share})
  * ln({own_share} / on ({k_upper}) group_left () {ref_share})
)
""",
            **psi_labels,
        ),
    ]


def _categorical_psi_rules(c: MixinConfig, w: str) -> list[Rule]:
    """Category shares (vocabulary, __other__, __unknown__) and PSI; absent categories count as 0.

    The app only exports categories it saw, and a reference may lack __unknown__ (the sidecar
    exports it as 0, but do not rely on it), so each side is completed with zeros from the
    other before the 1e-4 floor, as the sidecar's numpy PSI does.
    """
    keys = q.FEATURE
    k, k_cat = q.labels(c, *keys), q.labels(c, *keys, n.LABEL_CATEGORY)
    counts, share = f"ml:feature_category:increase{w}", f"ml:feature_category:share{w}"
    ref_sel = q.sidecar(c, f'{n.LABEL_CATEGORY}!=""')
    ref = f"max by ({k_cat}) ({n.FEATURE_REFERENCE_RATIO.series}{ref_sel})"
    ref_share = f"clamp_min({ref} or on ({k_cat}) (0 * {share}), {q.PSI_EPSILON})"
    own_share = f"clamp_min({share}, {q.PSI_EPSILON})"
    seen = f"(sum by ({k}) ({counts}) > 0)"
    return [
        record(counts, f"sum by ({k_cat}) (increase({n.FEATURE_CATEGORY.series}{q.app(c)}[{w}]))"),
        record(
            share,
            f"""
{counts} / on ({k}) group_left () {seen}
or on ({k_cat})
(0 * {ref} and on ({k}) {seen})
""",
        ),
        record(
            f"ml:feature_psi:{w}",
            f"""
sum by ({k}) (
    ({own_share} - on ({k_cat}) group_left () {ref_share})
  * ln({own_share} / on ({k_cat}) group_left () {ref_share})
)
""",
            ml_feature_kind="categorical",
        ),
    ]


def fleet_psi_rules(c: MixinConfig) -> list[Rule]:
    """Fleet-wide PSI of every feature and of the score, per model version and window."""
    rules: list[Rule] = []
    for w in _sorted_windows(*c.fleet_psi_windows):
        rules += _numeric_psi_rules(
            c,
            w,
            n.FEATURE_VALUE,
            n.FEATURE_REFERENCE_RATIO.series,
            q.FEATURE,
            f"ml:feature_psi:{w}",
            ml_feature_kind="numeric",
        )
        rules += _categorical_psi_rules(c, w)
        rules += _numeric_psi_rules(
            c, w, n.PREDICTION_SCORE, n.SCORE_REFERENCE_RATIO.series, q.MODEL, f"ml:score_psi:{w}"
        )
    return rules


def recording_groups(config: MixinConfig) -> list[dict[str, Any]]:
    """The recording rule groups, in evaluation order."""
    return [
        {"name": "otel-ml.serving.rules", "rules": serving_rules(config)},
        {"name": "otel-ml.latency-slo.rules", "rules": latency_slo_rules(config)},
        {"name": "otel-ml.fleet-psi.rules", "rules": fleet_psi_rules(config)},
        {"name": "otel-ml.evaluation.rules", "rules": evaluation_rules(config)},
        {"name": "otel-ml.versions.rules", "rules": version_rules(config)},
        {"name": "otel-ml.cost.rules", "rules": cost_rules(config)},
        {"name": "otel-ml.review.rules", "rules": review_rules(config)},
        {"name": "otel-ml.skew.rules", "rules": skew_rules(config)},
    ]
