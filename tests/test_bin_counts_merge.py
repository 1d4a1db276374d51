"""Mergeable bin counts: partition counts add up to the single pass, exactly, and refuse mixing baselines.

The oracle is the single pass over the whole table (itself checked against numpy in
test_offline_stream.py) and, for the Dask example of the README, the same code run for real.
"""

from __future__ import annotations

import json
import operator
from functools import reduce
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_offline_stream import make_frame, write_parts

from otel_ml.baseline import Baseline, fit_baseline
from otel_ml.cli import main as cli
from otel_ml.drift import BinCounts, CountsError, bin_counts, drift_report, report_from_counts


@pytest.fixture(scope="module")
def baseline() -> Baseline:
    return fit_baseline(make_frame(5_000, 1), model="m", version="1", score_column="score")


@pytest.fixture(scope="module")
def current() -> pd.DataFrame:
    return make_frame(4_000, 2, shift=0.4)


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(0, 4_000), max_size=6))
def test_partition_counts_add_up_to_the_single_pass(baseline: Baseline, current: pd.DataFrame, cuts) -> None:
    bounds = [0, *sorted(cuts), len(current)]
    parts = [bin_counts(baseline, current.iloc[a:b], score_column="score") for a, b in zip(bounds, bounds[1:])]
    whole = bin_counts(baseline, current, score_column="score")
    merged = reduce(operator.add, parts)
    assert merged == whole
    assert merged.rows == len(current)
    assert (
        report_from_counts(baseline, merged).to_dict()
        == drift_report(baseline, current, score_column="score").to_dict()
    )


def test_counts_of_another_baseline_or_score_column_are_refused(baseline: Baseline, current: pd.DataFrame) -> None:
    other = fit_baseline(make_frame(5_000, 9), model="m", version="1", score_column="score")
    a = bin_counts(baseline, current, score_column="score")
    with pytest.raises(CountsError, match="different baselines cannot be merged"):
        a + bin_counts(other, current, score_column="score")
    with pytest.raises(CountsError, match="different score columns"):
        a + bin_counts(baseline, current)
    with pytest.raises(CountsError, match="made against another baseline"):
        report_from_counts(other, a)


def test_json_round_trip(baseline: Baseline, current: pd.DataFrame) -> None:
    counts = bin_counts(baseline, current, score_column="score")
    back = BinCounts.from_json(counts.to_json())
    assert back == counts and back.score_column == "score"
    assert all(isinstance(c, np.ndarray) and c.dtype == np.int64 for c in back.counts)
    with pytest.raises(CountsError, match="not an otel-ml/bin-counts document"):
        BinCounts.from_json(json.dumps({"schema": "other"}))
    with pytest.raises(CountsError, match="non-negative"):
        doc = counts.to_dict()
        doc["features"][0]["counts"][0] = -1
        BinCounts.from_dict(doc)
    doc = counts.to_dict()
    doc["features"][0]["counts"].append(0)  # same fingerprint and rows, one bin too many
    with pytest.raises(CountsError, match="do not have the baseline's features and bins"):
        report_from_counts(baseline, BinCounts.from_dict(doc))


def test_cli_merges_written_counts_into_the_report_of_the_union(
    tmp_path: Path, baseline: Baseline, current: pd.DataFrame, capsys: pytest.CaptureFixture
) -> None:
    baseline.save(tmp_path / "b.json")
    write_parts(current, tmp_path / "d", 3)
    files = sorted((tmp_path / "d").glob("*.parquet"))
    for i, f in enumerate(files):
        args = ["drift", str(tmp_path / "b.json"), str(f), "--score-column", "score", "--json", "-"]
        assert cli([*args, "--write-counts", str(tmp_path / f"c{i}.json")]) == 0
    capsys.readouterr()
    counts = [str(tmp_path / f"c{i}.json") for i in range(len(files))]
    assert cli(["drift", str(tmp_path / "b.json"), "--counts", *counts, "--json", "-"]) == 0
    merged = json.loads(capsys.readouterr().out)
    assert cli(["drift", str(tmp_path / "b.json"), str(tmp_path / "d"), "--score-column", "score", "--json", "-"]) == 0
    assert merged == json.loads(capsys.readouterr().out)
    other = fit_baseline(make_frame(5_000, 9), model="m", version="2")
    other.save(tmp_path / "o.json")
    assert cli(["drift", str(tmp_path / "o.json"), "--counts", *counts]) == 2
    assert "made against another baseline" in capsys.readouterr().err
    assert cli(["drift", str(tmp_path / "b.json"), str(files[0]), "--counts", *counts]) == 2


@pytest.mark.filterwarnings("ignore:The inplace keyword")  # inside dask, with pandas 3.1
def test_the_readme_dask_example(tmp_path: Path, baseline: Baseline, current: pd.DataFrame) -> None:
    """Map Dask partitions to counts, reduce by merge, finish with otel-ml: equal to the single pass."""
    dask = pytest.importorskip("dask")
    dd = pytest.importorskip("dask.dataframe")
    for i, chunk in enumerate(np.array_split(np.arange(len(current)), 4)):
        pq.write_table(pa.Table.from_pandas(current.iloc[chunk], preserve_index=False), tmp_path / f"p{i}.parquet")
    # -- as in the README --
    frame = dd.read_parquet(str(tmp_path / "*.parquet"), columns=[*baseline.feature_names, "score"])
    parts = [dask.delayed(bin_counts)(baseline, part, score_column="score") for part in frame.to_delayed()]
    total = dask.delayed(lambda counts: reduce(operator.add, counts))(parts).compute()
    # --
    assert total.rows == len(current)
    assert total == bin_counts(baseline, current, score_column="score")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("counts", [1.7], "whole numbers"),  # a float is not silently truncated
        ("counts", [2**64], "whole numbers"),  # nor an overflow a raw OverflowError
        ("counts", [True], "whole numbers"),
        ("missing", -1, "whole numbers"),
        ("missing", 1, "add up to rows"),  # rows are checked against every feature
    ],
)
def test_hand_edited_counts_are_refused(
    baseline: Baseline, current: pd.DataFrame, field: str, value: Any, message: str
) -> None:
    doc = bin_counts(baseline, current, score_column="score").to_dict()
    feature = doc["features"][0]
    if field == "counts":
        feature["counts"] = value + feature["counts"][len(value) :]
    else:
        feature["missing"] = feature["missing"] + value if message == "add up to rows" else value
    with pytest.raises(CountsError, match=message):
        BinCounts.from_dict(doc)


def test_merge_refuses_counts_of_other_bins(baseline: Baseline, current: pd.DataFrame) -> None:
    """One count for a feature of ten bins would broadcast onto every bin: refused at the merge."""
    a = bin_counts(baseline, current.iloc[:500], score_column="score")
    doc = bin_counts(baseline, current.iloc[500:], score_column="score").to_dict()
    feature = doc["features"][0]
    feature["counts"] = [sum(feature["counts"])]
    with pytest.raises(CountsError, match="different bins"):
        a + BinCounts.from_dict(doc)
