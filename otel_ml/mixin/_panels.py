"""Default panel and query factories shared by the otel-ml dashboards.

Following the grafana-foundation-sdk example's ``common.py``, every panel goes through one of
these factories so all panels look alike (legend, tooltip, datasource) and, because the builder
leaves them unset, every panel gets an explicit ``id`` and every query an explicit ``refId``:
Grafana would otherwise assign both on save and the committed JSON would drift.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, NamedTuple

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import heatmap, prometheus, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import heatmap as hm
from grafana_foundation_sdk.models import units
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from .. import _names as n

__all__ = [
    "DATASOURCE",
    "DATASOURCE_VARIABLE",
    "TEXT",
    "PanelBuilder",
    "Query",
    "Step",
    "colored_cell",
    "decimals",
    "drift_status_mappings",
    "error_ratio_panel",
    "heatmap_panel",
    "legend",
    "outside",
    "red_above",
    "ref_id",
    "red_below",
    "row",
    "share_panel",
    "stat_panel",
    "state_timeline_panel",
    "status_cell",
    "table_panel",
    "thresholds",
    "timeseries_panel",
    "unit",
    "verdict_stat",
    "verdict_timeline",
    "version_verdict_mappings",
    "yellow_then_red",
]

DATASOURCE_VARIABLE = "datasource"
# Every panel and variable reads from the datasource the viewer picked, never a fixed uid, so the
# same JSON works in any Grafana that has a Prometheus datasource.
DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="${" + DATASOURCE_VARIABLE + "}")


PanelBuilder = timeseries.Panel | stat.Panel | statetimeline.Panel | table.Panel | heatmap.Panel
Step = tuple[float | None, str]  # a threshold step: from this value (None = -Inf) on, this colour
TEXT: tuple[Step, ...] = ((None, "text"),)  # no threshold colour: value mappings colour the cell


def red_above(limit: float) -> tuple[Step, ...]:
    """Green, and red from ``limit`` on."""
    return ((None, "green"), (limit, "red"))


def red_below(limit: float) -> tuple[Step, ...]:
    """Red, and green from ``limit`` on (too few of something)."""
    return ((None, "red"), (limit, "green"))


def yellow_then_red(limit: float) -> tuple[Step, ...]:
    """Green, yellow from half of ``limit``, red from ``limit`` on."""
    return ((None, "green"), (limit / 2, "yellow"), (limit, "red"))


def outside(change: float) -> tuple[Step, ...]:
    """Red beyond ``-change`` and ``change``, green between (a relative change either way)."""
    return ((None, "red"), (-change, "green"), (change, "red"))


class Query(NamedTuple):
    """One PromQL target; the panel factory assigns its refId (A, B, ...) from its position."""

    expr: str
    legend: str = ""
    instant: bool = False  # instant + table format: one row per series, for table panels


def legend(*labels: str) -> str:
    """A legend naming each series by these labels' values, space-separated."""
    return " ".join("{{" + label + "}}" for label in labels)


def ref_id(index: int) -> str:
    return chr(ord("A") + index)


def _target(q: Query, index: int, fmt: PromQueryFormat | None = None) -> prometheus.Dataquery:
    target = prometheus.Dataquery().expr(q.expr).ref_id(ref_id(index)).datasource(DATASOURCE)
    if q.legend:
        target = target.legend_format(q.legend)
    if q.instant:
        target = target.instant().format(PromQueryFormat.TABLE)
    else:
        target = target.range()
    if fmt is not None:
        target = target.format(fmt)
    return target


def thresholds(*steps: Step) -> db.ThresholdsConfig:
    """Absolute thresholds; the first step's value is None (-Inf), as Grafana expects."""
    return (
        db.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=value, color=color) for value, color in steps])
    )


def drift_status_mappings(worst: str = "drift") -> list[dm.ValueMapping]:
    """Text and colour for the sidecar's verdicts, so nobody has to remember 2 means drift.

    The segment decision-rate verdict uses the same values, with ``worst="changed"``.
    """
    names = {
        n.DRIFT_STATUS_INSUFFICIENT: ("insufficient data", "text"),
        n.DRIFT_STATUS_OK: ("ok", "green"),
        n.DRIFT_STATUS_WARN: ("warn", "yellow"),
        n.DRIFT_STATUS_DRIFT: (worst, "red"),
    }
    options = {
        str(value): dm.ValueMappingResult(text=text, color=color, index=i)
        for i, (value, (text, color)) in enumerate(sorted(names.items()))
    }
    return [dm.ValueMap(options=options)]


def version_verdict_mappings() -> list[dm.ValueMapping]:
    """Words and colours of the version verdict and its checks: 1 promote, 0 inconclusive, -1 roll back."""
    colours = {n.VERDICT_ROLL_BACK: "red", n.VERDICT_INCONCLUSIVE: "text", n.VERDICT_PROMOTE: "green"}
    options = {
        str(value): dm.ValueMappingResult(text=n.VERDICT_NAMES[value], color=colours[value], index=i)
        for i, value in enumerate(sorted(colours))
    }
    return [dm.ValueMap(options=options)]


def unit(value: str) -> dm.DynamicConfigValue:
    """Field-override property: the unit of one table column."""
    return dm.DynamicConfigValue(id_val="unit", value=value)


def decimals(value: int) -> dm.DynamicConfigValue:
    return dm.DynamicConfigValue(id_val="decimals", value=value)


def colored_cell(steps: Sequence[Step]) -> list[dm.DynamicConfigValue]:
    """Field-override properties: colour a table column's cells by absolute thresholds."""
    return [
        dm.DynamicConfigValue(id_val="thresholds", value=thresholds(*steps).build()),
        dm.DynamicConfigValue(id_val="color", value={"mode": "thresholds"}),
        dm.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-background"}),
    ]


def status_cell() -> list[dm.DynamicConfigValue]:
    """Field-override properties: show a drift verdict column as coloured words."""
    return [
        dm.DynamicConfigValue(id_val="mappings", value=drift_status_mappings()),
        dm.DynamicConfigValue(id_val="color", value={"mode": "thresholds"}),
        dm.DynamicConfigValue(id_val="thresholds", value=thresholds((None, "text")).build()),
        dm.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-background"}),
    ]


def _common(
    panel: Any,
    panel_id: int,
    title: str,
    description: str,
    queries: Sequence[Query],
    span: int,
    height: int,
    fmt: PromQueryFormat | None = None,
) -> Any:
    if not queries:
        raise ValueError(f"panel {title!r} has no queries")
    panel = panel.id(panel_id).title(title).description(description).datasource(DATASOURCE)
    panel = panel.span(span).height(height)
    for index, q in enumerate(queries):
        panel = panel.with_target(_target(q, index, fmt))
    return panel


def row(panel_id: int, title: str) -> db.Row:
    """A row header; rows get ids too (the builder would leave 0 on every row)."""
    return db.Row(title).id(panel_id)


def timeseries_panel(
    panel_id: int,
    title: str,
    description: str,
    queries: Sequence[Query],
    *,
    unit: str = units.Short,
    span: int = 12,
    height: int = 8,
    min_val: float | None = None,
    max_val: float | None = None,
    threshold_steps: Sequence[Step] = (),
    mappings: list[dm.ValueMapping] | None = None,
) -> timeseries.Panel:
    """A line chart with a table legend (last and max) sorted by value, the usual on-call view."""
    panel = _common(timeseries.Panel(), panel_id, title, description, queries, span, height)
    panel = (
        panel.unit(unit)
        .line_width(1)
        .fill_opacity(10)
        .legend(
            cb.VizLegendOptions()
            .display_mode(cm.LegendDisplayMode.TABLE)
            .placement(cm.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["lastNotNull", "max"])
            .sort_by("Last *")
            .sort_desc(True)
        )
        .tooltip(cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING))
    )
    if min_val is not None:
        panel = panel.min(min_val)
    if max_val is not None:
        panel = panel.max(max_val)
    if threshold_steps:
        panel = panel.thresholds(thresholds(*threshold_steps)).thresholds_style(
            cb.GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode.DASHED)
        )
    if mappings:
        panel = panel.mappings(mappings)
    return panel  # type: ignore[no-any-return]


def stat_panel(
    panel_id: int,
    title: str,
    description: str,
    queries: Sequence[Query],
    *,
    unit: str = units.Short,
    span: int = 4,
    height: int = 4,
    threshold_steps: Sequence[Step] = ((None, "green"),),
    mappings: list[dm.ValueMapping] | None = None,
    decimals: float | None = None,
) -> stat.Panel:
    """A big number coloured by thresholds (or by value mappings for verdicts)."""
    panel = _common(stat.Panel(), panel_id, title, description, queries, span, height)
    panel = (
        panel.unit(unit)
        .thresholds(thresholds(*threshold_steps))
        .color_mode(cm.BigValueColorMode.BACKGROUND)
        .graph_mode(cm.BigValueGraphMode.NONE)
        .text_mode(cm.BigValueTextMode.AUTO)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    if mappings:
        panel = panel.mappings(mappings)
    if decimals is not None:
        panel = panel.decimals(decimals)
    return panel  # type: ignore[no-any-return]


def state_timeline_panel(
    panel_id: int,
    title: str,
    description: str,
    queries: Sequence[Query],
    *,
    mappings: list[dm.ValueMapping],
    span: int = 12,
    height: int = 8,
) -> statetimeline.Panel:
    """Coloured bands over time: when did each model version enter and leave a state."""
    panel = _common(statetimeline.Panel(), panel_id, title, description, queries, span, height)
    panel = (
        panel.mappings(mappings)
        .thresholds(thresholds((None, "text")))
        .color_scheme(db.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS))
        .show_value(cm.VisibilityMode.NEVER)
    )
    return panel  # type: ignore[no-any-return]


def table_panel(
    panel_id: int,
    title: str,
    description: str,
    queries: Sequence[Query],
    *,
    columns: Mapping[str, str],
    labels: Mapping[str, str],
    hidden: Sequence[str] = (),
    sort_by: str | None = None,
    overrides: Mapping[str, list[dm.DynamicConfigValue]] | None = None,
    span: int = 24,
    height: int = 10,
) -> table.Panel:
    """Instant queries merged into one row per label set.

    Every query must aggregate to exactly the ``labels`` (label -> column title), so the merge
    joins on them. ``columns`` titles each query's value column by refId (``{"A": "PSI"}``);
    columns appear labels first, then values in refId order. Rows are sorted by ``sort_by``,
    largest first, and overrides address columns by their new titles.
    """
    queries = [q._replace(instant=True) for q in queries]
    panel = _common(table.Panel(), panel_id, title, description, queries, span, height)
    values = {f"Value #{ref}": name for ref, name in sorted(columns.items())}
    rename = {**labels, **values}
    order = {field: index for index, field in enumerate([*labels, *values])}
    exclude = {"Time": True, **{label: True for label in hidden}}
    panel = panel.with_transformation(dm.DataTransformerConfig(id_val="merge", options={}))
    panel = panel.with_transformation(
        dm.DataTransformerConfig(
            id_val="organize", options={"excludeByName": exclude, "renameByName": rename, "indexByName": order}
        )
    )
    if sort_by is not None:
        panel = panel.with_transformation(
            dm.DataTransformerConfig(
                id_val="sortBy", options={"fields": {}, "sort": [{"field": sort_by, "desc": True}]}
            )
        )
        panel = panel.sort_by([cb.TableSortByFieldState().display_name(sort_by).desc(True)])
    for name, properties in sorted((overrides or {}).items()):
        panel = panel.override_by_name(name, properties)
    return panel.show_header(True)  # type: ignore[no-any-return]


def heatmap_panel(
    panel_id: int,
    title: str,
    description: str,
    query: Query,
    *,
    span: int = 12,
    height: int = 8,
) -> heatmap.Panel:
    """A heatmap straight from Prometheus histogram buckets (no client-side re-bucketing)."""
    panel = _common(heatmap.Panel(), panel_id, title, description, [query], span, height, fmt=PromQueryFormat.HEATMAP)
    panel = (
        panel.calculate(False)
        .color(
            heatmap.HeatmapColorOptions()
            .mode(hm.HeatmapColorMode.SCHEME)
            .scheme("Oranges")
            .scale(hm.HeatmapColorScale.EXPONENTIAL)
            .exponent(0.5)
            .steps(64)
            .fill("dark-orange")
            .reverse(False)
        )
        .rows_frame(heatmap.RowsHeatmapOptions().layout(cm.HeatmapCellLayout.LE))
        .y_axis(heatmap.YAxisConfig().unit(units.Short).axis_placement(cm.AxisPlacement.LEFT))
        .cell_gap(1)
        .show_y_histogram()
        .mode(cm.TooltipDisplayMode.SINGLE)
        .show_legend()
    )
    return panel  # type: ignore[no-any-return]


# -- panel shapes both dashboards repeat -------------------------------------------------------------
# A stat of a sidecar verdict, shown as its word (ok, warn, drift) in its colour.
verdict_stat = partial(stat_panel, mappings=drift_status_mappings(), threshold_steps=TEXT)
# Verdicts over time as coloured bands (pass ``mappings=drift_status_mappings("changed")`` for segments).
verdict_timeline = partial(state_timeline_panel, mappings=drift_status_mappings())
# A share between 0 and 1 over time, as a percentage.
share_panel = partial(timeseries_panel, unit=units.PercentUnit, min_val=0, max_val=1)


def error_ratio_panel(panel_id: int, query: Query, error_ratio_threshold: float, *, span: int = 12) -> timeseries.Panel:
    """Share of inference calls that raised, with the alert's threshold as a red line."""
    return timeseries_panel(
        panel_id,
        "Error ratio",
        "Share of inference calls that raised.",
        [query],
        unit=units.PercentUnit,
        min_val=0,
        span=span,
        threshold_steps=red_above(error_ratio_threshold),
    )
