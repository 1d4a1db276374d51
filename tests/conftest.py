"""Shared fixtures: fresh registries and in-memory OTel providers per test, never globals."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
import requests
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from otel_ml import Baseline, fit_baseline
from otel_ml import _names as n


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for real servers the tests start)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sample_value(registry: CollectorRegistry, name: str, labels: dict[str, str]) -> float:
    """The value of one sample; a missing series is a failure, not a zero (a test that expects
    absence says so: ``registry.get_sample_value(...) is None``)."""
    value = registry.get_sample_value(name, labels)
    if value is None:
        same_name = [s.labels for fam in registry.collect() for s in fam.samples if s.name == name]
        raise AssertionError(f"no sample {name}{labels}; the registry has {len(same_name)} {name} samples")
    return value


def right_closed_counts(edges: Sequence[float], values: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Per-bin counts by plain comparison, as Prometheus' ``le`` defines them: the values
    ``<= edge`` for each edge, then all of them, differenced (NaN dropped, +-inf in the outer
    bins). An oracle for otel-ml's binning that shares no code with it."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    cumulative = [np.count_nonzero(v <= e) for e in edges] + [v.size]
    return np.diff(np.asarray(cumulative, dtype=np.int64), prepend=0)


def client_le(edges: Sequence[float]) -> list[str]:
    """The ``le`` values prometheus_client's own Histogram with these buckets exposes (Go's
    spelling: ``1.234567e+06``, ``1e-05``), ``+Inf`` last; an oracle for otel-ml's ``le`` labels."""
    registry = CollectorRegistry()
    Histogram("h", "h", buckets=tuple(edges), registry=registry)
    return re.findall(r'h_bucket\{le="([^"]+)"\}', generate_latest(registry).decode())


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def make_training_frame(n: int = 20_000, seed: int = 0) -> pd.DataFrame:
    """A small fraud-like table: numeric features incl. negatives, a categorical, segments, a score."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "amount": rng.lognormal(3.0, 1.0, n),
            "balance_z": rng.normal(0.0, 1.0, n),  # negative values on purpose (OTel histogram trap)
            "n_items": rng.poisson(2.0, n),
            "country": rng.choice(["US", "DE", "FR", "BR", "JP"], n, p=[0.5, 0.2, 0.15, 0.1, 0.05]),
            "device": rng.choice(["ios", "android", "web"], n),
        }
    )
    frame["score"] = 1 / (1 + np.exp(-(frame["balance_z"] + rng.normal(0, 1, n))))
    return frame


@pytest.fixture(scope="session")
def training_frame() -> pd.DataFrame:
    return make_training_frame()


@pytest.fixture(scope="session")
def baseline(training_frame: pd.DataFrame) -> Baseline:
    return fit_baseline(
        training_frame,
        model="fraud",
        version="v3",
        score_column="score",
        segments=["country", "device"],
        decision=0.7,
    )


class SidecarProcess:
    """``otel-ml sidecar`` as a real process on a free port, ready when constructed."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "otel_ml.cli", "sidecar", "--listen", f"127.0.0.1:{self.port}", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                time.sleep(0.1)
            if self.proc.poll() is not None:
                raise RuntimeError(self.proc.stderr.read().decode() if self.proc.stderr else "sidecar exited")
        raise TimeoutError("sidecar did not become ready")

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=15)
        if self.proc.stderr:
            self.proc.stderr.close()


@pytest.fixture
def processes() -> Iterator[list[SidecarProcess]]:
    started: list[SidecarProcess] = []
    yield started
    for p in started:
        p.kill()


# -- OTLP requests the review tests push -------------------------------------------------------
def otlp_kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def population_request(volumes: dict[tuple[str, str, str], float], source: str = "app-1") -> bytes:
    """ml.review.population as the OTel SDK pushes a cumulative monotonic sum."""
    metric = metrics_pb2.Metric(name=n.REVIEW_POPULATION.otel_name, unit=n.REVIEW_POPULATION.unit)
    metric.sum.is_monotonic = True
    metric.sum.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
    for (key, segment, stratum), value in volumes.items():
        point = metric.sum.data_points.add(start_time_unix_nano=1, time_unix_nano=2, as_int=int(value))
        point.attributes.extend(
            [
                otlp_kv(n.ATTR_MODEL_NAME, "fraud"),
                otlp_kv(n.ATTR_MODEL_VERSION, "v3"),
                otlp_kv(n.ATTR_SEGMENT_KEY, key),
                otlp_kv(n.ATTR_SEGMENT, segment),
                otlp_kv(n.ATTR_STRATUM, stratum),
            ]
        )
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.attributes.append(otlp_kv("service.instance.id", source))
    rm.scope_metrics.add().metrics.append(metric)
    return request.SerializeToString()
