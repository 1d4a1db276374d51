"""The fleet overview: every model version on one screen, worst first.

An on-call engineer lands here from an alert or a pager and needs, per model version: is
anything drifting, is it serving (prediction rate, decisions), is it healthy (p99 latency,
errors, fallbacks), is the sidecar still receiving its data, and what a prediction costs and how
often reviewers find it wrong. Each row links to the model view.
One function per row; a row's panel ids are its own id plus 1, 2, ... and stay stable.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import units

from .. import _names as n
from . import _panels as p
from ._cost_review import fleet_economics_panels
from ._promql import ALL_SEGMENTS, MV, Exprs, M, V
from .config import MixinConfig

__all__ = ["fleet_panels"]

D = n.LABEL_DECISION
MV_LEGEND = p.legend(M, V)

Items = list[db.Row | p.PanelBuilder]


def fleet_panels(config: MixinConfig, e: Exprs) -> Items:
    """Rows and panels of the fleet dashboard, in layout order."""
    return [
        *_at_a_glance(config, e),
        *_model_versions(config, e),
        *_drift(config, e),
        *_traffic(e),
        *_latency_and_errors(config, e),
        *_sidecar(config, e),
        *fleet_economics_panels(config, e),
    ]


def _at_a_glance(config: MixinConfig, e: Exprs) -> Items:
    """One number each, over every selected model version."""
    err = config.error_ratio_threshold
    return [
        p.row(100, "Fleet at a glance"),
        p.stat_panel(
            101,
            "Model versions serving",
            "Model versions with predictions in the selected range (segment key __all__).",
            [p.Query(f"count({e.predictions()})")],
        ),
        p.stat_panel(
            102,
            "Features drifting ($window)",
            "Features whose sidecar verdict is drift (status 2) in the selected window, all versions.",
            [p.Query(e.drifting_features(by=""))],
            threshold_steps=p.red_above(1),
        ),
        p.verdict_stat(
            103,
            "Worst drift verdict ($window)",
            "The worst feature drift verdict of any selected model version.",
            [p.Query(e.gauge(n.FEATURE_DRIFT_STATUS, by=""))],
        ),
        p.stat_panel(
            104,
            "Predictions / s",
            "Predictions per second over all selected model versions.",
            [p.Query(f"sum({e.predictions()})")],
            unit=units.RequestsPerSecond,
            decimals=2,
        ),
        p.stat_panel(
            105,
            "Error ratio",
            "Share of inference calls that raised, all selected versions.",
            [p.Query(f"sum({e.rate_or_zero(n.PREDICTION_ERRORS.series)}) / sum({e.calls()})")],
            unit=units.PercentUnit,
            decimals=2,
            threshold_steps=p.yellow_then_red(err),
        ),
        p.stat_panel(
            106,
            "Oldest sidecar data",
            "Seconds since the sidecar last received data, worst version. "
            f"Above {config.ingest_stale_seconds}s the drift gauges are stale.",
            [p.Query(f"max({e.seconds_since_ingest()})")],
            unit=units.Seconds,
            threshold_steps=p.yellow_then_red(float(config.ingest_stale_seconds)),
        ),
    ]


def _model_link(config: MixinConfig) -> dm.DynamicConfigValue:
    """A table cell link to the model view of the clicked model, keeping datasource, window and time."""
    model_uid = config.dashboard_uids["otel-ml-model.json"]
    return dm.DynamicConfigValue(
        id_val="links",
        value=[
            {
                "title": "Open the model view",
                "url": f"/d/{model_uid}?${{datasource:queryparam}}&var-model=${{__value.raw}}"
                "&${window:queryparam}&${__url_time_range}",
            }
        ],
    )


def _model_versions(config: MixinConfig, e: Exprs) -> Items:
    """The table of every model version, worst drift first."""
    err, stale = config.error_ratio_threshold, float(config.ingest_stale_seconds)
    columns = {
        "Feature drift": e.gauge(n.FEATURE_DRIFT_STATUS),
        "Features drifting": e.drifting_features(),
        "Score drift": e.gauge(n.SCORE_DRIFT_STATUS),
        "Predictions / s": e.predictions(),
        "Error ratio": e.ratio_of_calls(n.PREDICTION_ERRORS.series),
        "p99 latency": e.latency_quantile(0.99),
        "Data age": e.seconds_since_ingest(),
        "Segments changed": e.changed_segments(),
    }
    return [
        p.row(200, "Model versions"),
        p.table_panel(
            201,
            "Model versions ($window)",
            "One row per model version. Drift and segment columns come from the sidecar for the selected window; "
            "traffic, errors and latency from the app's counters. Click a model to open its view.",
            [p.Query(expr) for expr in columns.values()],
            labels={M: "Model", V: "Version"},
            columns={p.ref_id(i): title for i, title in enumerate(columns)},
            sort_by="Feature drift",
            overrides={
                "Model": [_model_link(config)],
                "Feature drift": p.status_cell(),
                "Score drift": p.status_cell(),
                "Features drifting": p.colored_cell(p.red_above(1)),
                "Segments changed": p.colored_cell(p.red_above(1)),
                "Predictions / s": [p.unit(units.RequestsPerSecond), p.decimals(2)],
                "Error ratio": [p.unit(units.PercentUnit), p.decimals(2), *p.colored_cell(p.red_above(err))],
                "p99 latency": [p.unit(units.Seconds)],
                "Data age": [p.unit(units.Seconds), *p.colored_cell(p.red_above(stale))],
            },
            height=8,
        ),
    ]


def _drift(config: MixinConfig, e: Exprs) -> Items:
    """Verdicts over time, and the largest segment decision-rate changes."""
    change = f"{p.legend(M, V, n.LABEL_SEGMENT_KEY)}={p.legend(n.LABEL_SEGMENT, D)} vs {p.legend(n.LABEL_REFERENCE)}"
    return [
        p.row(300, "Drift"),
        p.verdict_timeline(
            301,
            "Worst feature drift verdict ($window)",
            "Worst feature verdict per model version over time.",
            [p.Query(e.gauge(n.FEATURE_DRIFT_STATUS), MV_LEGEND)],
        ),
        p.verdict_timeline(
            302,
            "Score drift verdict ($window)",
            "Drift verdict of the score distribution per model version over time.",
            [p.Query(e.gauge(n.SCORE_DRIFT_STATUS), MV_LEGEND)],
        ),
        p.timeseries_panel(
            303,
            "Features drifting ($window)",
            "Number of features per model version whose verdict is drift.",
            [p.Query(e.drifting_features(), MV_LEGEND)],
            min_val=0,
        ),
        p.timeseries_panel(
            304,
            "Largest decision-rate changes ($window)",
            "Relative change of segment decision rates against the previous window and the "
            "baseline, the ten largest in absolute value. Filtered by $segment.",
            [p.Query(e.decision_rate_change_top(10), change)],
            unit=units.PercentUnit,
            threshold_steps=p.outside(config.decision_rate_min_relative_change),
        ),
    ]


def _traffic(e: Exprs) -> Items:
    """Predictions per second and the share of each decision."""
    return [
        p.row(400, "Traffic and decisions"),
        p.timeseries_panel(
            401,
            "Predictions / s",
            "Predictions per second per model version.",
            [p.Query(e.predictions(), MV_LEGEND)],
            unit=units.RequestsPerSecond,
            min_val=0,
        ),
        p.share_panel(
            402,
            "Decision rate",
            "Share of all predictions per decision (segment key __all__).",
            [p.Query(e.decision_rate(MV, ALL_SEGMENTS), p.legend(M, V, D))],
        ),
    ]


def _latency_and_errors(config: MixinConfig, e: Exprs) -> Items:
    """p99 latency, error and fallback ratios, and otel-ml's own failures."""
    return [
        p.row(500, "Latency and errors"),
        p.timeseries_panel(
            501,
            "p99 latency",
            "99th percentile of the inference call's wall time.",
            [p.Query(e.latency_quantile(0.99), MV_LEGEND)],
            unit=units.Seconds,
            min_val=0,
            threshold_steps=p.red_above(config.latency_slo_threshold_seconds),
        ),
        p.error_ratio_panel(
            502, p.Query(e.ratio_of_calls(n.PREDICTION_ERRORS.series), MV_LEGEND), config.error_ratio_threshold
        ),
        p.timeseries_panel(
            503,
            "Fallback ratio",
            "Share of calls answered by a fallback instead of the model.",
            [p.Query(e.ratio_of_calls(n.PREDICTION_FALLBACKS.series), MV_LEGEND)],
            unit=units.PercentUnit,
            min_val=0,
        ),
        p.timeseries_panel(
            504,
            "Instrumentation errors / s",
            "Failures inside otel-ml itself (predictions were passed through unchanged). "
            "Non-zero means some telemetry is missing, not that the model failed.",
            [p.Query(e.rate_or_zero(n.INSTRUMENTATION_ERRORS.series), MV_LEGEND)],
            unit=units.OpsPerSecond,
            min_val=0,
        ),
    ]


def _sidecar(config: MixinConfig, e: Exprs) -> Items:
    """Is the sidecar scraped, receiving data and accepting it."""
    return [
        p.row(600, "Sidecar"),
        p.timeseries_panel(
            601,
            "Seconds since last ingest",
            "Age of the newest data the sidecar received per model version.",
            [p.Query(e.seconds_since_ingest(), MV_LEGEND)],
            unit=units.Seconds,
            min_val=0,
            threshold_steps=p.red_above(float(config.ingest_stale_seconds)),
        ),
        p.timeseries_panel(
            602,
            "Sidecar ingest errors / s",
            "Rejected or failed inputs by reason; already-held state is never changed by them.",
            [p.Query(e.ingest_errors(), p.legend(n.LABEL_REASON))],
            unit=units.OpsPerSecond,
            min_val=0,
            span=8,
        ),
        p.stat_panel(
            603,
            "Sidecar targets up",
            "Sidecar scrape targets Prometheus reaches (up == 1).",
            [p.Query(e.sidecar_up())],
            threshold_steps=p.red_below(1),
            span=4,
            height=8,
        ),
    ]
