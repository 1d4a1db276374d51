"""One configuration object for the operations kit: selectors, thresholds, windows, uids.

Like the kubernetes-mixin ``_config``, every alert, recording rule and dashboard is a pure
function of a :class:`MixinConfig`, so a team adapts selectors, thresholds or ``for:``
durations by building another config instead of editing generated YAML and JSON. The shipped
files under ``alert_rules/`` and ``dashboards/`` are generated from ``MixinConfig()``; the
end-to-end test generates the same rules with short durations.
"""

from __future__ import annotations

import dataclasses
import hashlib
import types
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = ["MixinConfig", "DEFAULT_CONFIG", "dashboard_uid", "load_config"]


def dashboard_uid(filename: str) -> str:
    """A stable dashboard uid derived from its file name, so /d/<uid> links survive regeneration."""
    return "otelml-" + hashlib.md5(filename.encode(), usedforsecurity=False).hexdigest()[:12]


@dataclass(frozen=True)
class MixinConfig:
    """Everything the generated rules and dashboards depend on. All fields have documented defaults."""

    # -- selectors ----------------------------------------------------------------------------
    # Extra label matchers for series scraped from instrumented apps and from the sidecar
    # (e.g. 'namespace="fraud"'); empty means "every job".
    app_selector: str = ""
    sidecar_selector: str = 'job="otel-ml-sidecar"'
    # -- who gets paged ------------------------------------------------------------------------
    team: str = "ml-platform"
    severity_page: str = "critical"
    severity_ticket: str = "warning"
    runbook_url_pattern: str = "https://github.com/otel-ml/otel-ml/blob/main/runbooks/{alertname}.md"
    # -- windows ---------------------------------------------------------------------------------
    # The sidecar window the drift and segment alerts read (an ml_window label value).
    alert_window: str = "1h"
    sidecar_windows: tuple[str, ...] = ("1h", "24h", "7d")
    # -- drift ------------------------------------------------------------------------------------
    drift_for: str = "30m"  # drift_status must stay at 2 this long before paging
    score_drift_for: str = "30m"
    # -- segment decision rates ------------------------------------------------------------------
    # The sidecar's verdict ml_segment_decision_rate_status decides: a two-proportion (exact for
    # small counts) test per segment, decision and reference, Holm-adjusted across the model's
    # segments x decisions, with minimum counts in both windows (else -1) and a minimum effect
    # (the sidecar's ``decisions:`` config: alpha, min_relative_change, min_absolute_change,
    # min_count, multiplicity). The two fields below only raise the bar without reconfiguring the
    # sidecar: a "changed" verdict then pages only if this window's change is also this large.
    # Off (0) by default, because the sidecar's baseline verdict may rest on three pooled windows
    # (a real 20 % drop at 1,000 predictions a window), which one window's noisy change can hide.
    decision_rate_min_relative_change: float = 0.0  # |ml_segment_decision_rate_change|, e.g. 0.3
    decision_rate_min_absolute_change: float = 0.0  # |now - reference| as a share, e.g. 0.05 = 5 points
    decision_rate_for: str = "30m"  # the verdict must stay "changed" this long before paging
    # -- coverage -----------------------------------------------------------------------------------
    missing_ratio_increase_threshold: float = 0.10  # absolute increase over the baseline's missing share
    missing_min_count: int = 200
    missing_for: str = "15m"
    unknown_ratio_threshold: float = 0.05  # share of a categorical feature's values never seen in training
    unknown_min_count: int = 200
    unknown_for: str = "15m"
    # -- latency SLO (multi-window multi-burn-rate, Google SRE workbook ch. 5) ---------------------
    latency_slo_threshold_seconds: float = 0.25  # must be one of otel_ml._names.DURATION_BUCKETS
    latency_slo_target: float = 0.99  # share of calls faster than the threshold
    latency_page_burn_rate: float = 14.4  # 2% of a 30-day budget in 1h
    latency_ticket_burn_rate: float = 6.0  # 5% of the budget in 6h
    latency_page_windows: tuple[str, str] = ("1h", "5m")
    latency_ticket_windows: tuple[str, str] = ("6h", "30m")
    latency_page_for: str = "2m"
    latency_ticket_for: str = "15m"
    # -- errors -------------------------------------------------------------------------------------
    error_ratio_threshold: float = 0.05
    error_rate_window: str = "5m"
    error_for: str = "10m"
    instrumentation_error_window: str = "10m"
    instrumentation_error_for: str = "15m"
    # -- label-based performance (realised, from the sidecar's join-time counters) -------------------
    # The served rule's positive decision and the label value that means "positive" (the sidecar's
    # outputs: positive_decision / positive_outcome).
    positive_decision: str = "true"
    positive_outcome: str = "true"
    # Windows of the realised and estimated (CBPE) performance recording rules (ml:online_*:<w>,
    # ml:estimated_*:<w>); the windows the alerts read are always added.
    evaluation_windows: tuple[str, ...] = ("1h", "24h", "7d")
    # MLOnlinePerformanceDrop: a metric (ml_metric of the baseline's reference performance) below
    # reference - 3 stddev sqrt(chunk / labels) over performance_short_window, with enough labels and
    # enough label coverage (labels are often selective: then realised recall means little).
    performance_metrics: tuple[str, ...] = ("roc_auc", "recall", "precision")
    performance_short_window: str = "24h"  # the window the alert reads (join time: when labels arrived)
    performance_long_window: str = "7d"  # unused since the reference band (issue 13); kept so configs load
    performance_min_labels: int = 100
    performance_min_coverage: float = 0.5  # ml_label_coverage_ratio of the cohort below, all decisions
    performance_coverage_cohort: str = "7d"  # an ml_cohort_age value (1d, 7d, 30d)
    performance_for: str = "1h"
    # -- estimated performance (CBPE, before labels arrive) ------------------------------------------
    estimated_performance_metrics: tuple[str, ...] = ("roc_auc", "recall", "precision")
    estimated_performance_window: str = "1h"
    estimated_performance_min_predictions: int = 1000  # window predictions before an estimate may page
    estimated_performance_for: str = "1h"
    # -- the outcome pipeline: label coverage, label delay, join store --------------------------------
    label_coverage_cohort: str = "7d"  # cohort age the coverage alert reads (predictions 7-8 days old)
    label_coverage_drop_ratio: float = 0.5  # alert below this share of the same cohort's coverage a week ago
    label_coverage_floor: float = 0.0  # and/or below this absolute coverage (0 = off)
    label_coverage_min_predictions: int = 500  # predictions in the cohort before coverage may page
    label_coverage_z: float = 3.09  # one-sided two-proportion z the fall must exceed (alpha 0.1 %)
    label_coverage_for: str = "2h"
    label_delay_window: str = "1d"  # labels whose delay quantile the alert reads
    label_delay_quantile: float = 0.9
    label_delay_budget_seconds: float = 1209600.0  # 14 days; 0 = off (only growth pages)
    label_delay_growth_ratio: float = 2.0  # the quantile doubling against a week before; 0 = off
    label_delay_min_labels: int = 200  # labels in the window (and a week before, for growth)
    label_delay_for: str = "2h"
    join_store_eviction_window: str = "1h"
    join_store_eviction_for: str = "5m"
    # -- two versions side by side: shadow and canary (ml:version_check:<w>, ml:version_verdict:<w>) ----
    # Every check is three-way: 1 = confidently inside its budget, -1 = confidently outside it,
    # 0 = inconclusive. -1 needs the LOWER confidence bound of the harm above the budget (the
    # data prove harm: a noisy small window cannot roll back a good version) and 1 needs the
    # UPPER bound below it (the data prove safety: a quiet window cannot promote a bad one).
    # Between the two the check is 0, which Argo Rollouts and Flagger treat as inconclusive and
    # which is never a pass; so are missing data and windows below the minimum counts (0, never
    # NaN: every comparison uses ``bool``). Example at the defaults: 100 flips in 5,000 pairs
    # (summed over two pods) has Wilson upper bound 2.8 % < 5 %: 1; 591 / 5,000 has lower bound
    # 10.4 % > 5 %: -1; 3 / 50 is below version_min_pairs: 0. (The flip check itself is the score
    # test at the budget that a Wilson bound is, corrected for the binomial's skew, so that a share
    # exactly at the budget gets -1, or 1, at most (1 - confidence) / version_max_checks of the time.)
    version_windows: tuple[str, ...] = ("1h", "24h")
    # Family-wise confidence per (model, candidate, reference, window): one-sided bounds at
    # z = inv_cdf(1 - (1 - confidence) / version_max_checks) (Bonferroni over at most this many
    # judged checks; at the defaults z = 3.29). More judged checks than that loosen the guarantee.
    version_confidence: float = 0.99
    version_max_checks: int = 20
    version_flip_budget: float = 0.05  # share of pairs whose decision differs (shadow)
    version_min_pairs: int = 1000  # pairs / predictions / calls before an overall check is judged
    version_min_segment_pairs: int = 200  # below this a segment is not judged (no check at all)
    version_min_labelled_pairs: int = 200  # labelled pairs before the McNemar check is judged
    version_accuracy_margin: float = 0.01  # non-inferiority margin of accuracy (shadow - primary)
    version_decision_rate_budget: float = 0.05  # |candidate - reference| positive-decision share
    version_error_rate_budget: float = 0.01  # candidate - reference share of calls that raise
    version_latency_budget: float = 0.01  # candidate - reference share slower than the SLO threshold
    # Canary reference: per model the version with the most predictions over this window, among
    # versions that are not some version's shadow (a shadow scores the same requests).
    version_reference_window: str = "24h"
    version_psi_min_bins: int = 5  # score bins both versions' baselines share before a PSI is recorded
    version_alert_for: str = "30m"  # MLShadowDisagreement
    version_rollback_for: str = "10m"  # MLVersionRollback
    shadow_drop_ratio_threshold: float = 0.1  # MLShadowDropping: queue_full share of submitted requests
    shadow_drop_window: str = "15m"
    shadow_drop_min_requests: int = 100  # pairs + drops in the window before it may fire
    shadow_drop_for: str = "15m"
    # -- unit economics: cost per 1K predictions (ml:cost_per_1k_predictions:<w>) ----------------------
    # Windows of the cost recording rules; the budget alert's window is always added.
    cost_windows: tuple[str, ...] = ("1h", "24h")
    # OpenCost's exporter series (container_*_allocation, node_*_hourly_cost), e.g. 'job="opencost"';
    # empty = every job. The allocation rule joins them on(node) and splits each pod's cost by the
    # models' shares of its predictions (the app's series need namespace and pod from Kubernetes SD).
    opencost_selector: str = ""
    # MLCostOverBudget: USD per 1,000 predictions per ml_cost_basis, all sources of the basis summed;
    # a basis not listed never pages ({} = no budget alert at all). Bases are never summed together.
    cost_budget_usd_per_1k: dict[str, float] = field(
        default_factory=lambda: {"configured_rate": 1.0, "allocation": 1.0, "billed": 1.0}
    )
    cost_budget_window: str = "24h"
    cost_budget_min_predictions: int = 1000  # predictions in the window before cost per 1K may page
    cost_budget_for: str = "1h"
    # MLPricesStale: the price table's own "updated" date older than this (0 = off is not allowed).
    prices_max_age_seconds: float = 7776000.0  # 90 days
    prices_stale_for: str = "1h"
    # -- human review: the stratified error-rate estimate (ml:review_error_rate:<w>) -----------------------
    review_windows: tuple[str, ...] = ("24h", "7d")  # the alert's window is always added
    # MLReviewBacklogGrowing: the oldest pending review older than the SLA (0 = off) and/or the
    # pending count review_backlog_growth_ratio times what it was review_backlog_window ago (0 = off).
    review_pending_sla_seconds: float = 172800.0  # 2 days
    review_backlog_growth_ratio: float = 2.0
    review_backlog_window: str = "24h"
    review_backlog_min_pending: int = 100  # pending items before growth may page
    review_backlog_for: str = "1h"
    # MLReviewErrorRateOutOfBand: z-test of the weighted error rate against its band, per model,
    # version and review segment. The band is review_error_rate_band (lower, upper) when set, else the
    # baseline's error rate 1 - ml_reference_performance{ml_metric="accuracy"} +- review_error_rate_tolerance.
    review_error_rate_window: str = "24h"
    review_error_rate_band: tuple[float, float] | None = None
    review_error_rate_tolerance: float = 0.0  # absolute, around the baseline's error rate
    review_error_rate_z: float = 3.29  # two-sided, alpha 0.1 % per model and window (the __all__ estimate)
    # Segments' estimates are tested at alpha / review_error_rate_segments each (Bonferroni), so a
    # model with that many review segments still pages falsely at most alpha more often, not 20x.
    review_error_rate_segments: int = 20
    review_error_rate_min_reviews: int = 200  # labelled reviews in the window (all strata of the segment)
    review_error_rate_for: str = "1h"
    # -- training/serving skew: the last replay of each model version (``otel-ml skew replay --pushgateway``) --
    # The replay pushes its counts to a Pushgateway that Prometheus scrapes with honor_labels: true, so
    # the series keep this job (and the Pushgateway's instance=""); they describe the last replay of a
    # model version, not a running count, so rules read them as they are (no rate, no increase).
    skew_selector: str = 'job="otel_ml_skew"'
    # MLSkewDecisionFlipsOverBudget: the replayed decisions differ from the served ones in more than
    # this share of rows, by Anscombe's variance-stabilised one-sided test (flips ~ Poisson(rows x budget)
    # at the budget): z = 2 (sqrt(flips + 3/8) - sqrt(rows x budget + 3/8)) > skew_flip_z, with at least
    # skew_min_rows rows replayed (fewer rows cannot tell a few flips from the budget).
    skew_flip_budget: float = 0.01
    skew_flip_z: float = 3.09  # one-sided, alpha 0.1 % per model version and replay
    skew_min_rows: int = 500
    skew_flips_for: str = "5m"  # a replay's counts stay until the next push: this only rides out a scrape gap
    # MLSkewReplayStale: no finished replay of a model version for this long (a Prometheus duration):
    # the scheduled gate (CronJob, systemd timer) has stopped running or keeps failing.
    skew_replay_max_age: str = "2d"
    skew_stale_for: str = "1h"
    # -- the sidecar itself ------------------------------------------------------------------------------
    sidecar_down_for: str = "5m"
    ingest_stale_seconds: int = 600  # no data for a model version this long: not scraping / not receiving
    ingest_stale_for: str = "5m"
    ingest_error_for: str = "15m"
    # -- dashboards ----------------------------------------------------------------------------------------
    dashboard_tags: tuple[str, ...] = ("otel-ml", "ml")
    dashboard_refresh: str = "1m"
    dashboard_time_from: str = "now-6h"
    dashboard_uids: dict[str, str] = field(
        default_factory=lambda: {
            "otel-ml-fleet.json": dashboard_uid("otel-ml-fleet.json"),
            "otel-ml-model.json": dashboard_uid("otel-ml-model.json"),
        }
    )
    grafana_folder: str = "otel-ml"
    # Extra labels put on every alert (e.g. {"service": "fraud-api"}).
    extra_alert_labels: dict[str, str] = field(default_factory=dict)
    # -- alerting and recording rules -----------------------------------------------------------
    # Labels kept in every aggregation and join besides model/version/feature/segment, so
    # alerts stay apart per cluster or namespace (e.g. ("cluster",)); the sidecar's and the
    # app's job/instance labels are always aggregated away (they differ between the two).
    aggregation_labels: tuple[str, ...] = ()
    # Per-alert label overrides applied last, e.g. {"MLFeatureDrift": {"severity": "critical",
    # "team": "fraud-ds"}}; an override of severity applies to every rule of that alertname.
    alert_label_overrides: dict[str, dict[str, str]] = field(default_factory=dict)
    # Which ml_reference values of ml_segment_decision_rate_change may page.
    decision_rate_references: tuple[str, ...] = ("baseline", "previous_window")
    # Calls in the short window before a latency or error-ratio alert can page (low traffic).
    slo_min_calls: int = 100
    instrumentation_error_ratio_threshold: float = 0.001  # otel-ml failures per inference call
    ingest_error_ratio_threshold: float = 0.05  # rejected share of the sidecar's inputs
    ingest_error_window: str = "10m"
    # Window of the recorded rates, ratios and latency quantiles the dashboards read.
    recording_window: str = "5m"
    # Windows of the fleet-wide PSI recording rules (ml:feature_psi:<w>, ml:score_psi:<w>).
    fleet_psi_windows: tuple[str, ...] = ("1h",)
    # metadata of the PrometheusRule manifest (the labels must match the Prometheus ruleSelector).
    prometheus_rule_name: str = "otel-ml"
    prometheus_rule_labels: dict[str, str] = field(
        default_factory=lambda: {"app.kubernetes.io/name": "otel-ml", "role": "alert-rules"}
    )
    # -- restarts and starts ------------------------------------------------------------------------
    # Drift, coverage, segment and performance alerts keep firing this long after their
    # expression stops matching (Prometheus keep_firing_for, 2.42+). A sidecar restart leaves
    # their series stale for a scrape or two; without this a firing alert resolves, re-arms its
    # 30m ``for:`` and pages again. The cost: a real recovery resolves this much later. "0s" = off.
    keep_firing_for: str = "10m"
    # Ingest-error reasons that mean "the scrape target did not answer" (the app is not started
    # yet, or restarting): they page as MLSidecarScrapeTargetDown after scrape_down_for, never
    # as MLSidecarIngestErrors. Must match the reasons of otel_ml/sidecar/_scrape.py.
    scrape_unreachable_reasons: tuple[str, ...] = ("scrape_unreachable", "scrape_timeout")
    # "Down" = failed connections and no successful scrape within scrape_down_window, for
    # scrape_down_for: a slow start or a rollout stays silent. With several scrape targets, one
    # target down among answering ones shows as MLSidecarNotIngesting for its model instead.
    scrape_down_window: str = "5m"
    scrape_down_for: str = "10m"

    def with_overrides(self, **changes: Any) -> MixinConfig:
        """A copy with some fields changed (used by tests and by teams adapting the kit)."""
        return replace(self, **changes)

    def runbook_url(self, alertname: str) -> str:
        return self.runbook_url_pattern.format(alertname=alertname)


DEFAULT_CONFIG = MixinConfig()

# Fields that no longer exist, and what replaced them: an old overrides file fails naming the successor.
_REPLACED = {
    "performance_metric": "performance_metrics (ml_metric values: roc_auc, recall, precision, f1, accuracy)",
    "decision_rate_change_threshold": "decision_rate_min_relative_change (the sidecar's test decides)",
    "decision_rate_min_count": "the sidecar's decisions: min_count (it applies to both windows)",
}


def _coerce(where: str, hint: Any, value: Any) -> Any:
    """``value`` from YAML as the field's declared type, or a ValueError naming ``where``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is types.UnionType and type(None) in args:  # X | None
        if value is None:
            return None
        (hint,) = (a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint in (str, int) and isinstance(value, hint) and not isinstance(value, bool):
        return value
    if origin is tuple and isinstance(value, list):
        if args[-1] is not Ellipsis and len(value) != len(args):
            raise ValueError(f"{where}: expected a list of {len(args)} items, got {len(value)}")
        return tuple(_coerce(f"{where}[{i}]", args[0], v) for i, v in enumerate(value))
    if origin is dict and isinstance(value, dict):
        return {_coerce(f"{where} key", args[0], k): _coerce(f"{where}.{k}", args[1], v) for k, v in value.items()}
    expected = hint.__name__ if isinstance(hint, type) and not isinstance(hint, types.GenericAlias) else str(hint)
    raise ValueError(f"{where}: expected {expected}, got {type(value).__name__} {value!r}")


def load_config(path: str | Path, base: MixinConfig | None = None) -> MixinConfig:
    """``base`` (the defaults) with the fields a YAML file sets; unknown keys and wrong types fail.

    The file is a mapping of :class:`MixinConfig` field names to values, e.g.
    ``{team: fraud-ds, drift_for: 1h, extra_alert_labels: {service: fraud-api}}``.
    """
    import yaml

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of MixinConfig fields, got {type(data).__name__}")
    hints = typing.get_type_hints(MixinConfig)
    known = {f.name for f in dataclasses.fields(MixinConfig)}
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        named = [f"{k} (replaced by {_REPLACED[k]})" if k in _REPLACED else k for k in unknown]
        raise ValueError(f"{path}: unknown MixinConfig field(s): {', '.join(named)}")
    changes = {key: _coerce(f"{path}: {key}", hints[key], value) for key, value in data.items()}
    return (base or DEFAULT_CONFIG).with_overrides(**changes)
