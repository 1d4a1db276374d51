"""The sidecar under abuse: 1,100 idle and slowloris connections, short bodies, a listen backlog,
gzip scrapes, the metrics-only listener, scrapes that never hold up ingest, and windows that a
wall-clock jump cannot stretch."""

from __future__ import annotations

import dataclasses
import gzip
import resource
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
import yaml
from conftest import free_port, make_training_frame
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from otel_ml import Baseline, ModelMonitor, fit_baseline
from otel_ml.instrument import counts_metrics_data
from otel_ml.sidecar import HttpLimits, LimitSettings, Sidecar, SidecarConfig, SidecarState, StateSettings, WindowSpec
from otel_ml.sidecar._otlp_input import metric_batches

PB = {"Content-Type": "application/x-protobuf"}


def payload(baseline: Baseline, rows: int = 500, seed: int = 0) -> bytes:
    mon = ModelMonitor(baseline=baseline, segments=["country"], decision=0.7, registry=CollectorRegistry())
    mon(lambda f: np.full(len(f), 0.4))(make_training_frame(rows, seed=seed).drop(columns="score"))
    return encode_metrics(counts_metrics_data([mon.counters.snapshot()], start_time_ns=7)).SerializeToString()


def samples(url: str, path: str = "/metrics") -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(url + path, timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def errors(url: str, reason: str) -> float:
    found = samples(url).get(("ml_sidecar_ingest_errors_total", (("reason", reason),)))
    assert found is not None, f"no ml_sidecar_ingest_errors_total{{reason={reason!r}}} sample"
    return found


def read_all(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes (or ``timeout`` passes)."""
    sock.settimeout(timeout)
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return out


@pytest.fixture
def baseline_file(baseline: Baseline, tmp_path: Path) -> Path:
    return baseline.save(tmp_path / "fraud-v3.baseline.json")


@pytest.fixture
def sidecar(baseline_file: Path) -> Iterator[Sidecar]:
    config = SidecarConfig(
        baselines=(baseline_file,),
        listen=("127.0.0.1", 0),
        metrics_listen=("127.0.0.1", 0),
        windows=("10m",),
        http=HttpLimits(read_timeout=1.0),
    )
    side = Sidecar(config).start()
    yield side
    side.stop()


class SlowClients:
    """Idle, header-trickling and body-trickling connections, one byte per connection per tick."""

    def __init__(self, port: int, idle: int, headers: int, bodies: int) -> None:
        self.idle = [self._connect(port) for _ in range(idle)]
        self.headers = [self._connect(port) for _ in range(headers)]
        self.bodies = [self._connect(port) for _ in range(bodies)]
        for s in self.headers:
            s.sendall(b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\n")
        for s in self.bodies:
            s.sendall(b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n")
            s.sendall(b"Content-Length: 100000\r\n\r\n")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)
        self._thread.start()

    @staticmethod
    def _connect(port: int) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.setblocking(False)
        return s

    def _trickle(self) -> None:
        while not self._stop.wait(0.5):
            for s in self.headers:
                self._send(s, b"X")  # a header line that never ends
            for s in self.bodies:
                self._send(s, b"\0")

    @staticmethod
    def _send(s: socket.socket, data: bytes) -> None:
        try:
            s.send(data)
        except OSError:
            pass  # closed by the server: what it should do eventually

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for s in self.idle + self.headers + self.bodies:
            s.close()


def _timed_get(url: str) -> float:
    started = time.monotonic()
    r = requests.get(url, timeout=10)
    assert r.status_code == 200
    return time.monotonic() - started


@pytest.mark.slow
def test_1100_idle_and_slowloris_connections(baseline_file: Path, tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    port = free_port()
    config = tmp_path / "sidecar.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "listen": f"127.0.0.1:{port}",
                "models": [{"baseline": str(baseline_file)}],
                "windows": ["10m"],
                "limits": {"read_timeout": "6s"},
            }
        )
    )
    log = (tmp_path / "stderr.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "otel_ml.cli", "sidecar", "--config", str(config)], stderr=log)
    url = f"http://127.0.0.1:{port}"
    clients = None
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and proc.poll() is None, "sidecar did not start"
                time.sleep(0.1)
        baseline = Baseline.load(baseline_file)
        assert requests.post(url + "/v1/metrics", data=payload(baseline), headers=PB, timeout=5).status_code == 200
        clients = SlowClients(port, idle=400, headers=350, bodies=350)
        opened = time.monotonic()
        time.sleep(0.5)
        latencies = [_timed_get(url + path) for _ in range(5) for path in ("/healthz", "/metrics")]
        assert max(latencies) < 1.0, latencies
        assert time.monotonic() - opened < 5.0, "measured after the read deadline: not a test of held connections"
        # the read deadline then closes every slow connection, however busy it keeps trickling
        time.sleep(max(0.0, opened + 6.0 + 4.0 - time.monotonic()))
        answers = [read_all(s, 2.0) for s in clients.headers[:20] + clients.bodies[:20]]
        assert all(a.startswith(b"HTTP/1.1 408") for a in answers[:20]), answers[:3]
        assert all(a.startswith(b"HTTP/1.1 400") and b"incomplete_body" in a for a in answers[20:]), answers[20:23]
        assert errors(url, "header_timeout") == 350
        assert errors(url, "incomplete_body") == 350
        assert max(_timed_get(url + "/healthz") for _ in range(3)) < 1.0
    finally:
        if clients is not None:
            clients.close()
        proc.terminate()
        assert proc.wait(timeout=20) == 0
        log.close()


class TestShortBodies:
    def test_half_closed_short_body_is_a_400(self, sidecar: Sidecar, baseline: Baseline) -> None:
        body = payload(baseline)
        port = int(sidecar.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(
                b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body[: len(body) // 2]
            )
            s.shutdown(socket.SHUT_WR)
            answer = read_all(s, 5)
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
        assert b"incomplete_body" in answer
        assert errors(sidecar.url, "incomplete_body") == 1
        assert not [k for k in samples(sidecar.url) if k[0] == "ml_feature_value_bucket"]  # nothing applied

    def test_stalled_short_body_is_a_400_after_the_read_timeout(self, sidecar: Sidecar) -> None:
        port = int(sidecar.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as s:
            started = time.monotonic()
            s.sendall(
                b"POST /v1/labels HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50\r\n"
            )
            s.sendall(b"\r\n[{")
            answer = read_all(s, 10)
            took = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 400") and b"incomplete_body" in answer, answer[:200]
        assert 0.9 <= took < 5, took  # read_timeout=1s
        assert errors(sidecar.url, "incomplete_body") == 1

    def test_headers_never_finished_get_a_408(self, sidecar: Sidecar) -> None:
        port = int(sidecar.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost")
            answer = read_all(s, 10)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert errors(sidecar.url, "header_timeout") == 1


def test_listen_backlog_is_at_least_128(sidecar: Sidecar) -> None:
    ss = shutil.which("ss")
    if ss is None:
        pytest.skip("ss (iproute2) not installed")
    port = sidecar.url.rsplit(":", 1)[1]
    out = subprocess.run([ss, "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    send_q = [int(line.split()[2]) for line in out.splitlines() if line.strip()]  # Send-Q of a listener: backlog
    assert send_q and min(send_q) >= 128, out


def test_metrics_gzip_when_accepted(sidecar: Sidecar, baseline: Baseline) -> None:
    requests.post(sidecar.url + "/v1/metrics", data=payload(baseline), headers=PB, timeout=5)
    plain = requests.get(sidecar.url + "/metrics", headers={"Accept-Encoding": "identity"}, timeout=5)
    assert "Content-Encoding" not in plain.headers
    packed = requests.get(sidecar.url + "/metrics", headers={"Accept-Encoding": "gzip"}, stream=True, timeout=5)
    assert packed.headers["Content-Encoding"] == "gzip"
    raw = packed.raw.read(decode_content=False)
    assert len(raw) < len(plain.content) / 3

    def parsed(text: str) -> dict[Any, float]:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
            if s.name != "ml_sidecar_compute_duration_seconds"
        }

    assert parsed(gzip.decompress(raw).decode()) == parsed(plain.text)


def test_metrics_listener_serves_only_reads(sidecar: Sidecar, baseline: Baseline) -> None:
    read_only = sidecar.metrics_url
    assert read_only != sidecar.url
    for path in ("/metrics", "/healthz", "/readyz"):
        assert requests.get(read_only + path, timeout=5).status_code == 200, path
    body = payload(baseline)
    for path in ("/v1/metrics", "/v1/traces", "/v1/labels"):
        assert requests.post(read_only + path, data=body, headers=PB, timeout=5).status_code == 404, path
    assert requests.get(read_only + "/", timeout=5).status_code == 404
    assert requests.post(sidecar.url + "/v1/metrics", data=body, headers=PB, timeout=5).status_code == 200
    assert any(name == "ml_feature_value_bucket" for name, _ in samples(read_only))  # ingest shows on both


def test_a_scrape_never_holds_up_ingest() -> None:
    """Outputs of a wide model take a while to compute; ingest meanwhile takes its usual time."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({f"f{i}": rng.normal(size=2000) for i in range(150)})
    frame["score"] = rng.uniform(size=2000)
    wide = fit_baseline(frame, model="wide", version="1", score_column="score")
    windows = tuple(WindowSpec.parse(w) for w in ("5m", "10m", "30m", "1h", "2h", "6h", "12h", "1d"))
    models = [dataclasses.replace(wide, model_name=f"wide-{i}") for i in range(12)]
    state = SidecarState(models, StateSettings(windows=windows, compute_ttl=0))
    for model in models:
        mon = ModelMonitor(baseline=model, registry=CollectorRegistry())
        mon(lambda f: np.full(len(f), 0.3))(frame.drop(columns="score"))
        data = encode_metrics(counts_metrics_data([mon.counters.snapshot()], start_time_ns=1))
        state.apply_metrics(metric_batches(data)[0], "otlp")
    started = time.perf_counter()
    state.outputs()
    compute = time.perf_counter() - started
    assert compute > 0.1, compute  # wide enough to matter (and far above the 5 ms GIL switch interval)
    stop = threading.Event()

    def scrape() -> None:
        while not stop.is_set():
            state.outputs()

    scraper = threading.Thread(target=scrape)
    scraper.start()
    try:
        ingest = []
        for _ in range(20):
            t = time.perf_counter()
            with state.lock:  # what every ingest takes: it must never wait for a whole computation
                pass
            ingest.append(time.perf_counter() - t)
            time.sleep(compute / 7)
    finally:
        stop.set()
        scraper.join()
    assert sorted(ingest)[len(ingest) // 2] < compute / 4, (compute, ingest)


def test_a_wall_clock_jump_cannot_stretch_a_window(baseline: Baseline, monkeypatch: pytest.MonkeyPatch) -> None:
    mono = [1000.0]
    settings = StateSettings(windows=(WindowSpec("1h", 3600.0, 60),), compute_ttl=0)
    state = SidecarState([baseline], settings, clock=lambda: mono[0])
    mon = ModelMonitor(baseline=baseline, registry=CollectorRegistry())
    predict = mon(lambda f: np.full(len(f), 0.4))

    def push(rows: int) -> None:  # cumulative counts from one app, as OTLP pushes them
        predict(make_training_frame(rows, seed=rows).drop(columns="score"))
        data = encode_metrics(counts_metrics_data([mon.counters.snapshot()], start_time_ns=1))
        state.apply_metrics(metric_batches(data)[0], "otlp")

    def window_count() -> float:
        found = [
            v
            for inst, labels, v in state.outputs()
            if inst.prometheus == "ml_feature_window_observations" and labels["ml_feature"] == "amount"
        ]
        assert len(found) == 1
        return found[0]

    push(300)
    for _ in range(130):  # two hours of ticks, one a minute
        mono[0] += 60
        state.tick()
    push(200)
    assert window_count() == 200  # only the late rows are in the last hour
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() - 86400)  # the wall clock jumps back a day
    for _ in range(5):
        mono[0] += 60
        state.tick()
    assert window_count() == 200


def test_metrics_output_stays_within_the_series_budget(baseline: Baseline) -> None:
    """20,000 segment keys (each with its own segment budget) cannot grow /metrics past the series budget."""
    from otel_ml import _names as n
    from otel_ml.sidecar._collector import Exposition, SidecarCollector
    from otel_ml.sidecar._series import MetricBatch

    budget, windows = 500, (WindowSpec.parse("10m"), WindowSpec.parse("1h"))
    state = SidecarState(
        [baseline], StateSettings(windows=windows, limits=LimitSettings(max_series_per_model=budget), compute_ttl=0)
    )
    flood = [
        (
            n.PREDICTIONS.series,
            ((n.LABEL_DECISION, "true"), (n.LABEL_SEGMENT, "a"), (n.LABEL_SEGMENT_KEY, f"k{i}")),
            1.0,
        )
        for i in range(20_000)
    ]
    state.apply_metrics([MetricBatch("x", "fraud", "v3", True, 0, flood)], "otlp")
    body, _, _ = Exposition(SidecarCollector(state)).render()
    lines = [line for line in body.decode().splitlines() if line and not line.startswith("#")]
    features = len(baseline.features)
    reference = (
        sum(len(f.edges) + 1 for f in baseline.numeric)
        + sum(len(c.bin_labels) for c in baseline.categorical)
        + features
        + (len(baseline.score.edges) + 1 if baseline.score else 0)
    )
    per_window = budget + 8 * features + 6  # grouped gauges + per-feature and score drift gauges
    assert budget <= len(lines) <= budget + len(windows) * per_window + reference + 60, len(lines)


def test_an_endless_header_block_is_refused(sidecar: Sidecar) -> None:
    port = int(sidecar.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        try:
            for _ in range(64):  # 1 MiB of headers: refused long before, without buffering it all
                s.sendall(b"X-Pad: " + b"a" * 16_000 + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_all(s, 5)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:100]
    assert errors(sidecar.url, "malformed_http") == 1


def test_keep_alive_responses_do_not_wait_for_delayed_acks(sidecar: Sidecar) -> None:
    """Headers and body are two writes: without TCP_NODELAY each response waits ~40 ms for an ACK."""
    with requests.Session() as session:
        took = []
        for _ in range(30):
            started = time.perf_counter()
            assert session.get(sidecar.url + "/healthz", timeout=5).status_code == 200
            took.append(time.perf_counter() - started)
    assert sorted(took)[len(took) // 2] < 0.02, took
