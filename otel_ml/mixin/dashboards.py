"""Grafana dashboards as pure functions of :class:`MixinConfig`.

``build_dashboards`` turns the panel lists of ``_fleet`` and ``_model`` into dashboard JSON with
grafana-foundation-sdk (:mod:`otel_ml.mixin.generate` writes it to files). ``panel_queries`` and
``concrete_queries`` hand every PromQL expression to tests that run them against a real
Prometheus, since no Grafana can run there.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dm

from .. import _names as n
from . import _panels as p
from ._fleet import fleet_panels
from ._model import model_panels
from ._promql import PREDICTIONS, Exprs, M, matchers
from .config import DEFAULT_CONFIG, MixinConfig

__all__ = [
    "FLEET",
    "MODEL",
    "TEMPLATE_VARIABLES",
    "build_dashboards",
    "concrete_queries",
    "dashboard_json",
    "panel_queries",
    "substitute",
]

FLEET = "otel-ml-fleet.json"
MODEL = "otel-ml-model.json"
TEMPLATE_VARIABLES = ("datasource", "model", "version", "window", "segment")


def _datasource_variable() -> db.DatasourceVariable:
    """The Prometheus datasource picker every panel reads from."""
    return db.DatasourceVariable(p.DATASOURCE_VARIABLE).label("Data source").type("prometheus")


def _query_variable(
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
        .datasource(p.DATASOURCE)
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


def _variables(config: MixinConfig, *, single_model: bool) -> list[db.DatasourceVariable | db.QueryVariable]:
    app = config.app_selector
    model = f'{M}=~"$model"'
    return [
        _datasource_variable(),
        _query_variable(
            "model",
            "Model",
            f"label_values({PREDICTIONS}{matchers(app)}, {M})",
            multi=not single_model,
            include_all=not single_model,
            description="Model name (label ml_model_name).",
        ),
        _query_variable(
            "version",
            "Version",
            f"label_values({PREDICTIONS}{matchers(app, model)}, {n.LABEL_MODEL_VERSION})",
            multi=True,
            include_all=True,
            description="Model version; pick several to compare a canary.",
        ),
        _query_variable(
            "window",
            "Window",
            f"label_values({n.FEATURE_PSI.series}{matchers(config.sidecar_selector)}, {n.LABEL_WINDOW})",
            multi=False,
            include_all=False,
            current=config.alert_window,
            description=f"Sidecar comparison window; alerts read {config.alert_window}.",
        ),
        _query_variable(
            "segment",
            "Segment key",
            f"label_values({PREDICTIONS}{matchers(app, model)}, {n.LABEL_SEGMENT_KEY})",
            multi=True,
            include_all=True,
            description=f"Segment key; {n.ALL} counts every prediction once.",
        ),
    ]


def _link(title: str, uid: str) -> db.DashboardLink:
    return (
        db.DashboardLink(title)
        .type(dm.DashboardLinkType.LINK)
        .url(f"/d/{uid}")
        .include_vars(True)
        .keep_time(True)
        .icon("dashboard")
        .target_blank(False)
    )


def _dashboard(
    config: MixinConfig,
    filename: str,
    title: str,
    description: str,
    panels: Sequence[db.Row | p.PanelBuilder],
    *,
    single_model: bool,
    links: Sequence[db.DashboardLink],
) -> db.Dashboard:
    board = (
        db.Dashboard(title)
        .uid(config.dashboard_uids[filename])
        .description(description)
        .tags(list(config.dashboard_tags))
        .refresh(config.dashboard_refresh)
        .time(config.dashboard_time_from, "now")
        .timezone("browser")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .editable()
        .links(list(links))
    )
    for variable in _variables(config, single_model=single_model):
        board = board.with_variable(variable)
    for item in panels:
        board = board.with_row(item) if isinstance(item, db.Row) else board.with_panel(item)
    return board


def dashboard_json(board: db.Dashboard) -> dict[str, Any]:
    """The plain JSON-able dict of a built dashboard (what Grafana stores and the API takes)."""
    encoded = JSONEncoder(sort_keys=True).encode(board.build())
    return json.loads(encoded)  # type: ignore[no-any-return]


def build_dashboards(config: MixinConfig = DEFAULT_CONFIG) -> dict[str, dict[str, Any]]:
    """Every dashboard, file name -> dashboard JSON."""
    e = Exprs(config)
    fleet_uid, model_uid = config.dashboard_uids[FLEET], config.dashboard_uids[MODEL]
    fleet = _dashboard(
        config,
        FLEET,
        "otel-ml / Fleet overview",
        "Every monitored model version: drift verdicts, traffic, decisions, latency, errors, data freshness.",
        fleet_panels(config, e),
        single_model=False,
        links=[_link("Model view", model_uid)],
    )
    model = _dashboard(
        config,
        MODEL,
        "otel-ml / Model",
        "One model: serving health, feature drift by PSI, score distribution, segment decision rates, "
        "input coverage, label-based performance and shadow / canary version comparison.",
        model_panels(config, e),
        single_model=True,
        links=[_link("Fleet overview", fleet_uid)],
    )
    return {FLEET: dashboard_json(fleet), MODEL: dashboard_json(model)}


def _panels(dashboard: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # panels of collapsed rows


def panel_queries(dashboard: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, in layout order."""
    return [
        (panel["title"], target["expr"])
        for panel in _panels(dashboard)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Replace Grafana template variables (``$x``, ``${x}``) with concrete values.

    Raises ValueError for a variable not in ``values``, so a typo in a dashboard cannot hide.
    """

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise ValueError(f"unknown template variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(replace, expr)


def concrete_queries(
    config: MixinConfig = DEFAULT_CONFIG,
    *,
    model: str = ".*",
    version: str = ".*",
    window: str | None = None,
    segment: str = ".*",
    rate_interval: str = "1m",
) -> list[tuple[str, str, str]]:
    """(file name, panel title, PromQL ready for Prometheus' /api/v1/query) for every panel target.

    ``model``, ``version`` and ``segment`` are regexes, as Grafana sends them (``.*`` is "All";
    ``re.escape`` a literal name). ``window`` defaults to ``config.alert_window``.
    ``rate_interval`` stands in for ``$__rate_interval`` (at least four scrape intervals).
    """
    values = {
        "model": model,
        "version": version,
        "window": window if window is not None else config.alert_window,
        "segment": segment,
        "__rate_interval": rate_interval,
        "__interval": rate_interval,
    }
    return [
        (name, title, substitute(expr, values))
        for name, board in build_dashboards(config).items()
        for title, expr in panel_queries(board)
    ]
