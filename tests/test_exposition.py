"""The sidecar's fast ``/metrics`` encoder and its page cache.

The oracle is prometheus_client's own encoders (text 0.0.4 and OpenMetrics 1.0.0) on the same
families: the fast page must be the same bytes, on a real sidecar page, on hostile label values
and numbers, and after any sequence of ingest, ticks and clock moves (a cached page is never
stale: it equals a page computed from scratch).
"""

from __future__ import annotations

import gzip
import math

import numpy as np
import pytest
from conftest import make_training_frame
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from otel_ml import Baseline, ModelMonitor, fit_baseline
from otel_ml import _names as n
from otel_ml.instrument import counts_metrics_data
from otel_ml.sidecar import SidecarState, StateSettings, WindowSpec
from otel_ml.sidecar._collector import Exposition, SidecarCollector, _gauge_families
from otel_ml.sidecar._exposition import _assemble, encode_gauges, encode_page
from otel_ml.sidecar._otlp_input import metric_batches
from otel_ml.sidecar._series import Prediction

T0 = 1_700_000_000.0
WINDOW = WindowSpec("10m", 600.0, resolution=10)
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
ACCEPTS = ("", PROMETHEUS_ACCEPT, "text/plain;version=1.0.0;escaping=allow-utf-8", "application/openmetrics-text")


class _Registry:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def library_page(families: list[Metric], accept: str) -> bytes:
    encoder, _ = choose_encoder(accept)
    return bytes(encoder(_Registry(families)))


def uncached_page(state: SidecarState, accept: str) -> bytes:
    """The page from scratch: outputs computed again, families through the library's encoder."""
    state._parts.clear()
    return library_page(list(SidecarCollector(state).collect()), accept)


def timeless(page: bytes) -> bytes:
    """The page without the one sample that differs by construction: how long the outputs took."""
    compute = n.SIDECAR_COMPUTE_DURATION.prometheus.encode() + b" "
    return b"\n".join(line for line in page.split(b"\n") if not line.startswith(compute))


def otlp_body(baseline: Baseline, rows: int, seed: int, shift: float = 0.0) -> bytes:
    rng = np.random.default_rng(seed)
    mon = ModelMonitor(baseline=baseline, segments=["country"], decision=0.7, registry=CollectorRegistry())
    frame = make_training_frame(rows, seed=seed).drop(columns="score")
    frame["balance_z"] += shift
    mon(lambda f: rng.uniform(size=len(f)))(frame)
    return encode_metrics(counts_metrics_data([mon.counters.snapshot()], start_time_ns=1)).SerializeToString()


def apply(state: SidecarState, body: bytes, now: float) -> None:
    batches, _ = metric_batches(ExportMetricsServiceRequest.FromString(body))
    state.apply_metrics(batches, "otlp", now=now)


@pytest.fixture
def two_models(baseline: Baseline) -> tuple[SidecarState, list[bytes]]:
    frame = make_training_frame(5000, seed=3)
    other = fit_baseline(
        frame.drop(columns="score"), model="other", version="v2", scores=frame["score"], segments=["country"]
    )
    state = SidecarState([baseline, other], StateSettings(windows=(WINDOW,), compute_ttl=0), now=T0)
    bodies = [otlp_body(baseline, 2000, 1, 0.5), otlp_body(other, 1500, 2)]
    return state, bodies


@pytest.mark.parametrize("accept", ACCEPTS)
def test_a_real_page_is_the_librarys_bytes(two_models: tuple[SidecarState, list[bytes]], accept: str) -> None:
    state, bodies = two_models
    for body in bodies:
        apply(state, body, T0 + 30)
    state.add_predictions([Prediction("r1", "fraud", "v3", 0.8, "true", ())], now=T0 + 40)
    state.clock = lambda: T0 + 60
    page, content_type, _ = Exposition(SidecarCollector(state)).render(accept)
    assert content_type == choose_encoder(accept)[1]
    assert len(page.splitlines()) > 500  # drift gauges, reference ratios, re-exported app counters
    assert timeless(page) == timeless(uncached_page(state, accept))


label_values = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(['a"b', "a\\b", "a\nb", "\\n"])
numbers = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**70), 2**70) | st.sampled_from([1e6, 1e7])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([n.FEATURE_PSI, n.FEATURE_JS_DISTANCE]), label_values, numbers), max_size=20))
def test_gauges_with_hostile_values_are_the_librarys_bytes(rows: list[tuple[n.Instrument, str, float]]) -> None:
    gauges = [(inst, {n.LABEL_FEATURE: value, n.LABEL_WINDOW: "1h"}, number) for inst, value, number in rows]
    gauges = list({(g[0], tuple(g[1].items())): g for g in gauges}.values())  # a series once per page
    for openmetrics_format, accept in ((False, ""), (True, "application/openmetrics-text")):
        encoded = encode_gauges(gauges)
        assert encoded is not None
        assert _assemble([encoded], openmetrics_format) == library_page(list(_gauge_families(gauges)), accept)


@settings(max_examples=100, deadline=None)
@given(label_values, numbers, st.text(max_size=20))
def test_counters_and_histograms_with_hostile_values(value: str, number: float, documentation: str) -> None:
    counter = CounterMetricFamily("ml_things", documentation, labels=["ml_feature"])
    counter.add_metric([value], abs(float(number)) if not math.isnan(float(number)) else 0.0)
    histogram = HistogramMetricFamily("ml_sizes", "sizes\\n", labels=["ml_feature"])
    histogram.add_metric([value], [("0.5", 1.0), ("+Inf", 3.0)], sum_value=float(number))
    gauge = GaugeMetricFamily("ml_level", documentation, value=number)
    families: list[Metric] = [counter, histogram, gauge]
    for accept in ACCEPTS:
        assert encode_page(families, accept)[0] == library_page(families, accept)


@pytest.mark.parametrize(
    "family",
    [
        Metric("ml_odd", "a label name outside the legacy set", "gauge"),
        Metric("ml_info", "an info family", "info"),
        Metric("ml_ts", "a sample with a timestamp", "gauge"),
    ],
)
def test_families_outside_the_plain_shape_go_through_the_library(family: Metric) -> None:
    if family.name == "ml_odd":
        family.add_sample("ml_odd", {"bad-name": "x"}, 1.0)
    elif family.type == "info":
        family.add_sample("ml_info_info", {"a": "b"}, 1.0)
    else:
        family.add_sample("ml_ts", {}, 1.0, timestamp=1_700_000_000.5)
    families = [GaugeMetricFamily("ml_plain", "plain", value=2.0), family]
    for accept in ACCEPTS:
        assert encode_page(families, accept)[0] == library_page(families, accept)


def test_the_cached_page_is_never_stale(two_models: tuple[SidecarState, list[bytes]]) -> None:
    """Random ingest, ticks and clock moves; after each, the served page (cached where the key
    says nothing changed) equals a page computed from scratch, and unchanged keys are hits."""
    state, bodies = two_models
    clock = [T0 + 1.0]
    state.clock = lambda: clock[0]
    exposition = Exposition(SidecarCollector(state))
    rng = np.random.default_rng(11)
    hits = 0
    for _ in range(40):
        step = rng.integers(5)
        if step == 0:
            apply(state, bodies[rng.integers(2)], clock[0])
        elif step == 1:
            state.tick(clock[0])
        else:
            clock[0] += float(rng.choice([1.0, 30.0, 61.0, 600.0]))
        before = state.page_key()
        first, _, _ = exposition.render(PROMETHEUS_ACCEPT)
        again, _, _ = exposition.render(PROMETHEUS_ACCEPT)
        hits += again is first
        assert timeless(first) == timeless(uncached_page(state, PROMETHEUS_ACCEPT)), step
        assert state.page_key() == before  # rendering changes nothing
    assert hits == 40


def test_time_alone_moves_a_window_and_the_page(two_models: tuple[SidecarState, list[bytes]]) -> None:
    state, bodies = two_models
    clock = [T0 + 660.0]
    state.clock = lambda: clock[0]
    for t in range(60, 700, 60):  # snapshots every minute (10m window, resolution 10)
        state.tick(T0 + t)
        if t == 60:
            apply(state, bodies[0], T0 + 90)  # counted in the snapshots from T0 + 120 on
    key = state.page_key()
    exposition = Exposition(SidecarCollector(state))
    old, _, _ = exposition.render()
    clock[0] = T0 + 720  # the window now starts at the T0 + 120 snapshot: the data left it, no tick, no input
    assert state.page_key() != key
    new, _, _ = exposition.render()
    assert new != old
    assert timeless(new) == timeless(uncached_page(state, ""))


def test_gzip_is_the_same_page(two_models: tuple[SidecarState, list[bytes]]) -> None:
    state, bodies = two_models
    apply(state, bodies[0], T0 + 30)
    exposition = Exposition(SidecarCollector(state))
    plain, _, zipped = exposition.render(PROMETHEUS_ACCEPT, gzip_ok=False)
    body, _, zipped = exposition.render(PROMETHEUS_ACCEPT, gzip_ok=True)
    assert zipped and gzip.decompress(body) == plain


def test_a_part_held_back_by_compute_ttl_is_never_cached_as_current(baseline: Baseline) -> None:
    """A push within ``compute_ttl`` of the last computation is served with the older part; that
    page must not become the cached page for the new key: once the ttl has passed, with no other
    input, the page is the state's."""
    state = SidecarState([baseline], StateSettings(windows=(WINDOW,), compute_ttl=1.0), now=T0)
    clock = [T0 + 30.0]
    state.clock = lambda: clock[0]
    exposition = Exposition(SidecarCollector(state))
    apply(state, otlp_body(baseline, 500, 1), clock[0])
    exposition.render()
    clock[0] += 0.2
    apply(state, otlp_body(baseline, 2000, 2, shift=3.0), clock[0])
    exposition.render()  # within the ttl: the older windowed part
    clock[0] += 5.0  # past the ttl, no input, no snapshot passed
    served, _, _ = exposition.render()
    assert timeless(served) == timeless(uncached_page(state, ""))


def test_a_name_with_a_colon_goes_through_the_library() -> None:
    """OpenMetrics' writer rewrites ':' in sample names; the fast writer leaves such names to it."""
    families: list[Metric] = [GaugeMetricFamily("job:ml_psi:max", "a recording-rule style name", value=1.0)]
    for accept in ACCEPTS:
        assert encode_page(families, accept)[0] == library_page(families, accept)
