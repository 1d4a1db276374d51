"""The single-model view: from "is it healthy" down to which feature, score bin or segment moved.

Rows follow the order an investigation takes: serving health first (a drift alert during an
outage is usually the outage), then feature drift sorted by PSI, the score distribution, segment
decision rates, input coverage, and label-based performance once labels arrive. One function per
row; a row's panel ids are its own id plus 1, 2, ... and stay stable across regenerations.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import units

from .. import _names as n
from . import _panels as p
from ._promql import MV, SEGMENT_LABELS, Exprs, M, V
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
    """Label-based metrics per segment, and how many labels they rest on."""
    seg = e.segment_matcher
    return [
        p.row(600, "Online performance"),
        p.share_panel(
            601,
            "Precision, recall, accuracy ($window)",
            "From predictions joined with their delayed labels, per segment.",
            [
                p.Query(e.gauge(inst, BY_SEGMENT, seg), f"{name} {SEGMENT}")
                for name, inst in (
                    ("precision", n.ONLINE_PRECISION),
                    ("recall", n.ONLINE_RECALL),
                    ("accuracy", n.ONLINE_ACCURACY),
                )
            ],
            span=8,
        ),
        p.timeseries_panel(
            602,
            "Brier score ($window)",
            "Mean squared error of the score against the 0/1 label: lower is better calibrated.",
            [p.Query(e.gauge(n.ONLINE_BRIER, BY_SEGMENT, seg), SEGMENT)],
            min_val=0,
            span=8,
        ),
        p.timeseries_panel(
            603,
            "Labelled predictions ($window)",
            f"Predictions with a label in the window; below {config.performance_min_labels} "
            "a performance drop does not page.",
            [p.Query(e.gauge(n.ONLINE_LABEL_COUNT, BY_SEGMENT, seg), SEGMENT)],
            min_val=0,
            span=8,
            threshold_steps=p.red_below(config.performance_min_labels),
        ),
    ]
