"""Never hurt the host: whatever a decorated function is called with, and whatever it returns
or raises, the caller sees exactly what the undecorated function would have produced.

Hypothesis throws arbitrary inputs (wrong types, missing keys, NaN, inf, huge strings, empty
batches, nested garbage) and arbitrary results at a decorated function.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from otel_ml import Baseline, ModelMonitor

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
)
results = st.one_of(scalars, st.builds(np.array, st.lists(st.floats(), max_size=4)), st.just(np.zeros((2, 2))))


class Sentinel(Exception):
    pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(features=inputs, result=results, raise_it=st.booleans(), rule=st.sampled_from(["threshold", "fn", "bad"]))
def test_decorated_function_behaves_exactly_like_the_original(
    baseline: Baseline, features: Any, result: Any, raise_it: bool, rule: str
) -> None:
    registry = CollectorRegistry()
    decision: Any = {"threshold": 0.5, "fn": lambda s: np.where(s > 0.5, "approve", "decline"), "bad": lambda s: 1 / 0}[
        rule
    ]
    mon = ModelMonitor(
        baseline=baseline, segments=["country", "missing-key"], decision=decision, segment_budget=2, registry=registry
    )
    error = Sentinel("model failed")

    def original(x: Any) -> Any:
        if raise_it:
            raise error
        return result

    wrapped = mon(original)
    if raise_it:
        with pytest.raises(Sentinel) as info:
            wrapped(features)
        assert info.value is error
    else:
        assert wrapped(features) is result
    # the exposition still renders, and the call was counted exactly once
    text = generate_latest(registry).decode()
    assert "ml_prediction_duration_seconds_count" in text
    calls = registry.get_sample_value(
        "ml_prediction_duration_seconds_count", {"ml_model_name": "fraud", "ml_model_version": "v3"}
    )
    assert calls == 1
    errors = registry.get_sample_value(
        "ml_prediction_errors_total", {"ml_model_name": "fraud", "ml_model_version": "v3", "error_type": "Sentinel"}
    )
    assert errors == (1 if raise_it else None)


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
