"""The fleet overview: every model version on one screen, worst first.

An on-call engineer lands here from an alert or a pager and needs, per model version: is
anything drifting, is it serving (prediction rate, decisions), is it healthy (p99 latency,
errors, fallbacks) and is the sidecar still receiving its data. Each row links to the model view.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import units

from .. import _names as n
from . import _panels as p
from ._promql import ALL_SEGMENTS, MV, Exprs, M, V
from .config import MixinConfig

__all__ = ["fleet_panels"]

D = n.LABEL_DECISION


def fleet_panels(config: MixinConfig, e: Exprs) -> list[db.Row | p.PanelBuilder]:
    """Rows and panels of the fleet dashboard, in layout order, with stable explicit ids.

    One long declarative list on purpose: it reads top to bottom like the dashboard itself, and the
    panel ids stay visible in one place (splitting it by row would scatter them); no logic lives here.
    """
    model_uid = config.dashboard_uids["otel-ml-model.json"]
    stale = float(config.ingest_stale_seconds)
    err = config.error_ratio_threshold
    status = p.drift_status_mappings()
    mv_legend = f"{{{{{M}}}}} {{{{{V}}}}}"
    model_link = dm.DynamicConfigValue(
        id_val="links",
        value=[
            {
                "title": "Open the model view",
                "url": f"/d/{model_uid}?${{datasource:queryparam}}&var-model=${{__value.raw}}"
                "&${window:queryparam}&${__url_time_range}",
            }
        ],
    )

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
            threshold_steps=((None, "green"), (1, "red")),
        ),
        p.stat_panel(
            103,
            "Worst drift verdict ($window)",
            "The worst feature drift verdict of any selected model version.",
            [p.Query(e.gauge(n.FEATURE_DRIFT_STATUS, by=""))],
            mappings=status,
            threshold_steps=((None, "text"),),
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
            threshold_steps=((None, "green"), (err / 2, "yellow"), (err, "red")),
        ),
        p.stat_panel(
            106,
            "Oldest sidecar data",
            "Seconds since the sidecar last received data, worst version. "
            f"Above {config.ingest_stale_seconds}s the drift gauges are stale.",
            [p.Query(f"max({e.seconds_since_ingest()})")],
            unit=units.Seconds,
            threshold_steps=((None, "green"), (stale / 2, "yellow"), (stale, "red")),
        ),
        p.row(200, "Model versions"),
        p.table_panel(
            201,
            "Model versions ($window)",
            "One row per model version. Drift and segment columns come from the sidecar for the selected window; "
            "traffic, errors and latency from the app's counters. Click a model to open its view.",
            [
                p.Query(e.gauge(n.FEATURE_DRIFT_STATUS)),
                p.Query(e.drifting_features()),
                p.Query(e.gauge(n.SCORE_DRIFT_STATUS)),
                p.Query(e.predictions()),
                p.Query(e.ratio_of_calls(n.PREDICTION_ERRORS.series)),
                p.Query(e.latency_quantile(0.99)),
                p.Query(e.seconds_since_ingest()),
                p.Query(e.changed_segments()),
            ],
            labels={M: "Model", V: "Version"},
            columns={
                "A": "Feature drift",
                "B": "Features drifting",
                "C": "Score drift",
                "D": "Predictions / s",
                "E": "Error ratio",
                "F": "p99 latency",
                "G": "Data age",
                "H": "Segments changed",
            },
            sort_by="Feature drift",
            overrides={
                "Model": [model_link],
                "Feature drift": p.status_cell(),
                "Score drift": p.status_cell(),
                "Features drifting": p.colored_cell(((None, "green"), (1, "red"))),
                "Segments changed": p.colored_cell(((None, "green"), (1, "red"))),
                "Predictions / s": [p.unit(units.RequestsPerSecond), p.decimals(2)],
                "Error ratio": [
                    p.unit(units.PercentUnit),
                    p.decimals(2),
                    *p.colored_cell(((None, "green"), (err, "red"))),
                ],
                "p99 latency": [p.unit(units.Seconds)],
                "Data age": [p.unit(units.Seconds), *p.colored_cell(((None, "green"), (stale, "red")))],
            },
            height=8,
        ),
        p.row(300, "Drift"),
        p.state_timeline_panel(
            301,
            "Worst feature drift verdict ($window)",
            "Worst feature verdict per model version over time.",
            [p.Query(e.gauge(n.FEATURE_DRIFT_STATUS), mv_legend)],
            mappings=status,
        ),
        p.state_timeline_panel(
            302,
            "Score drift verdict ($window)",
            "Drift verdict of the score distribution per model version over time.",
            [p.Query(e.gauge(n.SCORE_DRIFT_STATUS), mv_legend)],
            mappings=status,
        ),
        p.timeseries_panel(
            303,
            "Features drifting ($window)",
            "Number of features per model version whose verdict is drift.",
            [p.Query(e.drifting_features(), mv_legend)],
            min_val=0,
        ),
        p.timeseries_panel(
            304,
            "Largest decision-rate changes ($window)",
            "Relative change of segment decision rates against the previous window and the "
            "baseline, the ten largest in absolute value. Filtered by $segment.",
            [
                p.Query(
                    e.decision_rate_change_top(10),
                    f"{{{{{M}}}}} {{{{{V}}}}} {{{{{n.LABEL_SEGMENT_KEY}}}}}={{{{{n.LABEL_SEGMENT}}}}}"
                    f" {{{{{D}}}}} vs {{{{{n.LABEL_REFERENCE}}}}}",
                )
            ],
            unit=units.PercentUnit,
            threshold_steps=(
                (None, "red"),
                (-config.decision_rate_min_relative_change, "green"),
                (config.decision_rate_min_relative_change, "red"),
            ),
        ),
        p.row(400, "Traffic and decisions"),
        p.timeseries_panel(
            401,
            "Predictions / s",
            "Predictions per second per model version.",
            [p.Query(e.predictions(), mv_legend)],
            unit=units.RequestsPerSecond,
            min_val=0,
        ),
        p.timeseries_panel(
            402,
            "Decision rate",
            "Share of all predictions per decision (segment key __all__).",
            [p.Query(e.decision_rate(MV, ALL_SEGMENTS), f"{mv_legend} {{{{{D}}}}}")],
            unit=units.PercentUnit,
            min_val=0,
            max_val=1,
        ),
        p.row(500, "Latency and errors"),
        p.timeseries_panel(
            501,
            "p99 latency",
            "99th percentile of the inference call's wall time.",
            [p.Query(e.latency_quantile(0.99), mv_legend)],
            unit=units.Seconds,
            min_val=0,
            threshold_steps=((None, "green"), (config.latency_slo_threshold_seconds, "red")),
        ),
        p.timeseries_panel(
            502,
            "Error ratio",
            "Share of inference calls that raised.",
            [p.Query(e.ratio_of_calls(n.PREDICTION_ERRORS.series), mv_legend)],
            unit=units.PercentUnit,
            min_val=0,
            threshold_steps=((None, "green"), (err, "red")),
        ),
        p.timeseries_panel(
            503,
            "Fallback ratio",
            "Share of calls answered by a fallback instead of the model.",
            [p.Query(e.ratio_of_calls(n.PREDICTION_FALLBACKS.series), mv_legend)],
            unit=units.PercentUnit,
            min_val=0,
        ),
        p.timeseries_panel(
            504,
            "Instrumentation errors / s",
            "Failures inside otel-ml itself (predictions were passed through unchanged). "
            "Non-zero means some telemetry is missing, not that the model failed.",
            [p.Query(e.rate_or_zero(n.INSTRUMENTATION_ERRORS.series), mv_legend)],
            unit=units.OpsPerSecond,
            min_val=0,
        ),
        p.row(600, "Sidecar"),
        p.timeseries_panel(
            601,
            "Seconds since last ingest",
            "Age of the newest data the sidecar received per model version.",
            [p.Query(e.seconds_since_ingest(), mv_legend)],
            unit=units.Seconds,
            min_val=0,
            threshold_steps=((None, "green"), (stale, "red")),
        ),
        p.timeseries_panel(
            602,
            "Sidecar ingest errors / s",
            "Rejected or failed inputs by reason; already-held state is never changed by them.",
            [p.Query(e.ingest_errors(), f"{{{{{n.LABEL_REASON}}}}}")],
            unit=units.OpsPerSecond,
            min_val=0,
            span=8,
        ),
        p.stat_panel(
            603,
            "Sidecar targets up",
            "Sidecar scrape targets Prometheus reaches (up == 1).",
            [p.Query(e.sidecar_up())],
            threshold_steps=((None, "red"), (1, "green")),
            span=4,
            height=8,
        ),
    ]
