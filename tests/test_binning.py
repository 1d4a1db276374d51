"""Binning primitives: the sort-based batch path, the one-row path and Prometheus' ``le`` agree."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import right_closed_counts
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from otel_ml import _frame
from otel_ml._binning import CategoryEncoder, bin_index, finite_bin_counts

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
