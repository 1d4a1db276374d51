"""The model dashboard's Training/serving skew row: what the last replay found, and the capture feeding it.

``otel-ml skew replay --pushgateway`` pushes the counts of each replay (job ``otel_ml_skew``; a push
replaces the previous one), so these series are the last replay's totals, read as they are, and
every query sums the Pushgateway's ``job``/``instance`` away. First the verdict
(``ml:skew_decision_flip_ratio`` against ``skew_flip_budget``, and the replay's age), then where
the flips are (segments) and why (features by result, the score difference), what the replay could
not compare (row errors), and last the app's capture spool that the replay reads: records, bytes
and drops by reason, so a replay of a starved capture is not mistaken for a clean one.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import units

from .. import _names as n
from .._durations import prometheus_duration
from . import _panels as p
from ._promql import MV, SEGMENT_LABELS, Exprs, V, matchers
from .config import MixinConfig

__all__ = ["skew_panels"]

F, RESULT, STAGE = n.LABEL_FEATURE, n.LABEL_SKEW_RESULT, n.LABEL_SKEW_STAGE
SEGMENT = f"{p.legend(n.LABEL_SEGMENT_KEY)}={p.legend(n.LABEL_SEGMENT)}"
NOT_FLIP_TOTAL = f'{n.LABEL_FLIP}!="{n.ALL}"'  # flips are summed over ml_flip; a pushed total would count twice
RESULT_TITLES = {
    n.SKEW_MATCH: "Match",
    n.SKEW_MISMATCH: "Mismatch",
    n.SKEW_BIN_CHANGE: "Bin change",
    n.SKEW_MISSING_SERVING: "Missing serving",
    n.SKEW_MISSING_TRAINING: "Missing training",
}
Items = list[db.Row | p.PanelBuilder]


def _sum(e: Exprs, series: str, by: str, *extra: str) -> str:
    return f"sum by ({by}) ({series}{e.skew(*extra)})"


def skew_panels(config: MixinConfig, e: Exprs) -> Items:
    """Rows and panels of the Training/serving skew row (ids 1000-1099)."""
    return [p.row(1000, "Training/serving skew"), *_verdict(config, e), *_where(e), *_capture(e)]


def _verdict(config: MixinConfig, e: Exprs) -> Items:
    """The last replay's flip ratio against the budget, over time, and how old the replay is."""
    ratio = f"max by ({MV}) ({n.SKEW_FLIP_RATIO_RECORD}{matchers(e.model_matcher, e.version_matcher)})"
    budget = config.skew_flip_budget
    last = f"time() - max by ({MV}) ({n.SKEW_LAST_RUN.series}{e.skew()})"
    return [
        p.stat_panel(
            1001,
            "Decision flip ratio (last replay)",
            "Share of the last replay's rows whose decision, re-scored through the training pipeline, differs "
            f"from the served one. MLSkewDecisionFlipsOverBudget tests it against {budget:.2%} (skew_flip_budget) "
            f"with at least {config.skew_min_rows} rows.",
            [p.Query(ratio, p.legend(V))],
            unit=units.PercentUnit,
            threshold_steps=p.yellow_then_red(budget),
            span=6,
            height=8,
        ),
        p.share_panel(
            1002,
            "Decision flip ratio by version",
            "The flip ratio of each version's last replay over time: a step is a new replay (or a new capture).",
            [p.Query(ratio, p.legend(V))],
            max_val=None,
            threshold_steps=p.red_above(budget),
            span=12,
        ),
        p.stat_panel(
            1003,
            "Time since last replay",
            "Age of the last finished replay of each version. MLSkewReplayStale fires beyond "
            f"{config.skew_replay_max_age} (skew_replay_max_age): the scheduled replay stopped.",
            [p.Query(last, p.legend(V))],
            unit=units.Seconds,
            threshold_steps=p.red_above(prometheus_duration(config.skew_replay_max_age)),
            span=6,
            height=8,
        ),
    ]


def _segment_flips(e: Exprs) -> p.PanelBuilder:
    """Rows, flips and the flip ratio per segment of the last replay, worst first."""
    by_segment = f"{MV}, {SEGMENT_LABELS}"
    rows = _sum(e, n.SKEW_ROWS.series, by_segment, e.segment_matcher)
    flips = f"({_sum(e, n.SKEW_DECISION_FLIPS.series, by_segment, e.segment_matcher, NOT_FLIP_TOTAL)} or 0 * {rows})"
    segment_labels = {
        n.LABEL_MODEL_NAME: "Model",
        n.LABEL_MODEL_VERSION: "Version",
        n.LABEL_SEGMENT_KEY: "Segment key",
        n.LABEL_SEGMENT: "Segment",
    }
    return p.table_panel(
        1004,
        "Decision flips per segment (last replay)",
        "Rows replayed, decisions flipped and the flip ratio per segment (__all__ = every row once), worst "
        "ratio first: where the serving features change decisions. No alert per segment (many segments "
        "would page by chance); the replay's --json report lists the worst request ids.",
        [p.Query(rows), p.Query(flips), p.Query(f"{flips} / ({rows} > 0)")],
        columns={"A": "Rows", "B": "Flips", "C": "Flip ratio"},
        labels=segment_labels,
        sort_by="Flip ratio",
        overrides={"Flip ratio": [p.unit(units.PercentUnit), p.decimals(2)]},
        span=12,
    )


def _where(e: Exprs) -> Items:
    """Which segments flip, which features differ and how much the score moves, in the last replay."""
    by_feature = f"{MV}, {F}"
    results = [p.Query(_sum(e, n.SKEW_FEATURE.series, by_feature, f'{RESULT}="{result}"')) for result in RESULT_TITLES]
    quantiles = {"p1": 0.01, "p50": 0.5, "p99": 0.99}
    buckets = _sum(e, n.SKEW_SCORE_DIFFERENCE.bucket_series, f"{MV}, {n.LABEL_LE}")
    return [
        _segment_flips(e),
        _stacked_bars(
            1005,
            "Feature values not matching, by result (last replay)",
            "Per feature, the served values the training pipeline does not reproduce: mismatch (same baseline "
            "bin or no baseline), bin_change (another baseline bin: the drift view moves), missing on one side. "
            "Matches are left out (they dwarf the rest); the table below has them.",
            p.Query(
                _sum(e, n.SKEW_FEATURE.series, f"{by_feature}, {RESULT}", f'{RESULT}!="{n.SKEW_MATCH}"'),
                f"{p.legend(F)} {p.legend(RESULT)} {p.legend(V)}",
            ),
        ),
        p.table_panel(
            1006,
            "Features by result (last replay)",
            "Every compared feature's values by result, most mismatches first. A feature with only "
            "missing_training is one the training pipeline does not produce; skipped (nondeterministic) features "
            "are not compared.",
            results,
            columns={p.ref_id(i): title for i, title in enumerate(RESULT_TITLES.values())},
            labels={n.LABEL_MODEL_NAME: "Model", n.LABEL_MODEL_VERSION: "Version", F: "Feature"},
            sort_by="Mismatch",
        ),
        p.timeseries_panel(
            1007,
            "Score difference p1 / p50 / p99 (last replay)",
            "Replayed score minus served score per row, from the replay's histogram (symmetric buckets around 0): "
            "far from 0 on both sides is noise in the features, on one side a unit or default changed.",
            [p.Query(f"histogram_quantile({q}, {buckets})", f"{name} {p.legend(V)}") for name, q in quantiles.items()],
        ),
        p.timeseries_panel(
            1008,
            "Rows not compared, by stage (last replay)",
            "Rows of the last replay the training pipeline or the model raised on, or whose record was "
            "unreadable: the flip ratio does not count them.",
            [p.Query(_sum(e, n.SKEW_ROW_ERRORS.series, f"{MV}, {STAGE}"), f"{p.legend(STAGE)} {p.legend(V)}")],
            min_val=0,
        ),
    ]


def _stacked_bars(panel_id: int, title: str, description: str, query: p.Query) -> p.PanelBuilder:
    """Counts as stacked bars: each bar one scrape of the last replay's totals."""
    panel = p.timeseries_panel(panel_id, title, description, [query], min_val=0)
    return panel.draw_style(cm.GraphDrawStyle.BARS).stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL))


def _capture(e: Exprs) -> Items:
    """The app's capture spool, which the replay reads: written, and dropped by reason."""
    reason = n.LABEL_REASON
    return [
        p.timeseries_panel(
            1009,
            "Capture records / s",
            "Sampled calls the app wrote to its capture spool (@monitor(capture=...)); a replay sees only these.",
            [p.Query(e.rate(n.CAPTURE_RECORDS.series, MV), p.legend(V))],
            unit=units.OpsPerSecond,
            min_val=0,
            span=8,
        ),
        p.timeseries_panel(
            1010,
            "Capture bytes written / s",
            "Bytes the capture spool writes, headers included: the disk the spool's size cap bounds.",
            [p.Query(e.rate(n.CAPTURE_WRITTEN.series, MV), p.legend(V))],
            unit=units.BytesPerSecondSI,
            min_val=0,
            span=8,
        ),
        p.timeseries_panel(
            1011,
            "Capture drops / s by reason",
            "Sampled calls not in the spool: queue_full (the writer is behind), too_large, unserializable, "
            "write_error (the disk refused), evicted (deleted to stay under the size cap). Drops are not random: "
            "a replay of a spool that drops misses the calls the drops select.",
            [p.Query(e.rate_or_zero(n.CAPTURE_DROPPED.series, f"{MV}, {reason}"), f"{p.legend(reason)} {p.legend(V)}")],
            unit=units.OpsPerSecond,
            min_val=0,
            span=8,
        ),
    ]
