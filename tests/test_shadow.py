"""Shadow scoring: a second version scored on the primary's input off the request path.

Real worker threads and event loops, no mocks. Expected pair counts are a pandas crosstab of
decisions computed here from the two models' scores; expected score-difference buckets are
plain ``<=`` comparisons (``conftest.right_closed_counts``).
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
from conftest import right_closed_counts
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from otel_ml import ModelMonitor, Shadow, current_request_id
from otel_ml import _names as n
from otel_ml.instrument import MULTIPROC_DIR_ENV
from otel_ml.instrument._dirsum import DirSummer

REGIONS = ("north", "south", "east")
THRESHOLD = 0.7
Labels = frozenset[tuple[str, str]]


# -- helpers ----------------------------------------------------------------------------------------
def _samples(registry: CollectorRegistry) -> dict[tuple[str, Labels], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value for f in text_string_to_metric_families(text) for s in f.samples
    }


def _pairs(registry: CollectorRegistry) -> dict[tuple[str, str, str], float]:
    out: dict[tuple[str, str, str], float] = {}
    for (name, labels), value in _samples(registry).items():
        if name == n.SHADOW_PAIRS.prometheus + "_total":
            lab = dict(labels)
            assert lab[n.LABEL_MODEL_VERSION] == "v7" and lab[n.LABEL_SHADOW_VERSION] == "v8"
            out[(lab[n.LABEL_SEGMENT_KEY], lab[n.LABEL_SEGMENT], lab[n.LABEL_FLIP])] = value
    return out


def _dropped(registry: CollectorRegistry) -> dict[str, float]:
    name = n.SHADOW_DROPPED.prometheus + "_total"
    return {dict(lab)["reason"]: v for (k, lab), v in _samples(registry).items() if k == name}


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (k, lab), v in _samples(registry).items() if k == name and want <= lab)


def _score7(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.asarray(1 / (1 + np.exp(-(x - 0.3) * 4)))


def _score8(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.asarray(1 / (1 + np.exp(-(x - 0.2) * 3.5)))


def _rows(count: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.5, 1.0, count)
    x[rng.choice(count, count // 20, replace=False)] = np.nan  # missing scores on both sides
    return pd.DataFrame({"x": x, "region": rng.choice(REGIONS, count)})


def _threshold_label(scores: npt.NDArray[np.float64]) -> npt.NDArray[Any]:
    return np.where(np.isnan(scores), "none", np.where(scores > THRESHOLD, "true", "false"))


def _expected(frame: pd.DataFrame, primary: npt.NDArray[Any], shadow: npt.NDArray[Any]) -> dict[Any, float]:
    """The crosstab of (segment, flip), and the overall flip counts, as ``_pairs`` keys."""
    flip = np.where(
        primary == shadow, "none", np.char.add(np.char.add(primary.astype(str), "_to_"), shadow.astype(str))
    )
    table = pd.crosstab(frame["region"].to_numpy(), flip)
    out: dict[Any, float] = {}
    for region in table.index:
        for f in table.columns:
            if table.loc[region, f]:
                out[("region", region, f)] = float(table.loc[region, f])
    for f, count in pd.Series(flip).value_counts().items():
        out[(n.ALL, n.ALL, str(f))] = float(count)
    return out


def _row_score(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A model serving one mapping (a float) or a batch (an array)."""

    def predict(features: Any) -> Any:
        if isinstance(features, dict) and np.ndim(features["x"]) == 0:  # one row
            return float(fn(np.asarray([features["x"]], dtype=np.float64))[0])
        if isinstance(features, dict):  # a dict of columns
            return fn(np.asarray(features["x"], dtype=np.float64))
        if isinstance(features, list):
            return fn(np.asarray([r["x"] for r in features], dtype=np.float64))
        return fn(features["x"].to_numpy(dtype=np.float64))

    return predict


def _shadowed(shadow: Shadow, registry: CollectorRegistry, **kwargs: Any) -> tuple[ModelMonitor, Callable[..., Any]]:
    kwargs.setdefault("decision", THRESHOLD)
    mon = ModelMonitor("credit", "v7", segments=["region"], shadow=[shadow], registry=registry, **kwargs)
    return mon, mon(_row_score(_score7))


# -- counts equal an independent crosstab ---------------------------------------------------------------
@pytest.mark.parametrize("form", ["rows", "frame", "dicts", "columns"])
def test_pairs_equal_a_crosstab_of_both_decisions(form: str, registry: CollectorRegistry) -> None:
    frame = _rows(3000)
    shadow = Shadow(_row_score(_score8), version="v8", queue_size=10_000, timeout=60)
    mon, predict = _shadowed(shadow, registry)
    if form == "rows":
        for row in frame.to_dict("records"):
            predict(row)
    elif form == "columns":  # dicts of columns, a one-row batch among them
        for start, stop in [(0, 1), (1, 1000), (1000, 3000)]:
            part = frame.iloc[start:stop]
            predict({"x": part["x"].tolist(), "region": part["region"].tolist()})
    else:
        for start in range(0, len(frame), 250):
            part = frame.iloc[start : start + 250]
            predict(part if form == "frame" else part.to_dict("records"))
    assert shadow.drain(30)
    x = frame["x"].to_numpy()
    assert _pairs(registry) == _expected(frame, _threshold_label(_score7(x)), _threshold_label(_score8(x)))
    assert _dropped(registry) == {reason: 0.0 for reason in n.SHADOW_DROP_REASONS}
    mon.close()


def test_score_difference_buckets_are_right_closed_counts(registry: CollectorRegistry) -> None:
    frame = _rows(2000, seed=1)
    shadow = Shadow(_row_score(_score8), version="v8", queue_size=10_000, timeout=60)
    mon, predict = _shadowed(shadow, registry)
    for row in frame.head(500).to_dict("records"):
        predict(row)
    predict(frame.iloc[500:])
    assert shadow.drain(30)
    x = frame["x"].to_numpy()
    difference = _score8(x) - _score7(x)
    expected = np.cumsum(right_closed_counts(n.SHADOW_DIFFERENCE_BUCKETS, difference))
    name = n.SHADOW_SCORE_DIFFERENCE.prometheus
    got = [_value(registry, name + "_bucket", le=le) for le in [*(f"{b}" for b in n.SHADOW_DIFFERENCE_BUCKETS), "+Inf"]]
    assert got == expected.tolist()
    assert expected[-1] == np.isfinite(difference).sum()
    # Prometheus text has no _sum for a histogram with negative buckets (as client_python); OTLP carries it
    assert shadow.monitor is not None
    assert shadow.monitor.counters.snapshot().shadow_difference_sum == pytest.approx(np.nansum(difference), abs=1e-9)
    mon.close()


def _tier(scores: Any) -> Any:
    s = np.asarray(scores, dtype=np.float64)
    return np.where(s > 0.66, "high", np.where(s > 0.33, "mid", "low"))


@pytest.mark.parametrize("form", ["rows", "frame"])
def test_multiclass_flips_are_class_pairs(form: str, registry: CollectorRegistry) -> None:
    frame = _rows(1500, seed=2)
    shadow = Shadow(_row_score(_score8), version="v8", queue_size=10_000, timeout=60)
    mon, predict = _shadowed(shadow, registry, decision=_tier)
    if form == "rows":
        for row in frame.to_dict("records"):
            predict(row)
    else:
        predict(frame)
    assert shadow.drain(30)
    x = frame["x"].to_numpy()

    def labels(scores: npt.NDArray[np.float64]) -> npt.NDArray[Any]:
        return np.where(np.isnan(scores), "none", _tier(scores))

    expected = _expected(frame, labels(_score7(x)), labels(_score8(x)))
    assert _pairs(registry) == expected
    assert {k[2] for k in expected} >= {"none", "mid_to_high", "low_to_mid"}  # the data really flips
    mon.close()


def test_a_flip_budget_folds_the_rest_into_other(registry: CollectorRegistry) -> None:
    shadow = Shadow(lambda row: float(row["x"]) + 1, version="v8", decision=lambda s: f"c{int(s)}")
    mon = ModelMonitor("credit", "v7", decision=lambda s: f"c{int(s)}", shadow=[shadow], registry=registry)
    predict = mon(lambda row: float(row["x"]))
    for i in range(40):
        predict({"x": i})
    assert shadow.drain(10)
    pairs = _pairs(registry)
    assert len(pairs) == 33 and pairs[(n.ALL, n.ALL, n.OTHER)] == 8  # 32 flips, the rest folded
    overflow = n.CARDINALITY_OVERFLOW.prometheus + "_total"
    assert _value(registry, overflow, ml_model_version="v8", ml_attribute=n.ATTR_FLIP) == 8
    mon.close()


# -- a shadow never hurts the served call ----------------------------------------------------------------
def _serve(predict: Callable[..., Any], frame: pd.DataFrame) -> list[Any]:
    return [predict(row) for row in frame.to_dict("records")]


def _served_errors(registry: CollectorRegistry, version: str) -> float:
    return _value(registry, n.PREDICTION_ERRORS.prometheus + "_total", ml_model_version=version)


def test_a_raising_shadow_is_counted_and_never_seen(registry: CollectorRegistry) -> None:
    frame = _rows(200, seed=3)

    def broken(row: Any) -> float:
        raise RuntimeError("v8 is broken")

    shadow = Shadow(broken, version="v8")
    mon, predict = _shadowed(shadow, registry)
    served = _serve(predict, frame)
    assert shadow.drain(10)
    plain = ModelMonitor("credit", "v7", registry=None)(_row_score(_score7))
    assert served == _serve(plain, frame) or np.allclose(served, _serve(plain, frame), equal_nan=True)
    assert _served_errors(registry, "v7") == 0
    assert _served_errors(registry, "v8") == 200  # the shadow's own error series
    assert _dropped(registry) == {"queue_full": 0, "error": 200, "timeout": 0}
    assert _pairs(registry) == {}
    mon.close()


def test_a_slow_shadow_times_out(registry: CollectorRegistry) -> None:
    frame = _rows(20, seed=4)

    def slow(row: Any) -> float:
        time.sleep(0.03)
        return 0.5

    shadow = Shadow(slow, version="v8", timeout=0.01)
    mon, predict = _shadowed(shadow, registry)
    _serve(predict, frame)
    assert shadow.drain(10)
    assert _dropped(registry) == {"queue_full": 0, "error": 0, "timeout": 20}
    assert _served_errors(registry, "v7") == 0 and _pairs(registry) == {}
    mon.close()


def test_a_full_queue_drops_exactly_what_it_could_not_take(registry: CollectorRegistry) -> None:
    entered, release = threading.Event(), threading.Event()

    def blocked(row: Any) -> float:
        entered.set()
        release.wait(30)
        return 0.9

    shadow = Shadow(blocked, version="v8", queue_size=5, timeout=60)
    mon, predict = _shadowed(shadow, registry)
    rows = _rows(50, seed=5).to_dict("records")
    predict(rows[0])
    assert entered.wait(10)  # the worker holds item 1: the queue is empty again
    started = time.perf_counter()
    for row in rows[1:]:
        predict(row)
    served_for = time.perf_counter() - started
    release.set()
    assert shadow.drain(10)
    accepted = 1 + 5
    assert _dropped(registry) == {"queue_full": 50 - accepted, "error": 0, "timeout": 0}
    assert sum(v for (key, _, _), v in _pairs(registry).items() if key == n.ALL) == accepted
    assert served_for < 1.0  # 49 calls never waited for the blocked shadow
    assert _served_errors(registry, "v7") == 0
    mon.close()


def _burn(seconds: float) -> None:
    """Native CPU work, as a real model's (hashlib releases the GIL on large buffers)."""
    data = b"x" * 1_000_000
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        hashlib.sha256(data).digest()


def test_the_shadows_cost_is_in_its_own_latency_series(registry: CollectorRegistry) -> None:
    def costly(row: Any) -> float:
        _burn(0.005)
        return 0.5

    shadow = Shadow(costly, version="v8", timeout=60)
    mon, predict = _shadowed(shadow, registry)
    for row in _rows(40, seed=6).to_dict("records"):
        predict(row)
        time.sleep(0.002)  # served calls overlap the shadow's work
    assert shadow.drain(30)
    name = n.PREDICTION_DURATION.prometheus
    assert _value(registry, name + "_count", ml_model_version="v7") == 40
    # had the shadow's 5 ms been on the served call, every v7 call would be above 5 ms; one slow
    # call is allowed for a scheduler hiccup on a shared machine
    assert _value(registry, name + "_bucket", ml_model_version="v7", le="0.005") >= 39
    assert _value(registry, name + "_sum", ml_model_version="v7") < 40 * 0.005 / 4
    assert _value(registry, name + "_count", ml_model_version="v8") == 40
    assert _value(registry, name + "_bucket", ml_model_version="v8", le="0.005") == 0
    mon.close()


# -- the shadow's own series and spans ------------------------------------------------------------------
def test_the_shadow_has_its_own_series_and_spans_with_the_primarys_request_id(registry: CollectorRegistry) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider.add_span_processor(SimpleSpanProcessor(exporter))
    seen: list[str | None] = []

    def v8(row: Any) -> float:
        seen.append(current_request_id())
        return float(_score8(np.asarray([row["x"]]))[0])

    shadow = Shadow(v8, version="v8")
    mon, predict = _shadowed(shadow, registry, tracer_provider=provider, request_id=lambda row: f"req-{row['id']}")
    for i in range(10):
        predict({"id": i, "x": i / 10, "region": REGIONS[i % 3]})
    assert shadow.drain(10)
    spans = exporter.get_finished_spans()
    primary = {s.attributes[n.ATTR_REQUEST_ID]: s for s in spans if s.attributes[n.ATTR_MODEL_VERSION] == "v7"}
    shadows = [s for s in spans if s.attributes[n.ATTR_MODEL_VERSION] == "v8"]
    assert len(primary) == len(shadows) == 10
    for s in shadows:
        rid = s.attributes[n.ATTR_REQUEST_ID]
        assert s.attributes[n.ATTR_SHADOW_OF] == "v7" and rid in primary
        assert s.parent is not None and s.parent.span_id == primary[rid].context.span_id  # sampled with it
        assert n.ATTR_SHADOW_OF not in primary[rid].attributes
    assert seen == [f"req-{i}" for i in range(10)]
    predictions = n.PREDICTIONS.prometheus + "_total"
    assert _value(registry, predictions, ml_model_version="v8", ml_segment_key=n.ALL) == 10
    assert _value(registry, n.PREDICTION_SCORE.prometheus + "_count", ml_model_version="v8") == 10
    mon.close()
    provider.shutdown()


def test_a_shadow_needs_its_own_version(registry: CollectorRegistry) -> None:
    with pytest.raises(ValueError, match="own version"):
        ModelMonitor("credit", "v7", shadow=[Shadow(lambda r: 0.5, version="v7")], registry=registry)
    ModelMonitor("credit", "v7", registry=registry).close()  # nothing was left registered
    shadow = Shadow(lambda r: 0.5, version="v8")
    ModelMonitor("credit", "v7", shadow=[shadow], registry=CollectorRegistry())
    with pytest.raises(ValueError, match="already shadows"):
        ModelMonitor("credit", "v6", shadow=[shadow], registry=CollectorRegistry())


def test_an_erroring_primary_enqueues_nothing(registry: CollectorRegistry) -> None:
    calls: list[Any] = []
    shadow = Shadow(lambda row: calls.append(row) or 0.5, version="v8")
    mon = ModelMonitor("credit", "v7", shadow=[shadow], registry=registry)

    @mon
    def predict(row: Any) -> float:
        raise KeyError("no model")

    with pytest.raises(KeyError):
        predict({"x": 1.0})
    assert shadow.drain(5) and calls == []
    mon.close()


def test_a_mutated_row_is_scored_as_it_was_served(registry: CollectorRegistry) -> None:
    gate = threading.Event()
    seen: list[float] = []

    def v8(row: Any) -> float:
        gate.wait(10)
        seen.append(row["x"])
        return 0.5

    shadow = Shadow(v8, version="v8")
    mon, predict = _shadowed(shadow, registry)
    row = {"x": 0.25, "region": "north"}
    predict(row)
    row["x"] = 99.0  # the app reuses its dict
    gate.set()
    assert shadow.drain(10) and seen == [0.25]
    mon.close()


# -- async ----------------------------------------------------------------------------------------------
def test_an_async_shadow_runs_on_the_primarys_loop(registry: CollectorRegistry) -> None:
    loops: list[Any] = []

    async def v8(row: Any) -> float:
        loops.append(asyncio.get_running_loop())
        await asyncio.sleep(0.001)
        return float(_score8(np.asarray([row["x"]]))[0])

    shadow = Shadow(v8, version="v8")
    mon = ModelMonitor("credit", "v7", segments=["region"], decision=THRESHOLD, shadow=[shadow], registry=registry)

    @mon
    async def predict(row: Any) -> float:
        await asyncio.sleep(0)
        return float(_score7(np.asarray([row["x"]]))[0])

    frame = _rows(300, seed=7)

    async def main() -> Any:
        for row in frame.to_dict("records"):
            await predict(row)
        assert await shadow.adrain(10)
        return asyncio.get_running_loop()

    loop = asyncio.run(main())
    assert loops and all(seen is loop for seen in loops) and len(loops) == 300
    x = frame["x"].to_numpy()
    assert _pairs(registry) == _expected(frame, _threshold_label(_score7(x)), _threshold_label(_score8(x)))
    mon.close()


def test_an_async_shadow_that_hangs_is_cancelled_at_its_timeout(registry: CollectorRegistry) -> None:
    async def hangs(row: Any) -> float:
        await asyncio.sleep(30)
        return 0.5

    shadow = Shadow(hangs, version="v8", timeout=0.05)
    mon = ModelMonitor("credit", "v7", shadow=[shadow], registry=registry)
    predict = mon(_async_score)

    async def main() -> list[Any]:
        served = [await predict({"x": 0.1 * i}) for i in range(5)]
        assert await shadow.adrain(5)
        return served

    assert asyncio.run(main()) == [float(_score7(np.asarray([0.1 * i]))[0]) for i in range(5)]
    assert _dropped(registry) == {"queue_full": 0, "error": 0, "timeout": 5}
    mon.close()


async def _async_score(row: Any) -> float:
    return float(_score7(np.asarray([row["x"]]))[0])


def test_a_sync_shadow_under_an_async_primary_runs_on_its_worker(registry: CollectorRegistry) -> None:
    threads: list[str] = []

    def v8(row: Any) -> float:
        threads.append(threading.current_thread().name)
        return float(_score8(np.asarray([row["x"]]))[0])

    shadow = Shadow(v8, version="v8")
    mon = ModelMonitor("credit", "v7", segments=["region"], decision=THRESHOLD, shadow=[shadow], registry=registry)
    predict = mon(_async_score)
    frame = _rows(200, seed=8)

    async def main() -> None:
        for row in frame.to_dict("records"):
            await predict(row)

    asyncio.run(main())
    assert shadow.drain(10)
    assert len(threads) == 200 and set(threads) == {"otel-ml-shadow-v8"}
    x = frame["x"].to_numpy()
    assert _pairs(registry) == _expected(frame, _threshold_label(_score7(x)), _threshold_label(_score8(x)))
    mon.close()


def test_a_coroutine_shadow_under_a_sync_primary_runs_in_the_workers_loop(registry: CollectorRegistry) -> None:
    async def v8(row: Any) -> float:
        await asyncio.sleep(0)
        return float(_score8(np.asarray([row["x"]]))[0])

    shadow = Shadow(v8, version="v8")
    mon, predict = _shadowed(shadow, registry)
    frame = _rows(100, seed=9)
    _serve(predict, frame)
    assert shadow.drain(10)
    x = frame["x"].to_numpy()
    assert _pairs(registry) == _expected(frame, _threshold_label(_score7(x)), _threshold_label(_score8(x)))
    mon.close()


# -- replicas and processes ---------------------------------------------------------------------------------
def test_sample_ratio_picks_the_same_requests_on_every_replica() -> None:
    picked: list[set[str]] = []
    for _ in range(2):  # two replicas: separate monitors, registries and workers
        seen: set[str] = set()
        shadow = Shadow(
            lambda row, seen=seen: seen.add(str(current_request_id())) or 0.5, version="v8", sample_ratio=0.25
        )
        mon = ModelMonitor(
            "credit", "v7", request_id=lambda row: f"order-{row['id']}", shadow=[shadow], registry=CollectorRegistry()
        )
        predict = mon(lambda row: 0.5)
        for i in range(2000):
            predict({"id": i, "x": 1.0})
        assert shadow.drain(10)
        assert _dropped(mon.registry) == {reason: 0.0 for reason in n.SHADOW_DROP_REASONS}  # type: ignore[arg-type]
        picked.append(seen)
        mon.close()
    assert picked[0] == picked[1]
    assert 400 < len(picked[0]) < 600  # a quarter of 2000, within sampling error


def _child(predict: Callable[..., Any], shadow: Shadow, rows: Sequence[dict[str, Any]]) -> None:
    for row in rows:
        predict(row)
    assert shadow.drain(10)


def _stable(registry: CollectorRegistry) -> list[str]:
    """The exposition without the live process's CPU time, which grows between reads."""
    lines = generate_latest(registry).decode().splitlines()
    return [line for line in lines if not line.startswith(n.PROCESS_CPU.series)]


def test_a_forked_worker_counts_pairs_the_parent_sums(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry
) -> None:
    directory = tmp_path / "mp"
    directory.mkdir()
    monkeypatch.setenv(MULTIPROC_DIR_ENV, str(directory))
    shadow = Shadow(_row_score(_score8), version="v8")
    mon, predict = _shadowed(shadow, registry)
    frame = _rows(400, seed=10)
    rows = frame.to_dict("records")
    for row in rows[:100]:
        predict(row)
    assert shadow.drain(10)
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_child, args=(predict, shadow, rows[100:]))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    x = frame["x"].to_numpy()
    expected = _expected(frame, _threshold_label(_score7(x)), _threshold_label(_score8(x)))
    assert _pairs(registry) == expected
    before = _stable(registry)
    DirSummer().fold(directory)  # the scrape may have folded the dead child's files already
    assert len(list(directory.glob("*.archive.json"))) == 2  # its v7 and v8 files, archived
    assert _stable(registry) == before and _pairs(registry) == expected
    mon.close()


def test_promtool_check_metrics_is_clean_with_a_shadow(registry: CollectorRegistry) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (apt-get install prometheus)")
    shadow = Shadow(_row_score(_score8), version="v8", decision=_tier)
    mon, predict = _shadowed(shadow, registry, decision=_tier)
    _serve(predict, _rows(300, seed=11))
    assert shadow.drain(10)
    text = generate_latest(registry).decode()
    assert n.SHADOW_PAIRS.prometheus + "_total{" in text and n.SHADOW_DROPPED.prometheus + "_total{" in text
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "" and result.stderr.strip() == "", result.stdout
    mon.close()


class _Hostile(dict):  # type: ignore[type-arg]
    """One row whose copy raises: the shadow path fails, the served call must not notice."""

    def __iter__(self) -> Any:
        raise RuntimeError("no copies")

    def keys(self) -> Any:
        raise RuntimeError("no copies")


def test_a_failing_shadow_path_is_an_instrumentation_error_of_the_primary(registry: CollectorRegistry) -> None:
    shadow = Shadow(lambda row: 0.5, version="v8")
    mon = ModelMonitor("credit", "v7", decision=THRESHOLD, shadow=[shadow], registry=registry)
    predict = mon(lambda row: 0.9)
    assert predict(_Hostile(x=1.0)) == 0.9
    assert shadow.drain(5)
    errors = n.INSTRUMENTATION_ERRORS.prometheus + "_total"
    assert _value(registry, errors, ml_model_version="v7", error_type="RuntimeError") == 1
    assert _served_errors(registry, "v7") == 0 and _pairs(registry) == {}
    mon.close()


# -- the shadow's CPU is capped: the served threads share the GIL with it ---------------------------------
@pytest.mark.parametrize("max_load", [0.25, 1.0])
def test_max_load_caps_the_workers_cpu_share(max_load: float) -> None:
    def costly(row: Any) -> float:
        _burn(0.004)
        return 0.5

    registry = CollectorRegistry()
    shadow = Shadow(costly, version="v8", timeout=60, max_load=max_load)
    mon, predict = _shadowed(shadow, registry)
    rows = _rows(50, seed=9).to_dict("records")
    cpu_before = time.process_time()
    start = time.perf_counter()
    for row in rows:
        predict(row)
    assert shadow.drain(60)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_before
    share = cpu / wall  # the process' CPU (the shadow's burn dominates) per second of wall time
    if max_load < 1:
        assert share < max_load * 1.3, share  # rests cpu * (1/max_load - 1) after each item
        assert sum(_dropped(registry).values()) == 0  # throttled, not dropped: the queue held them
    else:
        assert share > 0.6, share  # unthrottled: the worker runs flat out
    mon.close()


def test_max_load_must_be_a_share() -> None:
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="max_load"):
            Shadow(lambda row: 0.5, version="v8", max_load=bad)
