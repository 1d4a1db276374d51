"""The sidecar over HTTP: OTLP (protobuf, JSON, gzip), traces + labels, scraping, and every
kind of bad input, each answered with a clear 4xx, counted, and leaving the state untouched."""

from __future__ import annotations

import gzip
import logging
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from conftest import make_training_frame
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from otel_ml import Baseline, ModelMonitor, OtlpMetricsPusher, current_request_id
from otel_ml.instrument import counts_metrics_data
from otel_ml.sidecar import HttpLimits, ScrapeTarget, Sidecar, SidecarConfig


def metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(url + "/metrics", timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def value(url: str, name: str, **labels: str) -> float | None:
    found = [
        v
        for (nm, lab), v in metrics(url).items()
        if nm == name and all(dict(lab).get(k) == x for k, x in labels.items())
    ]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def model_outputs(url: str) -> dict[Any, float]:
    """The state-derived series (everything but the sidecar's own health counters)."""
    return {k: v for k, v in metrics(url).items() if not k[0].startswith(("ml_sidecar_", "ml_labels_"))}


@pytest.fixture
def baseline_file(baseline: Baseline, tmp_path: Path) -> Path:
    return baseline.save(tmp_path / "fraud-v3.baseline.json")


@pytest.fixture
def sidecar(baseline_file: Path, tmp_path: Path) -> Iterator[Sidecar]:
    config = SidecarConfig(
        baselines=(baseline_file,),
        listen=("127.0.0.1", 0),
        windows=("10m", "1h"),
        http=HttpLimits(max_body_bytes=256 * 1024),
    )
    side = Sidecar(config).start()
    yield side
    side.stop()


def app_request(baseline: Baseline, rows: int = 2000, seed: int = 0, shift: float = 0.0) -> bytes:
    mon = ModelMonitor(baseline=baseline, segments=["country"], decision=0.7, registry=CollectorRegistry())
    frame = make_training_frame(rows, seed=seed).drop(columns="score")
    frame["balance_z"] += shift
    mon(lambda f: np.clip(0.5 + 0.3 * f["balance_z"].to_numpy(), 0, 1))(frame)
    return encode_metrics(counts_metrics_data([mon.counters.snapshot()], start_time_ns=123)).SerializeToString()


PB = {"Content-Type": "application/x-protobuf"}


class TestOtlpIngest:
    def test_protobuf_from_the_real_exporter(self, sidecar: Sidecar, baseline: Baseline) -> None:
        mon = ModelMonitor(baseline=baseline, decision=0.7, registry=CollectorRegistry())
        frame = make_training_frame(1500, seed=3).drop(columns="score")
        frame["balance_z"] -= 1.5  # negative values, shifted: must arrive and be seen as drift
        mon(lambda f: np.full(len(f), 0.1))(frame)
        pusher = OtlpMetricsPusher(sidecar.url + "/v1/metrics", monitors=[mon])
        assert pusher.force_flush()
        pusher.shutdown(flush=False)
        assert value(sidecar.url, "ml_feature_window_observations", ml_feature="balance_z", ml_window="10m") == 1500
        assert value(sidecar.url, "ml_feature_drift_status", ml_feature="balance_z", ml_window="10m") == 2
        # the app's own series are re-exposed for Prometheus, which cannot receive OTLP itself
        assert value(sidecar.url, "ml_feature_value_bucket", ml_feature="balance_z", le="+Inf") == 1500

    def test_json_and_gzip_give_the_same_state(self, sidecar: Sidecar, baseline: Baseline) -> None:
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

        body = app_request(baseline)
        as_json = json_format.MessageToJson(ExportMetricsServiceRequest.FromString(body)).encode()
        r = requests.post(sidecar.url + "/v1/metrics", data=as_json, headers={"Content-Type": "application/json"})
        assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
        first = model_outputs(sidecar.url)
        r = requests.post(
            sidecar.url + "/v1/metrics", data=gzip.compress(body), headers={**PB, "Content-Encoding": "gzip"}
        )
        assert r.status_code == 200
        assert model_outputs(sidecar.url) == first  # same cumulative counts again: nothing added

    def test_unknown_model_is_counted_and_answered_with_partial_success(
        self, sidecar: Sidecar, training_frame: Any
    ) -> None:
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse

        from otel_ml import fit_baseline

        other = fit_baseline(training_frame, model="unknown", version="1", score_column="score")
        r = requests.post(sidecar.url + "/v1/metrics", data=app_request(other), headers=PB)
        assert r.status_code == 200
        assert ExportMetricsServiceResponse.FromString(r.content).partial_success.rejected_data_points > 0
        assert value(sidecar.url, "ml_sidecar_ingest_errors_total", reason="unknown_model") == 1


def _error_message(response: requests.Response) -> str:
    """OTLP/HTTP errors carry a google.rpc.Status in the request's encoding."""
    media = response.headers["Content-Type"]
    if media == "application/x-protobuf":
        from google.rpc import status_pb2

        return status_pb2.Status.FromString(response.content).message
    if media == "application/json":
        return str(response.json()["message"])
    return response.text


class TestBadInput:
    @pytest.fixture
    def loaded(self, sidecar: Sidecar, baseline: Baseline) -> dict[Any, float]:
        r = requests.post(sidecar.url + "/v1/metrics", data=app_request(baseline, shift=1.0), headers=PB)
        assert r.status_code == 200
        return model_outputs(sidecar.url)

    @pytest.mark.parametrize(
        ("body", "headers", "status", "reason"),
        [
            (b"\x0a\xff\xff\xff\xff\x0f garbage", PB, 400, "malformed_protobuf"),
            (b'{"resourceMetrics": [', {"Content-Type": "application/json"}, 400, "malformed_json"),
            (b'{"resourceMetrics": "nope"}', {"Content-Type": "application/json"}, 400, "malformed_json"),
            (b"hello", {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
            (b"hello", {}, 415, "unsupported_media_type"),
            (b"not gzip", {**PB, "Content-Encoding": "gzip"}, 400, "bad_compression"),
            (b"x", {**PB, "Content-Encoding": "br"}, 415, "unsupported_encoding"),
            (b"\0" * (300 * 1024), PB, 413, "too_large"),
            (gzip.compress(b"\0" * (10 * 1024 * 1024)), {**PB, "Content-Encoding": "gzip"}, 413, "too_large"),
        ],
        ids=["protobuf", "json-syntax", "json-shape", "text", "no-type", "gzip", "encoding", "size", "gzip-bomb"],
    )
    def test_rejected_without_touching_state(
        self, sidecar: Sidecar, loaded: dict[Any, float], body: bytes, headers: dict[str, str], status: int, reason: str
    ) -> None:
        r = requests.post(sidecar.url + "/v1/metrics", data=body, headers=headers)
        assert r.status_code == status
        assert reason in _error_message(r)
        assert value(sidecar.url, "ml_sidecar_ingest_errors_total", reason=reason) == 1
        assert model_outputs(sidecar.url) == loaded
        assert requests.get(sidecar.url + "/healthz").status_code == 200  # and the server lives on

    def test_unknown_path_and_method(self, sidecar: Sidecar) -> None:
        assert requests.post(sidecar.url + "/v1/logs", data=b"x").status_code == 404
        assert requests.get(sidecar.url + "/nope").status_code == 404
        assert requests.get(sidecar.url + "/").text.startswith("otel-ml sidecar")

    def test_bad_label_events(self, sidecar: Sidecar) -> None:
        for body in (b"[", b'{"label": 1}', b'[{"request_id": "a"}]', b'"text"', b'[{"request_id": "a", "label": ""}]'):
            r = requests.post(sidecar.url + "/v1/labels", data=body, headers={"Content-Type": "application/json"})
            assert r.status_code == 400, body
        assert requests.post(sidecar.url + "/v1/labels", data=b"{}").status_code == 415


class TestSecurity:
    def test_binds_loopback_by_default(self, baseline_file: Path) -> None:
        assert SidecarConfig(baselines=(baseline_file,)).listen[0] == "127.0.0.1"

    def test_bearer_token(self, baseline_file: Path, baseline: Baseline) -> None:
        config = SidecarConfig(baselines=(baseline_file,), listen=("127.0.0.1", 0), token="s3cret")
        side = Sidecar(config).start()
        try:
            body = app_request(baseline)
            r = requests.post(side.url + "/v1/metrics", data=body, headers=PB)
            assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
            r = requests.post(side.url + "/v1/metrics", data=body, headers={**PB, "Authorization": "Bearer nope"})
            assert r.status_code == 401
            assert value(side.url, "ml_sidecar_ingest_errors_total", reason="unauthorized") == 2
            r = requests.post(side.url + "/v1/metrics", data=body, headers={**PB, "Authorization": "Bearer s3cret"})
            assert r.status_code == 200
            for spelling in ("bearer s3cret", "BEARER  s3cret"):  # the scheme is case-insensitive (RFC 9110)
                r = requests.post(side.url + "/v1/metrics", data=body, headers={**PB, "Authorization": spelling})
                assert r.status_code == 200, spelling
            r = requests.post(side.url + "/v1/metrics", data=body, headers={**PB, "Authorization": "Basic s3cret"})
            assert r.status_code == 401
            assert requests.get(side.url + "/metrics").status_code == 200  # Prometheus needs no token
        finally:
            side.stop()

    def test_no_feature_values_in_logs(
        self, sidecar: Sidecar, baseline: Baseline, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG)
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=sidecar.url + "/v1/traces")))
        mon = ModelMonitor(
            baseline=baseline, record_features=True, tracer_provider=provider, registry=CollectorRegistry()
        )
        mon(lambda f: 0.5)({"amount": 1234.5678, "country": "SECRET-COUNTRY"})
        provider.shutdown()
        requests.post(sidecar.url + "/v1/traces", data=b"SECRET-COUNTRY garbage", headers=PB)
        requests.post(
            sidecar.url + "/v1/labels",
            data=b'[{"request_id": "SECRET-COUNTRY"}]',
            headers={"Content-Type": "application/json"},
        )
        assert "SECRET-COUNTRY" not in caplog.text and "1234.5678" not in caplog.text


class TestLabels:
    def test_labels_joined_by_request_id(self, sidecar: Sidecar, baseline: Baseline) -> None:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=sidecar.url + "/v1/traces")))
        ids: list[tuple[str, float]] = []

        @ModelMonitor(
            baseline=baseline,
            segments=["country"],
            decision=0.7,
            tracer_provider=provider,
            registry=CollectorRegistry(),
        )
        def predict(row: dict[str, Any]) -> float:
            ids.append((current_request_id() or "", row["s"]))
            return row["s"]

        rng = np.random.default_rng(0)
        scores = rng.uniform(size=40)
        truth = rng.uniform(size=40) < scores  # labels correlated with the score
        for s, country in zip(scores, ["US", "DE"] * 20):
            predict({"s": float(s), "country": country, "amount": 1.0})
        provider.shutdown()
        events = [{"request_id": rid, "label": bool(t)} for (rid, _), t in zip(ids, truth)]
        events.append({"request_id": "never-seen", "label": True})
        r = requests.post(sidecar.url + "/v1/labels", json={"labels": events})
        assert r.json() == {"joined": 40, "unmatched": 1}
        decided = scores > 0.7
        tp, fp, fn = (decided & truth).sum(), (decided & ~truth).sum(), (~decided & truth).sum()
        labels = {"ml_segment_key": "__all__", "ml_segment": "__all__", "ml_window": "10m"}
        served = {**labels, "ml_threshold": "served"}
        assert value(sidecar.url, "ml_online_precision", **served) == pytest.approx(tp / (tp + fp))
        assert value(sidecar.url, "ml_online_recall", **served) == pytest.approx(tp / (tp + fn))
        assert value(sidecar.url, "ml_online_brier_score", **labels) == pytest.approx(np.mean((scores - truth) ** 2))
        assert (
            value(sidecar.url, "ml_online_labels", **{**labels, "ml_segment_key": "country", "ml_segment": "DE"}) == 20
        )
        assert value(sidecar.url, "ml_labels_unmatched_total", reason="unknown_request_id") == 1

    def test_batch_predictions_from_the_client_wait_for_their_labels(self, sidecar: Sidecar) -> None:
        """A batch-scoring job posts its rows with ``export_predictions`` (gzip JSON chunks); the labels
        that arrive later join them like spans' predictions."""
        from otel_ml import export_predictions

        rng = np.random.default_rng(3)
        scores = rng.uniform(size=5000)
        rids = [f"batch-{i}" for i in range(scores.size)]
        sent = export_predictions(
            sidecar.url,
            model="fraud",
            version="v3",
            request_ids=rids,
            scores=scores,
            decisions=scores > 0.7,
            segments={"country": np.where(scores > 0.5, "US", "DE")},
            chunk_rows=2000,  # three requests
        )
        assert sent == 5000 and sidecar.state.joins.store.rows == 5000
        truth = rng.uniform(size=scores.size) < scores
        events = [{"request_id": rid, "label": bool(t)} for rid, t in zip(rids, truth)]
        assert requests.post(sidecar.url + "/v1/labels", json={"labels": events}).json() == {
            "joined": 5000,
            "unmatched": 0,
        }
        served = {"ml_segment_key": "__all__", "ml_segment": "__all__", "ml_window": "10m", "ml_threshold": "served"}
        decided = scores > 0.7
        tp, fp = (decided & truth).sum(), (decided & ~truth).sum()
        assert value(sidecar.url, "ml_online_precision", **served) == pytest.approx(tp / (tp + fp))
        assert value(sidecar.url, "ml_sidecar_ingested_total", ml_source="predictions") == 3

    def test_inline_prediction_needs_no_join(self, sidecar: Sidecar) -> None:
        event = {
            "model": "fraud",
            "version": "v3",
            "score": 0.9,
            "decision": True,
            "label": 0,
            "segments": {"country": "US"},
        }
        assert requests.post(sidecar.url + "/v1/labels", json=event).json() == {"joined": 1, "unmatched": 0}
        assert (
            value(sidecar.url, "ml_online_precision", ml_segment_key="country", ml_segment="US", ml_window="1h") == 0.0
        )


class _Target(BaseHTTPRequestHandler):
    body = b""
    delay = 0.0

    def do_GET(self) -> None:
        time.sleep(self.delay)
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(self.body)))
            self.end_headers()
            self.wfile.write(self.body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def target() -> Iterator[tuple[str, type[_Target]]]:
    handler = type("Target", (_Target,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics", handler
    server.shutdown()
    server.server_close()


class TestScrape:
    def test_scrape_then_garbage_then_timeout(self, sidecar: Sidecar, baseline: Baseline, target: Any) -> None:
        url, handler = target
        registry = CollectorRegistry()
        mon = ModelMonitor(baseline=baseline, registry=registry)
        mon(lambda f: np.zeros(len(f)))(make_training_frame(700).drop(columns="score"))
        handler.body = generate_latest(registry)
        sidecar.scrape_once(ScrapeTarget(url, 1, 2))
        assert value(sidecar.url, "ml_feature_window_observations", ml_feature="amount", ml_window="1h") == 700
        held = model_outputs(sidecar.url)
        handler.body = b'ml_feature_value_bucket{le="0.5" garbage\n'
        sidecar.scrape_once(ScrapeTarget(url, 1, 2))
        handler.body, handler.delay = generate_latest(registry), 1.5
        sidecar.scrape_once(ScrapeTarget(url, 1, 0.3))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed = f"http://127.0.0.1:{s.getsockname()[1]}/metrics"
        sidecar.scrape_once(ScrapeTarget(closed, 1, 1))
        for reason in ("scrape_parse", "scrape_timeout", "scrape_unreachable"):
            assert value(sidecar.url, "ml_sidecar_ingest_errors_total", reason=reason) == 1, reason
        assert model_outputs(sidecar.url) == held

    def test_a_failing_target_is_logged_once_a_minute_and_counted_every_time(
        self, sidecar: Sidecar, caplog: pytest.LogCaptureFixture
    ) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed = f"http://127.0.0.1:{s.getsockname()[1]}/metrics"
        with caplog.at_level(logging.WARNING, logger="otel_ml.sidecar"):
            for _ in range(5):
                sidecar.scrape_once(ScrapeTarget(closed, 1, 1))
        assert value(sidecar.url, "ml_sidecar_ingest_errors_total", reason="scrape_unreachable") == 5
        assert caplog.text.count("scrape failed") == 1, caplog.text


def test_exposition_is_promtool_clean(sidecar: Sidecar, baseline: Baseline) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (apt-get install prometheus)")
    requests.post(sidecar.url + "/v1/metrics", data=app_request(baseline), headers=PB)
    requests.post(sidecar.url + "/v1/metrics", data=b"junk", headers=PB)
    text = requests.get(sidecar.url + "/metrics").text
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_health_and_readiness(sidecar: Sidecar) -> None:
    assert requests.get(sidecar.url + "/readyz").status_code == 200
    sidecar.state.ready = False
    assert requests.get(sidecar.url + "/readyz").status_code == 503
