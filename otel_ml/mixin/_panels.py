"""Default panel, query and variable factories shared by the otel-ml dashboards.

Following the grafana-foundation-sdk example's ``common.py``, every panel goes through one of
these factories so all panels look alike (legend, tooltip, datasource) and, because the builder
leaves them unset, every panel gets an explicit ``id`` and every query an explicit ``refId``:
Grafana would otherwise assign both on save and the committed JSON would drift.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
    "PanelBuilder",
    "Query",
    "colored_cell",
    "datasource_variable",
    "decimals",
    "drift_status_mappings",
    "heatmap_panel",
    "query_variable",
    "row",
    "stat_panel",
    "state_timeline_panel",
    "status_cell",
    "table_panel",
    "thresholds",
    "timeseries_panel",
    "unit",
]

DATASOURCE_VARIABLE = "datasource"
# Every panel and variable reads from the datasource the viewer picked, never a fixed uid, so the
# same JSON works in any Grafana that has a Prometheus datasource.
DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="${" + DATASOURCE_VARIABLE + "}")


PanelBuilder = timeseries.Panel | stat.Panel | statetimeline.Panel | table.Panel | heatmap.Panel


class Query(NamedTuple):
    """One PromQL target; the panel factory assigns its refId (A, B, ...) from its position."""

    expr: str
    legend: str = ""
    instant: bool = False  # instant + table format: one row per series, for table panels


def _ref_id(index: int) -> str:
    return chr(ord("A") + index)


def _target(q: Query, index: int, fmt: PromQueryFormat | None = None) -> prometheus.Dataquery:
    target = prometheus.Dataquery().expr(q.expr).ref_id(_ref_id(index)).datasource(DATASOURCE)
    if q.legend:
        target = target.legend_format(q.legend)
    if q.instant:
        target = target.instant().format(PromQueryFormat.TABLE)
    else:
        target = target.range()
    if fmt is not None:
        target = target.format(fmt)
    return target


def thresholds(*steps: tuple[float | None, str]) -> db.ThresholdsConfig:
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


def unit(value: str) -> dm.DynamicConfigValue:
    """Field-override property: the unit of one table column."""
    return dm.DynamicConfigValue(id_val="unit", value=value)


def decimals(value: int) -> dm.DynamicConfigValue:
    return dm.DynamicConfigValue(id_val="decimals", value=value)


def colored_cell(steps: Sequence[tuple[float | None, str]]) -> list[dm.DynamicConfigValue]:
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
    threshold_steps: Sequence[tuple[float | None, str]] = (),
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
    threshold_steps: Sequence[tuple[float | None, str]] = ((None, "green"),),
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


def datasource_variable() -> db.DatasourceVariable:
    """The Prometheus datasource picker every panel reads from."""
    return db.DatasourceVariable(DATASOURCE_VARIABLE).label("Data source").type("prometheus")


def query_variable(
    name: str,
    label: str,
    query: str,
    *,
    multi: bool,
    include_all: bool,
    description: str,
    current: str | None = None,
) -> db.QueryVariable:
    """A label_values() variable; "All" means the regex ``.*`` so ``=~"$var"`` matchers keep working."""
    variable = (
        db.QueryVariable(name)
        .label(label)
        .description(description)
        .query(query)
        .datasource(DATASOURCE)
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_CASE_INSENSITIVE_ASC)
        .multi(multi)
        .include_all(include_all)
    )
    if include_all:
        variable = variable.all_value(".*")
        variable = variable.current(dm.VariableOption(selected=True, text="All", value="$__all"))
    elif current is not None:
        variable = variable.current(dm.VariableOption(selected=True, text=current, value=current))
    return variable
