"""The buffered single-row path counts exactly what binning each row alone counts.

Expected counts come from an independent oracle: per value, Python's ``float()`` (NaN where
it raises, as the row path always converted a row holding a non-number) and numpy
``searchsorted(side="left")`` + ``bincount`` over the finite values (right-closed bins).
"""

from __future__ import annotations

import math
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_ml import fit_baseline
from otel_ml.baseline import Baseline, NumericProfile
from otel_ml.instrument import ModelCounters
from otel_ml.instrument._counters import ROW_BATCH

EDGES = (-1.0, 0.0, 0.5, 2.0)
NAMES = ("a", "b", "c")


@pytest.fixture(scope="module")
def baseline() -> Baseline:
    rng = np.random.default_rng(11)
    n = 400
    base = fit_baseline(
        {
            "a": rng.normal(size=n),
            "b": rng.normal(size=n),
            "c": rng.normal(size=n),
            "color": rng.choice(["red", "green", "blue"], n),
        },
        model="rb",
        version="v1",
        scores=rng.uniform(size=n),
    )
    return base


def _oracle_float(v: Any) -> float:
    try:
        return float(v)
    except Exception:
        return math.nan


def _row_floats(row: dict[str, Any]) -> list[float]:
    """The row path's rule: numpy's conversion of the whole row, else ``float()`` per value."""
    values = [row.get(k) for k in NAMES]
    try:
        return [float(x) for x in np.array(values, dtype=np.float64)]
    except (TypeError, ValueError, OverflowError):
        return [_oracle_float(v) for v in values]


_value = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(EDGES),  # exactly on an edge
    st.integers(min_value=-(10**30), max_value=10**30),
    st.just(10**400),  # too large for a float
    st.none(),
    st.booleans(),
    st.fractions(max_denominator=1000),  # anything with __float__ converts as numpy converts it
    st.floats(width=32, allow_nan=False).map(np.float32),
    st.sampled_from(["1.5", "abc", "", "nan", "-inf"]),
)
_row = st.fixed_dictionaries(
    {},
    optional={
        "a": _value,
        "b": _value,
        "c": _value,
        "color": st.sampled_from(["red", "green", "blue", "purple", None, 1, True]),
        "region": st.sampled_from(["eu", "us", None, 3]),
    },
)


def _with_edges(base: Baseline) -> Baseline:
    """The fitted baseline with hand-picked edges, so values can sit exactly on them."""
    features = tuple(
        replace(f, edges=EDGES, fractions=(0.2,) * (len(EDGES) + 1)) if isinstance(f, NumericProfile) else f
        for f in base.features
    )
    return replace(base, features=features)


def _predictions(snap: Any, key: str = "__all__") -> int:
    return sum(count for k, _, _, count in snap.predictions if k == key)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(_row, min_size=1, max_size=40), data=st.data())
def test_buffered_rows_count_exactly_as_the_oracle(baseline: Baseline, rows: list[dict[str, Any]], data: Any) -> None:
    """In memory (buffered, counted 512 at a time) and in multiprocess mode (each row written
    through with bisect), the same counts as an independent oracle."""
    any_float = st.floats(allow_nan=True, allow_infinity=True)
    scores = [data.draw(st.one_of(st.none(), any_float, st.sampled_from([0.5]))) for _ in rows]
    decisions = [data.draw(st.sampled_from([None, "true", "false"])) for _ in rows]
    with tempfile.TemporaryDirectory() as directory:
        for mode in (None, directory):
            c = ModelCounters("rb", "v1", _with_edges(baseline), ["region"], multiproc_dir=mode)
            assert (c.file is not None) == (mode is not None)
            for row, score, decision in zip(rows, scores, decisions):
                region = row.get("region")
                c.add_row(row, score, decision, [None if region is None else str(region)], 0.001)
            _check_oracle(c, rows, scores, decisions)


def _check_oracle(c: ModelCounters, rows: list[dict[str, Any]], scores: list[Any], decisions: list[Any]) -> None:
    snap = c.snapshot()
    matrix = np.array([_row_floats(r) for r in rows], dtype=np.float64).reshape(len(rows), len(NAMES))
    edges = np.asarray(EDGES)
    for j, name in enumerate(NAMES):
        col = matrix[:, j]
        finite = col[np.isfinite(col)]
        want = np.bincount(np.searchsorted(edges, finite, side="left"), minlength=edges.size + 1)
        assert snap.numeric_bins[j].tolist() == want.tolist(), name
        assert snap.missing[name] == col.size - finite.size
        if finite.size and np.abs(finite).max() < 1e300:
            assert snap.numeric_sums[j] == pytest.approx(math.fsum(finite.tolist()), rel=1e-9, abs=1e-6)
    finite_scores = [s for s in scores if s is not None and math.isfinite(s)]
    score_edges = np.asarray(c.score_edges)
    want_scores = np.bincount(np.searchsorted(score_edges, finite_scores, side="left"), minlength=score_edges.size + 1)
    assert snap.score_bins.tolist() == want_scores.tolist()
    assert _predictions(snap) == sum(d is not None for d in decisions)
    assert int(snap.duration_bins.sum()) == len(rows)


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(_row, min_size=1, max_size=30))
def test_buffered_rows_equal_rows_flushed_one_by_one(baseline: Baseline, rows: list[dict[str, Any]]) -> None:
    """One flush of many rows and one flush per row give identical arrays (categories included)."""
    base = _with_edges(baseline)
    batched = ModelCounters("rb", "v1", base, ["region"], multiproc_dir=None)
    single = ModelCounters("rb", "v1", base, ["region"], multiproc_dir=None)
    for i, row in enumerate(rows):
        region = row.get("region")
        args = (row, 0.1 * i, "true" if i % 3 else None, [None if region is None else str(region)], 0.002 * i)
        batched.add_row(*args)
        single.add_row(*args)
        single.flush()
    a, b = batched.snapshot(), single.snapshot()
    assert [x.tolist() for x in a.numeric_bins] == [x.tolist() for x in b.numeric_bins]
    assert [x.tolist() for x in a.categorical_bins] == [x.tolist() for x in b.categorical_bins]
    assert (a.missing, a.predictions, a.overflow) == (b.missing, b.predictions, b.overflow)
    assert a.score_bins.tolist() == b.score_bins.tolist()
    assert a.duration_bins.tolist() == b.duration_bins.tolist()


def test_a_full_buffer_flushes_and_reads_flush_first(baseline: Baseline) -> None:
    c = ModelCounters("rb", "v1", baseline, multiproc_dir=None)
    row = {"a": 0.1, "b": 0.2, "c": 0.3, "color": "red"}
    for _ in range(ROW_BATCH - 1):
        c.add_row(row, 0.5, "true", [], 0.001)
    assert int(c.predictions.sum()) == 0 and len(c._pending) == ROW_BATCH - 1  # buffered, bounded
    c.add_row(row, 0.5, "true", [], 0.001)
    assert int(c.predictions[0, 0].sum()) == ROW_BATCH and not c._pending
    c.add_row(row, 0.5, "true", [], 0.001)
    assert _predictions(c.snapshot()) == ROW_BATCH + 1


def test_eight_threads_lose_and_double_count_no_row(baseline: Baseline) -> None:
    c = ModelCounters("rb", "v1", baseline, ["region"], multiproc_dir=None)
    calls = 3 * ROW_BATCH + 17
    start = threading.Barrier(8)

    def work(k: int) -> None:
        start.wait()
        for i in range(calls):
            c.add_row({"a": float(k), "b": -5.0, "c": 1.0}, 0.5, "true", [f"r{k}"], 0.001)
            if i % 500 == 0:
                c.snapshot()  # reads (and their flushes) racing the writers

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = c.snapshot()
    assert _predictions(snap) == 8 * calls
    for k in range(8):
        assert _predictions(snap, "region") == 8 * calls
        assert sum(n for key, seg, _, n in snap.predictions if key == "region" and seg == f"r{k}") == calls
    assert snap.missing["color"] == 8 * calls  # the absent categorical feature, once per row
    assert int(snap.numeric_bins[1][0]) == 8 * calls  # b = -5 sits in b's first bin
    assert int(snap.duration_bins.sum()) == 8 * calls


class _Raises:
    def __float__(self) -> float:
        raise RuntimeError("a value whose conversion raises")


def test_one_value_numpy_cannot_take_costs_only_that_value(baseline: Baseline) -> None:
    """A value whose ``__float__`` raises something numpy does not expect fails the buffer's
    one-step count: the rows are counted again, that row's values one by one, and only the
    value is missing; the other 100 rows and the rest of that row are counted."""
    counters = ModelCounters("m", "v", baseline)
    good = [{name: 0.01 * i for name in counters.numeric_names} for i in range(100)]
    for row in good[:50]:
        counters.add_row(row, 0.5, "true", [], None)
    first = counters.numeric_names[0]
    counters.add_row({**good[0], first: _Raises()}, 0.5, "true", [], None)
    for row in good[50:]:
        counters.add_row(row, 0.5, "true", [], None)
    snap = counters.snapshot()
    assert snap.missing[first] == 1
    assert int(snap.numeric_bins[0].sum()) == 100 and int(snap.numeric_bins[-1].sum()) == 101
    assert _predictions(snap) == 101
    assert counters.instrumentation_errors.counts() == {}


class _HalfMapping(Mapping[str, Any]):
    """A value numpy tries to read as a sequence: it yields one key, then raises."""

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("getitem")

    def __iter__(self) -> Iterator[str]:
        yield "amount"
        raise RuntimeError("iter")

    def __len__(self) -> int:
        return 2


@pytest.mark.parametrize("directory", [None, "multiprocess"])
def test_a_value_whose_methods_raise_is_missing_and_the_call_still_counted(
    baseline: Baseline, tmp_path: Any, directory: str | None
) -> None:
    """numpy fails for the whole row: each value is converted alone (NaN where it raises), so
    the prediction and the latency of that call are counted, in memory and in the file."""
    c = ModelCounters("rb", "v1", baseline, multiproc_dir=None if directory is None else tmp_path)
    first = c.numeric_names[0]
    row = {name: 0.5 for name in c.numeric_names} | {first: _HalfMapping()}
    c.add_row(row, 0.9, "true", [], 0.002)
    snap = c.snapshot()
    assert snap.missing[first] == 1
    assert all(int(b.sum()) == 1 for b in snap.numeric_bins[1:])
    assert _predictions(snap) == 1 and int(snap.duration_bins.sum()) == 1
