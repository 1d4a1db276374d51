"""The sidecar as a real process: state survives ``kill -9``, and load from another process
gets no 5xx and leaves memory flat."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from conftest import SidecarProcess, make_training_frame
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from otel_ml import Baseline, ModelMonitor
from otel_ml.instrument import counts_metrics_data

PB = {"Content-Type": "application/x-protobuf"}


def drift_view(url: str) -> dict[tuple[str, str], float]:
    text = requests.get(url + "/metrics", timeout=5).text
    return {
        (s.name, s.labels.get("ml_feature", "")): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name
        in (
            "ml_feature_drift_status",
            "ml_feature_psi",
            "ml_feature_window_observations",
            "ml_score_psi",
            "ml_segment_decision_rate",
        )
    }


def test_state_survives_kill_9(baseline: Baseline, tmp_path: Path, processes: list[SidecarProcess]) -> None:
    path = baseline.save(tmp_path / "b.json")
    args = [
        "--baseline",
        str(path),
        "--window",
        "10m",
        "--state-file",
        str(tmp_path / "state.npz"),
        "--persist-interval",
        "0.2s",
    ]
    first = SidecarProcess(*args)
    processes.append(first)
    mon = ModelMonitor(baseline=baseline, segments=["country"], decision=0.7, registry=CollectorRegistry())
    frame = make_training_frame(3000, seed=8).drop(columns="score")
    frame["amount"] *= 2.5
    mon(lambda f: np.clip(0.5 + 0.3 * f["balance_z"].to_numpy(), 0, 1))(frame)
    body = encode_metrics(counts_metrics_data([mon.counters.snapshot()], start_time_ns=1)).SerializeToString()
    assert requests.post(first.url + "/v1/metrics", data=body, headers=PB).status_code == 200
    before = drift_view(first.url)
    assert before[("ml_feature_drift_status", "amount")] == 2
    time.sleep(1.0)  # a few persist intervals
    first.kill(signal.SIGKILL)
    second = SidecarProcess(*args)
    processes.append(second)
    assert drift_view(second.url) == before
    # and the restored source continues instead of double counting the same cumulative values
    assert requests.post(second.url + "/v1/metrics", data=body, headers=PB).status_code == 200
    assert drift_view(second.url) == before


def _request(baseline: Baseline, source: int, rows: int, seed: int) -> bytes:
    mon = ModelMonitor(baseline=baseline, segments=["country"], decision=0.7, registry=CollectorRegistry())
    predict = mon(lambda f: np.full(len(f), 0.4))
    for i in range(seed + 1):
        predict(make_training_frame(rows, seed=i).drop(columns="score"))
    resource = Resource.create({"service.instance.id": f"replica-{source}"})
    return encode_metrics(
        counts_metrics_data([mon.counters.snapshot()], start_time_ns=source + 1, resource=resource)
    ).SerializeToString()


@pytest.mark.slow
def test_load_from_another_process(baseline: Baseline, tmp_path: Path, processes: list[SidecarProcess]) -> None:
    """8 concurrent clients for 30 s on loopback: no 5xx, memory flat once warmed up."""
    path = baseline.save(tmp_path / "b.json")
    side = SidecarProcess("--baseline", str(path), "--window", "1m", "--window", "5m")
    processes.append(side)
    # cumulative payloads that grow over time, one set per client, prepared up front
    payloads = [[_request(baseline, c, 50, k) for k in range(6)] for c in range(8)]
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    stop = threading.Event()
    rss: list[int] = []

    def client(c: int) -> None:
        with requests.Session() as session:
            send(c, session)

    def send(c: int, session: requests.Session) -> None:
        k = 0
        while not stop.is_set():
            body = payloads[c][min(k // 40, 5)]
            code = session.post(side.url + "/v1/metrics", data=body, headers=PB, timeout=10).status_code
            session.get(side.url + "/metrics", timeout=10) if k % 25 == 0 else None
            with lock:
                statuses[code] = statuses.get(code, 0) + 1
            k += 1

    threads = [threading.Thread(target=client, args=(c,)) for c in range(8)]
    for t in threads:
        t.start()
    started = time.monotonic()
    while time.monotonic() - started < 30:
        time.sleep(1)
        rss.append(side.rss_bytes())
    stop.set()
    for t in threads:
        t.join()
    total = sum(statuses.values())
    assert total > 1000, statuses
    assert all(code < 500 for code in statuses), statuses
    assert statuses.get(200, 0) == total
    warm, end = rss[4], rss[-1]
    assert end <= warm * 1.10 + 5 * 2**20, [r // 2**20 for r in rss]
    assert side.proc.poll() is None
