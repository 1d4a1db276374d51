"""The three binning kernels give identical counts, equal to an independent numpy oracle.

The oracle is ``np.bincount(np.searchsorted(edges, v, side="left"))`` over the non-NaN values
(``bin_counts``) or the finite ones (``finite_bin_counts``), on the values converted to
float64: it shares no code with the kernels (no cumulative counts, no float32 edge rounding).
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from otel_ml import _bin_kernels
from otel_ml._bin_kernels import ALWAYS_CUMULATIVE, KERNELS, Calibration, Kernel, kernel_for
from otel_ml._binning import bin_counts, finite_bin_counts

Counts = npt.NDArray[np.int64]
SPECIALS = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, 1e-300]


def oracle(edges: Any, values: Any, keep: str) -> Counts:
    v = np.asarray(values).astype(np.float64).reshape(-1)
    v = v[np.isfinite(v)] if keep == "finite" else v[~np.isnan(v)]
    e = np.asarray(edges, dtype=np.float64)
    return np.bincount(np.searchsorted(e, v, side="left"), minlength=e.size + 1).astype(np.int64)


def _representable(x: float, dtype: str) -> float:
    """``x`` rounded to ``dtype`` (an edge hit exactly by a float32 column, where it is representable)."""
    with np.errstate(over="ignore"):
        return float(np.asarray(x, dtype))


@st.composite
def edges_and_values(draw: st.DrawFn) -> tuple[npt.NDArray[np.float64], npt.NDArray[Any]]:
    """Edges (0 to 200, duplicates and infinite ones allowed) and a column that hits them exactly."""
    n_edges = draw(st.sampled_from([0, 1, 2, 5, 10, 17, 50, 200]))
    pool = st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.sampled_from([-np.inf, np.inf, 0.0, 1e300]))
    edges = np.sort(np.array(draw(st.lists(pool, min_size=n_edges, max_size=n_edges)), dtype=np.float64))
    dtype = draw(st.sampled_from(["float64", "float32", "int64", "int8", "bool"]))
    on_edges = st.sampled_from(edges.tolist()) if n_edges else st.just(0.0)
    if dtype.startswith("float"):
        width = 32 if dtype == "float32" else 64
        anything = st.floats(allow_nan=True, allow_infinity=True, width=width)
        element = st.one_of(anything, st.sampled_from(SPECIALS), on_edges.map(lambda x: _representable(x, dtype)))
        values = draw(arrays(dtype, st.integers(0, 400), elements=element))
    elif dtype == "bool":
        values = draw(arrays(np.bool_, st.integers(0, 400)))
    else:
        info = np.iinfo(dtype)
        values = draw(arrays(dtype, st.integers(0, 400), elements=st.integers(int(info.min), int(info.max))))
    return edges, values


@settings(max_examples=150, deadline=None)
@given(case=edges_and_values())
def test_every_kernel_counts_like_searchsorted_and_bincount(case: tuple[Any, Any]) -> None:
    edges, values = case
    expected, expected_finite = oracle(edges, values, "all"), oracle(edges, values, "finite")
    finite = values[np.isfinite(values.astype(np.float64))]
    for kernel in KERNELS:
        np.testing.assert_array_equal(bin_counts(edges, values, kernel=kernel), expected, err_msg=kernel)
        counts, total, n = finite_bin_counts(edges, values, kernel=kernel)
        np.testing.assert_array_equal(counts, expected_finite, err_msg=kernel)
        assert n == finite.size
        with np.errstate(over="ignore"):  # a sum of huge finite values may overflow, as it does here
            scale = float(np.sum(np.abs(finite), dtype=np.float64))  # the sum's rounding depends on the order
            assert total == pytest.approx(float(np.sum(finite, dtype=np.float64)), rel=1e-9, abs=1e-12 * scale)
    np.testing.assert_array_equal(bin_counts(edges, values), expected)
    ordered = np.sort(values.astype(np.float64))
    np.testing.assert_array_equal(bin_counts(edges, ordered, assume_sorted=True), expected)


def test_by_hand_nan_and_infinities() -> None:
    # edges (0, 1): (-inf, 0] is bin 0, (0, 1] bin 1, (1, inf) bin 2
    values = np.array([-np.inf, -1.0, 0.0, 1e-300, 0.5, 1.0, 1.0000001, np.inf, np.nan])
    for kernel in KERNELS:
        assert bin_counts([0.0, 1.0], values, kernel=kernel).tolist() == [3, 3, 2]
        counts, total, n = finite_bin_counts(np.array([0.0, 1.0]), values, kernel=kernel)
        assert (counts.tolist(), n) == ([2, 3, 1], 6)
        assert total == pytest.approx(1.5000001)
        # an edge at +inf takes +inf into its bin, which finite_bin_counts then drops
        assert bin_counts([0.0, np.inf], values, kernel=kernel).tolist() == [3, 5, 0]
        assert finite_bin_counts(np.array([0.0, np.inf]), values, kernel=kernel)[0].tolist() == [2, 4, 0]


@pytest.mark.parametrize("kernel", KERNELS)
def test_float32_values_compare_with_the_float64_edge_not_its_rounding(kernel: Kernel) -> None:
    edge = 0.1  # float32(0.1) is 0.10000000149..., above the float64 edge: it must land in the upper bin
    values = np.array([np.float32(0.1), np.nextafter(np.float32(0.1), np.float32(0.0)), np.float32(1e38)], np.float32)
    assert bin_counts([edge, 1e300], values, kernel=kernel).tolist() == [1, 2, 0]


@pytest.mark.parametrize("kernel", KERNELS)
def test_strided_columns_of_a_matrix(kernel: Kernel) -> None:
    rng = np.random.default_rng(3)
    matrix = rng.normal(size=(5000, 7))
    matrix[::17, 2] = np.nan
    edges = np.quantile(matrix[:, 1], np.linspace(0, 1, 12)[1:-1])
    column = matrix[:, 2]
    assert not column.flags.c_contiguous
    np.testing.assert_array_equal(bin_counts(edges, column, kernel=kernel), oracle(edges, column, "all"))
    counts, total, n = finite_bin_counts(edges, column, kernel=kernel)
    np.testing.assert_array_equal(counts, oracle(edges, column, "finite"))
    assert total == pytest.approx(np.nansum(column))


def test_empty_inputs() -> None:
    for kernel in KERNELS:
        assert bin_counts([], [], kernel=kernel).tolist() == [0]
        assert bin_counts([1.0], [], kernel=kernel).tolist() == [0, 0]
        assert bin_counts([], [np.nan, 2.0, np.inf], kernel=kernel).tolist() == [2]
        counts, total, n = finite_bin_counts(np.array([1.0]), np.array([np.nan]), kernel=kernel)
        assert (counts.tolist(), total, n) == ([0, 0], 0.0, 0)


def test_few_edges_take_the_cumulative_kernel_without_measuring(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail() -> Calibration:
        raise AssertionError("calibrated for a few edges")

    monkeypatch.setattr(_bin_kernels, "calibration", fail)
    assert {kernel_for(k, n) for k in range(ALWAYS_CUMULATIVE + 1) for n in (1, 100_000)} == {"cumulative"}


def test_many_edges_follow_the_measured_costs(monkeypatch: pytest.MonkeyPatch) -> None:
    # costs as measured on an AVX-512 Xeon (fast sort) and as on an EPYC whose sort is 7x slower
    xeon = Calibration(compare=2.3e-10, search=6e-9, search_base=4e-9, sort=3.3e-10)
    epyc = Calibration(compare=2.3e-10, search=6e-9, search_base=4e-9, sort=3.1e-9)  # 5.2 ms per 100k
    monkeypatch.setattr(_bin_kernels, "calibration", lambda: xeon)
    assert kernel_for(50, 100_000) == "sort"  # 0.55 ms against 1.2 ms of compares
    monkeypatch.setattr(_bin_kernels, "calibration", lambda: epyc)
    assert kernel_for(50, 100_000) == "cumulative"  # 1.2 ms against 3.8 (searchsorted) and 5.2 (sort)
    assert kernel_for(400, 100_000) == "sort"  # 5.2 ms against 5.6 (searchsorted) and 9.8 (compares)
    slow_sort = Calibration(compare=2.3e-10, search=6e-9, search_base=4e-9, sort=6e-9)
    monkeypatch.setattr(_bin_kernels, "calibration", lambda: slow_sort)
    assert kernel_for(400, 100_000) == "searchsorted"
    assert kernel_for(200, 3) != "cumulative"  # three numpy calls, not 200


def test_the_calibration_is_measured_once_and_never_at_import() -> None:
    code = (
        "import otel_ml, otel_ml.instrument, otel_ml.drift\n"
        "from otel_ml import _bin_kernels as k\n"
        "assert k.calibration.cache_info().currsize == 0\n"
        "a = k.calibration(); assert k.calibration() is a\n"
        "assert all(v > 0 for v in (a.compare, a.sort)), a\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
