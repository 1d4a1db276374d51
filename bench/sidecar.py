"""Benchmark: the sidecar's recompute time, OTLP ingest rate and memory under volume.

1. Recompute every output for 10 models x 50 features x 3 windows (target < 100 ms), against
   a naive per-feature loop doing the same statistics one feature at a time with scipy.
2. OTLP ingest on one core: requests/s and data points/s through decode + apply, in process
   and over HTTP from one client, against a naive receiver that walks every data point into a
   Python dict (what a hand-written one would do).
3. Resident memory of a sidecar process after 10k and after 1M ingested observations
   (target: the same within 10 %: state is counts, not events).
4. ``/metrics`` of a 6,500-line page (3 models x 43 features x 3 windows, the app's counters
   re-exported), as Prometheus asks for it (OpenMetrics, gzip): after one model pushed, after
   all three pushed (target <= 20 ms), and unchanged since the last scrape (target <= 5 ms),
   against prometheus_client's ``generate_latest`` over the same collector with every output
   computed again (what the sidecar did before).

Run: ``python bench/sidecar.py`` (``--quick`` for fewer repetitions).
"""

from __future__ import annotations

import argparse
import gzip
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import requests
from _machine import machine_line, median_time
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from scipy import stats
from scipy.spatial.distance import jensenshannon

from otel_ml import Baseline, ModelMonitor, fit_baseline
from otel_ml.instrument import counts_metrics_data
from otel_ml.sidecar import SidecarState, StateSettings, WindowSpec
from otel_ml.sidecar._otlp_input import metric_batches

MODELS, FEATURES = 10, 50
WINDOWS = (WindowSpec.parse("1h"), WindowSpec.parse("24h"), WindowSpec.parse("7d"))


def make_baselines(rng: np.random.Generator, models: int = MODELS, features: int = FEATURES) -> list[Baseline]:
    train = {f"f{j:02d}": rng.normal(size=20_000) for j in range(features)}
    train["segment"] = rng.choice(["a", "b", "c", "d"], size=20_000).tolist()
    scores = rng.uniform(size=20_000)
    return [
        fit_baseline(train, model=f"model-{m}", version="v1", scores=scores, segments=["segment"], decision=0.5)
        for m in range(models)
    ]


def app_request(baseline: Baseline, rows: int, rng: np.random.Generator, shift: float = 0.0) -> bytes:
    mon = ModelMonitor(baseline=baseline, segments=["segment"], decision=0.5, registry=CollectorRegistry())
    batch = {f.name: rng.normal(shift, 1.0, size=rows) for f in baseline.numeric}
    batch["segment"] = rng.choice(["a", "b", "c", "d"], size=rows)
    mon(lambda f: rng.uniform(size=rows))(batch)
    return encode_metrics(counts_metrics_data([mon.counters.snapshot()], start_time_ns=1)).SerializeToString()


def loaded_state(baselines: list[Baseline], rng: np.random.Generator) -> tuple[SidecarState, float]:
    t0 = 1_700_000_000.0
    state = SidecarState(baselines, StateSettings(windows=WINDOWS, compute_ttl=0), now=t0)
    for b in baselines:
        batches, _ = metric_batches(ExportMetricsServiceRequest.FromString(app_request(b, 5000, rng, 0.2)))
        state.apply_metrics(batches, "otlp", now=t0 + 10)
    state.tick(t0 + 4000)
    return state, t0 + 4000


def naive_recompute(state: SidecarState, now: float) -> None:
    """The same statistics, one feature at a time, with scipy (what a first version would do)."""
    for model in state.models.values():
        totals = model.current_totals()
        for ring in model.rings.values():
            delta, _ = ring.window(now, totals)
            for f in model.layout.numeric:
                counts = np.clip(delta[f.buckets], 0, None)  # the store holds buckets per bin
                if counts.sum() == 0:
                    continue
                a = np.maximum(counts / counts.sum(), 1e-4)
                r = np.maximum(f.reference, 1e-4)
                float(np.sum((a - r) * np.log(a / r)))
                float(jensenshannon(r, a, base=2))
                stats.chisquare(counts, r / r.sum() * counts.sum())
                stats.chi2.ppf(0.99, counts.size - 1)


def bench_recompute(repeats: int) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    state, now = loaded_state(make_baselines(rng), rng)

    def ours() -> None:
        state._parts.clear()  # every model computed again
        state.outputs(now)

    return median_time(ours, repeats), median_time(lambda: naive_recompute(state, now), max(3, repeats // 3))


def naive_ingest(body: bytes) -> dict[tuple[Any, ...], float]:
    request = ExportMetricsServiceRequest.FromString(body)
    out: dict[tuple[Any, ...], float] = {}
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                points = metric.histogram.data_points if metric.HasField("histogram") else metric.sum.data_points
                for p in points:
                    attrs = tuple((kv.key, kv.value.string_value) for kv in p.attributes)
                    if metric.HasField("histogram"):
                        for i, c in enumerate(p.bucket_counts):
                            out[(metric.name, attrs, i)] = out.get((metric.name, attrs, i), 0) + c
                    else:
                        out[(metric.name, attrs)] = out.get((metric.name, attrs), 0) + p.as_double + p.as_int
    return out


def bench_ingest(repeats: int) -> tuple[float, float, int, float]:
    rng = np.random.default_rng(1)
    baselines = make_baselines(rng)[:1]
    bodies = [app_request(baselines[0], 1000, rng) for _ in range(5)]
    points = sum(
        len(p.bucket_counts) + 2 if m.HasField("histogram") else 1
        for m in ExportMetricsServiceRequest.FromString(bodies[0]).resource_metrics[0].scope_metrics[0].metrics
        for p in (m.histogram.data_points if m.HasField("histogram") else m.sum.data_points)
    )
    state = SidecarState(baselines, StateSettings(windows=WINDOWS))

    def ours() -> None:
        for body in bodies:
            batches, _ = metric_batches(ExportMetricsServiceRequest.FromString(body))
            state.apply_metrics(batches, "otlp")

    t_ours = median_time(ours, repeats) / len(bodies)
    t_naive = median_time(lambda: [naive_ingest(b) for b in bodies], repeats) / len(bodies)
    return t_ours, t_naive, points, http_rate(baselines[0], bodies)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SidecarProcess:
    def __init__(self, baseline: Baseline, workdir: Path) -> None:
        path = baseline.save(workdir / f"{baseline.model_name}.json")
        self.url = f"http://127.0.0.1:{free_port()}"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "otel_ml.cli",
                "sidecar",
                "--baseline",
                str(path),
                "--listen",
                self.url.removeprefix("http://"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(300):
            try:
                if requests.get(self.url + "/readyz", timeout=1).ok:
                    return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("sidecar did not start")

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def http_rate(baseline: Baseline, bodies: list[bytes]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        side = SidecarProcess(baseline, Path(tmp))
        try:
            headers = {"Content-Type": "application/x-protobuf"}
            start, sent = time.perf_counter(), 0
            with requests.Session() as session:
                while time.perf_counter() - start < 3.0:
                    session.post(
                        side.url + "/v1/metrics", data=bodies[sent % len(bodies)], headers=headers
                    ).raise_for_status()
                    sent += 1
            return sent / (time.perf_counter() - start)
        finally:
            side.stop()


def bench_memory() -> tuple[float, float]:
    """RSS after 10k and after 1M observations (rows x numeric features) pushed to one sidecar."""
    rng = np.random.default_rng(2)
    baseline = make_baselines(rng)[0]
    headers = {"Content-Type": "application/x-protobuf"}
    with tempfile.TemporaryDirectory() as tmp:
        side = SidecarProcess(baseline, Path(tmp))
        try:
            mon = ModelMonitor(baseline=baseline, segments=["segment"], decision=0.5, registry=CollectorRegistry())
            predict = mon(lambda f: rng.uniform(size=len(f["segment"])))
            results = []
            for target in (10_000, 1_000_000):
                while mon.counters.snapshot().numeric_bins[0].sum() * FEATURES < target:
                    rows = 200
                    batch = {f.name: rng.normal(size=rows) for f in baseline.numeric}
                    batch["segment"] = rng.choice(["a", "b", "c", "d"], size=rows)
                    predict(batch)
                    body = encode_metrics(counts_metrics_data([mon.counters.snapshot()], start_time_ns=1))
                    requests.post(
                        side.url + "/v1/metrics", data=body.SerializeToString(), headers=headers
                    ).raise_for_status()
                    requests.get(side.url + "/metrics")
                time.sleep(0.5)
                results.append(side.rss_mib())
            return results[0], results[1]
        finally:
            side.stop()


PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


def bench_scrape(repeats: int) -> tuple[int, float, float, float, float]:
    """Lines, and the scrape after one push, after all pushed, unchanged; the library's page."""
    from otel_ml.sidecar._collector import Exposition, SidecarCollector

    rng = np.random.default_rng(4)
    baselines = make_baselines(rng, models=3, features=43)
    t0 = 1_700_000_000.0
    state = SidecarState(baselines, StateSettings(windows=WINDOWS, compute_ttl=0), now=t0)
    pushes = [
        metric_batches(ExportMetricsServiceRequest.FromString(app_request(b, 5000, rng, 0.2)))[0] for b in baselines
    ]
    for batches in pushes:
        state.apply_metrics(batches, "otlp", now=t0 + 10)
    state.tick(t0 + 4000)
    state.clock = lambda: t0 + 4000
    collector = SidecarCollector(state)
    exposition = Exposition(collector)
    lines = exposition.render(PROMETHEUS_ACCEPT)[0].count(b"\n")

    def timed(before: Any, scrape: Any) -> float:
        times = []
        for _ in range(repeats):
            before()
            start = time.perf_counter()
            scrape()
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    def push(which: Sequence[Any]) -> Any:
        return lambda: [state.apply_metrics(b, "otlp", now=t0 + 4000) for b in which]

    def ours() -> None:
        exposition.render(PROMETHEUS_ACCEPT, gzip_ok=True)

    def library() -> None:
        state._parts.clear()  # as before: every output computed again for the scrape
        encoder, _ = choose_encoder(PROMETHEUS_ACCEPT)
        gzip.compress(encoder(_Families(collector)), 1)

    one = timed(push(pushes[:1]), ours)
    every = timed(push(pushes), ours)
    unchanged = timed(lambda: None, ours)
    naive = timed(push(pushes), library)
    return lines, one, every, unchanged, naive


class _Families:
    def __init__(self, collector: Any) -> None:
        self.collector = collector

    def collect(self) -> Any:
        return list(self.collector.collect())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args(argv)
    repeats = 5 if args.quick else 15
    ok = True
    print(machine_line())
    print(f"otel-ml sidecar benchmark ({MODELS} models x {FEATURES} features x {len(WINDOWS)} windows)\n")
    print("| measure | otel-ml | naive | ratio | target |")
    print("|---|---|---|---|---|")
    ours, naive = bench_recompute(repeats)
    ok &= ours < 0.100
    speedup = naive / ours
    print(f"| recompute all outputs | {ours * 1e3:.1f} ms | {naive * 1e3:.1f} ms | {speedup:.1f}x faster | < 100 ms |")
    t_ours, t_naive, points, http = bench_ingest(repeats)
    print(
        f"| OTLP ingest, in process (1 core) | {1 / t_ours:,.0f} req/s ({points / t_ours:,.0f} points/s) | "
        f"{1 / t_naive:,.0f} req/s | {t_naive / t_ours:.1f}x | |"
    )
    print(f"| OTLP ingest over HTTP, 1 client | {http:,.0f} req/s ({points * http:,.0f} points/s) | | | |")
    small, large = bench_memory()
    growth = large / small - 1
    ok &= abs(growth) <= 0.10
    print(f"| RSS after 10k / 1M observations | {small:.1f} MiB / {large:.1f} MiB | | {growth:+.1%} | within 10% |")
    lines, one, every, unchanged, naive = bench_scrape(repeats)
    ok &= every <= 0.020 and unchanged <= 0.005
    print(
        f"| /metrics, {lines:,} lines, after 1 of 3 models pushed | {one * 1e3:.1f} ms | {naive * 1e3:.1f} ms |"
        f" {naive / one:.1f}x faster | |"
    )
    print(
        f"| /metrics, {lines:,} lines, after all 3 pushed | {every * 1e3:.1f} ms | {naive * 1e3:.1f} ms |"
        f" {naive / every:.1f}x faster | <= 20 ms |"
    )
    print(f"| /metrics, unchanged since the last scrape | {unchanged * 1e3:.2f} ms | | | <= 5 ms |")
    print(f"\n({points} OTLP data points per request: one model, {FEATURES} features, 4 segments)")
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
