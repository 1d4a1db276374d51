"""The OTLP path: the same counts as OTel data points, pushed by the real OTLP/HTTP exporter.

The receiving end here is a plain HTTP server that decodes the protobuf with opentelemetry-proto;
the sidecar's own OTLP receiver is tested in the sidecar tests.
"""

from __future__ import annotations

import gzip
import multiprocessing
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from requests import get as http_get
from requests import post as http_post

from otel_ml import Baseline, Capture, ModelMonitor, OtlpMetricsPusher, Prices, Review, Shadow, add_cost, add_tokens
from otel_ml import _names as n
from otel_ml.instrument import counts_metrics_data
from otel_ml.sidecar import Sidecar, SidecarConfig

PROTOBUF = {"Content-Type": "application/x-protobuf"}


def _attrs(point: Any) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in point.attributes}


def _metrics(request: ExportMetricsServiceRequest) -> dict[str, Any]:
    (rm,) = request.resource_metrics
    (sm,) = rm.scope_metrics
    assert sm.scope.name == "otel_ml"
    return {m.name: m for m in sm.metrics}


@pytest.fixture
def fed_monitor(baseline: Baseline, training_frame: pd.DataFrame) -> ModelMonitor:
    mon = ModelMonitor(baseline=baseline, segments=["country"], decision=0.7, registry=CollectorRegistry())
    frame = training_frame.head(1000)
    mon(lambda f: frame["score"].to_numpy())(frame.drop(columns="score"))
    return mon


def test_negative_feature_values_survive(fed_monitor: ModelMonitor, training_frame: pd.DataFrame) -> None:
    data = counts_metrics_data([fed_monitor.counters.snapshot()], start_time_ns=1)
    request = encode_metrics(data)
    metrics = _metrics(ExportMetricsServiceRequest.FromString(request.SerializeToString()))
    values = metrics[n.FEATURE_VALUE.otel_name]
    assert values.unit == n.FEATURE_VALUE.unit
    point = next(p for p in values.histogram.data_points if _attrs(p)[n.ATTR_FEATURE] == "balance_z")
    column = training_frame["balance_z"].head(1000)
    assert (column < 0).sum() > 400  # the feature really is half negative
    assert point.count == 1000 and sum(point.bucket_counts) == 1000
    edges = list(point.explicit_bounds)
    assert point.bucket_counts[0] == (column <= edges[0]).sum()
    assert point.sum == pytest.approx(column.sum())
    assert values.histogram.aggregation_temporality == 2  # cumulative
    assert _attrs(point)[n.ATTR_MODEL_NAME] == "fraud" and _attrs(point)[n.ATTR_MODEL_VERSION] == "v3"


def test_every_app_instrument_is_exported(
    fed_monitor: ModelMonitor, baseline: Baseline, training_frame: pd.DataFrame, tmp_path: Path
) -> None:
    fed_monitor.counters.add_error("TimeoutError")
    fed_monitor.counters.add_fallback("rules")
    fed_monitor.counters.instrumentation_errors.add("ValueError")
    frame = training_frame.head(200).drop(columns="score")
    shadow = Shadow(lambda f: np.linspace(0, 1, len(f)), version="v4")
    prices = Prices.from_dict(
        {"updated": "2026-11-20", "compute": {"cpu_hour": 0.05}, "tokens": {"*": {"input": 1, "output": 2}}}
    )
    shadowed = ModelMonitor(
        baseline=baseline,
        segments=["country"],
        decision=0.7,
        shadow=[shadow],
        prices=prices,
        review=Review(rate=0.5),
        capture=Capture(tmp_path / "capture", rate=0.5),
        registry=CollectorRegistry(),
    )

    def scored(f: Any) -> Any:
        add_cost(0.01)
        add_tokens(input=100, output=20)
        return np.linspace(1, 0, len(f))

    shadowed(scored)(frame)
    assert shadow.drain(10) and shadow.monitor is not None
    snapshots = [fed_monitor.counters.snapshot(), shadow.monitor.counters.snapshot(), shadowed.counters.snapshot()]
    metrics = _metrics(encode_metrics(counts_metrics_data(snapshots, start_time_ns=1)))
    overflow_free = {i.otel_name for i in (*n.APP_INSTRUMENTS, *n.APP_GAUGES)} - {n.CARDINALITY_OVERFLOW.otel_name}
    assert overflow_free <= set(metrics)
    assert metrics[n.PRICE_CONFIG_UPDATED.otel_name].WhichOneof("data") == "gauge"
    tokens = {_attrs(p)[n.ATTR_TOKEN_TYPE]: p.as_int for p in metrics[n.TOKENS.otel_name].sum.data_points}
    assert tokens == {"input": 100, "output": 20}
    pairs = metrics[n.SHADOW_PAIRS.otel_name].sum
    assert pairs.is_monotonic
    overall = [p for p in pairs.data_points if _attrs(p)[n.ATTR_SEGMENT_KEY] == n.ALL]
    assert sum(p.as_int for p in overall) == 200
    assert {_attrs(p)[n.ATTR_MODEL_VERSION] for p in overall} == {"v3"}
    assert {_attrs(p)[n.ATTR_SHADOW_VERSION] for p in overall} == {"v4"}
    diff = metrics[n.SHADOW_SCORE_DIFFERENCE.otel_name].histogram.data_points[0]
    assert list(diff.explicit_bounds) == list(n.SHADOW_DIFFERENCE_BUCKETS) and diff.count == 200
    dropped = metrics[n.SHADOW_DROPPED.otel_name].sum.data_points
    assert sorted(_attrs(p)[n.ATTR_DROP_REASON] for p in dropped) == sorted(n.SHADOW_DROP_REASONS)
    shadowed.close()
    preds = metrics[n.PREDICTIONS.otel_name].sum
    assert preds.is_monotonic
    keys = {(_attrs(p)[n.ATTR_SEGMENT_KEY], _attrs(p)[n.ATTR_DECISION]) for p in preds.data_points}
    assert ("__all__", "true") in keys and ("country", "false") in keys
    duration = metrics[n.PREDICTION_DURATION.otel_name]
    assert duration.unit == "s" and list(duration.histogram.data_points[0].explicit_bounds) == list(n.DURATION_BUCKETS)


class _Receiver(BaseHTTPRequestHandler):
    requests: list[tuple[str, dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.requests.append((self.path, dict(self.headers), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()
        self.wfile.write(b"")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[str, dict[str, str], bytes]]]]:
    _Receiver.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/metrics", _Receiver.requests
    server.shutdown()
    server.server_close()


def test_pusher_posts_protobuf_over_http(fed_monitor: ModelMonitor, receiver: Any) -> None:
    url, requests = receiver
    pusher = OtlpMetricsPusher(url, monitors=[fed_monitor], export_interval_millis=3_600_000)
    assert pusher.force_flush()
    pusher.shutdown(flush=False)
    ((path, headers, body),) = requests
    assert path == "/v1/metrics" and headers["Content-Type"] == "application/x-protobuf"
    metrics = _metrics(ExportMetricsServiceRequest.FromString(body))
    total = sum(p.count for p in metrics[n.PREDICTION_SCORE.otel_name].histogram.data_points)
    assert total == 1000


def test_pusher_survives_an_unreachable_endpoint(fed_monitor: ModelMonitor) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pusher = OtlpMetricsPusher(
        f"http://127.0.0.1:{port}/v1/metrics", monitors=[fed_monitor], export_timeout_millis=1000
    )
    assert pusher.force_flush() is False
    assert pusher.failures == 1
    pusher.shutdown(flush=False)


def test_default_monitors_come_from_the_registry(baseline: Baseline, receiver: Any) -> None:
    url, requests = receiver
    registry = CollectorRegistry()
    mon = ModelMonitor(baseline=baseline, registry=registry)
    mon(lambda f: 0.5)({"amount": -4.0})
    pusher = OtlpMetricsPusher(url, registry=registry, export_interval_millis=50).start()
    pusher.shutdown()  # the flush on shutdown exports at least once
    metrics = _metrics(ExportMetricsServiceRequest.FromString(requests[-1][2]))
    amount = next(
        p for p in metrics[n.FEATURE_VALUE.otel_name].histogram.data_points if _attrs(p)[n.ATTR_FEATURE] == "amount"
    )
    assert amount.bucket_counts[0] == 1 and np.isclose(amount.sum, -4.0)


def _child_pushes(predict: Any, pusher: OtlpMetricsPusher) -> None:
    for _ in range(3):
        predict({"amount": 2.0})
    time.sleep(0.6)  # several intervals: only the child's own timer can have pushed by now
    alive = pusher._thread is not None and pusher._thread.is_alive()
    pusher.shutdown(flush=False)
    sys.exit(0 if alive else 3)


def _latest_by_instance(requests: list[tuple[str, dict[str, str], bytes]]) -> dict[str, tuple[int, bytes]]:
    """Per ``service.instance.id``: predictions in its last push, and that push's body."""
    latest: dict[str, tuple[int, bytes]] = {}
    for _, _, body in requests:
        (rm,) = ExportMetricsServiceRequest.FromString(body).resource_metrics
        instance = {kv.key: kv.value.string_value for kv in rm.resource.attributes}["service.instance.id"]
        metrics = {m.name: m for m in rm.scope_metrics[0].metrics}
        points = metrics[n.PREDICTIONS.otel_name].sum.data_points
        latest[instance] = (sum(int(p.as_int) for p in points if _attrs(p)[n.ATTR_SEGMENT_KEY] == "__all__"), body)
    return latest


def test_a_forked_worker_pushes_as_its_own_instance_from_zero(
    baseline: Baseline, receiver: Any, tmp_path: Path
) -> None:
    """Each worker is a distinct source (host-pid), so the sidecar sums them; no parent counts reused."""
    url, requests = receiver
    registry = CollectorRegistry()
    mon = ModelMonitor(baseline=baseline, registry=registry)
    predict = mon(lambda f: 0.5)
    for _ in range(5):
        predict({"amount": 1.0})
    pusher = OtlpMetricsPusher(url, registry=registry, export_interval_millis=100).start()
    child = multiprocessing.get_context("fork").Process(target=_child_pushes, args=(predict, pusher))
    child.start()
    child.join(30)
    assert child.exitcode == 0, "the child's export timer was not restarted after fork"
    pusher.shutdown()
    latest = _latest_by_instance(requests)
    host = socket.gethostname()
    assert {k: v[0] for k, v in latest.items()} == {f"{host}-{os.getpid()}": 5, f"{host}-{child.pid}": 3}
    config = SidecarConfig(baselines=(baseline.save(tmp_path / "b.json"),), listen=("127.0.0.1", 0), windows=("10m",))
    side = Sidecar(config).start()
    try:
        for _, body in latest.values():
            assert http_post(side.url + "/v1/metrics", data=body, headers=PROTOBUF, timeout=10).status_code == 200
        text = http_get(side.url + "/metrics", timeout=10).text
    finally:
        side.stop()
    observed = [
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "ml_feature_window_observations" and s.labels.get(n.LABEL_FEATURE) == "amount"
    ]
    assert observed == [8]  # the sidecar sums the two sources


class _Drop(MetricExporter):
    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


def test_a_given_instance_id_is_kept_and_made_distinct_in_a_fork(baseline: Baseline) -> None:
    resource = Resource.create({"service.instance.id": "pod-7"})
    pusher = OtlpMetricsPusher(monitors=[], exporter=_Drop(), resource=resource)
    assert pusher.resource.attributes["service.instance.id"] == "pod-7"
    pusher._after_fork_in_child()  # what os.register_at_fork runs in a child
    assert pusher.resource.attributes["service.instance.id"] == f"pod-7-{os.getpid()}"
    pusher.shutdown(flush=False)


class _Recording(_Drop):
    """Records, per export, whether instrumentation was suppressed and the timeout it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.exports: list[tuple[Any, float]] = []
        self.shutdowns = 0

    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, get_value

        self.exports.append((get_value(_SUPPRESS_INSTRUMENTATION_KEY), timeout_millis))
        return MetricExportResult.SUCCESS

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.shutdowns += 1


def test_the_reader_settings_come_from_the_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "2500")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_TIMEOUT", "750")
    exporter = _Recording()
    pusher = OtlpMetricsPusher(monitors=[], exporter=exporter)
    assert (pusher.export_interval_millis, pusher.export_timeout_millis) == (2500.0, 750.0)
    assert pusher.force_flush()
    assert exporter.exports == [(True, 750.0)]  # suppressed around our own export, with the env timeout
    from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, get_value

    assert get_value(_SUPPRESS_INSTRUMENTATION_KEY) is None  # and only around it
    explicit = OtlpMetricsPusher(monitors=[], exporter=_Recording(), export_interval_millis=100)
    assert explicit.export_interval_millis == 100  # an argument wins over the environment
    others = []
    for invalid in ("soon", "nan", "-5"):
        monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", invalid)
        others.append(OtlpMetricsPusher(monitors=[], exporter=_Recording()))
        assert others[-1].export_interval_millis == 15_000  # invalid: warned, the default
    with pytest.raises(ValueError, match="export_interval_millis"):
        OtlpMetricsPusher(monitors=[], exporter=_Recording(), export_interval_millis=-1)
    for p in (pusher, explicit, *others):
        p.shutdown(flush=False)


def test_shutdown_runs_once(caplog: pytest.LogCaptureFixture) -> None:
    exporter = _Recording()
    pusher = OtlpMetricsPusher(monitors=[], exporter=exporter, export_interval_millis=50).start()
    pusher.shutdown()
    pusher.shutdown()
    assert exporter.shutdowns == 1 and len(exporter.exports) >= 1
    assert "already shut down" in caplog.text
    assert pusher.start()._thread is None or not pusher._thread.is_alive()  # no timer after shutdown
    exported = len(exporter.exports)
    assert pusher.force_flush() is False and len(exporter.exports) == exported  # nothing after shutdown
    quiet = _Recording()
    OtlpMetricsPusher(monitors=[], exporter=quiet).shutdown(False)  # positional: flush=False, as it always was
    assert quiet.exports == [] and quiet.shutdowns == 1


def test_a_huge_interval_waits_instead_of_killing_the_timer() -> None:
    pusher = OtlpMetricsPusher(monitors=[], exporter=_Recording(), export_interval_millis=1e13).start()
    time.sleep(0.2)
    assert pusher._thread is not None and pusher._thread.is_alive()  # no OverflowError in Event.wait
    pusher.shutdown(flush=False, timeout_millis=5000)
    assert not pusher._thread.is_alive()


def test_the_sidecar_re_exposes_exactly_what_the_app_serves(
    fed_monitor: ModelMonitor, baseline: Baseline, tmp_path: Path
) -> None:
    """One encoder for both: app counts pushed over OTLP come out of the sidecar's /metrics
    sample for sample as the app's own prometheus_client exposition shows them."""
    from prometheus_client import generate_latest

    predict = fed_monitor(lambda row: 0.9)
    for amount in (-3.0, 0.5, 1e9):
        predict({"amount": amount, "country": "ZZ"})
    app_names = {i.prometheus for i in n.APP_INSTRUMENTS} - {n.PROCESS_CPU.prometheus}  # it grows between reads

    def samples(text: str) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
        return {
            (s.name, tuple(sorted(s.labels.items())), s.value)
            for fam in text_string_to_metric_families(text)
            if fam.name in app_names
            for s in fam.samples
        }

    config = SidecarConfig(baselines=(baseline.save(tmp_path / "b.json"),), listen=("127.0.0.1", 0), windows=("10m",))
    side = Sidecar(config).start()
    try:
        pusher = OtlpMetricsPusher(side.url + "/v1/metrics", monitors=[fed_monitor])
        assert pusher.force_flush()
        pusher.shutdown(flush=False)
        served = samples(http_get(side.url + "/metrics", timeout=10).text)
    finally:
        side.stop()
    own = samples(generate_latest(fed_monitor.registry).decode())
    assert len(own) > 50 and own <= served
    # beyond the app's own samples, only the zero counts of baseline categories the sidecar lays out
    assert {(name, value) for name, _, value in served - own} == {(n.FEATURE_CATEGORY.series, 0.0)}
