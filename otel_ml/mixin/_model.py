"""The single-model view: from "is it healthy" down to which feature, score bin or segment moved.

Rows follow the order an investigation takes: serving health first (a drift alert during an
outage is usually the outage), then feature drift sorted by PSI, the score distribution, segment
decision rates, input coverage, and label-based performance once labels arrive.
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


def _legend(*labels: str) -> str:
    return " ".join("{{" + label + "}}" for label in labels)


def model_panels(config: MixinConfig, e: Exprs) -> list[db.Row | p.PanelBuilder]:
    """Rows and panels of the model dashboard, in layout order, with stable explicit ids.

    One long declarative list on purpose: it reads top to bottom like the dashboard itself, and the
    panel ids stay visible in one place (splitting it by row would scatter them); no logic lives here.
    """
    status = p.drift_status_mappings()
    stale = float(config.ingest_stale_seconds)
    err = config.error_ratio_threshold
    change = config.decision_rate_min_relative_change
    by_feature = f"{MV}, {F}"
    by_segment = f"{MV}, {SEGMENT_LABELS}"
    by_decision = f"{by_segment}, {D}"
    seg = e.segment_matcher
    version = _legend(V)
    feature = _legend(F, V)
    segment = f"{{{{{K}}}}}={{{{{S}}}}} {_legend(V)}"

    def rate_by_label(pid: int, title: str, description: str, inst: n.Instrument, label: str) -> p.PanelBuilder:
        """Per-second rate of a counter by one label; 0, not "no data", before its first increment."""
        query = p.Query(e.rate_or_zero(inst.series, f"{MV}, {label}"), _legend(label, V))
        return p.timeseries_panel(pid, title, description, [query], unit=units.OpsPerSecond, min_val=0)

    return [
        p.row(100, "Overview"),
        p.stat_panel(
            101,
            "Feature drift ($window)",
            "Worst feature drift verdict per version.",
            [p.Query(e.gauge(n.FEATURE_DRIFT_STATUS), version)],
            mappings=status,
            threshold_steps=((None, "text"),),
            span=6,
        ),
        p.stat_panel(
            102,
            "Features drifting ($window)",
            "Features whose verdict is drift, per version.",
            [p.Query(e.drifting_features(), version)],
            threshold_steps=((None, "green"), (1, "red")),
            span=6,
        ),
        p.stat_panel(
            103,
            "Score drift ($window)",
            "Drift verdict of the score distribution per version.",
            [p.Query(e.gauge(n.SCORE_DRIFT_STATUS), version)],
            mappings=status,
            threshold_steps=((None, "text"),),
            span=6,
        ),
        p.stat_panel(
            104,
            "Seconds since last ingest",
            f"Age of the sidecar's newest data per version; above {config.ingest_stale_seconds}s "
            "the drift numbers on this page are stale.",
            [p.Query(e.seconds_since_ingest(), version)],
            unit=units.Seconds,
            threshold_steps=((None, "green"), (stale / 2, "yellow"), (stale, "red")),
            span=6,
        ),
        p.timeseries_panel(
            105,
            "Predictions and calls / s",
            "Predictions per second (rows scored) and calls of the inference function (a batch call scores many rows).",
            [p.Query(e.predictions(), f"{version} predictions"), p.Query(e.calls(), f"{version} calls")],
            unit=units.RequestsPerSecond,
            min_val=0,
            span=8,
        ),
        p.timeseries_panel(
            106,
            "Error ratio",
            "Share of inference calls that raised.",
            [p.Query(e.ratio_of_calls(n.PREDICTION_ERRORS.series), version)],
            unit=units.PercentUnit,
            min_val=0,
            span=8,
            threshold_steps=((None, "green"), (err, "red")),
        ),
        p.timeseries_panel(
            107,
            "Latency p50 / p90 / p99",
            "Wall time of one inference call, from the histogram.",
            [
                p.Query(e.latency_quantile(0.5), f"p50 {version}"),
                p.Query(e.latency_quantile(0.9), f"p90 {version}"),
                p.Query(e.latency_quantile(0.99), f"p99 {version}"),
            ],
            unit=units.Seconds,
            min_val=0,
            span=8,
            threshold_steps=((None, "green"), (config.latency_slo_threshold_seconds, "red")),
        ),
        rate_by_label(
            108, "Errors / s by type", "Calls that raised, by exception type.", n.PREDICTION_ERRORS, n.LABEL_ERROR_TYPE
        ),
        rate_by_label(
            109,
            "Fallbacks / s by reason",
            "Calls answered by a fallback instead of the model.",
            n.PREDICTION_FALLBACKS,
            n.LABEL_FALLBACK_REASON,
        ),
        p.row(200, "Feature drift"),
        p.table_panel(
            201,
            "Features by PSI ($window)",
            "Every feature's drift against the baseline in the selected window, largest PSI first. "
            "PSI above its critical value is more than sampling noise; the verdict also needs the "
            "p-value and enough observations (insufficient data means too few to judge).",
            [
                p.Query(e.gauge(n.FEATURE_PSI, by_feature)),
                p.Query(e.gauge(n.FEATURE_PSI_CRITICAL, by_feature)),
                p.Query(e.gauge(n.FEATURE_JS_DISTANCE, by_feature)),
                p.Query(e.gauge(n.FEATURE_DRIFT_PVALUE, by_feature, agg="min")),
                p.Query(e.gauge(n.FEATURE_DRIFT_STATUS, by_feature)),
                p.Query(e.gauge(n.FEATURE_WINDOW_COUNT, by_feature)),
            ],
            labels={M: "Model", V: "Version", F: "Feature"},
            hidden=(M,),
            columns={
                "A": "PSI",
                "B": "PSI critical",
                "C": "JS distance",
                "D": "p-value",
                "E": "Status",
                "F": "Observations",
            },
            sort_by="PSI",
            overrides={
                "PSI": [p.decimals(3), *p.colored_cell(((None, "green"), (0.1, "yellow"), (0.25, "red")))],
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
            [p.Query(e.gauge(n.FEATURE_PSI, by_feature), feature)],
            min_val=0,
            threshold_steps=((None, "green"), (0.1, "yellow"), (0.25, "red")),
        ),
        p.timeseries_panel(
            203,
            "PSI / critical value ($window)",
            "PSI in units of the sample-size-aware critical value: above 1 the shift is "
            "larger than a drift-free sample of this size would show.",
            [p.Query(e.psi_over_critical(by_feature), feature)],
            min_val=0,
            threshold_steps=((None, "green"), (1, "red")),
        ),
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
                p.Query(e.gauge(n.SCORE_PSI), f"PSI {version}"),
                p.Query(e.gauge(n.SCORE_PSI_CRITICAL), f"critical {version}"),
            ],
            min_val=0,
        ),
        p.row(400, "Segments"),
        p.state_timeline_panel(
            406,
            "Decision-rate verdict by segment ($window)",
            "The sidecar's test per segment (worst decision and reference), what "
            "MLSegmentDecisionRateChange reads: changed = significant after correcting for the model's many "
            "segments and decisions, and a large enough change; insufficient data = too few predictions in "
            "this or the previous window, so the segment cannot page.",
            [p.Query(e.gauge(n.SEGMENT_DECISION_RATE_STATUS, by_segment, seg), segment)],
            mappings=p.drift_status_mappings("changed"),
            span=24,
        ),
        p.timeseries_panel(
            401,
            "Decision rate by segment ($window)",
            "Share of each segment's predictions per decision in the window (sidecar).",
            [p.Query(e.gauge(n.SEGMENT_DECISION_RATE, by_decision, seg), f"{segment} {_legend(D)}")],
            unit=units.PercentUnit,
            min_val=0,
            max_val=1,
        ),
        p.timeseries_panel(
            402,
            "Live decision rate by segment",
            "The same share computed from the app's counters over the rate interval: reacts "
            "within minutes, but is noisier than the window.",
            [p.Query(e.decision_rate(by_segment, seg), f"{segment} {_legend(D)}")],
            unit=units.PercentUnit,
            min_val=0,
            max_val=1,
        ),
        p.timeseries_panel(
            403,
            "Decision-rate change vs previous window ($window)",
            "(now - previous window) / previous window per segment and decision; small segments swing "
            "widely by chance, which is why the alert reads the verdict, not this ratio.",
            [
                p.Query(
                    e.gauge(
                        n.SEGMENT_DECISION_RATE_CHANGE,
                        by_decision,
                        seg,
                        f'{n.LABEL_REFERENCE}="{n.REFERENCE_PREVIOUS}"',
                    ),
                    f"{segment} {_legend(D)}",
                )
            ],
            unit=units.PercentUnit,
            threshold_steps=((None, "red"), (-change, "green"), (change, "red")),
        ),
        p.timeseries_panel(
            404,
            "Decision-rate change vs baseline ($window)",
            "(now - baseline) / baseline per segment and decision; the baseline rates come from the training data.",
            [
                p.Query(
                    e.gauge(
                        n.SEGMENT_DECISION_RATE_CHANGE,
                        by_decision,
                        seg,
                        f'{n.LABEL_REFERENCE}="{n.REFERENCE_BASELINE}"',
                    ),
                    f"{segment} {_legend(D)}",
                )
            ],
            unit=units.PercentUnit,
            threshold_steps=((None, "red"), (-change, "green"), (change, "red")),
        ),
        p.timeseries_panel(
            405,
            "Predictions per segment ($window)",
            "Predictions of each segment in the window; below the sidecar's minimum count (decisions: "
            "min_count, in this window or the previous one) its verdict is insufficient data.",
            [p.Query(e.gauge(n.SEGMENT_WINDOW_COUNT, by_segment, seg), segment)],
            min_val=0,
            span=24,
        ),
        p.row(500, "Coverage"),
        p.timeseries_panel(
            501,
            "Missing ratio per feature ($window)",
            "Share of observations that were absent, None or NaN.",
            [p.Query(e.gauge(n.FEATURE_MISSING_RATIO, by_feature), feature)],
            unit=units.PercentUnit,
            min_val=0,
            max_val=1,
        ),
        p.timeseries_panel(
            502,
            "Unknown-category ratio per feature ($window)",
            "Share of a categorical feature's values never seen in training.",
            [p.Query(e.gauge(n.FEATURE_UNKNOWN_RATIO, by_feature), feature)],
            unit=units.PercentUnit,
            min_val=0,
            max_val=1,
            threshold_steps=((None, "green"), (config.unknown_ratio_threshold, "red")),
        ),
        rate_by_label(
            503,
            "Cardinality overflow / s",
            "Observations folded into __other__ by the cardinality budget, by attribute.",
            n.CARDINALITY_OVERFLOW,
            n.LABEL_ATTRIBUTE,
        ),
        rate_by_label(
            504,
            "Instrumentation errors / s",
            "Failures inside otel-ml (the prediction was passed through unchanged), by type.",
            n.INSTRUMENTATION_ERRORS,
            n.LABEL_ERROR_TYPE,
        ),
        p.row(600, "Online performance"),
        p.timeseries_panel(
            601,
            "Precision, recall, accuracy ($window)",
            "From predictions joined with their delayed labels, per segment.",
            [
                p.Query(e.gauge(n.ONLINE_PRECISION, by_segment, seg), f"precision {segment}"),
                p.Query(e.gauge(n.ONLINE_RECALL, by_segment, seg), f"recall {segment}"),
                p.Query(e.gauge(n.ONLINE_ACCURACY, by_segment, seg), f"accuracy {segment}"),
            ],
            unit=units.PercentUnit,
            min_val=0,
            max_val=1,
            span=8,
        ),
        p.timeseries_panel(
            602,
            "Brier score ($window)",
            "Mean squared error of the score against the 0/1 label: lower is better calibrated.",
            [p.Query(e.gauge(n.ONLINE_BRIER, by_segment, seg), segment)],
            min_val=0,
            span=8,
        ),
        p.timeseries_panel(
            603,
            "Labelled predictions ($window)",
            f"Predictions with a label in the window; below {config.performance_min_labels} "
            "a performance drop does not page.",
            [p.Query(e.gauge(n.ONLINE_LABEL_COUNT, by_segment, seg), segment)],
            min_val=0,
            span=8,
            threshold_steps=((None, "red"), (config.performance_min_labels, "green")),
        ),
    ]
