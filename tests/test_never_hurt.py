"""Never hurt the host: whatever a decorated function is called with, and whatever it returns
or raises, the caller sees exactly what the undecorated function would have produced.

Hypothesis throws arbitrary inputs (wrong types, missing keys, NaN, inf, huge strings, empty
batches, nested garbage, hostile objects whose dunder methods raise) and arbitrary results at a
decorated function whose ``inputs=``/``score=``/``decision=`` callbacks may raise too, and
whose own failure may be any ``BaseException``.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import tempfile
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from otel_ml import Baseline, Capture, ModelMonitor, Shadow
from otel_ml._capture_format import capture_files, read_capture


class Hostile(Exception):
    """What a hostile object raises; never seen by the caller of a decorated function."""


class RaisingMapping(Mapping[str, Any]):
    """A Mapping whose iteration, lookups and length raise."""

    def __getitem__(self, key: str) -> Any:
        raise Hostile("getitem")

    def __iter__(self) -> Iterator[str]:
        raise Hostile("iter")

    def __len__(self) -> int:
        raise Hostile("len")


class HalfMapping(Mapping[str, Any]):
    """A Mapping that looks like one row, then raises when its values are read."""

    def __getitem__(self, key: str) -> Any:
        raise Hostile("getitem")

    def __iter__(self) -> Iterator[str]:
        yield "amount"
        raise Hostile("iter")

    def __len__(self) -> int:
        return 2


class RaisingGetattr:
    def __getattr__(self, name: str) -> Any:
        raise Hostile(name)


class RaisingLen(list):  # type: ignore[type-arg]
    def __len__(self) -> int:
        raise Hostile("len")


class RaisingFloat:
    def __float__(self) -> float:
        raise Hostile("float")

    def __str__(self) -> str:
        raise Hostile("str")

    def __hash__(self) -> int:
        raise Hostile("hash")


class RaisingArray:
    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise Hostile("array")

    def __len__(self) -> int:
        return 3


def _object_row(*values: Any) -> Any:
    row = np.empty((1, len(values)), dtype=object)
    for i, v in enumerate(values):
        row[0, i] = v
    return row


hostile = st.sampled_from([RaisingMapping, HalfMapping, RaisingGetattr, RaisingArray, RaisingFloat]).map(
    lambda cls: cls()
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.builds(lambda c, k: c * k, st.characters(), st.integers(10_000, 100_000)),  # a huge string
    st.binary(max_size=10),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.just(object()),
    hostile,
)
feature_names = st.sampled_from(["amount", "balance_z", "n_items", "country", "device", "unknown", ""])
rows = st.dictionaries(feature_names, scalars, max_size=7)
inputs = st.one_of(
    rows,
    st.lists(rows, max_size=5),  # batches of records, incl. the empty batch
    st.lists(st.lists(scalars, max_size=4), max_size=3),
    st.dictionaries(feature_names, st.lists(scalars, min_size=2, max_size=2), max_size=4),  # dict of columns
    scalars,
    st.builds(lambda n: np.full((n, 3), np.nan), st.integers(0, 3)),
    st.builds(lambda n: pd.DataFrame({"amount": [math.inf] * n, "country": [None] * n}), st.integers(0, 3)),
    hostile,
    st.builds(lambda v: {"amount": v, "country": v}, hostile),  # one row of hostile values
    st.builds(lambda v: {"amount": [v, 1.0], "country": [v, "US"]}, hostile),  # columns holding them
    st.builds(lambda v: RaisingLen([{"amount": v}]), scalars),
    st.builds(lambda v: _object_row(v, 1.0, 2.0, "US", "ios"), hostile),  # an object array holding one
    st.builds(lambda w: np.zeros((2, w)), st.integers(0, 8)),  # arrays of any width
)
results = st.one_of(scalars, st.builds(np.array, st.lists(st.floats(), max_size=4)), st.just(np.zeros((2, 2))), hostile)


class Sentinel(Exception):
    pass


class Fatal(BaseException):
    """A model failure that is no ``Exception`` (like KeyboardInterrupt or CancelledError)."""


def _raise(*args: Any) -> Any:
    raise Hostile("callback")


def _call(fn: Any, features: Any) -> tuple[Any, BaseException | None]:
    try:
        return fn(features), None
    except BaseException as exc:
        return None, exc


failures = st.sampled_from(
    [None, Sentinel("model failed"), Fatal("fatal"), KeyboardInterrupt(), asyncio.CancelledError(), SystemExit(3)]
)
callbacks = st.sampled_from(["none", "inputs", "score", "decision", "all"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    features=inputs,
    result=results,
    error=failures,
    rule=st.sampled_from(["threshold", "fn", "bad"]),
    raising=callbacks,
    is_async=st.booleans(),
    shadowed=st.booleans(),
    captured=st.booleans(),
)
def test_decorated_function_behaves_exactly_like_the_original(
    baseline: Baseline,
    features: Any,
    result: Any,
    error: BaseException | None,
    rule: str,
    raising: str,
    is_async: bool,
    shadowed: bool,
    captured: bool,
) -> None:
    registry = CollectorRegistry()
    spool = Path(tempfile.mkdtemp(prefix="otel-ml-never-hurt-")) if captured else None
    # a shadow version sees the same hostile input and result on its worker, and fails the same way
    shadow = Shadow(lambda x: result, version="v4-shadow", timeout=10)
    decision: Any = {"threshold": 0.5, "fn": lambda s: np.where(s > 0.5, "approve", "decline"), "bad": lambda s: 1 / 0}[
        rule
    ]
    hooks: dict[str, Any] = {k: _raise for k in ("inputs", "score", "decision") if raising in (k, "all")}
    mon = ModelMonitor(
        baseline=baseline,
        segments=["country", "missing-key"],
        decision=hooks.get("decision", decision),
        segment_budget=2,
        shadow=[shadow] if shadowed else [],
        capture=None if spool is None else Capture(spool, rate=1.0),  # every row of the hostile input
        registry=registry,
        **{k: v for k, v in hooks.items() if k != "decision"},
    )

    def original(x: Any) -> Any:
        if error is not None:
            raise error
        return result

    async def original_async(x: Any) -> Any:
        return original(x)

    if error is not None:
        error.__traceback__ = error.__context__ = None  # the same objects are drawn again
    if is_async:
        wrapped_async = mon(original_async)

        async def awaited() -> tuple[Any, BaseException | None]:
            try:  # awaited in this coroutine, not a task: asyncio would replace a CancelledError
                return await wrapped_async(features), None
            except BaseException as exc:
                return None, exc

        returned, raised = asyncio.run(awaited())
    else:
        returned, raised = _call(mon(original), features)
    if error is not None:
        assert raised is error
        assert error.__context__ is None and error.__cause__ is None  # nothing of ours chained on
        assert traceback.extract_tb(error.__traceback__)[-1].name == "original"
    else:
        assert raised is None and returned is result
    # the exposition still renders, and the call was counted exactly once
    text = generate_latest(registry).decode()
    assert "ml_prediction_duration_seconds_count" in text
    calls = registry.get_sample_value(
        "ml_prediction_duration_seconds_count", {"ml_model_name": "fraud", "ml_model_version": "v3"}
    )
    assert calls == 1
    errors = [
        (s.labels["error_type"], s.value)
        for fam in registry.collect()
        for s in fam.samples
        if s.name == "ml_prediction_errors_total"
    ]
    assert errors == ([] if error is None else [(type(error).__qualname__, 1.0)])
    if shadowed:
        assert shadow.drain(10)
        assert "ml_shadow_dropped_total" in generate_latest(registry).decode()
    mon.close()
    if spool is not None:  # whatever was captured reads back whole, and is all that was counted
        rows = list(read_capture(capture_files(spool)))
        capture = mon.counters.snapshot().capture
        assert capture is not None and capture.records == len(rows)
        shutil.rmtree(spool)


def test_instrumentation_failures_are_counted_not_raised(baseline: Baseline) -> None:
    registry = CollectorRegistry()
    mon = ModelMonitor(baseline=baseline, decision=lambda s: 1 / 0, registry=registry)
    assert mon(lambda x: np.ones(3))(pd.DataFrame({"amount": [1.0, 2.0, 3.0]})).tolist() == [1.0, 1.0, 1.0]
    assert (
        registry.get_sample_value(
            "ml_instrumentation_errors_total",
            {"ml_model_name": "fraud", "ml_model_version": "v3", "error_type": "ZeroDivisionError"},
        )
        == 1
    )


def test_score_shape_mismatch_is_an_instrumentation_error(baseline: Baseline) -> None:
    registry = CollectorRegistry()
    mon = ModelMonitor(baseline=baseline, registry=registry)
    out = mon(lambda x: [0.1, 0.2])(pd.DataFrame({"amount": [1.0, 2.0, 3.0]}))  # 2 scores for 3 rows
    assert out == [0.1, 0.2]
    assert (
        registry.get_sample_value(
            "ml_instrumentation_errors_total",
            {"ml_model_name": "fraud", "ml_model_version": "v3", "error_type": "ValueError"},
        )
        == 1
    )


def _errors(registry: CollectorRegistry) -> dict[str, float]:
    return {
        s.labels["error_type"]: s.value
        for fam in registry.collect()
        for s in fam.samples
        if s.name == "ml_prediction_errors_total"
    }


def _calls(registry: CollectorRegistry, model: str = "fraud", version: str = "v3") -> float | None:
    return registry.get_sample_value(
        "ml_prediction_duration_seconds_count", {"ml_model_name": model, "ml_model_version": version}
    )


def test_cancelled_async_call_ends_its_span_and_is_counted(baseline: Baseline, spans: Any) -> None:
    provider, exporter = spans
    registry = CollectorRegistry()
    started = asyncio.Event()

    @ModelMonitor(baseline=baseline, tracer_provider=provider, registry=registry)
    async def predict(features: Any) -> float:
        started.set()
        await asyncio.sleep(30)  # cancelled long before
        return 0.5

    async def main() -> BaseException:
        task = asyncio.create_task(predict({"amount": 1.0}))
        await started.wait()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError as exc:
            return exc
        raise AssertionError("not cancelled")

    exc = asyncio.run(main())
    assert type(exc) is asyncio.CancelledError
    (span,) = exporter.get_finished_spans()
    assert span.attributes is not None and span.attributes["error.type"] == "CancelledError"
    assert span.status.status_code.name == "ERROR"
    assert _errors(registry) == {"CancelledError": 1.0}
    assert _calls(registry) == 1


def test_keyboard_interrupt_in_observe_is_counted_and_reraised(baseline: Baseline) -> None:
    registry = CollectorRegistry()
    mon = ModelMonitor(baseline=baseline, registry=registry)
    interrupt = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt) as info:
        with mon.observe({"amount": 1.0}):
            raise interrupt
    assert info.value is interrupt
    assert _errors(registry) == {"KeyboardInterrupt": 1.0}


def test_nested_call_of_the_same_model_is_counted_once(baseline: Baseline, spans: Any) -> None:
    provider, exporter = spans
    registry = CollectorRegistry()
    mon = ModelMonitor(baseline=baseline, tracer_provider=provider, registry=registry)

    @mon
    def predict_proba(features: Any) -> Any:
        return np.full(len(features["amount"]), 0.25)

    @mon
    def predict(features: Any) -> Any:
        with mon.observe(features):
            return predict_proba(features)

    predict({"amount": [1.0, 2.0, 3.0]})
    assert _calls(registry) == 1
    assert len(exporter.get_finished_spans()) == 1
    assert registry.get_sample_value(
        "ml_feature_value_count", {"ml_model_name": "fraud", "ml_model_version": "v3", "ml_feature": "amount"}
    ) == (3 if baseline.feature("amount").edges[0] >= 0 else None)  # type: ignore[union-attr]
    buckets = registry.get_sample_value(
        "ml_feature_value_bucket",
        {"ml_model_name": "fraud", "ml_model_version": "v3", "ml_feature": "amount", "le": "+Inf"},
    )
    assert buckets == 3
    predict_proba({"amount": [1.0]})  # called on its own, it counts
    assert _calls(registry) == 2


def test_nested_async_call_of_the_same_model_is_counted_once(baseline: Baseline) -> None:
    registry = CollectorRegistry()
    mon = ModelMonitor(baseline=baseline, registry=registry)

    @mon
    async def inner(features: Any) -> float:
        await asyncio.sleep(0)
        return 0.1

    @mon
    async def outer(features: Any) -> float:
        return await inner(features)

    assert asyncio.run(outer({"amount": 1.0})) == 0.1
    assert _calls(registry) == 1


def test_nested_calls_of_different_models_are_both_counted(baseline: Baseline, spans: Any) -> None:
    provider, exporter = spans
    registry = CollectorRegistry()
    fraud = ModelMonitor(baseline=baseline, tracer_provider=provider, registry=registry)
    ranker = ModelMonitor("ranker", "1", tracer_provider=provider, registry=registry)

    @ranker
    def rank(features: Any) -> float:
        return 0.3

    @fraud
    def predict(features: Any) -> float:
        return rank(features)

    predict({"amount": 1.0})
    assert _calls(registry) == 1
    assert _calls(registry, "ranker", "1") == 1
    inner, outer = exporter.get_finished_spans()
    assert inner.parent is not None and inner.parent.span_id == outer.context.span_id
