"""The single-model view: from "is it healthy" down to which feature, score bin or segment moved.

Rows follow the order an investigation takes: serving health first (a drift alert during an
outage is usually the outage), then feature drift sorted by PSI, the score distribution, segment
decision rates, input coverage, label-based performance once labels arrive, and the comparison
of a shadow or canary version with the version it would replace (``_versions``), then what a
prediction costs and what human reviewers find (``_cost_review``), and what the last training/serving
skew replay found (``_skew_panels``). One function per
row; a row's panel ids are its own id plus 1, 2, ... and stay stable across regenerations.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import units

from .. import _names as n
from . import _panels as p
from ._cost_review import cost_panels, review_panels
from ._promql import MV, RATE_INTERVAL, SEGMENT_LABELS, Exprs, M, V, matchers
from ._skew_panels import skew_panels
from ._versions import version_panels
from .config import MixinConfig

__all__ = ["model_panels"]

F = n.LABEL_FEATURE
K = n.LABEL_SEGMENT_KEY
S = n.LABEL_SEGMENT
D = n.LABEL_DECISION

BY_FEATURE = f"{MV}, {F}"
BY_SEGMENT = f"{MV}, {SEGMENT_LABELS}"
BY_DECISION = f"{BY_SEGMENT}, {D}"
PSI_STEPS: tuple[p.Step, ...] = ((None, "green"), (0.1, "yellow"), (0.25, "red"))

Items = list[db.Row | p.PanelBuilder]


VERSION = p.legend(V)
FEATURE = p.legend(F, V)
SEGMENT = f"{p.legend(K)}={p.legend(S, V)}"
SEGMENT_DECISION = f"{SEGMENT} {p.legend(D)}"


def model_panels(config: MixinConfig, e: Exprs) -> Items:
    """Rows and panels of the model dashboard, in layout order."""
    return [
        *_overview(config, e),
        *_serving(config, e),
        *_feature_drift(e),
        *_score(e),
        *_segments(config, e),
        *_coverage(config, e),
        *_performance(config, e),
        *version_panels(config, e),
        *cost_panels(config, e),
        *review_panels(config, e),
        *skew_panels(config, e),
    ]


def _rate_by_label(e: Exprs, pid: int, title: str, description: str, inst: n.Instrument, label: str) -> p.PanelBuilder:
    """Per-second rate of a counter by one label; 0, not "no data", before its first increment."""
    query = p.Query(e.rate_or_zero(inst.series, f"{MV}, {label}"), p.legend(label, V))
    return p.timeseries_panel(pid, title, description, [query], unit=units.OpsPerSecond, min_val=0)


def _overview(config: MixinConfig, e: Exprs) -> Items:
    """Verdicts and data age per version, the first thing to read."""
    return [
        p.row(100, "Overview"),
        p.verdict_stat(
            101,
            "Feature drift ($window)",
            "Worst feature drift verdict per version.",
            [p.Query(e.gauge(n.FEATURE_DRIFT_STATUS), VERSION)],
            span=6,
        ),
        p.stat_panel(
            102,
            "Features drifting ($window)",
            "Features whose verdict is drift, per version.",
            [p.Query(e.drifting_features(), VERSION)],
            threshold_steps=p.red_above(1),
            span=6,
        ),
        p.verdict_stat(
            103,
            "Score drift ($window)",
            "Drift verdict of the score distribution per version.",
            [p.Query(e.gauge(n.SCORE_DRIFT_STATUS), VERSION)],
            span=6,
        ),
        p.stat_panel(
            104,
            "Seconds since last ingest",
            f"Age of the sidecar's newest data per version; above {config.ingest_stale_seconds}s "
            "the drift numbers on this page are stale.",
            [p.Query(e.seconds_since_ingest(), VERSION)],
            unit=units.Seconds,
            threshold_steps=p.yellow_then_red(float(config.ingest_stale_seconds)),
            span=6,
        ),
    ]


def _serving(config: MixinConfig, e: Exprs) -> Items:
    """Traffic, errors, latency and fallbacks, still in the overview row."""
    return [
        p.timeseries_panel(
            105,
            "Predictions and calls / s",
            "Predictions per second (rows scored) and calls of the inference function (a batch call scores many rows).",
            [p.Query(e.predictions(), f"{VERSION} predictions"), p.Query(e.calls(), f"{VERSION} calls")],
            unit=units.RequestsPerSecond,
            min_val=0,
            span=8,
        ),
        p.error_ratio_panel(
            106, p.Query(e.ratio_of_calls(n.PREDICTION_ERRORS.series), VERSION), config.error_ratio_threshold, span=8
        ),
        p.timeseries_panel(
            107,
            "Latency p50 / p90 / p99",
            "Wall time of one inference call, from the histogram.",
            [p.Query(e.latency_quantile(q), f"p{round(q * 100)} {VERSION}") for q in (0.5, 0.9, 0.99)],
            unit=units.Seconds,
            min_val=0,
            span=8,
            threshold_steps=p.red_above(config.latency_slo_threshold_seconds),
        ),
        _rate_by_label(
            e,
            108,
            "Errors / s by type",
            "Calls that raised, by exception type.",
            n.PREDICTION_ERRORS,
            n.LABEL_ERROR_TYPE,
        ),
        _rate_by_label(
            e,
            109,
            "Fallbacks / s by reason",
            "Calls answered by a fallback instead of the model.",
            n.PREDICTION_FALLBACKS,
            n.LABEL_FALLBACK_REASON,
        ),
    ]


def _feature_drift(e: Exprs) -> Items:
    """Every feature's PSI, its critical value and verdict, largest PSI first."""
    columns = {
        "PSI": e.gauge(n.FEATURE_PSI, BY_FEATURE),
        "PSI critical": e.gauge(n.FEATURE_PSI_CRITICAL, BY_FEATURE),
        "JS distance": e.gauge(n.FEATURE_JS_DISTANCE, BY_FEATURE),
        "p-value": e.gauge(n.FEATURE_DRIFT_PVALUE, BY_FEATURE, agg="min"),
        "Status": e.gauge(n.FEATURE_DRIFT_STATUS, BY_FEATURE),
        "Observations": e.gauge(n.FEATURE_WINDOW_COUNT, BY_FEATURE),
    }
    return [
        p.row(200, "Feature drift"),
        p.table_panel(
            201,
            "Features by PSI ($window)",
            "Every feature's drift against the baseline in the selected window, largest PSI first. "
            "PSI above its critical value is more than sampling noise; the verdict also needs the "
            "p-value and enough observations (insufficient data means too few to judge).",
            [p.Query(expr) for expr in columns.values()],
            labels={M: "Model", V: "Version", F: "Feature"},
            hidden=(M,),
            columns={p.ref_id(i): title for i, title in enumerate(columns)},
            sort_by="PSI",
            overrides={
                "PSI": [p.decimals(3), *p.colored_cell(PSI_STEPS)],
                "PSI critical": [p.decimals(3)],
                "JS distance": [p.decimals(3)],
                "p-value": [p.unit(units.ScientificNotation), p.decimals(2)],
                "Status": p.status_cell(),
                "Observations": [p.unit(units.Short)],
            },
            height=10,
        ),
        p.timeseries_panel(
            202,
            "PSI per feature ($window)",
            "Population stability index against the baseline.",
            [p.Query(e.gauge(n.FEATURE_PSI, BY_FEATURE), FEATURE)],
            min_val=0,
            threshold_steps=PSI_STEPS,
        ),
        p.timeseries_panel(
            203,
            "PSI / critical value ($window)",
            "PSI in units of the sample-size-aware critical value: above 1 the shift is "
            "larger than a drift-free sample of this size would show.",
            [p.Query(e.psi_over_critical(BY_FEATURE), FEATURE)],
            min_val=0,
            threshold_steps=p.red_above(1),
        ),
    ]


def _score(e: Exprs) -> Items:
    """The score histogram and its PSI."""
    return [
        p.row(300, "Score"),
        p.heatmap_panel(
            301,
            "Score distribution",
            "Predictions per score bin (baseline bin edges) per interval, all selected versions.",
            p.Query(e.score_heatmap(), "{{le}}"),
        ),
        p.timeseries_panel(
            302,
            "Score PSI ($window)",
            "PSI of the score distribution against the baseline, with its critical value.",
            [
                p.Query(e.gauge(n.SCORE_PSI), f"PSI {VERSION}"),
                p.Query(e.gauge(n.SCORE_PSI_CRITICAL), f"critical {VERSION}"),
            ],
            min_val=0,
        ),
    ]


def _segments(config: MixinConfig, e: Exprs) -> Items:
    """Segment decision rates: the verdict the page reads, the rates, their changes and counts."""
    seg = e.segment_matcher
    return [
        p.row(400, "Segments"),
        p.verdict_timeline(
            406,
            "Decision-rate verdict by segment ($window)",
            "The sidecar's test per segment (worst decision and reference), what "
            "MLSegmentDecisionRateChange reads: changed = significant after correcting for the model's many "
            "segments and decisions, and a large enough change; insufficient data = too few predictions in "
            "this or the previous window, so the segment cannot page.",
            [p.Query(e.gauge(n.SEGMENT_DECISION_RATE_STATUS, BY_SEGMENT, seg), SEGMENT)],
            mappings=p.drift_status_mappings("changed"),
            span=24,
        ),
        p.share_panel(
            401,
            "Decision rate by segment ($window)",
            "Share of each segment's predictions per decision in the window (sidecar).",
            [p.Query(e.gauge(n.SEGMENT_DECISION_RATE, BY_DECISION, seg), SEGMENT_DECISION)],
        ),
        p.share_panel(
            402,
            "Live decision rate by segment",
            "The same share computed from the app's counters over the rate interval: reacts "
            "within minutes, but is noisier than the window.",
            [p.Query(e.decision_rate(BY_SEGMENT, seg), SEGMENT_DECISION)],
        ),
        *_decision_rate_changes(config, e),
        p.timeseries_panel(
            405,
            "Predictions per segment ($window)",
            "Predictions of each segment in the window; below the sidecar's minimum count (decisions: "
            "min_count, in this window or the previous one) its verdict is insufficient data.",
            [p.Query(e.gauge(n.SEGMENT_WINDOW_COUNT, BY_SEGMENT, seg), SEGMENT)],
            min_val=0,
            span=24,
        ),
    ]


def _decision_rate_changes(config: MixinConfig, e: Exprs) -> Items:
    """The relative change of each decision rate against the previous window and the baseline."""

    def change(pid: int, title: str, description: str, reference: str) -> p.PanelBuilder:
        against = f'{n.LABEL_REFERENCE}="{reference}"'
        query = e.gauge(n.SEGMENT_DECISION_RATE_CHANGE, BY_DECISION, e.segment_matcher, against)
        return p.timeseries_panel(
            pid,
            title,
            description,
            [p.Query(query, SEGMENT_DECISION)],
            unit=units.PercentUnit,
            threshold_steps=p.outside(config.decision_rate_min_relative_change),
        )

    return [
        change(
            403,
            "Decision-rate change vs previous window ($window)",
            "(now - previous window) / previous window per segment and decision; small segments swing "
            "widely by chance, which is why the alert reads the verdict, not this ratio.",
            n.REFERENCE_PREVIOUS,
        ),
        change(
            404,
            "Decision-rate change vs baseline ($window)",
            "(now - baseline) / baseline per segment and decision; the baseline rates come from the training data.",
            n.REFERENCE_BASELINE,
        ),
    ]


def _coverage(config: MixinConfig, e: Exprs) -> Items:
    """Missing and unknown values, cardinality overflow and otel-ml's own failures."""
    return [
        p.row(500, "Coverage"),
        p.share_panel(
            501,
            "Missing ratio per feature ($window)",
            "Share of observations that were absent, None or NaN.",
            [p.Query(e.gauge(n.FEATURE_MISSING_RATIO, BY_FEATURE), FEATURE)],
        ),
        p.share_panel(
            502,
            "Unknown-category ratio per feature ($window)",
            "Share of a categorical feature's values never seen in training.",
            [p.Query(e.gauge(n.FEATURE_UNKNOWN_RATIO, BY_FEATURE), FEATURE)],
            threshold_steps=p.red_above(config.unknown_ratio_threshold),
        ),
        _rate_by_label(
            e,
            503,
            "Cardinality overflow / s",
            "Observations folded into __other__ by the cardinality budget, by attribute.",
            n.CARDINALITY_OVERFLOW,
            n.LABEL_ATTRIBUTE,
        ),
        _rate_by_label(
            e,
            504,
            "Instrumentation errors / s",
            "Failures inside otel-ml (the prediction was passed through unchanged), by type.",
            n.INSTRUMENTATION_ERRORS,
            n.LABEL_ERROR_TYPE,
        ),
    ]


def _performance(config: MixinConfig, e: Exprs) -> Items:
    """Realised and estimated performance, calibration, and the labels they rest on."""
    seg = e.segment_matcher
    served = f'{n.LABEL_THRESHOLD}="{n.THRESHOLD_SERVED}"'
    overall = f'{K}="{n.ALL}"'
    auc = f'{n.LABEL_METRIC}="roc_auc"'
    return [
        p.row(600, "Model performance"),
        p.timeseries_panel(
            601,
            "Realised vs estimated AUC ($window)",
            "ROC AUC on labelled predictions (realised, from labels that arrived in the window) and estimated "
            "from scores alone (CBPE, the baseline's per-bin positive rates), with the reference band: the "
            "baseline's AUC +- 3 standard deviations of a window this size. Estimated below the band "
            "pages MLEstimatedPerformanceDrop; realised below its band MLOnlinePerformanceDrop.",
            [
                p.Query(e.gauge(n.ONLINE_ROC_AUC, MV, overall), f"realised {VERSION}"),
                p.Query(e.gauge(n.ESTIMATED_ROC_AUC), f"estimated {VERSION}"),
                p.Query(e.gauge(n.REFERENCE_BAND_LOWER, MV, auc), f"band lower {VERSION}"),
                p.Query(e.gauge(n.REFERENCE_BAND_UPPER, MV, auc), f"band upper {VERSION}"),
            ],
            max_val=1,
        ),
        p.share_panel(
            602,
            "Precision and recall at the served rule ($window)",
            "Realised per segment from the exact decision counts (ml_threshold=served), and estimated (CBPE) "
            "overall. With selective labels (only approved cases get an outcome) recall is not observable: "
            "read it together with the coverage by decision below.",
            [
                *(
                    p.Query(e.gauge(inst, BY_SEGMENT, seg, served), f"{name} {SEGMENT}")
                    for name, inst in (("precision", n.ONLINE_PRECISION), ("recall", n.ONLINE_RECALL))
                ),
                p.Query(e.gauge(n.ESTIMATED_PRECISION), f"estimated precision {VERSION}"),
                p.Query(e.gauge(n.ESTIMATED_RECALL), f"estimated recall {VERSION}"),
            ],
        ),
        *_calibration(config, e),
        *_labels(config, e),
    ]


def _calibration(config: MixinConfig, e: Exprs) -> Items:
    """Calibration and losses per segment, the labels they rest on, and the CBPE gap."""
    seg = e.segment_matcher
    return [
        p.timeseries_panel(
            603,
            "Calibration: ECE, Brier, log loss ($window)",
            "Expected calibration error (sum over score bins of |scores - positives| / labels), Brier score "
            "and log loss of the score against the label, per segment: lower is better.",
            [
                p.Query(e.gauge(inst, BY_SEGMENT, seg), f"{name} {SEGMENT}")
                for name, inst in (
                    ("ECE", n.ONLINE_CALIBRATION_ERROR),
                    ("Brier", n.ONLINE_BRIER),
                    ("log loss", n.ONLINE_LOG_LOSS),
                )
            ],
            min_val=0,
            span=8,
        ),
        p.timeseries_panel(
            604,
            "Labelled predictions ($window)",
            f"Predictions whose label arrived in the window; below {config.performance_min_labels} "
            "a realised performance drop does not page.",
            [p.Query(e.gauge(n.ONLINE_LABEL_COUNT, BY_SEGMENT, seg), SEGMENT)],
            min_val=0,
            span=8,
            threshold_steps=p.red_below(config.performance_min_labels),
        ),
        p.timeseries_panel(
            605,
            "Estimated minus realised ($window)",
            "CBPE estimate minus the realised metric in the same window. CBPE is blind to concept drift "
            "(P(label | score) changing): a gap that grows means the calibration no longer holds.",
            [p.Query(e.gauge(n.ESTIMATED_VS_REALISED_GAP, f"{MV}, {n.LABEL_METRIC}"), p.legend(n.LABEL_METRIC, V))],
            span=8,
        ),
    ]


def _labels(config: MixinConfig, e: Exprs) -> Items:
    """The outcome pipeline's coverage: by cohort age, and by decision (selective labels)."""
    return [
        p.share_panel(
            606,
            "Label coverage by cohort age",
            "Share of the predictions of the last whole UTC day that ended 1, 7 and 30 days ago that have "
            f"their label: a vintage curve. MLLabelCoverageCollapsed reads the {config.label_coverage_cohort} cohort.",
            [
                p.Query(
                    e.gauge(n.LABEL_COVERAGE, f"{MV}, {n.LABEL_COHORT_AGE}", f'{D}="{n.ALL}"', window=False),
                    p.legend(n.LABEL_COHORT_AGE, V),
                )
            ],
        ),
        p.share_panel(
            607,
            f"Label coverage by decision ({config.label_coverage_cohort} cohort)",
            "Coverage per decision: when only one decision gets outcomes (approved loans), metrics that need "
            "the other (recall) are not observable.",
            [
                p.Query(
                    e.gauge(
                        n.LABEL_COVERAGE,
                        f"{MV}, {D}",
                        f'{n.LABEL_COHORT_AGE}="{config.label_coverage_cohort}"',
                        window=False,
                    ),
                    p.legend(D, V),
                )
            ],
        ),
        *_label_flow(config, e),
    ]


def _label_flow(config: MixinConfig, e: Exprs) -> Items:
    """Label delay, labels received / unmatched / evicted, and the join store."""
    sidecar = matchers(config.sidecar_selector)
    delay = n.LABEL_DELAY
    w = config.label_delay_window
    delay_buckets = f"sum by ({MV}, {n.LABEL_LE}) (increase({delay.bucket_series}{e.side(window=False)}[{w}]))"

    def rate_by(inst: n.Instrument, label: str) -> str:
        return f"sum by ({label}) (rate({inst.series}{sidecar}[{RATE_INTERVAL}]))"

    return [
        p.timeseries_panel(
            608,
            f"Label delay p50 / p90 / p99 (labels of the last {w})",
            "Time from prediction to label, from the delay histogram (1m to 30d buckets): realised metrics "
            "describe predictions this old.",
            [
                p.Query(f"histogram_quantile({quantile}, {delay_buckets})", f"p{round(quantile * 100)} {VERSION}")
                for quantile in (0.5, 0.9, 0.99)
            ],
            unit=units.Seconds,
            min_val=0,
            threshold_steps=p.red_above(config.label_delay_budget_seconds) if config.label_delay_budget_seconds else (),
        ),
        p.timeseries_panel(
            609,
            "Labels / s: received, unmatched, evicted",
            "Labels the sidecars accepted (by source) and could not join (by reason), and stored predictions "
            "evicted (ttl: expired; cap: the store is full and samples request ids).",
            [
                p.Query(rate_by(n.LABELS_RECEIVED, n.LABEL_SOURCE), f"received {p.legend(n.LABEL_SOURCE)}"),
                p.Query(rate_by(n.LABELS_UNMATCHED, n.LABEL_REASON), f"unmatched {p.legend(n.LABEL_REASON)}"),
                p.Query(rate_by(n.JOIN_STORE_EVICTED, n.LABEL_REASON), f"evicted {p.legend(n.LABEL_REASON)}"),
            ],
            unit=units.OpsPerSecond,
            min_val=0,
        ),
        p.timeseries_panel(
            610,
            "Join store rows and sample ratio",
            "Predictions waiting for a label per sidecar, and the share of request ids the store keeps "
            "(1 = all; 2^-k above the byte cap: labelled counts are then a sample).",
            [
                p.Query(f"sum by (instance) ({n.JOIN_STORE_ROWS.series}{sidecar})", "rows {{instance}}"),
                p.Query(f"min by (instance) ({n.JOIN_SAMPLE_RATIO.series}{sidecar})", "sample ratio {{instance}}"),
            ],
            min_val=0,
        ),
    ]
