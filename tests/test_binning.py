"""Binning primitives: the sort-based batch path, the one-row path and Prometheus' ``le`` agree."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import client_le, right_closed_counts
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from otel_ml import Baseline, ModelMonitor, _frame
from otel_ml._binning import CategoryEncoder, bin_index, finite_bin_counts
from otel_ml._names import le_labels, normalize_le
from otel_ml.baseline import NumericProfile, ScoreProfile

finite_floats = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
edges_strategy = st.lists(finite_floats, min_size=0, max_size=12, unique=True).map(lambda e: np.array(sorted(e)))
values_strategy = arrays(
    np.float64, st.integers(0, 300), elements=st.one_of(finite_floats, st.sampled_from([np.nan, np.inf, -np.inf]))
)


@given(edges=edges_strategy, values=values_strategy)
def test_sort_based_counts_equal_plain_comparisons_and_digitize(edges: np.ndarray, values: np.ndarray) -> None:
    counts, total, n = finite_bin_counts(edges, values)
    finite = values[np.isfinite(values)]
    np.testing.assert_array_equal(counts, right_closed_counts(edges, finite))
    np.testing.assert_array_equal(counts, np.bincount(np.digitize(finite, edges, right=True), minlength=edges.size + 1))
    assert n == finite.size
    assert np.isclose(total, finite.sum(), rtol=1e-9, atol=1e-6)


@given(edges=edges_strategy, values=values_strategy)
def test_bin_index_is_numpy_digitize_right_closed(edges: np.ndarray, values: np.ndarray) -> None:
    kept = values[~np.isnan(values)]
    np.testing.assert_array_equal(bin_index(edges, kept), np.digitize(kept, edges, right=True))


def test_bin_index_by_hand() -> None:
    # edges (0, 1): (-inf, 0] is bin 0, (0, 1] bin 1, (1, inf) bin 2
    values = np.array([-np.inf, -1.0, 0.0, 1e-300, 0.5, 1.0, 1.0000001, np.inf])
    assert bin_index(np.array([0.0, 1.0]), values).tolist() == [0, 0, 0, 1, 1, 1, 2, 2]


@given(edges=edges_strategy, values=arrays(np.float64, st.integers(0, 50), elements=finite_floats))
def test_bins_are_right_closed_like_prometheus_le(edges: np.ndarray, values: np.ndarray) -> None:
    counts, _, _ = finite_bin_counts(edges, values)
    # the cumulative count up to edge i is exactly "values <= le" for that edge
    for i, edge in enumerate(edges):
        assert counts[: i + 1].sum() == np.count_nonzero(values <= edge)


def test_category_codes() -> None:
    enc = CategoryEncoder(["US", "DE"], rare_values=["FR"])
    codes = enc.encode(np.array(["US", "FR", "United States", None, "DE"], dtype=object))
    assert [enc.labels[c] if c >= 0 else None for c in codes] == ["US", "__other__", "__unknown__", None, "DE"]


def test_category_codes_use_one_identity_per_value() -> None:
    enc = CategoryEncoder(["true", "false", "1"])
    column = np.empty(9, dtype=object)
    column[:] = [True, "True", "TRUE", np.True_, False, "false", 1, 1.0, "1.0"]
    codes = enc.encode(column)
    assert [enc.labels[c] for c in codes] == ["true"] * 4 + ["false"] * 2 + ["1"] * 3
    # the single-row path hands the encoder raw strings
    assert [enc.labels[enc.code(s)] for s in ("True", "FALSE", "1.0", "1.5")] == ["true", "false", "1", "__unknown__"]


def test_a_baseline_fitted_before_canonical_labels_still_matches() -> None:
    enc = CategoryEncoder(["True", "False", "3.0"])  # vocabulary spelled as an old fit stored it
    column = np.empty(4, dtype=object)
    column[:] = [True, "true", False, 3]
    assert [enc.labels[c] for c in enc.encode(column)] == ["True", "True", "False", "3.0"]


@pytest.mark.parametrize("with_pandas", [True, False])
def test_booleans_and_the_numbers_one_and_zero_stay_apart(with_pandas: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    import pandas

    monkeypatch.setattr(_frame, "_pandas", (lambda: pandas) if with_pandas else (lambda: None))
    column = np.empty(8, dtype=object)
    column[:] = [True, 1, 1.0, False, 0, "x", np.True_, None]  # True == 1 for any hash table
    assert _frame.as_labels(column).tolist() == ["true", "1", "1", "false", "0", "x", "true", None]


# -- the spelling of ``le``: baseline edges -> the app's label -> the sidecar ---------------------
# Go (and so prometheus_client and Prometheus) spells a bound in exponent form below 1e-4 and
# from 1e21, and whenever that is shorter: 1234567.0 is "1.234567e+06". Python's repr is not.
EXPONENT_EDGES = (2.5e-07, 1e-05, 0.1, 1.5, 1234567.0, 1e21)
GO_SPELLING = ["2.5e-07", "1e-05", "0.1", "1.5", "1.234567e+06", "1e+21", "+Inf"]  # by hand
SCORE_EDGES = (1e-05, 0.5)
VALUES = [1e-7, 2.5e-07, 5e-06, 1e-05, 0.05, 1.5, 1234567.0, 1e21, 1e22]


def exposed_buckets(text: str, name: str = "ml_feature_value_bucket") -> dict[str, float]:
    """``le`` -> value of one histogram's buckets in an exposition, in exposition order."""
    return {
        s.labels["le"]: s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == name and s.labels.get("ml_feature", "x") == "x"
    }


def exponent_baseline() -> Baseline:
    feature = NumericProfile("x", EXPONENT_EDGES, tuple([1 / 7] * 7), 700)
    return Baseline("m", "1", (feature,), 700, score=ScoreProfile(SCORE_EDGES, (0.2, 0.3, 0.5), 700))


def test_le_labels_are_prometheus_clients_spelling() -> None:
    assert client_le(EXPONENT_EDGES) == GO_SPELLING
    assert list(le_labels(EXPONENT_EDGES)) == GO_SPELLING
    assert list(le_labels(SCORE_EDGES)) == client_le(SCORE_EDGES)


@pytest.mark.parametrize("edge", EXPONENT_EDGES)
def test_normalize_le_folds_every_spelling_of_a_bound(edge: float) -> None:
    want = client_le((edge,))[0]
    for spelling in (repr(edge), f"{edge:.17g}", f"{edge:e}", f"{edge:E}", f"{edge:f}".rstrip("0"), want):
        if float(spelling) == edge:  # %f rounds the smallest bounds away
            assert normalize_le(spelling) == want, spelling
    assert [normalize_le(s) for s in ("+Inf", "inf", "Inf")] == ["+Inf"] * 3


@pytest.mark.parametrize("one_row_at_a_time", [False, True])
def test_the_app_exposes_exponent_edges_as_prometheus_client_does(one_row_at_a_time: bool) -> None:
    registry = CollectorRegistry()
    predict = ModelMonitor(baseline=exponent_baseline(), registry=registry)(lambda x: np.full(np.size(x["x"]), 0.3))
    if one_row_at_a_time:
        for v in VALUES:  # a mapping of scalars: the one-row path
            predict({"x": v})
    else:
        predict({"x": VALUES})
    buckets = exposed_buckets(generate_latest(registry).decode())
    assert list(buckets) == GO_SPELLING
    assert list(buckets.values()) == np.cumsum(right_closed_counts(EXPONENT_EDGES, VALUES)).tolist()
    scores = exposed_buckets(generate_latest(registry).decode(), "ml_prediction_score_bucket")
    assert list(scores) == client_le(SCORE_EDGES)


def test_the_sidecar_takes_any_spelling_and_exposes_prometheus_clients() -> None:
    from otel_ml.sidecar import SidecarState, StateSettings, WindowSpec
    from otel_ml.sidecar._collector import SidecarCollector
    from otel_ml.sidecar._scrape import parse_exposition

    baseline = exponent_baseline()
    registry = CollectorRegistry()
    ModelMonitor(baseline=baseline, registry=registry)(lambda x: np.full(np.size(x["x"]), 0.3))({"x": VALUES})
    app = generate_latest(registry).decode()
    respelled = app
    for go, python in [("1.234567e+06", "1234567.0"), ("1e-05", "0.00001"), ("2.5e-07", "2.5E-7"), ("1e+21", "1e21")]:
        respelled = respelled.replace(f'le="{go}"', f'le="{python}"')
    assert respelled != app
    for text in (app, respelled):
        state = SidecarState([baseline], StateSettings(windows=(WindowSpec("10m", 600.0, resolution=10),)), now=1e9)
        state.apply_metrics(parse_exposition(text, "http://app/metrics"), "scrape", now=1e9 + 1)
        assert state.ingest_errors == {}
        state.reexport.add(("m", "1"))
        out = CollectorRegistry(auto_describe=False)
        out.register(SidecarCollector(state))
        buckets = exposed_buckets(generate_latest(out).decode())
        assert list(buckets) == GO_SPELLING
        assert list(buckets.values()) == np.cumsum(right_closed_counts(EXPONENT_EDGES, VALUES)).tolist()
