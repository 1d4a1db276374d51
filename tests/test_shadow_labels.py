"""Labels for a primary and its shadow: one label joins both predictions of a request id.

The sidecar stores a shadow's prediction with the version it shadowed; a label for that request
id then counts realised metrics for both versions and the pair by who was right (McNemar's
discordant cells). Expected counts come from a pandas crosstab of the two models' decisions
against the labels, computed here from the generated data, not from the sidecar.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from test_evaluation_loop import T0, THRESHOLD, _data, exposition, fit_loans, gauge, gauges

from otel_ml import Baseline
from otel_ml import _names as n
from otel_ml.sidecar import SidecarState, StateSettings
from otel_ml.sidecar._label_input import LabelEvent, parse_predictions
from otel_ml.sidecar._otlp_input import predictions_from_traces
from otel_ml.sidecar._series import Prediction

DAY = 86400.0


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    data = _data(6_000, seed=11)
    rng = np.random.default_rng(12)
    # v8: the same signal with its own noise, so the two disagree on some requests
    logit = np.log(data["score"] / (1 - data["score"])) + rng.normal(0.0, 0.8, len(data))
    data["score8"] = 1.0 / (1.0 + np.exp(-logit))
    data["has_shadow"] = rng.random(len(data)) < 0.9  # the rest: dropped by the shadow's queue
    data["labelled"] = rng.random(len(data)) < 0.7
    return data


@pytest.fixture(scope="module")
def baselines(frame: pd.DataFrame) -> tuple[Baseline, Baseline]:
    reference = _data(20_000, seed=1)
    return fit_loans(reference), fit_loans(reference, "v8")


def _decision(score: float) -> str:
    return "true" if score > THRESHOLD else "false"


def _predictions(frame: pd.DataFrame) -> list[Prediction]:
    out = []
    for i, row in enumerate(frame.itertuples()):
        segments = (("region", row.region),)
        out.append(Prediction(f"r-{i}", "loans", "v7", row.score, _decision(row.score), segments, T0))
        if row.has_shadow:
            shadow = Prediction(f"r-{i}", "loans", "v8", row.score8, _decision(row.score8), segments, T0 + 0.01, "v7")
            out.append(shadow)
    return out


def _labels(frame: pd.DataFrame) -> list[LabelEvent]:
    rows = np.flatnonzero(frame["labelled"].to_numpy())
    return [
        LabelEvent("true" if frame["y"].iat[i] else "false", request_id=f"r-{i}", label_time=T0 + DAY) for i in rows
    ]


def _expected_pairs(frame: pd.DataFrame) -> dict[tuple[str, str], int]:
    judged = frame[frame["has_shadow"] & frame["labelled"]]
    p_right = (judged["score"] > THRESHOLD) == judged["y"]
    s_right = (judged["score8"] > THRESHOLD) == judged["y"]
    cell = np.select(
        [p_right & s_right, p_right & ~s_right, ~p_right & s_right],
        ["both_correct", "primary_only", "shadow_only"],
        "both_wrong",
    )
    table = pd.crosstab(judged["region"], cell)
    out = {(str(region), str(c)): int(v) for (region, c), v in table.stack().items()}
    for c, v in pd.Series(cell).value_counts().items():
        out[(n.ALL, str(c))] = int(v)
    return out


def _pair_counts(state: SidecarState) -> dict[tuple[str, str], int]:
    out = {}
    for (name, labels), value in exposition(state).items():
        if name == n.SHADOW_LABELLED_PAIRS.series:
            found = dict(labels)
            assert (found[n.LABEL_MODEL_VERSION], found[n.LABEL_SHADOW_VERSION]) == ("v7", "v8")
            if value:
                out[(found[n.LABEL_SEGMENT], found[n.LABEL_PAIR_OUTCOME])] = int(value)
    return out


def _state(baselines: tuple[Baseline, Baseline], tmp: Path) -> SidecarState:
    return SidecarState(list(baselines), StateSettings(join_store=tmp / "joins.sqlite"), now=T0)


def test_a_label_counts_the_pair_by_who_was_right(
    frame: pd.DataFrame, baselines: tuple[Baseline, Baseline], tmp_path: Path
) -> None:
    state = _state(baselines, tmp_path)
    state.add_predictions(_predictions(frame), now=T0)
    joined, unmatched = state.apply_labels(_labels(frame), now=T0 + DAY)
    labelled = int(frame["labelled"].sum())
    assert unmatched == 0
    assert joined == labelled + int((frame["labelled"] & frame["has_shadow"]).sum())  # both rows of a pair
    expected = _expected_pairs(frame)
    assert _pair_counts(state) == expected
    assert expected[(n.ALL, "primary_only")] > 50 and expected[(n.ALL, "shadow_only")] > 50  # discordant cells

    found = gauges(state, T0 + DAY)
    for version, has in (("v7", frame["labelled"]), ("v8", frame["labelled"] & frame["has_shadow"])):
        count = gauge(
            found, n.ONLINE_LABEL_COUNT.prometheus, ml_model_version=version, ml_segment=n.ALL, ml_window="1h"
        )
        assert count == int(has.sum())  # realised metrics for both versions, on the same requests


def test_a_restarted_sidecar_replays_the_same_pairs(
    frame: pd.DataFrame, baselines: tuple[Baseline, Baseline], tmp_path: Path
) -> None:
    live = _state(baselines, tmp_path)
    live.add_predictions(_predictions(frame), now=T0)
    live.apply_labels(_labels(frame), now=T0 + DAY)
    expected = _pair_counts(live)
    live.joins.store.close()
    restarted = _state(baselines, tmp_path)  # no state snapshot: every logged label is replayed
    assert restarted.replay_labels(now=T0 + DAY) == int(frame["labelled"].sum())
    assert _pair_counts(restarted) == expected


def test_a_shadow_of_a_version_without_a_baseline_is_a_plain_prediction(
    baselines: tuple[Baseline, Baseline], tmp_path: Path
) -> None:
    state = _state(baselines, tmp_path)
    state.add_predictions(
        [
            Prediction("a", "loans", "v7", 0.9, "true", (), T0),
            Prediction("a", "loans", "v8", 0.1, "false", (), T0, "v6"),  # v6: no baseline, no pair
            Prediction("b", "loans", "v8", 0.9, "true", (), T0, "v7"),  # no primary row stored: no pair
        ],
        now=T0,
    )
    assert state.apply_labels([LabelEvent("true", request_id="a"), LabelEvent("true", request_id="b")], T0 + 60) == (
        3,
        0,
    )
    assert _pair_counts(state) == {}


def test_a_pair_without_a_decision_is_not_judged(baselines: tuple[Baseline, Baseline], tmp_path: Path) -> None:
    state = _state(baselines, tmp_path)
    state.add_predictions(
        [Prediction("a", "loans", "v7", 0.9, "true", (), T0), Prediction("a", "loans", "v8", None, None, (), T0, "v7")],
        now=T0,
    )
    state.apply_labels([LabelEvent("true", request_id="a")], T0 + 60)
    assert _pair_counts(state) == {}


def test_spans_and_batch_rows_name_the_version_they_shadow() -> None:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.name = n.SPAN_NAME
    span.start_time_unix_nano = int(T0 * 1e9)
    for key, value in (
        (n.ATTR_REQUEST_ID, "r-1"),
        (n.ATTR_MODEL_NAME, "loans"),
        (n.ATTR_MODEL_VERSION, "v8"),
        (n.ATTR_PREDICTION_DECISION, "true"),
        (n.ATTR_SHADOW_OF, "v7"),
    ):
        span.attributes.append(KeyValue(key=key, value=AnyValue(string_value=value)))
    (prediction,) = predictions_from_traces(request)
    assert (prediction.version, prediction.shadow_of) == ("v8", "v7")

    body = {"predictions": [{"model": "loans", "version": "v8", "shadow_of": "v7", "request_ids": ["a", "b"]}]}
    rows = parse_predictions(json.dumps(body).encode(), 10)
    assert [r.shadow_of for r in rows] == ["v7", "v7"]
    plain = parse_predictions(
        json.dumps({"predictions": [{"model": "m", "version": "1", "request_ids": ["a"]}]}).encode(), 10
    )
    assert plain[0].shadow_of is None


def test_a_shadows_counters_pushed_over_otlp_are_re_exposed_whole(
    baselines: tuple[Baseline, Baseline], frame: pd.DataFrame
) -> None:
    """An app that pushes OTLP gets its shadow series back on the sidecar's /metrics, every label
    (``reason`` of the drops included) intact and no ingest error; the counts are the app's."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families
    from test_evaluation_loop import _otlp_request

    from otel_ml import ModelMonitor, Shadow
    from otel_ml.sidecar._otlp_input import metric_batches

    v7, v8 = baselines
    registry = CollectorRegistry()
    shadow = Shadow(lambda row: min(1.0, row["x"] / 3 + 0.5), baseline=v8)
    primary = ModelMonitor(baseline=v7, segments=["region"], decision=THRESHOLD, shadow=[shadow], registry=registry)
    predict = primary(lambda row: min(1.0, row["x"] / 4 + 0.5))
    for row in frame[["x", "region"]].iloc[:300].to_dict("records"):
        predict(row)
    assert shadow.drain(30)
    app = {
        (s.name, frozenset(s.labels.items())): s.value
        for f in text_string_to_metric_families(generate_latest(registry).decode())
        for s in f.samples
        if s.name.startswith("ml_shadow_")
    }
    assert any(dict(k[1]).get("reason") == "queue_full" for k in app)
    state = SidecarState(list(baselines), StateSettings(), now=T0)
    for monitor in (primary, shadow.monitor):
        assert monitor is not None
        batches = metric_batches(_otlp_request(monitor))[0]
        state.apply_metrics(batches, "otlp", now=T0 + 5)
    assert state.ingest_errors == {}
    served = {k: v for k, v in exposition(state).items() if k[0].startswith("ml_shadow_") and "_labelled_" not in k[0]}
    assert served == app
    primary.close()
