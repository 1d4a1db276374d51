"""The skew rules, alerts and dashboard row on a real Pushgateway scraped by a real Prometheus.

Replays are pushed with prometheus_client's push_to_gateway (PUT, job ``otel_ml_skew``, grouped by
model and version, the series shaped as ``otel-ml skew replay --pushgateway`` pushes them:
tests/_skew_series.py); Prometheus scrapes the Pushgateway with ``honor_labels: true`` from a scrape
job of another name (the pushed job label must survive) and evaluates the generated rules every
second, with ``for:`` shortened by config (the same generator). Checked: the recorded flip ratio of
each version, that only the version over budget goes pending then firing, that only the version
whose last replay is old is stale, and that every panel of the Training/serving skew row returns
data (the app's capture counters from a stand-in registry: the decorator writes them on main).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import requests
import yaml
from _skew_series import Replay, push
from conftest import free_port
from prometheus_client import CollectorRegistry, Counter, start_http_server

from otel_ml import _names as n
from otel_ml.mixin._promql import Exprs
from otel_ml.mixin._skew_panels import skew_panels
from otel_ml.mixin.config import DEFAULT_CONFIG
from otel_ml.mixin.dashboards import MODEL, concrete_queries
from otel_ml.mixin.generate import write_rule_files

pytestmark = pytest.mark.slow
PUSHGATEWAY = "/usr/bin/prometheus-pushgateway"
CONFIG = DEFAULT_CONFIG.with_overrides(skew_flips_for="3s", skew_stale_for="3s")
T = TypeVar("T")
ALL = (n.ALL, n.ALL)


def _wait(check: Callable[[], T | None], what: str, timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except requests.RequestException:
            value = None
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _replay(model: str, rows: int, flips: int, finished: float) -> Replay:
    """A replay of version v1: rows and flips in two regions and __all__, two features, deltas."""
    eu = rows * 3 // 5
    split = flips * 3 // 4
    return Replay(
        model=model,
        version="v1",
        rows={ALL: rows, ("region", "EU"): eu, ("region", "US"): rows - eu},
        flips={
            (*ALL, "false_to_true"): split,
            (*ALL, "true_to_false"): flips - split,
            ("region", "EU", "false_to_true"): split,
            ("region", "US", "true_to_false"): flips - split,
        },
        features={
            "amount": {n.SKEW_MATCH: rows - flips, n.SKEW_BIN_CHANGE: flips},
            "country": {n.SKEW_MATCH: rows - 3, n.SKEW_MISSING_SERVING: 3},
        },
        errors={"pipeline": 2},
        deltas=np.random.default_rng(7).normal(0.0, 0.05, rows),
        finished=finished,
    )


class _Stack:
    """A Pushgateway and a Prometheus (and the app's capture counters), started as children on 127.0.0.1."""

    def __init__(self, tmp: Path) -> None:
        self.tmp, self.procs = tmp, []  # type: ignore[var-annotated]
        self.gateway_port, self.prometheus_port = free_port(), free_port()
        self.app = CollectorRegistry()
        self.server = start_http_server(0, addr="127.0.0.1", registry=self.app)

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def start(self, prometheus: str) -> None:
        self.procs.append(
            subprocess.Popen(
                [
                    PUSHGATEWAY,
                    f"--web.listen-address=127.0.0.1:{self.gateway_port}",
                    f"--persistence.file={self.tmp / 'pushgateway.data'}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        rules = [str(path) for path in write_rule_files(CONFIG, self.tmp / "rules")[:2]]
        app_port = self.server[0].server_port
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": rules,
            "scrape_configs": [
                {
                    "job_name": "pushgateway",
                    "honor_labels": True,
                    "static_configs": [{"targets": [f"127.0.0.1:{self.gateway_port}"]}],
                },
                {"job_name": "otel-ml-app", "static_configs": [{"targets": [f"127.0.0.1:{app_port}"]}]},
            ],
        }
        (self.tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.procs.append(
            subprocess.Popen(
                [
                    prometheus,
                    f"--config.file={self.tmp / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.tmp / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
                    f"--web.external-url=http://127.0.0.1:{self.prometheus_port}/",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        for url in (self.gateway, f"http://127.0.0.1:{self.prometheus_port}"):
            _wait(lambda url=url: requests.get(url + "/-/ready", timeout=1).ok, f"{url}/-/ready")  # type: ignore[misc]

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.prometheus_port}/api/v1/query"
        answer = requests.get(url, params={"query": expr}, timeout=10)
        assert answer.status_code == 200, f"{expr}\n-> {answer.text}"
        return list(answer.json()["data"]["result"])

    def alerts(self, name: str) -> dict[str, str]:
        """model name -> state (pending, firing) of the alert ``name``."""
        url = f"http://127.0.0.1:{self.prometheus_port}/api/v1/alerts"
        found = requests.get(url, timeout=10).json()["data"]["alerts"]
        return {a["labels"][n.LABEL_MODEL_NAME]: a["state"] for a in found if a["labels"]["alertname"] == name}

    def stop(self) -> None:
        for proc in self.procs:  # only the children this test started, by their handles
            proc.terminate()
        for proc in self.procs:
            proc.wait(10)
        self.server[0].shutdown()
        self.server[0].server_close()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[_Stack]:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("prometheus is not installed (scripts/test installs Debian's prometheus package)")
    if not Path(PUSHGATEWAY).is_file():
        pytest.skip(f"{PUSHGATEWAY} missing (scripts/test installs Debian's prometheus-pushgateway package)")
    s = _Stack(tmp_path)
    try:
        s.start(prometheus)
        yield s
    finally:
        s.stop()


def _capture_counters(app: CollectorRegistry, model: str) -> None:
    """The app's capture spool counters (what @monitor(capture=...) exports), for the row's last panels."""
    mv = [n.LABEL_MODEL_NAME, n.LABEL_MODEL_VERSION]
    records = Counter(n.CAPTURE_RECORDS.prometheus, n.CAPTURE_RECORDS.description, mv, registry=app)
    written = Counter(n.CAPTURE_WRITTEN.prometheus, n.CAPTURE_WRITTEN.description, mv, registry=app)
    dropped = Counter(n.CAPTURE_DROPPED.prometheus, n.CAPTURE_DROPPED.description, [*mv, n.LABEL_REASON], registry=app)
    records.labels(model, "v1").inc(120)
    written.labels(model, "v1").inc(240_000)
    dropped.labels(model, "v1", n.CAPTURE_DROP_QUEUE_FULL).inc(3)


def test_ratio_alerts_and_dashboard_row_on_a_real_pushgateway(stack: _Stack) -> None:
    now = time.time()
    # 2,000 rows each: 60 flips (3 %, z = 6.5) pages; 20 (1 %, at the budget, z = 0) and 10 do not
    replays = [
        _replay("breach", 2000, 60, now),
        _replay("within", 2000, 20, now),
        _replay("old", 2000, 10, now - 3 * 86400),
    ]
    for replay in replays:
        push(stack.gateway, replay)
    _capture_counters(stack.app, "breach")

    ratio = n.SKEW_FLIP_RATIO_RECORD
    found = _wait(lambda: (lambda got: got if len(got) == 3 else None)(stack.query(ratio)), f"{ratio} for 3 models")
    got = {r["metric"][n.LABEL_MODEL_NAME]: round(float(r["value"][1]), 6) for r in found}
    assert got == {"breach": 0.03, "within": 0.01, "old": 0.005}
    assert all(
        set(r["metric"]) - {"__name__"} == {n.LABEL_MODEL_NAME, n.LABEL_MODEL_VERSION} for r in found
    )  # job, instance gone
    pushed = stack.query(f"{n.SKEW_ROWS.series}{{{CONFIG.skew_selector}}}")
    # honor_labels: the pushed job survives the scrape job's name; instance="" is no label in Prometheus
    assert pushed and all(r["metric"]["job"] == n.SKEW_JOB and "instance" not in r["metric"] for r in pushed)

    states = _wait(lambda: stack.alerts(n.ALERT_SKEW_FLIPS), "MLSkewDecisionFlipsOverBudget pending")
    assert set(states) == {"breach"}, states
    _wait(lambda: stack.alerts(n.ALERT_SKEW_FLIPS).get("breach") == "firing", "MLSkewDecisionFlipsOverBudget firing")
    stale = _wait(lambda: stack.alerts(n.ALERT_SKEW_STALE), "MLSkewReplayStale")
    assert set(stale) == {"old"}, stale
    assert set(stack.alerts(n.ALERT_SKEW_FLIPS)) == {"breach"}

    # a new replay replaces the old one (PUT): the ratio follows, the alert resolves
    push(stack.gateway, _replay("breach", 2000, 18, time.time()))
    _wait(lambda: "breach" not in stack.alerts(n.ALERT_SKEW_FLIPS), "the breach resolving after a clean replay")

    titles = {panel.build().title for panel in skew_panels(CONFIG, Exprs(CONFIG)) if hasattr(panel, "targets")}
    queries = [
        (title, expr)
        for board, title, expr in concrete_queries(CONFIG, model="breach", rate_interval="5s")
        if board == MODEL and title in titles
    ]
    assert len(queries) >= 10, queries
    deadline = time.monotonic() + 30  # rates need two scrapes of the app
    empty = queries
    while empty and time.monotonic() < deadline:
        empty = [(title, expr) for title, expr in empty if not stack.query(expr)]
        if empty:
            time.sleep(1)
    assert not empty, "panels without data:\n" + "\n".join(f"{t!r}: {e}" for t, e in empty)
