"""Sidecar input semantics under hostile input: what is rejected, what is renamed, what is kept.

Every rejection is checked three ways: the status the HTTP layer answers (``IngestError.status``,
and the real server for the same cases at the end), the reason counter going up by one, and the
sidecar's whole ``/metrics`` text staying exactly as it was. Label hygiene is checked on the
exposition itself: it must encode as UTF-8, parse with prometheus_client and pass ``promtool``.
"""

from __future__ import annotations

import gzip
import json
import math
import random
import shutil
import subprocess
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from otel_ml import Baseline, ModelMonitor
from otel_ml import _names as n
from otel_ml._cardinality import BoundedLabels
from otel_ml._label_hygiene import MAX_LABEL_VALUE_CHARS
from otel_ml._names import le_labels
from otel_ml.instrument import counts_metrics_data
from otel_ml.sidecar import HttpLimits, LimitSettings, SidecarState, StateSettings, WindowSpec, load_state, save_state
from otel_ml.sidecar._collector import SidecarCollector
from otel_ml.sidecar._label_input import parse_label_events
from otel_ml.sidecar._otlp_input import (
    PROTOBUF,
    decode_body,
    decompress,
    metric_batches,
    predictions_from_traces,
)
from otel_ml.sidecar._series import IngestError, Prediction, SeriesKey

T0 = 1_700_000_000.0
WINDOW = WindowSpec("10m", 600.0, resolution=10)
JSON = "application/json"
MAX_BODY = 1024 * 1024


# -- the decode + ingest path, exactly as the HTTP handlers run it --------------------------------
def ingest(state: SidecarState, path: str, body: bytes, content_type: str = PROTOBUF, encoding: str = "") -> int:
    """Decode then apply one body; returns the HTTP status (an IngestError is counted, as the server does)."""
    try:
        if path == "/v1/metrics":
            request = decode_body(body, content_type, encoding, ExportMetricsServiceRequest, MAX_BODY)
            batches, unlabelled = metric_batches(request)  # type: ignore[arg-type]
            if unlabelled:
                state.count_error("missing_model_labels", unlabelled)
            state.apply_metrics(batches, "otlp", now=T0 + 10)
        elif path == "/v1/traces":
            request = decode_body(body, content_type, encoding, ExportTraceServiceRequest, MAX_BODY)
            state.add_predictions(predictions_from_traces(request), now=T0 + 10)  # type: ignore[arg-type]
        else:
            state.apply_labels(parse_label_events(decompress(body, encoding, MAX_BODY)), now=T0 + 11)
    except IngestError as exc:
        state.count_error(exc.reason)
        return exc.status
    return 200


def exposition(state: SidecarState) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SidecarCollector(state))
    return generate_latest(registry).decode("utf-8")  # raises if any label cannot be encoded


def without_error_counts(text: str) -> list[str]:
    """The exposition less the reason counters (checked on their own) and the sidecar's own timing."""
    skip = (n.SIDECAR_INGEST_ERRORS.prometheus, "ml_sidecar_compute")
    return [line for line in text.splitlines() if not line.startswith(skip)]


def error_count(state: SidecarState, reason: str) -> int:
    return state.ingest_errors.get(reason, 0)


def check_exposition(text: str, tmp_path: Path) -> None:
    """Parses with the Python client, and with promtool where it is installed."""
    families = list(text_string_to_metric_families(text))
    assert families
    for line in text.splitlines():
        assert all(ch == "\t" or ord(ch) >= 0x20 for ch in line)
    promtool = shutil.which("promtool")
    if promtool:
        done = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
        problems = [ln for ln in done.stdout.decode().splitlines() + done.stderr.decode().splitlines() if "error" in ln]
        assert not problems, problems


@pytest.fixture
def state(baseline: Baseline) -> SidecarState:
    return SidecarState([baseline], StateSettings(windows=(WINDOW,), compute_ttl=0), now=T0)


# -- OTLP requests built by hand, so each field can be made wrong on its own ------------------------
def _kv(key: str, value: Any) -> KeyValue:
    kv = KeyValue(key=key)
    if isinstance(value, bool):
        kv.value.bool_value = value
    elif isinstance(value, int):
        kv.value.int_value = value
    elif isinstance(value, float):
        kv.value.double_value = value
    else:
        kv.value.string_value = value
    return kv


def _request(*metrics: Metric) -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.attributes.append(_kv("service.instance.id", "test-1"))
    rm.scope_metrics.add().metrics.extend(metrics)
    return request


def model_attrs(**extra: Any) -> list[KeyValue]:
    return [_kv(n.ATTR_MODEL_NAME, "fraud"), _kv(n.ATTR_MODEL_VERSION, "v3"), *(_kv(k, v) for k, v in extra.items())]


def counter(value: float | int, name: str = n.PREDICTIONS.otel_name, **attrs: Any) -> Metric:
    metric = Metric(name=name)
    metric.sum.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    metric.sum.is_monotonic = True
    point = metric.sum.data_points.add(start_time_unix_nano=1, time_unix_nano=2)
    point.attributes.extend(model_attrs(**({n.ATTR_SEGMENT_KEY: "__all__", n.ATTR_SEGMENT: "__all__"} | attrs)))
    if isinstance(value, int):
        point.as_int = value
    else:
        point.as_double = value
    return metric


def histogram(
    bounds: tuple[float, ...], counts: list[int] | None = None, feature: str = "amount", total: float = 10.0
) -> Metric:
    metric = Metric(name=n.FEATURE_VALUE.otel_name)
    metric.histogram.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    point = metric.histogram.data_points.add(start_time_unix_nano=1, time_unix_nano=2)
    point.attributes.extend(model_attrs(**{n.ATTR_FEATURE: feature}))
    point.explicit_bounds.extend(bounds)
    point.bucket_counts.extend([1] * (len(bounds) + 1) if counts is None else counts)
    point.count = sum(point.bucket_counts)
    point.sum = total
    return metric


def app_body(baseline: Baseline, rows: int = 500, segments: tuple[str, ...] = ("country",)) -> bytes:
    mon = ModelMonitor(baseline=baseline, segments=list(segments), decision=0.7, registry=CollectorRegistry())
    rng = np.random.default_rng(1)
    frame = {
        "amount": rng.lognormal(3.0, 1.0, rows),
        "balance_z": rng.normal(0.0, 1.0, rows),
        "n_items": rng.poisson(2.0, rows),
        "country": rng.choice(["US", "DE"], rows),
        "device": rng.choice(["ios", "web"], rows),
    }
    import pandas as pd

    mon(lambda f: np.clip(0.5 + 0.3 * f["balance_z"].to_numpy(), 0, 1))(pd.DataFrame(frame))
    return encode_metrics(counts_metrics_data([mon.counters.snapshot()], start_time_ns=7)).SerializeToString()


@pytest.fixture
def loaded(state: SidecarState, baseline: Baseline) -> SidecarState:
    assert ingest(state, "/v1/metrics", app_body(baseline)) == 200
    assert state.ingest_errors == {}
    return state


# -- item 6: values, histograms and labels that must be rejected whole ------------------------------
def _amount_edges(baseline: Baseline) -> tuple[float, ...]:
    return tuple(baseline.feature("amount").edges)  # type: ignore[union-attr]


REJECTED_METRICS: dict[str, tuple[Callable[[Baseline], bytes], int, str]] = {
    "negative": (lambda b: _request(counter(-5)).SerializeToString(), 400, "invalid_value"),
    "nan": (lambda b: _request(counter(math.nan)).SerializeToString(), 400, "invalid_value"),
    "inf": (lambda b: _request(counter(math.inf)).SerializeToString(), 400, "invalid_value"),
    "above-2^53": (lambda b: _request(counter(2**53 + 2)).SerializeToString(), 400, "invalid_value"),
    "huge-bucket": (
        lambda b: _request(histogram(_amount_edges(b), [2**62] + [0] * len(_amount_edges(b)))).SerializeToString(),
        400,
        "invalid_value",
    ),
    "nan-sum": (
        lambda b: _request(histogram(_amount_edges(b), total=math.nan)).SerializeToString(),
        400,
        "invalid_value",
    ),
    "counts-vs-bounds": (
        lambda b: _request(histogram(_amount_edges(b), [1, 2])).SerializeToString(),
        400,
        "bad_histogram",
    ),
    "unsorted-bounds": (
        lambda b: _request(histogram(tuple(reversed(_amount_edges(b))))).SerializeToString(),
        400,
        "bad_histogram",
    ),
    "nan-bound": (lambda b: _request(histogram((1.0, math.nan, 3.0))).SerializeToString(), 400, "bad_histogram"),
    "1001-bounds": (
        lambda b: _request(histogram(tuple(float(i) for i in range(1001)))).SerializeToString(),
        400,
        "too_many_buckets",
    ),
    # one bad point spoils the request: the good counter before it is not applied either
    "good-then-bad": (lambda b: _request(counter(3), counter(-1)).SerializeToString(), 400, "invalid_value"),
}


class TestMetricValues:
    @pytest.mark.parametrize("case", sorted(REJECTED_METRICS))
    def test_rejected_whole_and_counted(self, loaded: SidecarState, baseline: Baseline, case: str) -> None:
        build, status, reason = REJECTED_METRICS[case]
        before = without_error_counts(exposition(loaded))
        assert ingest(loaded, "/v1/metrics", build(baseline)) == status
        assert loaded.ingest_errors == {reason: 1}
        assert without_error_counts(exposition(loaded)) == before

    def test_a_configurable_cap(self, baseline: Baseline) -> None:
        state = SidecarState(
            [baseline], StateSettings(windows=(WINDOW,), compute_ttl=0, limits=LimitSettings(max_count=1000)), now=T0
        )
        assert ingest(state, "/v1/metrics", _request(counter(1000)).SerializeToString()) == 200
        assert ingest(state, "/v1/metrics", _request(counter(1001)).SerializeToString()) == 400
        assert state.ingest_errors == {"invalid_value": 1}

    def test_negative_sums_are_values_not_counts(self, state: SidecarState, baseline: Baseline) -> None:
        body = _request(histogram(tuple(baseline.feature("balance_z").edges), feature="balance_z", total=-42.5))  # type: ignore[union-attr]
        assert ingest(state, "/v1/metrics", body.SerializeToString()) == 200
        assert state.ingest_errors == {}
        (model,) = state.models.values()
        sums = {k.labels: v for k, v in zip(model.keys, model.current_totals().tolist()) if k.name.endswith("_sum")}
        assert sums[(("ml_feature", "balance_z"),)] == -42.5  # kept as a value
        # re-exposed the way the app's own client exposes it: no _sum/_count beside negative buckets
        assert 'ml_feature_value_sum{ml_feature="balance_z"' not in exposition(state)

    def test_sums_that_overflow_across_sources_survive_a_restart(
        self, state: SidecarState, baseline: Baseline, tmp_path: Path
    ) -> None:
        """Each sum is finite, their total is not: that is a value, not a corrupt state file."""
        for source in ("a", "b"):
            request = _request(histogram(_amount_edges(baseline), total=1.7e308))
            request.resource_metrics[0].resource.attributes[0].value.string_value = source
            with np.errstate(over="ignore"):  # the second sum overflows the total: numpy says so
                assert ingest(state, "/v1/metrics", request.SerializeToString()) == 200
        assert "+Inf" in exposition(state)
        save_state(state, tmp_path / "s.npz", T0 + 20)
        fresh = SidecarState([baseline], StateSettings(windows=(WINDOW,), compute_ttl=0), now=T0)
        assert load_state(fresh, tmp_path / "s.npz") is True
        restored = exposition(fresh)
        assert 'ml_feature_value_sum{ml_feature="amount",ml_model_name="fraud",ml_model_version="v3"} +Inf' in restored


class TestHistogramBounds:
    @pytest.mark.parametrize("change", ["fewer", "more", "shifted", "none"])
    def test_other_bounds_reject_the_whole_histogram(
        self, loaded: SidecarState, baseline: Baseline, change: str
    ) -> None:
        edges = _amount_edges(baseline)
        bounds = {
            "fewer": edges[:-1],  # every remaining le is a baseline le: must still not be half applied
            "more": (*edges, edges[-1] * 2),
            "shifted": tuple(e + 1e-3 for e in edges),
            "none": (),
        }[change]
        before = without_error_counts(exposition(loaded))
        good = counter(10**6, name=n.FEATURE_MISSING.otel_name, **{n.ATTR_FEATURE: "amount"})
        request = _request(histogram(bounds, total=5.0), good)
        assert ingest(loaded, "/v1/metrics", request.SerializeToString()) == 200  # OTLP partial success
        after = without_error_counts(exposition(loaded))
        changed = sorted(set(after) - set(before))
        # only the good counter (and what the windows derive from it) changed: no bucket, _count or _sum
        assert changed and not any(line.startswith(n.FEATURE_VALUE.prometheus) for line in changed)
        assert any(line.startswith(n.FEATURE_MISSING.series) for line in changed)
        assert loaded.ingest_errors["bucket_mismatch"] == len(bounds) + 3  # every bucket, the count and the sum

    def test_the_baseline_bounds_are_applied(self, state: SidecarState, baseline: Baseline) -> None:
        edges = _amount_edges(baseline)
        assert ingest(state, "/v1/metrics", _request(histogram(edges)).SerializeToString()) == 200
        assert state.ingest_errors == {}
        text = exposition(state)
        for le in le_labels(edges):
            assert f'ml_feature_value_bucket{{le="{le}",ml_feature="amount"' in text


HOSTILE_LABELS: dict[str, tuple[bytes, int, str]] = {
    "null": (b'{"request_id": "r1", "label": null}', 400, "bad_label"),
    "object": (b'{"request_id": "r1", "label": {"a": 1}}', 400, "bad_label"),
    "list": (b'{"request_id": "r1", "label": [true]}', 400, "bad_label"),
    "nan": (b'{"request_id": "r1", "label": NaN}', 400, "bad_label"),
    "infinity": (b'{"request_id": "r1", "label": -Infinity}', 400, "bad_label"),
    "two": (b'{"request_id": "r1", "label": 2}', 400, "bad_label"),
    "outside-vocabulary": (b'{"request_id": "r1", "label": "maybe"}', 400, "bad_label"),
    "surrogate": (b'{"request_id": "r1", "label": "\\ud800"}', 400, "bad_label"),
    "long-request-id": (b'{"request_id": "' + b"r" * 257 + b'", "label": true}', 400, "request_id_too_long"),
    "object-request-id": (b'{"request_id": {"x": 1}, "label": true}', 400, "bad_label_event"),
    "nan-score": (b'{"model": "fraud", "version": "v3", "score": NaN, "label": true}', 400, "bad_label_event"),
    "huge-score": (
        b'{"model": "fraud", "version": "v3", "score": 1' + b"0" * 400 + b', "label": 1}',
        400,
        "bad_label_event",
    ),
    "object-segment": (
        b'{"model": "fraud", "version": "v3", "segments": {"country": {"a": 1}}, "label": true}',
        400,
        "bad_label_event",
    ),
    "deep": (b"[" * 100_000 + b"]" * 100_000, 400, "malformed_json"),
    "invalid-utf8": (b'{"request_id": "\xff\xfe", "label": true}', 400, "malformed_json"),
    "big-int": (b'{"request_id": "r1", "label": ' + b"1" * 5000 + b"}", 400, "malformed_json"),
    # a good event first: nothing of the request is applied
    "good-then-bad": (
        b'[{"model": "fraud", "version": "v3", "label": true}, {"request_id": "r1", "label": "maybe"}]',
        400,
        "bad_label",
    ),
}


class TestLabelEvents:
    @pytest.mark.parametrize("case", sorted(HOSTILE_LABELS))
    def test_rejected_whole_and_counted(self, loaded: SidecarState, case: str) -> None:
        body, status, reason = HOSTILE_LABELS[case]
        loaded.add_predictions([Prediction("r1", "fraud", "v3", 0.9, "true", (("country", "US"),))], now=T0 + 5)
        before = without_error_counts(exposition(loaded))
        assert ingest(loaded, "/v1/labels", body) == status
        assert loaded.ingest_errors == {reason: 1}
        assert without_error_counts(exposition(loaded)) == before
        assert loaded.joins.store.rows == 1 and loaded.joins.store.last_seq == 0  # nothing consumed or logged

    def test_the_configured_vocabulary(self, baseline: Baseline) -> None:
        from otel_ml.sidecar._outputs import OutputSettings

        config = StateSettings(
            windows=(WINDOW,),
            compute_ttl=0,
            outputs=OutputSettings(positive_outcome="fraud"),
            negative_outcome="legit",
        )
        state = SidecarState([baseline], config, now=T0)
        inline = b'{"model": "fraud", "version": "v3", "decision": true, "label": %s}'
        for label in (b'"fraud"', b"true", b"1", b'"legit"', b"false", b"0"):
            assert ingest(state, "/v1/labels", inline % label) == 200, label
        assert ingest(state, "/v1/labels", inline % b'"true-ish"') == 400
        outcomes = {
            labels[n.LABEL_OUTCOME]: value
            for key, labels, value in _series(state, n.OUTCOMES.series)
            if labels[n.LABEL_SEGMENT_KEY] == n.ALL
        }
        assert outcomes == {"fraud": 3.0, "legit": 3.0}  # true/1 mean the positive outcome, false/0 the negative

    def test_messages_never_echo_the_payload(self, state: SidecarState) -> None:
        bodies = [
            b'{"request_id": "SECRET-1", "label": "SECRET-2"}',
            b'{"request_id": "SECRET-1", "label": {"SECRET-2": 1}}',
            b'{"resourceMetrics": [{"resource": {"attributes": [{"key": "a", "value": {"intValue": "SECRET-3"}}]}}]}',
            b'{"SECRET-4": [',
        ]
        for body in bodies:
            for path in ("/v1/labels", "/v1/metrics"):
                try:
                    if path == "/v1/labels":
                        parse_label_events(body)
                    else:
                        decode_body(body, JSON, "", ExportMetricsServiceRequest, MAX_BODY)
                except IngestError as exc:
                    assert "SECRET" not in str(exc), (body, str(exc))


def _series(state: SidecarState, name: str) -> Iterator[tuple[SeriesKey, dict[str, str], float]]:
    model = state.models[("fraud", "v3")]
    for i, labels in model.series_of(name):
        yield model.keys[i], dict(labels), float(model.totals[i])


# -- item 5: nothing a client sends can poison the exposition ---------------------------------------
SURROGATE = "x\ud800y"
CONTROL = "a\x00b\x1b[31mc\nd"


class TestExposition:
    def test_label_events_with_surrogates_and_control_characters(
        self, loaded: SidecarState, baseline: Baseline, tmp_path: Path
    ) -> None:
        event = {
            "model": "fraud",
            "version": "v3",
            "score": 0.9,
            "decision": CONTROL,
            "label": True,
            "segments": {"country": SURROGATE, "dev\udcffice": CONTROL, "long": "v" * 10_000},
        }
        assert ingest(loaded, "/v1/labels", json.dumps(event).encode()) == 200
        text = exposition(loaded)
        check_exposition(text, tmp_path)
        assert 'ml_segment="x\ufffdy"' in text and 'ml_segment_key="dev\ufffdice"' in text
        assert "v" * (MAX_LABEL_VALUE_CHARS + 1) not in text

    def test_spans_with_control_characters(self, loaded: SidecarState, tmp_path: Path) -> None:
        request = ExportTraceServiceRequest()
        span = request.resource_spans.add().scope_spans.add().spans.add(name=n.SPAN_NAME)
        span.attributes.extend(
            [
                *model_attrs(),
                _kv(n.ATTR_REQUEST_ID, "r-9"),
                _kv(n.ATTR_SCORE, 0.2),
                _kv(n.ATTR_PREDICTION_DECISION, "false"),
                _kv(n.ATTR_SEGMENT_PREFIX + "country", CONTROL),
            ]
        )
        assert ingest(loaded, "/v1/traces", request.SerializeToString()) == 200
        assert ingest(loaded, "/v1/labels", b'{"request_id": "r-9", "label": 0}') == 200
        text = exposition(loaded)
        check_exposition(text, tmp_path)
        assert 'ml_segment="a\ufffdb\ufffd[31mc\ufffdd"' in text

    def test_otlp_attribute_names(self, state: SidecarState, tmp_path: Path) -> None:
        hostile = {
            "le": "1",
            "__name__": "x",
            "__meta": "x",
            "ml.window": "1h",
            "ml_bin_upper": "2",
            "job": "evil",
            "ml_model_name": "other",
            "bad-name": CONTROL,
            "1st": "v",
            "": "empty",
            "k" * 200: "long",
        }
        metric = counter(5, **hostile)
        assert ingest(state, "/v1/metrics", _request(metric).SerializeToString()) == 200
        assert state.ingest_errors == {"reserved_label": 7, "renamed_label": 2, "invalid_label": 2}
        (key, labels, value), *rest = _series(state, n.PREDICTIONS.series)
        assert not rest and value == 5
        assert labels == {
            n.LABEL_SEGMENT_KEY: n.ALL,
            n.LABEL_SEGMENT: n.ALL,
            "bad_name": "a\ufffdb\ufffd[31mc\ufffdd",
            "key_1st": "v",
        }
        state.reexport.add(("fraud", "v3"))
        check_exposition(exposition(state), tmp_path)

    def test_two_attributes_that_become_one_label(self, state: SidecarState) -> None:
        metric = counter(5, **{"a.b": "1", "a_b": "2"})
        assert ingest(state, "/v1/metrics", _request(metric).SerializeToString()) == 200
        assert state.ingest_errors == {"duplicate_label": 1}
        assert list(_series(state, n.PREDICTIONS.series)) == []

    def test_a_saved_state_with_poisoned_labels_restores_clean(
        self, state: SidecarState, baseline: Baseline, tmp_path: Path
    ) -> None:
        """A state written before sanitising (or crafted) holds raw surrogates; loading cleans them."""
        model = state.models[("fraud", "v3")]
        key = SeriesKey(n.PREDICTIONS.series, ((n.LABEL_SEGMENT, SURROGATE), (n.LABEL_SEGMENT_KEY, "country")))
        model.totals[model.add(key)] = 7.0
        poisoned = BoundedLabels(5)
        poisoned.labels.append(CONTROL)  # as an old version stored it, unsanitised
        model.bounded[(n.LABEL_SEGMENT, "country")] = poisoned
        path = save_state(state, tmp_path / "state.npz", T0 + 1)
        restored = SidecarState([baseline], StateSettings(windows=(WINDOW,), compute_ttl=0), now=T0 + 2)
        assert load_state(restored, path)
        restored.reexport.add(("fraud", "v3"))
        text = exposition(restored)
        check_exposition(text, tmp_path)
        assert 'ml_segment="x\ufffdy"' in text
        assert list(restored.models[("fraud", "v3")].bounded[(n.LABEL_SEGMENT, "country")].labels) == [
            "a\ufffdb\ufffd[31mc\ufffdd"
        ]

    def test_the_app_exposition_and_otlp_export(self, baseline: Baseline, tmp_path: Path) -> None:
        registry = CollectorRegistry()
        mon = ModelMonitor(baseline=baseline, segments=["country"], decision=lambda s: SURROGATE, registry=registry)
        predict = mon(lambda row: 0.5)
        for country in (SURROGATE, CONTROL, "z" * 5000, "ok"):
            predict({"amount": 1.0, "balance_z": 0.0, "n_items": 1, "country": country, "device": "ios"})
        text = generate_latest(registry).decode("utf-8")
        check_exposition(text, tmp_path)
        assert 'ml_segment="x\ufffdy"' in text and 'ml_decision="x\ufffdy"' in text
        body = encode_metrics(counts_metrics_data([mon.counters.snapshot()], start_time_ns=1)).SerializeToString()
        assert b"x\xef\xbf\xbdy" in body  # U+FFFD, encoded

    def test_model_names_feature_names_and_segment_keys(self, baseline: Baseline, tmp_path: Path) -> None:
        """Names the developer gives or a baseline file holds, not only values from data (issue 10, item 5)."""
        document = baseline.to_dict()
        document["model"] = {"name": "fr" + SURROGATE, "version": "v" + CONTROL}
        document["features"][0]["name"] = "amount" + SURROGATE
        poisoned = Baseline.from_dict(document)
        registry = CollectorRegistry()
        mon = ModelMonitor(baseline=poisoned, segments=["country" + SURROGATE], decision=0.5, registry=registry)
        row = {"amount" + SURROGATE: 1.0, "balance_z": 0.0, "country" + SURROGATE: "DE", "device": "ios"}
        mon(lambda r: 0.7)(row)
        text = generate_latest(registry).decode("utf-8")
        check_exposition(text, tmp_path)
        assert 'ml_segment="DE",ml_segment_key="countryx\ufffdy"' in text  # the raw key still found its column
        assert 'ml_feature="amountx\ufffdy",' in text
        body = encode_metrics(counts_metrics_data([mon.counters.snapshot()], start_time_ns=1)).SerializeToString()
        side = SidecarState([poisoned], StateSettings(windows=(WINDOW,), compute_ttl=0), now=T0)
        assert ingest(side, "/v1/metrics", body) == 200 and side.ingest_errors == {}
        check_exposition(exposition(side), tmp_path)


SCRAPED = (
    "# TYPE ml_predictions_total counter\n"
    'ml_predictions_total{ml_model_name="fraud",ml_model_version="v3",ml_segment_key="country",'
    'ml_segment="a\\nb\x1bc\\"q",ml_decision="true"} %s\n'
)


class TestScrapeInput:
    def test_control_characters_are_made_safe(self, state: SidecarState, tmp_path: Path) -> None:
        from otel_ml.sidecar._scrape import parse_exposition

        state.apply_metrics(parse_exposition(SCRAPED % "3", "http://app/metrics"), "scrape", now=T0 + 1)
        state.reexport.add(("fraud", "v3"))
        text = exposition(state)
        check_exposition(text, tmp_path)
        assert 'ml_segment="a\ufffdb\ufffdc\\"q"' in text  # newline and ESC replaced, the quote escaped

    def test_impossible_counts_are_a_counted_scrape_error(self, baseline: Baseline, tmp_path: Path) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from threading import Thread

        from otel_ml.sidecar import ScrapeTarget, Sidecar, SidecarConfig

        class Target(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = (SCRAPED % "-7").encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        target = ThreadingHTTPServer(("127.0.0.1", 0), Target)
        Thread(target=target.serve_forever, daemon=True).start()
        try:
            config = SidecarConfig(baselines=(baseline.save(tmp_path / "b.json"),), listen=("127.0.0.1", 0))
            side = Sidecar(config)
            side.scrape_once(ScrapeTarget(f"http://127.0.0.1:{target.server_address[1]}/metrics", timeout=5.0))
        finally:
            target.shutdown()
            target.server_close()
        assert side.state.ingest_errors == {"invalid_value": 1}
        assert not any(k.name == n.PREDICTIONS.series for k in side.state.models[("fraud", "v3")].keys)


def test_a_vocabulary_fitted_on_hostile_values(training_frame: Any, tmp_path: Path) -> None:
    """Category values become labels at fit: they are made safe there, and raw inputs still find them."""
    import pandas as pd

    from otel_ml import fit_baseline

    frame = training_frame.head(3000).copy()
    device = frame["device"].to_numpy(dtype=object).copy()
    device[:800], device[800:1200] = SURROGATE, CONTROL
    frame["device"] = pd.Series(device, index=frame.index, dtype=object)
    fitted = fit_baseline(frame, model="fraud", version="v3", score_column="score", segments=["country"])
    saved = json.loads(Path(fitted.save(tmp_path / "b.json")).read_text())
    vocabulary = next(f["vocabulary"] for f in saved["features"] if f["name"] == "device")
    assert "x\ufffdy" in vocabulary and "a\ufffdb\ufffd[31mc\ufffdd" in vocabulary
    vocabulary.append("crafted\ud800")  # a hand-edited file: loading makes it safe too
    fractions = next(f for f in saved["features"] if f["name"] == "device")["fractions"]
    fractions.insert(len(vocabulary) - 1, 0.0)
    (tmp_path / "crafted.json").write_text(json.dumps(saved))
    loaded = Baseline.load(tmp_path / "crafted.json")
    assert "crafted\ufffd" in loaded.feature("device").vocabulary  # type: ignore[union-attr]

    registry = CollectorRegistry()
    mon = ModelMonitor(baseline=loaded, registry=registry)
    mon(lambda f: np.full(len(f), 0.5))(frame.drop(columns="score"))
    text = generate_latest(registry).decode("utf-8")
    check_exposition(text, tmp_path)
    line = next(ln for ln in text.splitlines() if 'ml_category="x\ufffdy"' in ln and "ml_feature_category" in ln)
    assert line.endswith(" 800.0")  # the raw values were counted in their (safe) category, not as unknown
    state = SidecarState([loaded], StateSettings(windows=(WINDOW,), compute_ttl=0), now=T0)
    check_exposition(exposition(state), tmp_path)  # reference gauges carry the vocabulary too


def test_bounded_labels_fold_raw_spellings_into_one_safe_label() -> None:
    labels = BoundedLabels(3)
    first, second = labels.index("a\ud800"), labels.index("a\udfff")
    assert first == second == 0 and labels.labels == ["a\ufffd"]
    assert labels.index("b" * 1000) == labels.index("b" * 300) == 1
    assert [labels.label(i) for i in range(2)] == ["a\ufffd", "b" * MAX_LABEL_VALUE_CHARS]


# -- items 7 and 8: memory bounded whatever arrives -----------------------------------------------
def _prediction(i: int, rid_len: int = 200, segments: int = 4) -> Prediction:
    rid = f"{i:08d}".ljust(rid_len, "r")
    return Prediction(rid, "fraud", "v3", 0.5, "true", tuple((f"key{s}", f"value-{i}-{s}") for s in range(segments)))


class TestJoinStore:
    """The store itself is tested in test_join_store.py; here what ingest hands it."""

    def test_long_request_ids_in_spans_are_dropped_and_counted(self, state: SidecarState) -> None:
        request = ExportTraceServiceRequest()
        spans = request.resource_spans.add().scope_spans.add().spans
        for rid in ("ok-id", "x" * 257, "\u00e9" * 129):  # 258 bytes in UTF-8, 129 characters
            span = spans.add(name=n.SPAN_NAME)
            span.attributes.extend([*model_attrs(), _kv(n.ATTR_REQUEST_ID, rid)])
        assert ingest(state, "/v1/traces", request.SerializeToString()) == 200
        assert state.ingest_errors == {"request_id_too_long": 2}
        assert state.joins.store.rows == 1

    def test_configured_from_yaml(self, tmp_path: Path) -> None:
        from otel_ml.sidecar import SidecarConfig

        config = SidecarConfig.from_mapping(
            {
                "models": [{"baseline": "b.json"}],
                "limits": {"max_count": 1e9},
                "labels": {"join_max_bytes": 1234, "negative_outcome": "legit"},
            },
            base=tmp_path,
        )
        settings = config.state_settings()
        assert (settings.limits.join_max_bytes, settings.limits.max_count, settings.negative_outcome) == (
            1234,
            1e9,
            "legit",
        )


def test_hostile_series_names_do_not_grow_memory(baseline: Baseline) -> None:
    """10^5 distinct attribute keys and values: the ingest caches and the series set stay bounded.

    With a series budget of 2,000 the caches' bounds are a few MB; the last 20,000 hostile series
    (traced) would cost over 10 MB if any cache kept them all, and cost no more than those bounds."""
    from otel_ml.sidecar import _otlp_input

    state = SidecarState(
        [baseline],
        StateSettings(windows=(WINDOW,), compute_ttl=0, limits=LimitSettings(max_series_per_model=2000)),
        now=T0,
    )

    def body(start: int) -> bytes:
        metric = counter(1)
        points = metric.sum.data_points
        for _ in range(999):
            points.add().CopyFrom(points[0])
        for i, point in enumerate(points, start):
            point.attributes.append(_kv(f"k{i}", "v" * 200 + str(i)))  # a new label name and value each
        return _request(metric).SerializeToString()

    bodies = [body(start) for start in range(0, 100_000, 1000)]  # built before memory is traced
    for payload in bodies[:80]:
        assert ingest(state, "/v1/metrics", payload) == 200
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for payload in bodies[80:]:
            assert ingest(state, "/v1/metrics", payload) == 200
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    model = state.models[("fraud", "v3")]
    assert model.size <= 2000 and state.ingest_errors["series_budget"] > 90_000
    assert len(_otlp_input._LABEL_OF.items) <= 10_000 and len(model._resolved) <= 8000
    assert grown < 6 * 1024 * 1024, grown


def test_sources_per_model_are_bounded(baseline: Baseline) -> None:
    """Each OTLP resource keeps a vector of last values: a flood of made-up resources is refused, counted."""
    settings = StateSettings(windows=(WINDOW,), compute_ttl=0, limits=LimitSettings(max_sources_per_model=5))
    state = SidecarState([baseline], settings, now=T0)
    for i in range(7):
        request = _request(counter(2))
        request.resource_metrics[0].resource.attributes[0].value.string_value = f"pod-{i}"
        assert ingest(state, "/v1/metrics", request.SerializeToString()) == 200
    assert len(state.models[("fraud", "v3")].sources) == 5
    assert state.ingest_errors == {"source_budget": 2}
    assert [v for _, _, v in _series(state, n.PREDICTIONS.series)] == [10.0]  # five sources of 2 each


# -- no 500 for any body: hypothesis against the decode + ingest functions -------------------------
@pytest.fixture(scope="module")
def valid_bodies(baseline: Baseline) -> dict[str, bytes]:
    metrics = app_body(baseline, rows=200)
    traces = ExportTraceServiceRequest()
    span = traces.resource_spans.add().scope_spans.add().spans.add(name=n.SPAN_NAME)
    span.attributes.extend(
        [*model_attrs(), _kv(n.ATTR_REQUEST_ID, "r1"), _kv(n.ATTR_SCORE, 0.3), _kv("ml.segment.country", "US")]
    )
    labels = b'[{"request_id": "r1", "label": true}, {"model": "fraud", "version": "v3", "label": 0}]'
    return {"/v1/metrics": metrics, "/v1/traces": traces.SerializeToString(), "/v1/labels": labels}


def _mutate(body: bytes, data: st.DataObject) -> bytes:
    out = bytearray(body)
    for _ in range(data.draw(st.integers(1, 8), label="edits")):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert", "splice", "delete"]))
        at = data.draw(st.integers(0, max(0, len(out) - 1)))
        if kind == "flip" and out:
            out[at] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "cut":
            del out[at:]
        elif kind == "insert":
            out[at:at] = data.draw(st.binary(min_size=1, max_size=16))
        elif kind == "splice":
            end = data.draw(st.integers(at, len(out)))
            out[at:at] = out[at:end]
        elif out:
            del out[at : at + data.draw(st.integers(1, 32))]
    return bytes(out)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(st.characters(codec=None), max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
LABEL_EVENT = st.dictionaries(
    st.sampled_from(["request_id", "label", "model", "version", "score", "decision", "segments"]),
    JSON_VALUES | st.sampled_from(["fraud", "v3", "r1", True, 0, 1, "yes"]),
    max_size=7,
)


def _still_fine(state: SidecarState, status: int) -> None:
    assert status == 200 or 400 <= status < 500, status
    text = exposition(state)
    assert text.encode("utf-8")
    list(text_string_to_metric_families(text))


FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class TestFuzz:
    @FUZZ
    @given(data=st.data())
    def test_mutated_protobuf(self, valid_bodies: dict[str, bytes], baseline: Baseline, data: st.DataObject) -> None:
        state = SidecarState([baseline], StateSettings(windows=(WINDOW,), compute_ttl=0), now=T0)
        path = data.draw(st.sampled_from(["/v1/metrics", "/v1/traces"]))
        body = _mutate(valid_bodies[path], data)
        encoding = data.draw(st.sampled_from(["", "gzip"]))
        _still_fine(state, ingest(state, path, gzip.compress(body) if encoding else body, PROTOBUF, encoding))

    @FUZZ
    @given(data=st.data())
    def test_mutated_otlp_json(self, valid_bodies: dict[str, bytes], baseline: Baseline, data: st.DataObject) -> None:
        state = SidecarState([baseline], StateSettings(windows=(WINDOW,), compute_ttl=0), now=T0)
        path = data.draw(st.sampled_from(["/v1/metrics", "/v1/traces"]))
        message = ExportMetricsServiceRequest if path == "/v1/metrics" else ExportTraceServiceRequest
        document = json.loads(json_format.MessageToJson(message.FromString(valid_bodies[path])))
        _replace_somewhere(document, data)
        body = (
            json.dumps(document).encode() if data.draw(st.booleans()) else _mutate(json.dumps(document).encode(), data)
        )
        _still_fine(state, ingest(state, path, body, JSON))

    @FUZZ
    @given(events=st.lists(LABEL_EVENT, max_size=5) | JSON_VALUES, data=st.data())
    def test_label_events(self, baseline: Baseline, events: Any, data: st.DataObject) -> None:
        state = SidecarState([baseline], StateSettings(windows=(WINDOW,), compute_ttl=0), now=T0)
        state.add_predictions([Prediction("r1", "fraud", "v3", 0.4, "true", (("country", "US"),))], now=T0)
        body = json.dumps(events).encode()
        if data.draw(st.booleans()):
            body = _mutate(body, data)
        _still_fine(state, ingest(state, "/v1/labels", body, JSON))


def _replace_somewhere(document: Any, data: st.DataObject) -> None:
    """Swap one value deep inside an OTLP JSON document for an arbitrary JSON value."""
    node = document
    for _ in range(data.draw(st.integers(1, 12))):
        children = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        if not children:
            return
        key, child = data.draw(st.sampled_from(children))
        if not isinstance(child, (dict, list)) or data.draw(st.booleans()):
            node[key] = data.draw(JSON_VALUES)
            return
        node = child


# -- the same contract through the real HTTP server ----------------------------------------------
@pytest.fixture(scope="module")
def server(baseline: Baseline, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from otel_ml.sidecar import Sidecar, SidecarConfig

    path = baseline.save(tmp_path_factory.mktemp("input") / "fraud-v3.baseline.json")
    config = SidecarConfig(
        baselines=(path,), listen=("127.0.0.1", 0), windows=("10m",), http=HttpLimits(max_body_bytes=MAX_BODY)
    )
    side = Sidecar(config).start()
    try:
        r = requests.post(side.url + "/v1/metrics", data=app_body(baseline), headers={"Content-Type": PROTOBUF})
        assert r.status_code == 200
        yield side
    finally:
        side.stop()


def scraped(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(url + "/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _split(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> tuple[dict[str, float], dict[Any, float]]:
    """(ingest errors per reason, everything that is state) of one scrape."""
    errors = {dict(k[1])["reason"]: v for k, v in samples.items() if k[0] == n.SIDECAR_INGEST_ERRORS.series}
    state = {
        k: v for k, v in samples.items() if k[0].startswith(("ml_feature", "ml_prediction", "ml_online", "ml_segment"))
    }
    return errors, state


def _post(url: str, path: str, body: bytes, content_type: str) -> requests.Response:
    return requests.post(url + path, data=body, headers={"Content-Type": content_type}, timeout=10)


class TestOverHttp:
    @pytest.mark.parametrize("case", sorted(REJECTED_METRICS) + sorted(f"label:{c}" for c in HOSTILE_LABELS))
    def test_rejections(self, server: Any, baseline: Baseline, case: str) -> None:
        if case.startswith("label:"):
            body, status, reason = HOSTILE_LABELS[case[len("label:") :]]
            path, content_type = "/v1/labels", JSON
        else:
            build, status, reason = REJECTED_METRICS[case]
            body, path, content_type = build(baseline), "/v1/metrics", PROTOBUF
        errors, before = _split(scraped(server.url))
        r = _post(server.url, path, body, content_type)
        assert r.status_code == status
        assert reason in r.text or reason.encode() in r.content
        errors_after, after = _split(scraped(server.url))
        assert errors_after.get(reason, 0) == errors.get(reason, 0) + 1
        assert after == before

    def test_responses_and_logs_never_echo_the_payload(self, server: Any, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level("DEBUG")
        bodies = [
            ("/v1/labels", b'{"request_id": "SECRETMARK", "label": "SECRETMARK"}', JSON),
            ("/v1/labels", b'{"request_id": "SECRETMARK", "label": {"SECRETMARK": 1}}', JSON),
            ("/v1/labels", b'{"SECRETMARK": [', JSON),
            ("/v1/metrics", b'{"resourceMetrics": [{"SECRETMARK": {"intValue": "SECRETMARK"}}]}', JSON),
            (
                "/v1/metrics",
                b'{"resourceMetrics": [{"resource": {"attributes": [{"key": "a", "value": '
                b'{"intValue": "SECRETMARK"}}]}}]}',
                JSON,
            ),
            ("/v1/metrics", b"\x0a\x0aSECRETMARK", PROTOBUF),
            ("/v1/traces", b"\x0a\x0aSECRETMARK", PROTOBUF),
        ]
        for path, body, content_type in bodies:
            r = _post(server.url, path, body, content_type)
            assert r.status_code < 500 and b"SECRETMARK" not in r.content, (path, body, r.content)
        assert "SECRETMARK" not in caplog.text

    def test_poisoned_labels_leave_metrics_working(self, server: Any, tmp_path: Path) -> None:
        event = {
            "model": "fraud",
            "version": "v3",
            "decision": SURROGATE,
            "label": 1,
            "segments": {"country": SURROGATE, "x\udc00": CONTROL},
        }
        assert _post(server.url, "/v1/labels", json.dumps(event).encode(), JSON).status_code == 200
        r = requests.get(server.url + "/metrics", timeout=10)
        assert r.status_code == 200 and 'ml_segment="x\ufffdy"' in r.text
        check_exposition(r.text, tmp_path)

    def test_mutated_bodies_never_give_a_500(self, server: Any, valid_bodies: dict[str, bytes]) -> None:
        rng = random.Random(10)
        statuses = set()
        for i in range(90):
            path = ("/v1/metrics", "/v1/traces", "/v1/labels")[i % 3]
            body = bytearray(valid_bodies[path])
            for _ in range(rng.randint(1, 6)):
                at = rng.randrange(len(body))
                choice = rng.random()
                if choice < 0.4:
                    body[at] ^= 1 << rng.randrange(8)
                elif choice < 0.7:
                    body[at:at] = rng.randbytes(rng.randint(1, 8))
                else:
                    del body[at : at + rng.randint(1, 16)]
            content_type = JSON if path == "/v1/labels" else rng.choice([PROTOBUF, JSON])
            r = _post(server.url, path, bytes(body), content_type)
            statuses.add(r.status_code)
            assert r.status_code == 200 or 400 <= r.status_code < 500, (path, bytes(body))
        assert requests.get(server.url + "/healthz", timeout=10).status_code == 200
        errors, _ = _split(scraped(server.url))
        assert "internal_error" not in errors
        assert len(statuses) > 1  # the mutations did reach both the accept and the reject paths


def test_a_baseline_without_scores_accepts_the_apps_default_score_buckets(training_frame: Any) -> None:
    """The app counts scores into its default bins when the baseline has none; the sidecar must
    take them whole (they used to be 12 ``bucket_mismatch`` errors per scrape)."""
    from prometheus_client import CollectorRegistry, generate_latest

    from otel_ml import ModelMonitor, fit_baseline
    from otel_ml.instrument import counts_metrics_data
    from otel_ml.sidecar._scrape import parse_exposition

    frame = training_frame.drop(columns="score").head(300)
    scoreless = fit_baseline(frame, model="plain", version="v1")
    assert scoreless.score is None
    mon = ModelMonitor(baseline=scoreless, decision=0.5, registry=CollectorRegistry())
    mon(lambda f: np.linspace(0, 1, len(f)))(frame)
    scraped = SidecarState([scoreless], StateSettings(windows=(WINDOW,), compute_ttl=0), now=T0)
    text = generate_latest(mon.registry).decode()
    scraped.apply_metrics(parse_exposition(text, "http://app/metrics"), "scrape", now=T0 + 1)
    pushed = SidecarState([scoreless], StateSettings(windows=(WINDOW,), compute_ttl=0), now=T0)
    body = encode_metrics(counts_metrics_data([mon.counters.snapshot()], start_time_ns=1)).SerializeToString()
    assert ingest(pushed, "/v1/metrics", body) == 200
    assert scraped.ingest_errors == {} and pushed.ingest_errors == {}
    for side in (scraped, pushed):
        (model,) = side.models.values()
        score_le = {
            dict(k.labels)["le"]: v
            for k, v in zip(model.keys, model.current_totals().tolist())
            if k.name == n.PREDICTION_SCORE.bucket_series
        }
        scores = np.linspace(0, 1, 300)
        below = {le: np.count_nonzero(scores <= float(le)) for le in score_le}  # cumulative, by hand
        bounds = sorted(score_le, key=float)
        per_bin = {le: below[le] - (below[prev] if prev else 0) for prev, le in zip([None, *bounds], bounds)}
        assert score_le == per_bin and sum(score_le.values()) == 300  # stored per bin
