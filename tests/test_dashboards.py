"""The generated Grafana dashboards: committed output is current, every panel is wired, every
metric name exists, uids are stable, and the export/import commands behave (import against a
tiny in-test Grafana, since no Grafana server can run here)."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from otel_ml import _names as n
from otel_ml import cli
from otel_ml.mixin import DEFAULT_CONFIG, dashboard_uid
from otel_ml.mixin._cli import register
from otel_ml.mixin.dashboards import (
    FLEET,
    MODEL,
    TEMPLATE_VARIABLES,
    build_dashboards,
    concrete_queries,
    panel_queries,
    substitute,
)
from otel_ml.mixin.generate import write_dashboards

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "dashboards"
RECORDING_RULES = ROOT / "alert_rules" / "otel-ml-recording.yaml"
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range", "__value", "__data", "__url_time_range"}


@pytest.fixture(scope="module")
def boards() -> dict[str, dict[str, Any]]:
    return build_dashboards(DEFAULT_CONFIG)


def _panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in board["panels"] if p["type"] != "row"]


def main(argv: list[str]) -> int:
    """``otel-ml ARGV`` for the commands of ``otel_ml.mixin._cli``, registered as ``otel_ml.cli`` does.

    Built from this module's ``register`` alone so these tests do not depend on every other
    command module importing; ``test_commands_are_registered`` checks the real CLI lists it.
    """
    parser = argparse.ArgumentParser(prog="otel-ml")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# -- (a) the committed files are what the generator writes -------------------------------------------


def test_committed_dashboards_are_current(tmp_path: Path) -> None:
    write_dashboards(DEFAULT_CONFIG, tmp_path)
    generated = _files(tmp_path)
    assert set(generated) == {FLEET, MODEL, "provisioning/datasource.yaml", "provisioning/dashboards.yaml"}
    committed = _files(COMMITTED)
    stale = sorted(name for name in generated if committed.get(name) != generated[name])
    assert not stale, f"dashboards/ is stale, run `otel-ml mixin generate`: {stale}"
    assert sorted(set(committed) - set(generated)) == [], "files in dashboards/ the generator does not write"


def test_generation_is_deterministic_and_text_is_canonical(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    write_dashboards(DEFAULT_CONFIG, first)
    write_dashboards(DEFAULT_CONFIG, second)
    assert _files(first) == _files(second)
    text = (first / FLEET).read_text()
    assert text.endswith("}\n") and text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"


# -- (b) every panel is wired to the datasource variable, with ids, refIds and queries ------------------


@pytest.mark.parametrize("name", [FLEET, MODEL])
def test_every_panel_has_datasource_id_and_targets(boards: dict[str, dict[str, Any]], name: str) -> None:
    board = boards[name]
    ids = [p["id"] for p in board["panels"]]
    assert all(isinstance(i, int) and i > 0 for i in ids) and len(ids) == len(set(ids)), ids
    panels = _panels(board)
    assert len(panels) >= 15
    for panel in panels:
        where = f"{name} panel {panel['id']} {panel['title']!r}"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
        assert panel.get("description"), where
        targets = panel["targets"]
        assert targets, where
        ref_ids = [t["refId"] for t in targets]
        assert all(ref_ids) and len(set(ref_ids)) == len(ref_ids), where
        for target in targets:
            assert target["expr"].strip(), where
            assert target["datasource"]["uid"] == "${datasource}", where


@pytest.mark.parametrize("name", [FLEET, MODEL])
def test_template_variables_exist_and_are_the_only_ones_used(boards: dict[str, dict[str, Any]], name: str) -> None:
    board = boards[name]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert tuple(variables) == TEMPLATE_VARIABLES
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for var in ("model", "version", "window", "segment"):
        assert variables[var]["type"] == "query" and variables[var]["datasource"]["uid"] == "${datasource}"
        assert "label_values(" in variables[var]["query"]
    assert variables["window"]["multi"] is False  # one window at a time: the drift table is per window
    used = set(re.findall(r"\$\{?(\w+)", json.dumps(board["panels"])))
    assert used - GRAFANA_BUILTINS <= set(variables), used - GRAFANA_BUILTINS - set(variables)
    for var in ("model", "version", "window"):
        assert f"${var}" in json.dumps(board["panels"]), f"{name} never uses ${var}"


@pytest.mark.parametrize("name", [FLEET, MODEL])
def test_layout_fits_the_grid_without_overlaps(boards: dict[str, dict[str, Any]], name: str) -> None:
    cells: dict[tuple[int, int], int] = {}
    for panel in boards[name]["panels"]:
        g = panel["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, (panel["id"], g)
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panel {panel['id']} overlaps panel {cells[(x, y)]}"
                cells[(x, y)] = panel["id"]


def test_feature_drift_table_merges_instant_queries_sorted_by_psi(boards: dict[str, dict[str, Any]]) -> None:
    table = next(p for p in _panels(boards[MODEL]) if p["type"] == "table")
    assert all(t["instant"] and t["format"] == "table" for t in table["targets"])
    ids = [t["id"] for t in table["transformations"]]
    assert ids == ["merge", "organize", "sortBy"]
    renamed = table["transformations"][1]["options"]["renameByName"]
    assert renamed["Value #A"] == "PSI" and renamed[n.LABEL_FEATURE] == "Feature"
    assert table["transformations"][2]["options"]["sort"] == [{"field": "PSI", "desc": True}]
    # every query groups by exactly the same labels, or the merge would not line rows up
    groupings = {re.match(r"\w+ by \(([^)]*)\)", t["expr"]).group(1) for t in table["targets"]}  # type: ignore[union-attr]
    assert groupings == {f"{n.LABEL_MODEL_NAME}, {n.LABEL_MODEL_VERSION}, {n.LABEL_FEATURE}"}


def test_score_heatmap_reads_the_histogram_buckets(boards: dict[str, dict[str, Any]]) -> None:
    heat = next(p for p in _panels(boards[MODEL]) if p["type"] == "heatmap")
    (target,) = heat["targets"]
    assert target["format"] == "heatmap" and target["legendFormat"] == "{{le}}"
    assert target["expr"].startswith(f"sum by (le) (increase({n.PREDICTION_SCORE.prometheus}_bucket{{")
    assert heat["options"]["calculate"] is False


# -- (c) every metric and label name exists in otel_ml._names ----------------------------------------


@functools.cache
def _known_labels() -> set[str]:
    labels = {value for name, value in vars(n).items() if name.startswith("LABEL_") and isinstance(value, str)}
    return labels | {"le", "job", "instance"}


@functools.cache
def _known_series() -> set[str]:
    names: set[str] = set()
    for value in vars(n).values():
        if isinstance(value, n.Instrument):
            names |= {value.prometheus, value.series}
            if value.kind == "histogram":
                names |= {value.prometheus + suffix for suffix in ("_bucket", "_sum", "_count")}
    return names


@functools.cache
def _recording_rules() -> set[str]:
    if not RECORDING_RULES.exists():
        return set()
    groups = yaml.safe_load(RECORDING_RULES.read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def unknown_names(expr: str) -> set[str]:
    """Metric-like identifiers in ``expr`` that are neither a known series, label nor recording rule."""
    tokens = set(re.findall(r"\bml[_:][a-zA-Z0-9_:]*", expr))
    return tokens - _known_series() - _known_labels() - _recording_rules()


def test_unknown_names_catches_a_typo() -> None:
    assert unknown_names('sum by (ml_model_name) (ml_feature_psy{ml_window="1h"})') == {"ml_feature_psy"}
    assert unknown_names("ml:fleet_psi:1h") == ({"ml:fleet_psi:1h"} - _recording_rules())
    assert unknown_names("rate(ml_prediction_duration_seconds_bucket[5m])") == set()


@pytest.mark.parametrize("name", [FLEET, MODEL])
def test_every_metric_name_is_declared_in_names(boards: dict[str, dict[str, Any]], name: str) -> None:
    for title, expr in panel_queries(boards[name]):
        assert not unknown_names(expr), f"{name} {title!r}: {unknown_names(expr)} not in otel_ml._names"
    for variable in boards[name]["templating"]["list"]:
        assert not unknown_names(str(variable.get("query", ""))), variable["name"]


@pytest.mark.parametrize("name", [FLEET, MODEL])
def test_legends_use_labels_the_series_carry(boards: dict[str, dict[str, Any]], name: str) -> None:
    for panel in _panels(boards[name]):
        for target in panel["targets"]:
            for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")):
                assert label in _known_labels(), (panel["title"], label)
                if label != n.LABEL_LE:  # a heatmap keeps le by design
                    assert label in target["expr"], (panel["title"], label)


# -- (d) uids come from the config and are stable ------------------------------------------------------


def test_uids_come_from_config_and_are_stable(boards: dict[str, dict[str, Any]]) -> None:
    for name, board in boards.items():
        assert board["uid"] == DEFAULT_CONFIG.dashboard_uids[name] == dashboard_uid(name)
    assert boards[FLEET]["uid"] == "otelml-7fb53b689692"  # a changed uid breaks every bookmarked link
    custom = DEFAULT_CONFIG.with_overrides(dashboard_uids={FLEET: "team-fleet", MODEL: "team-model"})
    rebuilt = build_dashboards(custom)
    assert rebuilt[FLEET]["uid"] == "team-fleet" and rebuilt[MODEL]["uid"] == "team-model"
    assert "/d/team-model" in json.dumps(rebuilt[FLEET]) and "/d/team-fleet" in json.dumps(rebuilt[MODEL])


def test_dashboards_are_a_function_of_the_config() -> None:
    config = DEFAULT_CONFIG.with_overrides(
        app_selector='namespace="fraud"',
        sidecar_selector='job="ml-sc"',
        dashboard_tags=("x",),
        dashboard_refresh="30s",
        alert_window="24h",
    )
    boards = build_dashboards(config)
    app = n.APP_INSTRUMENTS + n.APP_GAUGES  # the app's gauges (price table) are scraped from the app too
    app_series = {s for i in app for s in (i.series, i.prometheus + "_bucket", i.prometheus + "_count")}
    # the last skew replay's series, pushed to a Pushgateway (skew_selector, job="otel_ml_skew" by default)
    skew_series = {s for i in n.SKEW_INSTRUMENTS for s in (i.series, i.prometheus + "_bucket")}
    for board in boards.values():
        assert board["tags"] == ["x"] and board["refresh"] == "30s"
        for title, expr in panel_queries(board):
            assert "otel-ml-sidecar" not in expr, title
            for series, selector in re.findall(r"\b(ml_\w+)\{([^}]*)\}", expr):
                wanted = 'namespace="fraud"' if series in app_series else 'job="ml-sc"'
                wanted = 'job="otel_ml_skew"' if series in skew_series else wanted
                assert wanted in selector, (title, series, selector)
        window = next(v for v in board["templating"]["list"] if v["name"] == "window")
        assert window["current"]["value"] == "24h"


# -- concrete PromQL for the end-to-end test ---------------------------------------------------------------


def test_concrete_queries_substitute_every_variable() -> None:
    queries = concrete_queries(DEFAULT_CONFIG, model="fraud", window="1h", rate_interval="30s")
    assert {name for name, _, _ in queries} == {FLEET, MODEL}
    assert len(queries) == sum(len(panel_queries(b)) for b in build_dashboards().values())
    for _, title, expr in queries:
        assert "$" not in expr, (title, expr)
        assert "[30s]" in expr or "rate(" not in expr, title
    assert any('ml_model_name=~"fraud"' in expr and 'ml_window="1h"' in expr for _, _, expr in queries)


def test_substitute_rejects_unknown_variables() -> None:
    assert substitute('x{a=~"$model"}[${__rate_interval}]', {"model": "m", "__rate_interval": "1m"}) == 'x{a=~"m"}[1m]'
    with pytest.raises(ValueError, match=r"\$modle"):
        substitute('x{a=~"$modle"}', {"model": "m"})


# -- provisioning ----------------------------------------------------------------------------------------


def test_provisioning_files_are_valid_grafana_provisioning() -> None:
    ds = yaml.safe_load((COMMITTED / "provisioning" / "datasource.yaml").read_text())
    (source,) = ds["datasources"]
    assert ds["apiVersion"] == 1 and source["type"] == "prometheus"
    assert source["url"] == "http://127.0.0.1:9090" and source["uid"] == "otel-ml-prometheus"
    prov = yaml.safe_load((COMMITTED / "provisioning" / "dashboards.yaml").read_text())
    (provider,) = prov["providers"]
    assert provider["type"] == "file" and provider["folder"] == DEFAULT_CONFIG.grafana_folder
    assert provider["options"]["path"].startswith("/")


# -- (e) otel-ml dashboards export ---------------------------------------------------------------------------


def test_commands_are_registered_in_the_cli() -> None:
    assert "otel_ml.mixin._cli" in cli._COMMAND_MODULES


def test_cli_export_writes_the_committed_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dashboards", "export", str(tmp_path / "out")]) == 0
    exported = _files(tmp_path / "out")
    assert exported == _files(COMMITTED)
    assert "otel-ml-fleet.json" in capsys.readouterr().out


def test_cli_mixin_generate_writes_dashboards(tmp_path: Path) -> None:
    assert main(["mixin", "generate", "--output-dir", str(tmp_path)]) == 0
    assert _files(tmp_path / "dashboards") == _files(COMMITTED)


def test_cli_export_applies_a_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text(
        "dashboard_tags: [fraud, ml]\ndashboard_refresh: 5m\n"
        "dashboard_uids: {otel-ml-fleet.json: fraud-fleet, otel-ml-model.json: fraud-model}\n"
    )
    assert main(["dashboards", "export", str(tmp_path / "out"), "--config", str(overrides)]) == 0
    fleet = json.loads((tmp_path / "out" / "otel-ml-fleet.json").read_text())
    model = json.loads((tmp_path / "out" / "otel-ml-model.json").read_text())
    assert (fleet["uid"], fleet["tags"], fleet["refresh"]) == ("fraud-fleet", ["fraud", "ml"], "5m")
    assert model["uid"] == "fraud-model"
    overrides.write_text("dashboard_refresh: 5m\ndashbaord_tags: [x]\n")
    assert main(["dashboards", "export", str(tmp_path / "bad"), "--config", str(overrides)]) == 2
    assert "unknown MixinConfig field(s): dashbaord_tags" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


# -- (f) otel-ml dashboards import, against a tiny fake Grafana --------------------------------------------

GOOD_TOKEN = "glsa_good-token"


class FakeGrafana(ThreadingHTTPServer):
    """The four Grafana endpoints grafana-client calls for an import; records every request."""

    def __init__(self, reject_with: int | None = None, folders: list[dict[str, Any]] | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.reject_with = reject_with
        self.folders = list(folders or [])
        self.requests: list[tuple[str, str, str | None, Any]] = []
        self.versions: dict[str, int] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def posted(self) -> list[dict[str, Any]]:
        return [body for method, path, _, body in self.requests if (method, path) == ("POST", "/api/dashboards/db")]


class _Handler(BaseHTTPRequestHandler):
    server: FakeGrafana

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body: Any = json.loads(self.rfile.read(length)) if length else {}
        auth = self.headers.get("Authorization")
        self.server.requests.append((method, self.path.split("?")[0], auth, body))
        if self.server.reject_with or auth != f"Bearer {GOOD_TOKEN}":
            status = self.server.reject_with or 401
            self._reply(status, {"message": "invalid API key" if status == 401 else "Permission denied"})
        elif (method, self.path.split("?")[0]) == ("GET", "/api/folders"):
            self._reply(200, self.server.folders)
        elif (method, self.path) == ("POST", "/api/folders"):
            folder = {"id": 7, "uid": "folder-uid-7", "title": body["title"]}
            self.server.folders.append(folder)
            self._reply(200, folder)
        elif (method, self.path) == ("POST", "/api/dashboards/db"):
            uid = body["dashboard"]["uid"]
            self.server.versions[uid] = self.server.versions.get(uid, 0) + 1
            self._reply(
                200,
                {
                    "id": 1,
                    "uid": uid,
                    "url": f"/d/{uid}/x",
                    "status": "success",
                    "version": self.server.versions[uid],
                    "slug": "x",
                },
            )
        else:
            self._reply(404, {"message": "not found"})

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")


@pytest.fixture
def grafana(request: pytest.FixtureRequest) -> Iterator[FakeGrafana]:
    server = FakeGrafana(**getattr(request, "param", {}))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_import_creates_the_folder_and_overwrites_dashboards(
    grafana: FakeGrafana, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRAFANA_TOKEN", GOOD_TOKEN)  # the token from the environment, not argv
    assert main(["dashboards", "import", "--grafana-url", grafana.url]) == 0
    methods = [(m, p) for m, p, _, _ in grafana.requests]
    assert methods == [
        ("GET", "/api/folders"),
        ("POST", "/api/folders"),
        ("POST", "/api/dashboards/db"),
        ("POST", "/api/dashboards/db"),
    ]
    assert grafana.requests[1][3] == {"title": DEFAULT_CONFIG.grafana_folder}
    posted = grafana.posted()
    assert {b["dashboard"]["uid"] for b in posted} == set(DEFAULT_CONFIG.dashboard_uids.values())
    for body in posted:
        assert body["overwrite"] is True and body["folderUid"] == "folder-uid-7"
        assert body["dashboard"]["id"] is None
        assert (
            body["dashboard"]["panels"]
            == build_dashboards()[
                next(k for k, v in DEFAULT_CONFIG.dashboard_uids.items() if v == body["dashboard"]["uid"])
            ]["panels"]
        )
    assert "imported otel-ml-fleet.json" in capsys.readouterr().out

    # a second import reuses the folder and replaces the dashboards (version 2), adding no copies
    assert main(["dashboards", "import", "--grafana-url", grafana.url + "/", "--token", GOOD_TOKEN]) == 0
    assert [(m, p) for m, p, _, _ in grafana.requests[4:]] == [
        ("GET", "/api/folders"),
        ("POST", "/api/dashboards/db"),
        ("POST", "/api/dashboards/db"),
    ]
    assert set(grafana.versions.values()) == {2}
    assert all(a == f"Bearer {GOOD_TOKEN}" for _, _, a, _ in grafana.requests)


@pytest.mark.parametrize("grafana", [{"folders": [{"id": 3, "uid": "existing", "title": "ML"}]}], indirect=True)
def test_import_into_an_existing_folder_named_on_the_command_line(grafana: FakeGrafana) -> None:
    assert main(["dashboards", "import", "--grafana-url", grafana.url, "--token", GOOD_TOKEN, "--folder", "ML"]) == 0
    assert all(b["folderUid"] == "existing" for b in grafana.posted()) and len(grafana.posted()) == 2
    assert ("POST", "/api/folders") not in [(m, p) for m, p, _, _ in grafana.requests]


@pytest.mark.parametrize("grafana, status", [({}, 401), ({"reject_with": 403}, 403)], indirect=["grafana"])
def test_import_with_a_rejected_token_fails_clearly(
    grafana: FakeGrafana, status: int, capsys: pytest.CaptureFixture[str]
) -> None:
    token = "wrong" if status == 401 else GOOD_TOKEN
    assert main(["dashboards", "import", "--grafana-url", grafana.url, "--token", token]) == 1
    err = capsys.readouterr().err
    assert "Grafana rejected the token" in err and f"HTTP {status}" in err, err
    assert "Traceback" not in err and token not in err.replace("token", "")
    assert grafana.posted() == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_import_to_an_unreachable_grafana_fails_clearly(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    assert main(["dashboards", "import", "--grafana-url", url, "--token", GOOD_TOKEN, "--timeout", "3"]) == 1
    err = capsys.readouterr().err
    assert f"cannot reach Grafana at {url}" in err and "Traceback" not in err, err


def test_import_without_a_url_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GRAFANA_URL", raising=False)
    assert main(["dashboards", "import", "--token", GOOD_TOKEN]) == 2
    assert "--grafana-url" in capsys.readouterr().err


# -- every panel's PromQL against a real Prometheus (app metrics from a real @monitor) -----------------


def _free_port() -> int:
    return _closed_port()


class _SidecarStandIn:
    """Sidecar gauges with plausible values for every feature, so each drift panel has a series.

    Only the names and labels matter here: the sidecar's own tests check its numbers. Counters a
    healthy sidecar has not incremented (ingest errors) are left out on purpose.
    """

    def __init__(self, baseline: Any, *others: Any) -> None:
        import time as _time

        self.baseline = baseline
        self.others = others  # more versions of the model: their reference score bins (version PSI)
        self.started = _time.time()

    def collect(self) -> Iterator[Any]:
        import time as _time

        from prometheus_client.core import GaugeMetricFamily

        b = self.baseline
        base = {n.LABEL_MODEL_NAME: b.model_name, n.LABEL_MODEL_VERSION: b.model_version, n.LABEL_WINDOW: "1h"}

        def family(inst: n.Instrument, rows: list[tuple[dict[str, str], float]]) -> Any:
            labels = sorted({k for r, _ in rows for k in r} | set(base))
            fam = GaugeMetricFamily(inst.series, inst.description, labels=labels)
            for extra, value in rows:
                merged = {**base, **extra}
                fam.add_metric([merged[k] for k in labels], value)
            return fam

        features = [f.name for f in b.features]
        categorical = [f.name for f in b.categorical]

        def per_feature(value: float) -> list[tuple[dict[str, str], float]]:
            return [({n.LABEL_FEATURE: f}, value + i / 100) for i, f in enumerate(features)]

        yield family(n.FEATURE_PSI, per_feature(0.05))
        yield family(n.FEATURE_PSI_CRITICAL, per_feature(0.02))
        yield family(n.FEATURE_JS_DISTANCE, per_feature(0.1))
        yield family(n.FEATURE_DRIFT_PVALUE, per_feature(0.001))
        yield family(n.FEATURE_DRIFT_STATUS, [({n.LABEL_FEATURE: f}, float(i % 4 - 1)) for i, f in enumerate(features)])
        yield family(n.FEATURE_WINDOW_COUNT, per_feature(1000))
        yield family(n.FEATURE_MISSING_RATIO, per_feature(0.0))
        yield family(n.FEATURE_UNKNOWN_RATIO, [({n.LABEL_FEATURE: f}, 0.01) for f in categorical])
        for inst, value in ((n.SCORE_PSI, 0.03), (n.SCORE_PSI_CRITICAL, 0.02), (n.SCORE_DRIFT_STATUS, 1.0)):
            yield family(inst, [({}, value)])
        segments = [(n.ALL, n.ALL), ("country", "US"), ("country", "DE")]
        seg = [{n.LABEL_SEGMENT_KEY: k, n.LABEL_SEGMENT: s} for k, s in segments]
        dec = [{**s, n.LABEL_DECISION: d} for s in seg for d in ("True", "False")]
        yield family(n.SEGMENT_DECISION_RATE, [(d, 0.5) for d in dec])
        yield family(
            n.SEGMENT_DECISION_RATE_CHANGE,
            [({**d, n.LABEL_REFERENCE: r}, 0.1) for d in dec for r in (n.REFERENCE_PREVIOUS, n.REFERENCE_BASELINE)],
        )
        refs = [{**d, n.LABEL_REFERENCE: r} for d in dec for r in (n.REFERENCE_PREVIOUS, n.REFERENCE_BASELINE)]
        yield family(n.SEGMENT_DECISION_RATE_STATUS, [(r, float(i % 4 - 1)) for i, r in enumerate(refs)])
        yield family(n.SEGMENT_DECISION_RATE_PVALUE, [(r, 0.2) for r in refs])
        yield family(n.SEGMENT_WINDOW_COUNT, [(s, 500.0) for s in seg])
        served = [{**s, n.LABEL_THRESHOLD: n.THRESHOLD_SERVED} for s in seg]
        for inst in (n.ONLINE_PRECISION, n.ONLINE_RECALL, n.ONLINE_F1):
            yield family(inst, [(s, 0.8) for s in served])
        for inst in (
            n.ONLINE_ACCURACY,
            n.ONLINE_BRIER,
            n.ONLINE_LABEL_COUNT,
            n.ONLINE_ROC_AUC,
            n.ONLINE_CALIBRATION_ERROR,
            n.ONLINE_LOG_LOSS,
        ):
            yield family(inst, [(s, 0.8) for s in seg])
        for inst in (n.ESTIMATED_ROC_AUC, n.ESTIMATED_PRECISION, n.ESTIMATED_RECALL, n.ESTIMATED_F1):
            yield family(inst, [({}, 0.78)])
        metrics = [{n.LABEL_METRIC: m} for m in ("roc_auc", "precision", "recall")]
        for inst, value in (
            (n.REFERENCE_BAND_LOWER, 0.75),
            (n.REFERENCE_BAND_UPPER, 0.85),
            (n.ESTIMATED_VS_REALISED_GAP, -0.02),
        ):
            yield family(inst, [(m, value) for m in metrics])
        yield from self._labels(b)
        yield self._score_reference(b, *self.others)
        last = GaugeMetricFamily(n.SIDECAR_LAST_INGEST.series, "", labels=[n.LABEL_MODEL_NAME, n.LABEL_MODEL_VERSION])
        last.add_metric([b.model_name, b.model_version], _time.time())
        yield last

    def _score_reference(self, *baselines: Any) -> Any:
        """The baselines' score fractions per bin, as the sidecar exports them for each version."""
        from prometheus_client.core import GaugeMetricFamily

        labels = [n.LABEL_MODEL_NAME, n.LABEL_MODEL_VERSION, n.LABEL_BIN_UPPER, n.LABEL_BIN_LOWER]
        fam = GaugeMetricFamily(n.SCORE_REFERENCE_RATIO.series, n.SCORE_REFERENCE_RATIO.description, labels=labels)
        for b in baselines:
            for (upper, lower), share in zip(n.bin_bounds(b.score.edges), b.score.fractions):
                fam.add_metric([b.model_name, b.model_version, upper, lower], share)
        return fam

    def _labels(self, b: Any) -> Iterator[Any]:
        """Coverage by cohort, a label delay histogram and join-store health; counters grow with time."""
        import time as _time

        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        model = [b.model_name, b.model_version]
        mv = [n.LABEL_MODEL_NAME, n.LABEL_MODEL_VERSION]
        cohort = [*mv, n.LABEL_COHORT_AGE, n.LABEL_DECISION]
        for inst, value in ((n.LABEL_COVERAGE, 0.6), (n.LABEL_COHORT_PREDICTIONS, 1000.0)):
            fam = GaugeMetricFamily(inst.series, inst.description, labels=cohort)
            for age in ("1d", "7d", "30d"):
                for decision in (n.ALL, "True", "False"):
                    fam.add_metric([*model, age, decision], value)
            yield fam
        ticks = _time.time() - self.started
        buckets = [(format(bound, "g"), ticks * (i + 1)) for i, bound in enumerate(n.LABEL_DELAY_BUCKETS)]
        delay = HistogramMetricFamily(n.LABEL_DELAY.prometheus, n.LABEL_DELAY.description, labels=mv)
        delay.add_metric(model, [*buckets, ("+Inf", ticks * 20)], sum_value=ticks * 1e5)
        yield delay
        for inst, label, values in (
            (n.LABELS_RECEIVED, n.LABEL_SOURCE, ("api", "token")),
            (n.LABELS_UNMATCHED, n.LABEL_REASON, ("unknown_request_id", "duplicate")),
            (n.JOIN_STORE_EVICTED, n.LABEL_REASON, ("ttl",)),
        ):
            counter = CounterMetricFamily(inst.prometheus, inst.description, labels=[label])
            for value in values:
                counter.add_metric([value], ticks)
            yield counter
        for inst, value in ((n.JOIN_STORE_ROWS, 12345.0), (n.JOIN_STORE_BYTES, 345660.0), (n.JOIN_SAMPLE_RATIO, 1.0)):
            yield GaugeMetricFamily(inst.series, inst.description, value=value)


class _CostReviewStandIn:
    """What the app's cost capture (with a price table) and review sampler, the sidecar's review queue and
    OpenCost's exporter expose (issue 16), for the Cost and Review rows: counters grow with time, names and
    labels from ``_names``. ``side`` picks the half: "app" (registered with the app's registry) or "sidecar".
    The monitor below has no price table and no review=, so none of these clash with its own series."""

    STRATA = ("(-Inf,0.65]", "(0.65,0.7]", "(0.7,+Inf)")

    def __init__(self, baseline: Any, side: str) -> None:
        import time as _time

        self.baseline, self.side, self.started = baseline, side, _time.time()

    def collect(self) -> Iterator[Any]:
        import time as _time

        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        ticks = 1 + _time.time() - self.started
        mv = [n.LABEL_MODEL_NAME, n.LABEL_MODEL_VERSION]
        model = [self.baseline.model_name, self.baseline.model_version]
        strata = [n.LABEL_SEGMENT_KEY, n.LABEL_SEGMENT, n.LABEL_STRATUM]

        def counter(inst: n.Instrument, labels: list[str], rows: list[tuple[list[str], float]]) -> Any:
            family = CounterMetricFamily(inst.prometheus, inst.description, labels=[*mv, *labels])
            for values, per_second in rows:
                family.add_metric([*model, *values], per_second * ticks)
            return family

        def gauge(name: str, labels: list[str], rows: list[tuple[list[str], float]], with_model: bool = True) -> Any:
            family = GaugeMetricFamily(name, name, labels=[*(mv if with_model else []), *labels])
            for values, value in rows:
                family.add_metric([*(model if with_model else []), *values], value)
            return family

        per_stratum = [[n.ALL, n.ALL, h] for h in self.STRATA]
        if self.side == "app":
            cost = [n.LABEL_COST_SOURCE, n.LABEL_COST_BASIS, n.LABEL_SEGMENT_KEY, n.LABEL_SEGMENT]
            yield counter(
                n.COST,
                cost,
                [
                    ([n.COST_COMPUTE, n.BASIS_CONFIGURED_RATE, "country", "US"], 0.002),
                    ([n.COST_COMPUTE, n.BASIS_CONFIGURED_RATE, "country", "DE"], 0.001),
                    ([n.COST_API, n.BASIS_BILLED, "country", "US"], 0.003),
                    ([n.COST_TOKENS, n.BASIS_CONFIGURED_RATE, "country", "DE"], 0.001),
                ],
            )
            # CPU time (ml_prediction_cpu_seconds_total, ml_process_cpu_seconds_total): the real @monitor's
            yield counter(n.TOKENS, [n.LABEL_TOKEN_TYPE], [([t], 40.0) for t in n.TOKEN_TYPES])
            yield counter(n.REVIEW_POPULATION, strata, [(h, 100.0 / (i + 1)) for i, h in enumerate(per_stratum)])
            yield counter(n.REVIEW_SAMPLED, strata, [(h, 2.0) for h in per_stratum])
            yield gauge(n.PRICE_CONFIG_UPDATED.series, [], [([], self.started - 86400 * 30)])
            # the capture spool (issue 17): the monitor below captures nothing, so these do not clash
            yield counter(n.CAPTURE_RECORDS, [], [([], 0.5)])
            yield counter(n.CAPTURE_WRITTEN, [], [([], 1000.0)])
            yield counter(n.CAPTURE_DROPPED, [n.LABEL_REASON], [([n.CAPTURE_DROP_QUEUE_FULL], 0.01)])
            return
        labelled = [(h + [o], 1.0 if o == n.REVIEW_CORRECT else 0.2) for h in per_stratum for o in n.REVIEW_OUTCOMES]
        yield counter(n.REVIEW_LABELLED, [*strata, n.LABEL_OUTCOME], labelled)
        yield gauge(n.REVIEW_PENDING.series, [], [([], 42.0)])
        yield gauge(n.REVIEW_OLDEST_PENDING.series, [], [([], 3600.0)])
        yield gauge(n.REFERENCE_PERFORMANCE.series, [n.LABEL_METRIC], [(["accuracy"], 0.9)])
        window = {n.LABEL_WINDOW: "1h"}
        yield gauge(n.ESTIMATED_ACCURACY.series, list(window), [(list(window.values()), 0.88)])
        pod = [n.LABEL_NAMESPACE, n.LABEL_POD, n.LABEL_CONTAINER, n.LABEL_NODE]
        for name, value in ((n.OPENCOST_CPU_ALLOCATION, 2.0), (n.OPENCOST_MEMORY_ALLOCATION, 2.0**31)):
            yield gauge(name, pod, [(["ml", "app-0", "app", "n1"], value)], with_model=False)
        for name, value in ((n.OPENCOST_NODE_CPU_COST, 0.03), (n.OPENCOST_NODE_RAM_COST, 0.004)):
            yield gauge(name, [n.LABEL_NODE], [(["n1"], value)], with_model=False)


def _skew_replay(baseline: Any) -> Any:
    """The series of one skew replay of the baseline's model version, for the Training/serving skew row."""
    import time as _time

    import numpy as np
    from _skew_series import Replay, registry

    every = (n.ALL, n.ALL)
    replay = Replay(
        model=baseline.model_name,
        version=baseline.model_version,
        rows={every: 1000, ("country", "US"): 600, ("country", "DE"): 400},
        flips={(*every, "false_to_true"): 12, ("country", "US", "false_to_true"): 12},
        features={"balance_z": {n.SKEW_MATCH: 990, n.SKEW_BIN_CHANGE: 10}},
        errors={"pipeline": 1},
        deltas=np.random.default_rng(3).normal(0.0, 0.02, 1000),
        finished=_time.time() - 3600,
    )
    return registry(replay)


def _prometheus_query(port: int, expr: str) -> list[Any]:
    import urllib.parse
    import urllib.request

    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:  # 400: the expression does not parse
        raise AssertionError(f"{expr}\n-> {exc.read().decode()}") from exc
    return list(answer["data"]["result"])


# Panels of recording rules over the sidecar's join-time counters: this stand-in sidecar has
# gauges only, so test_e2e.py (a real sidecar joining real labels) checks these panels.
_NEED_JOINED_LABELS = ("ml:shadow_accuracy_difference:", "ml:online_")


@pytest.mark.e2e
def test_every_panel_query_returns_data_from_a_real_prometheus(
    tmp_path: Path, baseline: Any, training_frame: Any
) -> None:
    import shutil
    import subprocess
    import time

    import numpy as np
    from prometheus_client import CollectorRegistry, start_http_server

    from otel_ml import Shadow, monitor
    from otel_ml.mixin.generate import write_rule_files

    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (scripts/test installs it)")

    app_registry, sidecar_registry = CollectorRegistry(), CollectorRegistry()
    candidate = dataclasses.replace(baseline, model_version=baseline.model_version + "-candidate")
    sidecar_registry.register(_SidecarStandIn(baseline, candidate))
    app_registry.register(_CostReviewStandIn(baseline, "app"))
    sidecar_registry.register(_CostReviewStandIn(baseline, "sidecar"))
    rows = training_frame.drop(columns=["score"])

    def predict_v2(frame: Any) -> Any:  # a candidate in shadow: the versions row needs its pairs and series
        return np.clip(frame["balance_z"].to_numpy() / 3.8 + 0.5, 0, 1)

    shadow = Shadow(predict_v2, baseline=candidate)

    @monitor(baseline=baseline, segments=["country", "device"], decision=0.7, registry=app_registry, shadow=[shadow])
    def predict(frame: Any) -> Any:
        return np.clip(frame["balance_z"].to_numpy() / 4 + 0.5, 0, 1)

    skew_registry = _skew_replay(baseline)
    registries = (app_registry, sidecar_registry, skew_registry)
    servers = [start_http_server(0, addr="127.0.0.1", registry=r) for r in registries]
    app_port, sidecar_port, skew_port = (server.server_port for server, _ in servers)
    stop = threading.Event()

    def traffic() -> None:
        offset = 0
        while not stop.wait(0.05):
            predict(rows.iloc[offset : offset + 50])
            offset = (offset + 50) % (len(rows) - 50)

    load = threading.Thread(target=traffic, daemon=True)
    load.start()
    port = _free_port()
    recording = [str(p) for p in write_rule_files(DEFAULT_CONFIG, tmp_path / "rules") if "recording" in p.name]
    (tmp_path / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": recording,  # the versions row reads recording rules
                "scrape_configs": [
                    {  # namespace and pod as Kubernetes service discovery adds them (the allocation joins on them)
                        "job_name": "otel-ml-app",
                        "static_configs": [
                            {"targets": [f"127.0.0.1:{app_port}"], "labels": {"namespace": "ml", "pod": "app-0"}}
                        ],
                    },
                    {"job_name": "otel-ml-sidecar", "static_configs": [{"targets": [f"127.0.0.1:{sidecar_port}"]}]},
                    {  # the last skew replay, as a Pushgateway would expose it (tests/test_skew_rules_live.py pushes)
                        "job_name": n.SKEW_JOB,
                        "honor_labels": True,
                        "static_configs": [{"targets": [f"127.0.0.1:{skew_port}"]}],
                    },
                ],
            }
        )
    )
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--web.external-url=http://127.0.0.1:{port}/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        probe = f"rate({n.PREDICTION_DURATION.prometheus}_count[10s]) > 0"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if _prometheus_query(port, probe) and _prometheus_query(port, n.SIDECAR_LAST_INGEST.series):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("Prometheus never scraped the app and the stand-in sidecar")
        # rates and increases need two scrapes of every target: retry the empty ones for a while
        empty = [
            query
            for query in concrete_queries(DEFAULT_CONFIG, model=baseline.model_name, window="1h", rate_interval="10s")
            if not any(name in query[2] for name in _NEED_JOINED_LABELS)
        ]
        deadline = time.monotonic() + 30
        while empty and time.monotonic() < deadline:
            empty = [(name, title, expr) for name, title, expr in empty if not _prometheus_query(port, expr)]
            if empty:
                time.sleep(1)
        assert not empty, "panels without data:\n" + "\n".join(f"{a} {b!r}: {c}" for a, b, c in empty)
    finally:
        stop.set()
        load.join(5)
        shadow.close()
        proc.terminate()
        proc.wait(10)
        for server, _thread in servers:
            server.shutdown()
            server.server_close()
