"""Adversarial review of shadow scoring (issue 14): each test is a defect found by attacking it.

Real worker threads, event loops and forked processes, no mocks; expected counts are worked
out by hand from the calls made here.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from test_evaluation_loop import T0, exposition
from test_shadow_labels import DAY, _expected_pairs, _labels, _pair_counts, _predictions, _state, baselines, frame

from otel_ml import Baseline, ModelMonitor, Shadow, capture_prediction
from otel_ml import _names as n
from otel_ml.baseline import fit_baseline
from otel_ml.sidecar._label_input import LabelEvent
from otel_ml.sidecar._persist import load_state, save_state
from otel_ml.sidecar._series import Prediction

__all__ = ["baselines", "frame"]  # the sidecar fixtures of test_shadow_labels, used here too


def _total(registry: CollectorRegistry, name: str, **labels: str) -> float:
    want = set(labels.items())
    text = generate_latest(registry).decode()
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name and want <= set(s.labels.items())
    )


PAIRS = n.SHADOW_PAIRS.prometheus + "_total"
PREDICTIONS = n.PREDICTIONS.prometheus + "_total"


def test_a_shadow_that_calls_the_primary_does_not_loop(registry: CollectorRegistry) -> None:
    """A candidate built on the primary (an ensemble of v7 and a correction) calls v7 inside the
    shadow: that call is the shadow's work, not a served prediction, and must not enqueue another
    shadow item (before: one served call fed back into thousands of v7 predictions)."""
    served = {"calls": 0}
    holder: dict[str, Any] = {}

    def v7(row: Any) -> float:
        served["calls"] += 1
        return 0.8

    def v8(row: Any) -> float:
        return float(holder["predict"](row)) * 0.5

    shadow = Shadow(v8, version="v8")
    mon = ModelMonitor("credit", "v7", decision=0.7, shadow=[shadow], registry=registry)
    holder["predict"] = predict = mon(v7)
    for _ in range(3):
        predict({"x": 1.0})
    assert shadow.drain(10)
    assert shadow.drain(1)  # nothing more arrived after the first drain
    assert _total(registry, PREDICTIONS, ml_model_version="v7", ml_segment_key=n.ALL) == 3
    assert _total(registry, PREDICTIONS, ml_model_version="v8", ml_segment_key=n.ALL) == 3
    assert _total(registry, PAIRS, ml_segment_key=n.ALL, ml_flip="true_to_false") == 3
    assert served["calls"] == 6  # three served, three inside the shadow
    mon.close()


def _fork_child(predict: Any, shadow: Shadow, registry: CollectorRegistry) -> None:
    for _ in range(50):
        predict({"x": 1.0})
    assert shadow.drain(10)
    # the child's own registry shows its own pairs (no multiprocess directory: counts of its own)
    assert _total(registry, PAIRS, ml_segment_key=n.ALL, ml_flip="true_to_false") == 50


def test_a_forked_child_counts_its_pairs_in_its_own_counters(registry: CollectorRegistry) -> None:
    """After fork the counters rebind fresh arrays and a fresh lock; the shadow kept the
    parent's comparison block, so a child's pairs went to arrays nobody exports (or, with a
    multiprocess directory, into the parent's file under a lock the fork may have left held)."""
    shadow = Shadow(lambda row: 0.1, version="v8")
    mon = ModelMonitor("credit", "v7", decision=0.7, shadow=[shadow], registry=registry)
    predict = mon(lambda row: 0.9)
    for _ in range(10):
        predict({"x": 1.0})
    assert shadow.drain(10)
    child = multiprocessing.get_context("fork").Process(target=_fork_child, args=(predict, shadow, registry))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert _total(registry, PAIRS, ml_segment_key=n.ALL, ml_flip="true_to_false") == 10
    mon.close()


def test_an_async_shadow_leaves_the_apps_capture_alone(registry: CollectorRegistry) -> None:
    """A coroutine shadow is a task on the primary's loop; it copied the app's context, so its
    own call filled the app's ``capture_prediction()`` after the served call returned: the
    served call's token became the shadow's (None) at the app's next await."""
    rng = np.random.default_rng(0)
    baseline = fit_baseline(
        pd.DataFrame({"x": rng.normal(size=300)}), model="credit", version="v7", scores=rng.uniform(size=300)
    )

    async def v8(row: Any) -> float:
        return 0.1

    shadow = Shadow(v8, version="v8")
    mon = ModelMonitor(baseline=baseline, decision=0.7, shadow=[shadow], token_key=bytes(range(32)), registry=registry)

    @mon
    async def v7(row: Any) -> float:
        return 0.9

    async def serve() -> tuple[str | None, str | None]:
        with capture_prediction() as capture:
            await v7({"x": 1.0})
            token = capture.token
            await asyncio.sleep(0.05)  # the app awaits something else: the shadow task runs
            later = capture.token
        assert await shadow.adrain(10)
        return token, later

    token, later = asyncio.run(serve())
    assert token is not None and later == token
    assert _total(registry, PAIRS, ml_segment_key=n.ALL, ml_flip="true_to_false") == 1
    mon.close()


def test_an_async_shadow_that_calls_the_primary_does_not_loop(registry: CollectorRegistry) -> None:
    """The same feedback loop on the primary's event loop (a coroutine shadow's task)."""
    holder: dict[str, Any] = {}

    async def v8(row: Any) -> float:
        return float(await holder["predict"](row)) * 0.5

    shadow = Shadow(v8, version="v8")
    mon = ModelMonitor("credit", "v7", decision=0.7, shadow=[shadow], registry=registry)

    @mon
    async def v7(row: Any) -> float:
        return 0.8

    holder["predict"] = v7

    async def serve() -> None:
        for _ in range(3):
            await v7({"x": 1.0})
        assert await shadow.adrain(10)
        await asyncio.sleep(0.05)

    asyncio.run(serve())
    assert _total(registry, PREDICTIONS, ml_model_version="v7", ml_segment_key=n.ALL) == 3
    assert _total(registry, PAIRS, ml_segment_key=n.ALL, ml_flip="true_to_false") == 3
    mon.close()


DIFFERENCE_BUCKET = n.SHADOW_SCORE_DIFFERENCE.bucket_series


def test_the_primarys_scores_are_compared_as_served_even_if_the_app_reuses_its_array(
    registry: CollectorRegistry,
) -> None:
    """The app scales the returned array in place (``out *= 100`` for display, or a reused
    output buffer) before the shadow ran: the pair was compared with the mutated scores."""
    shadow = Shadow(lambda frame: np.full(len(frame), 0.5), version="v8")
    mon = ModelMonitor("credit", "v7", decision=0.7, shadow=[shadow], feature_names=["x"], registry=registry)
    predict = mon(lambda frame: np.full(len(frame), 0.9))
    entered = 0
    for _ in range(5):
        out = predict(pd.DataFrame({"x": [1.0, 2.0, 3.0]}))
        out *= 100
        entered += len(out)
    assert shadow.drain(10)
    differences = np.full(entered, 0.5 - 0.9)  # as served: every row's shadow minus primary
    for bound in n.SHADOW_DIFFERENCE_BUCKETS:
        expected = float(np.sum(differences <= bound))
        assert _total(registry, DIFFERENCE_BUCKET, le=n.le_labels((bound,))[0]) == expected, bound
    mon.close()


def _pairs_by_region(registry: CollectorRegistry) -> dict[str, float]:
    text = generate_latest(registry).decode()
    return {
        s.labels[n.LABEL_SEGMENT]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == PAIRS and s.labels[n.LABEL_SEGMENT_KEY] == "region"
    }


def test_a_shadow_that_rewrites_its_row_is_counted_in_the_served_segment(registry: CollectorRegistry) -> None:
    """Pairs count by the primary's segment values; a shadow that rewrites a feature of the row
    it was handed (feature engineering in place) moved its pairs into its own value."""

    def v8(row: dict[str, Any]) -> float:
        row["region"] = "normalised"
        return 0.5

    shadow = Shadow(v8, version="v8")
    mon = ModelMonitor("credit", "v7", decision=0.7, segments=["region"], shadow=[shadow], registry=registry)
    predict = mon(lambda row: 0.9)
    served = ["north", "south", "north"]
    for region in served:
        predict({"x": 1.0, "region": region})
    assert shadow.drain(10)
    assert _pairs_by_region(registry) == {"north": 2.0, "south": 1.0}
    mon.close()


def test_a_shadow_that_rewrites_its_batch_is_counted_in_the_served_segments(registry: CollectorRegistry) -> None:
    """The same for a batch: the segment columns are the primary's, read before the shadow ran."""

    def v8(frame: pd.DataFrame) -> Any:
        frame["region"] = "normalised"  # a new column in the frame the app also holds
        return np.full(len(frame), 0.5)

    shadow = Shadow(v8, version="v8")
    mon = ModelMonitor(
        "credit", "v7", decision=0.7, segments=["region"], shadow=[shadow], feature_names=["x"], registry=registry
    )
    predict = mon(lambda frame: np.full(len(frame), 0.9))
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "region": ["north", "south", "north"]})
    expected = frame["region"].value_counts().astype(float).to_dict()
    predict(frame)
    assert shadow.drain(10)
    assert _pairs_by_region(registry) == expected
    mon.close()


def test_pairs_survive_a_snapshot_and_a_replay_exactly_once(
    frame: pd.DataFrame, baselines: tuple[Baseline, Baseline], tmp_path: Path
) -> None:
    """Half the labels before the state snapshot, half after (logged, not yet snapshotted), then
    a restart: snapshot plus replay gives the live run's pair counts, none counted twice."""
    labels = _labels(frame)
    live = _state(baselines, tmp_path)
    live.add_predictions(_predictions(frame), now=T0)
    live.apply_labels(labels[: len(labels) // 2], now=T0 + DAY)
    save_state(live, tmp_path / "state.npz", now=T0 + DAY)
    live.apply_labels(labels[len(labels) // 2 :], now=T0 + DAY)
    expected = _pair_counts(live)
    assert expected == _expected_pairs(frame)
    live.joins.store.close()  # as kill -9 after the second batch was acknowledged
    restarted = _state(baselines, tmp_path)
    assert load_state(restarted, tmp_path / "state.npz")
    assert restarted.replay_labels(now=T0 + DAY) == len(labels) - len(labels) // 2
    assert _pair_counts(restarted) == expected


def test_a_prediction_that_shadows_its_own_version_is_no_pair(
    baselines: tuple[Baseline, Baseline], tmp_path: Path
) -> None:
    """``shadow_of`` naming the row's own version (a buggy batch job, a hostile producer) made a
    v8-vs-v8 pair series, a verdict input comparing a version with itself; the app refuses such a
    Shadow, the sidecar now stores it as a plain prediction. Hostile names stay one dims id."""
    state = _state(baselines, tmp_path)
    state.add_predictions(
        [Prediction(f"h-{i}", "loans", "v8", 0.5, "false", (), T0, f"hostile-{i}") for i in range(2000)], now=T0
    )
    assert state.joins.store.dims_count == 1  # unknown primaries are not stored as names
    state.add_predictions(
        [
            Prediction("a", "loans", "v8", 0.9, "true", (), T0),
            Prediction("a", "loans", "v8", 0.1, "false", (), T0, "v8"),
        ],
        now=T0,
    )
    state.apply_labels([LabelEvent("true", request_id="a")], T0 + 60)
    pairs = {k: v for k, v in exposition(state).items() if k[0] == n.SHADOW_LABELLED_PAIRS.series and v}
    assert pairs == {}


def test_a_shadow_whose_monitor_is_never_closed_does_not_leak_its_worker() -> None:
    """A server that loads a model version per reload and forgets ``close()``: the monitor and
    its shadow are garbage, but the worker thread held the shadow and blocked on its queue
    forever (one thread, its queue and the batches in it, per reload)."""
    workers = []
    for _ in range(5):
        shadow = Shadow(lambda row: 0.1, version="v8")
        mon = ModelMonitor("credit", "v7", decision=0.7, shadow=[shadow], registry=None)
        mon(lambda row: 0.9)({"x": 1.0})
        assert shadow.drain(10)
        workers.append(shadow._thread)
        del shadow, mon
    gc.collect()
    for worker in workers:
        assert worker is not None
        worker.join(10)
        assert not worker.is_alive()


DROPPED = n.SHADOW_DROPPED.prometheus + "_total"
ERRORS = n.PREDICTION_ERRORS.prometheus + "_total"


def test_an_async_shadow_on_a_loop_that_ends_is_not_a_silent_error(registry: CollectorRegistry) -> None:
    """A sync server that runs the async model with ``asyncio.run`` per request: every shadow task
    is cancelled at the loop's end before it starts, so it moves to the worker's own loop."""

    async def v8(row: Any) -> float:
        await asyncio.sleep(0.001)
        return 0.1

    shadow = Shadow(v8, version="v8")
    mon = ModelMonitor("credit", "v7", decision=0.7, shadow=[shadow], registry=registry)

    @mon
    async def v7(row: Any) -> float:
        return 0.9

    for _ in range(20):
        asyncio.run(v7({"x": 1.0}))
    assert shadow.drain(10)
    errors = _total(registry, ERRORS, ml_model_version="v8")
    assert _total(registry, DROPPED, reason="error") == errors  # README: error = it raised, also in its own errors
    assert _total(registry, n.SHADOW_PAIRS.series) == 20  # the worker's own loop scored what the ended loops left
    mon.close()


def test_a_sampled_primary_has_its_shadows_span(registry: CollectorRegistry) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.5)))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    shadow = Shadow(lambda row: 0.1, version="v8")
    mon = ModelMonitor(
        "credit",
        "v7",
        decision=0.7,
        shadow=[shadow],
        tracer_provider=provider,
        request_id=lambda row: row["id"],
        registry=registry,
    )
    predict = mon(lambda row: 0.9)
    for i in range(400):
        predict({"x": 1.0, "id": f"r-{i}"})
    assert shadow.drain(10)
    versions: dict[str, set[str]] = {}
    for span in exporter.get_finished_spans():
        attributes = span.attributes or {}
        versions.setdefault(str(attributes[n.ATTR_REQUEST_ID]), set()).add(str(attributes[n.ATTR_MODEL_VERSION]))
    sampled_primaries = [v for v in versions.values() if "v7" in v]
    assert sampled_primaries and all(v == {"v7", "v8"} for v in versions.values())
    mon.close()
