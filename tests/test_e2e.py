"""The whole loop, for real: a live model behind ``@monitor``, the sidecar, a real Prometheus
evaluating the shipped rules, a real Alertmanager paging a webhook run by this test.

Everything runs on 127.0.0.1 with free ports and temporary directories, and is torn down even
when an assertion fails. The rules are the shipped generator's output with short ``for:``
durations and a one-minute sidecar window, so a run takes a few minutes. Two paths: the
sidecar and Prometheus scrape the app, or the app pushes OTLP/HTTP to the sidecar.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otel_ml import OtlpMetricsPusher
from otel_ml.demo._faults import FAULTS
from otel_ml.demo._model import SEGMENT, THRESHOLD, DemoModel, train_demo_model
from otel_ml.demo._run import demo_mixin_config, demo_prices
from otel_ml.demo._server import ModelServer
from otel_ml.demo._stack import PUSHGATEWAY, PrometheusStack, free_port, stack_binaries
from otel_ml.demo._traffic import Traffic
from otel_ml.demo._webhook import WebhookReceiver
from otel_ml.mixin import DEFAULT_CONFIG
from otel_ml.mixin.dashboards import concrete_queries
from otel_ml.mixin.generate import write_rule_files
from otel_ml.sidecar import ScrapeTarget, Sidecar, SidecarConfig
from otel_ml.sidecar._config import parse_listen

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        stack_binaries() is None or shutil.which(PUSHGATEWAY) is None,
        reason="apt-get install prometheus prometheus-alertmanager prometheus-pushgateway",
    ),
]

ROOT = Path(__file__).resolve().parents[1]
WINDOW = "1m"
RATE = 150.0
CLEAN_SECONDS = 80.0  # a full window plus the rules' for: (10 s) plus margin
FAULT = {f.name: f for f in FAULTS}


def e2e_config() -> Any:
    """The shipped rules, shortened: the shipped runbook URL pattern is kept on purpose."""
    return demo_mixin_config(WINDOW).with_overrides(
        runbook_url_pattern=DEFAULT_CONFIG.runbook_url_pattern,
        sidecar_down_for="30s",
        fleet_psi_windows=(WINDOW,),
    )


class Loop:
    """App + sidecar + traffic + Prometheus + Alertmanager + webhook, in either input mode."""

    def __init__(self, tmp: Path, model: DemoModel, mode: str) -> None:
        self.mode = mode
        self.parts: list[Any] = []
        sidecar_url = f"http://127.0.0.1:{free_port()}"
        self.tracer_provider = TracerProvider(resource=Resource.create({"service.name": "risk-model"}))
        self.tracer_provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=sidecar_url + "/v1/traces"), schedule_delay_millis=500)
        )
        self.capture_dir = tmp / "capture"
        self.baseline_file = model.baseline.save(tmp / "risk-v1.baseline.json")
        self.app = ModelServer(
            model,
            tracer_provider=self.tracer_provider,
            review_url=sidecar_url,
            prices=demo_prices(),
            capture_dir=self.capture_dir,
        ).start()
        self.parts.append(self.app.stop)
        self.parts.append(self.tracer_provider.shutdown)
        scrape = (ScrapeTarget(self.app.url + "/metrics", 1.0, 1.0),) if mode == "scrape" else ()
        self.sidecar = Sidecar(
            SidecarConfig(
                baselines=(
                    self.baseline_file,
                    model.candidate_baseline.save(tmp / "risk-v2.baseline.json"),  # the shadow version
                ),
                listen=parse_listen(sidecar_url.removeprefix("http://")),
                scrape=scrape,
                windows=(WINDOW,),
            )
        ).start()
        self.parts.append(self.sidecar.stop)
        if mode == "otlp":
            pusher = OtlpMetricsPusher(
                sidecar_url + "/v1/metrics", registry=self.app.registry, export_interval_millis=1000
            ).start()
            self.parts.append(pusher.shutdown)
        self.webhook = WebhookReceiver().start()
        self.parts.append(self.webhook.stop)
        rules = [p for p in write_rule_files(e2e_config(), tmp / "rules") if "prometheusrule" not in p.name]
        targets = {"otel-ml-sidecar": [sidecar_url.removeprefix("http://")]}
        if mode == "scrape":
            targets["risk-model"] = [self.app.url.removeprefix("http://")]
        self.stack = PrometheusStack(
            tmp / "stack", targets=targets, rule_files=rules, webhook_url=self.webhook.url, pushgateway=True
        )
        self.parts.append(self.stack.stop)
        self.stack.start()
        self.traffic = Traffic(
            model, self.app.url, rate=RATE, labels_url=sidecar_url + "/v1/labels", review_url=sidecar_url
        ).start()
        self.parts.append(self.traffic.stop)

    def close(self) -> None:
        for stop in reversed(self.parts):
            try:
                stop()
            except Exception:
                pass

    def firing(self, alertname: str, **labels: str) -> list[dict[str, Any]]:
        return [
            a
            for a in self.webhook.alerts("firing")
            if a["labels"]["alertname"] == alertname and all(a["labels"].get(k) == v for k, v in labels.items())
        ]

    def wait_for_page(self, alertname: str, timeout: float = 120.0, **labels: str) -> dict[str, Any]:
        """The first page for the served version (the shadow v2 sees the same faults and pages too)."""
        labels.setdefault("ml_model_version", "v1")
        pages = self.stack.wait_for(
            lambda: self.firing(alertname, **labels), timeout, f"a page {alertname} {labels}", interval=1.0
        )
        return pages[0]


@pytest.fixture(scope="module")
def model() -> DemoModel:
    return train_demo_model()


@pytest.fixture(params=["scrape", "otlp"])
def loop(request: pytest.FixtureRequest, tmp_path: Path, model: DemoModel) -> Iterator[Loop]:
    running = Loop(tmp_path, model, request.param)
    try:
        yield running
    finally:
        running.close()


def runbook_file(url: str) -> Path:
    prefix, _, suffix = DEFAULT_CONFIG.runbook_url_pattern.partition("{alertname}")
    assert url.startswith(prefix) and url.endswith(suffix), url
    return ROOT / "runbooks" / (url[len(prefix) : len(url) - len(suffix)] + suffix)


def check_page(page: dict[str, Any], alertname: str, feature: str) -> None:
    labels, annotations = page["labels"], page["annotations"]
    assert labels["alertname"] == alertname
    assert labels["ml_model_name"] == "risk" and labels["ml_model_version"] == "v1"
    assert labels["ml_feature"] == feature
    assert labels["severity"] in ("warning", "critical") and labels["team"] == DEFAULT_CONFIG.team
    assert feature in annotations["description"] and "risk" in annotations["summary"] + annotations["description"]
    path = runbook_file(annotations["runbook_url"])
    assert path.is_file(), annotations["runbook_url"]
    assert path.stem == alertname


def post_old_cohorts(loop: Loop, model: DemoModel) -> None:
    """Predictions made 1, 7 and 30 days ago (the batch path takes their times), half of them
    labelled now: the label coverage panels need cohorts older than this test."""
    import numpy as np

    from otel_ml import export_predictions

    rows = model.frame.iloc[:120]
    scores = model.score(rows)
    now = time.time()
    for age in (1, 7, 30):  # the middle of the cohort's day: the last whole UTC day that ended >= age ago
        cohort_day = (now - age * 86400) // 86400 - 1
        rids = [f"cohort-{age}-{i}" for i in range(len(rows))]
        export_predictions(
            loop.sidecar.url,
            model=model.baseline.model_name,
            version=model.baseline.model_version,
            request_ids=rids,
            scores=scores.tolist(),
            decisions=["true" if s > THRESHOLD else "false" for s in scores],
            segments={SEGMENT: rows[SEGMENT].astype(str).tolist()},
            times=[(cohort_day + 0.5) * 86400] * len(rows),
        )
        labels = [{"request_id": r, "label": int(y)} for r, y in zip(rids[::2], np.asarray(model.labels[:120])[::2])]
        requests.post(loop.sidecar.url + "/v1/labels", json={"labels": labels}, timeout=10).raise_for_status()


def check_rollout_queries(stack: PrometheusStack) -> None:
    """The shipped Argo Rollouts and Flagger queries, on this Prometheus: v2 (the demo's shadow) gets a
    number in {-1, 0, 1} for the demo's window, and a version that never ran gets 0, never nothing."""
    import yaml

    from otel_ml.demo._model import CANDIDATE_VERSION

    argo = yaml.safe_load((ROOT / "exporters/rollouts/argo-analysistemplate.yaml").read_text())
    flagger = yaml.safe_load((ROOT / "exporters/rollouts/flagger-metrictemplate.yaml").read_text())
    templates = {
        "argo": (argo["spec"]["metrics"][0]["provider"]["prometheus"]["query"], "{{args.%s}}"),
        "flagger": (flagger["spec"]["query"], "{{ variables.%s }}"),
    }
    for name, (query, slot) in templates.items():
        for candidate, allowed in ((CANDIDATE_VERSION, {-1.0, 0.0, 1.0}), ("v999", {0.0})):
            expr = query
            for key, value in (("model-name", "risk"), ("candidate-version", candidate), ("window", WINDOW)):
                expr = expr.replace(slot % key, value).replace(slot % key.replace("-", "_"), value)
            assert "{{" not in expr, (name, expr)
            result = stack.query(expr)
            assert len(result) == 1 and float(result[0]["value"][1]) in allowed, (name, candidate, result)


def replay_skew(loop: Loop) -> dict[str, Any]:
    """``otel-ml skew replay`` of what the app captured, through the training pipeline, pushed to the
    stack's Pushgateway: the online copy's integer ``worst_area`` is the only skew it may find."""
    from otel_ml._capture_format import capture_files, read_capture
    from otel_ml.demo._features import ROUNDED

    loop.stack.wait_for(lambda: sum(f.records for f in capture_files(loop.capture_dir)) >= 200, 60, "captured rows")
    assert loop.app.monitor.capture is not None
    loop.app.monitor.capture.close()  # the spool's last file finished: the replay and this test read the same rows
    command = [
        *(sys.executable, "-m", "otel_ml.cli", "skew", "replay", "--capture", str(loop.capture_dir)),
        *("--pipeline", "otel_ml.demo._features:training_features", "--model", "otel_ml.demo._features:score"),
        *("--baseline", str(loop.baseline_file), "--pushgateway", loop.stack.pushgateway_url, "--json", "-"),
        *("--model-name", "risk", "--version", "v1"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    (version,) = json.loads(done.stdout)["versions"]
    features = {f["name"]: f for f in version["features"]}
    assert version["rows"] >= 200 and sum(version["errors"].values()) == 0
    rounded = features.pop(ROUNDED)
    # the rows it must find: those whose raw worst_area is not already a whole number (read from the files)
    raw = [row["raw"][ROUNDED] for _, row in read_capture(capture_files(loop.capture_dir))]
    assert rounded["compared"] == version["rows"] == len(raw)
    assert rounded["mismatch"] + rounded["bin_change"] == sum(v != round(v) for v in raw) > 0
    assert all(f["match"] == f["compared"] for f in features.values()), features  # nothing else differs
    assert version["score_difference"]["max_abs"] < 0.01  # rounding an area: a small effect
    return version


def test_drift_and_unknown_categories_page_on_call(loop: Loop, model: DemoModel) -> None:
    stack = loop.stack
    stack.wait_for(lambda: set(stack.target_health().values()) == {"up"}, 60, "every target up")
    post_old_cohorts(loop, model)
    # -- clean phase: traffic from the training population, nothing may fire --------------------
    time.sleep(CLEAN_SECONDS)
    # Traffic flowed for the whole clean phase. The generator sends one request at a time and a
    # request costs ~7 ms here (5 ms of it scikit-learn scoring one row); app, shadow, sidecar and
    # generator share one interpreter's GIL, and 2 cores with Prometheus and Alertmanager, so it
    # reaches 35-55 of the nominal 150 req/s (50-55 without the shadow version, 65-100 before the
    # sidecar also held v2's windows).
    assert loop.traffic.sent > RATE * CLEAN_SECONDS * 0.2, loop.traffic.sent
    assert loop.webhook.alerts() == [], [a["labels"] for a in loop.webhook.alerts()]
    assert [a for a in stack.alerts() if a["state"] == "firing"] == []
    assert stack.query('ml_feature_drift_status{ml_feature="mean_radius",ml_model_version="v1"}')[0]["value"][1] == "0"
    # -- a numeric feature shifts upstream ------------------------------------------------------
    loop.traffic.inject(FAULT["shift"])
    check_page(loop.wait_for_page("MLFeatureDrift", ml_feature="mean_radius"), "MLFeatureDrift", "mean_radius")
    # -- an upstream team renames a category ----------------------------------------------------
    loop.traffic.inject(FAULT["rename"])
    check_page(loop.wait_for_page("MLUnknownCategorySurge", ml_feature="region"), "MLUnknownCategorySurge", "region")
    # -- one region's decisions collapse ----------------------------------------------------------
    loop.traffic.inject(FAULT["collapse"])
    page = loop.wait_for_page("MLSegmentDecisionRateChange", ml_segment="EU")
    assert page["labels"]["ml_segment_key"] == "region"
    assert runbook_file(page["annotations"]["runbook_url"]).is_file()
    assert loop.traffic.failed == 0
    # -- a skew replay of the captured requests, pushed: its series reach Prometheus ----------------
    skew = replay_skew(loop)
    stack.wait_for(
        lambda: stack.query('ml_skew_rows_total{ml_model_version="v1",ml_segment_key="__all__"}'), 30, "the replay"
    )
    pushed = stack.query('ml_skew_rows_total{ml_segment_key="__all__"}')
    assert [(s["metric"]["ml_model_version"], float(s["value"][1])) for s in pushed] == [("v1", skew["rows"])], (
        pushed,
        {k: skew[k] for k in ("rows_read", "rows", "rows_compared", "errors", "flips_by_segment")},
    )
    # -- every dashboard panel shows data from this Prometheus --------------------------------------
    empty = []
    for file, title, expr in concrete_queries(
        DEFAULT_CONFIG, model=re.escape("risk"), window=WINDOW, rate_interval="15s"
    ):
        if not stack.query(expr):
            empty.append((file, title, expr))
    assert empty == [], [title for _, title, _ in empty]
    check_rollout_queries(stack)
    # -- the sidecar's per-pod PSI and the fleet-wide PromQL PSI (recording rules) agree ------------
    # mean_radius has been shifted for more than a window by now, so both windows hold the same
    # data up to their edges (snapshot steps vs increase() extrapolation).
    served = 'ml_model_version="v1"'  # the shadow v2 saw the same shift: its PSI is its own series
    psi = stack.query(f'ml_feature_psi{{ml_feature="mean_radius",ml_window="{WINDOW}",{served}}}')
    sidecar_psi = float(psi[0]["value"][1])
    fleet = stack.query(f'ml:feature_psi:{WINDOW}{{ml_feature="mean_radius",{served}}}')
    assert len(fleet) == 1, fleet
    assert float(fleet[0]["value"][1]) == pytest.approx(sidecar_psi, rel=0.15)
    # -- and otel-ml never failed internally on the way ------------------------------------------
    assert stack.query("sum(ml_instrumentation_errors_total) > 0") == []
