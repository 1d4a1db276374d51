"""Streaming drift and baseline fit over Parquet/CSV data sets (files, hive directories, globs).

The oracle for counts is numpy on the whole column (``searchsorted`` + ``bincount`` on the
finite values) and the in-memory path (``read_table`` + ``drift_report`` / ``fit_baseline``);
the oracle for edges is ``np.quantile`` on the full data, through the rank of each edge.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import right_closed_counts

from otel_ml.baseline import fit_baseline, read_table
from otel_ml.baseline._sample import RowSample
from otel_ml.baseline._stream_fit import fit_baseline_stream
from otel_ml.cli import main as cli
from otel_ml.drift import bin_counts, drift_report
from otel_ml.drift._stream import stream_counts

ROOT = Path(__file__).resolve().parents[1]


def make_frame(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """Normal, heavy-tailed, tied integers (with NaN and inf), a text categorical with missing, a score."""
    rng = np.random.default_rng(seed)
    ties = rng.poisson(2.0 + shift, n).astype(np.float64)
    ties[rng.random(n) < 0.05] = np.nan
    ties[rng.random(n) < 0.01] = np.inf
    country = rng.choice(np.array(["DE", "FR", "US", "XX", "01234"], dtype=object), n, p=[0.4, 0.3, 0.2, 0.05, 0.05])
    country[rng.random(n) < 0.03] = None
    return pd.DataFrame(
        {
            "x": rng.normal(shift, 1.0, n),
            "tail": rng.pareto(1.2, n),
            "ties": ties,
            "country": country,
            "score": rng.beta(2.0, 5.0 + shift, n),
        }
    )


def write_parts(frame: pd.DataFrame, directory: Path, parts: int, *, hive: bool = False) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for i, chunk in enumerate(np.array_split(np.arange(len(frame)), parts)):
        target = directory / f"day={i}" if hive else directory
        target.mkdir(exist_ok=True)
        pq.write_table(pa.Table.from_pandas(frame.iloc[chunk], preserve_index=False), target / f"part-{i}.parquet")
    return directory


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("offline")
    train, current = make_frame(20_000, 1), make_frame(30_000, 2, shift=0.3)
    baseline = fit_baseline(train, model="m", version="1", score_column="score")
    baseline.save(root / "b.json")
    write_parts(current, root / "flat", 3)
    write_parts(current, root / "hive", 3, hive=True)
    pq.write_table(pa.Table.from_pandas(current, preserve_index=False), root / "one.parquet")
    current.to_csv(root / "one.csv", index=False)
    pq.write_table(pa.Table.from_pandas(train, preserve_index=False), root / "train.parquet")
    return {"root": root, "baseline": baseline, "train": train, "current": current}


def _numpy_counts(edges: tuple[float, ...], values: np.ndarray) -> np.ndarray:
    finite = values[np.isfinite(values)]
    return np.bincount(np.searchsorted(np.asarray(edges), finite, side="left"), minlength=len(edges) + 1)


@pytest.mark.parametrize("source", ["flat", "hive", "flat/*.parquet", "one.parquet", "one.csv"])
def test_streamed_counts_equal_numpy_on_the_whole_column(data: dict, source: str) -> None:
    root, baseline, current = data["root"], data["baseline"], data["current"]
    got = stream_counts(baseline, str(root / source), score_column="score", batch_size=4096).counts
    assert got.rows == len(current)
    for f in baseline.numeric:
        values = current[f.name].to_numpy(dtype=np.float64)
        np.testing.assert_array_equal(got.feature(f.name), _numpy_counts(f.edges, values))
        assert got.missing[got.names.index(f.name)] == int((~np.isfinite(values)).sum())
    np.testing.assert_array_equal(
        got.feature("score"), _numpy_counts(baseline.score.edges, current["score"].to_numpy())
    )
    vocab = baseline.feature("country").vocabulary
    counted = current["country"].value_counts()
    assert got.feature("country")[: len(vocab)].tolist() == [int(counted.get(v, 0)) for v in vocab]
    assert got.missing[got.names.index("country")] == int(current["country"].isna().sum())


@pytest.mark.parametrize("source", ["hive", "one.csv"])
def test_cli_streamed_report_equals_in_memory_report(data: dict, source: str, capsys: pytest.CaptureFixture) -> None:
    root, baseline = data["root"], data["baseline"]
    code = cli(["drift", str(root / "b.json"), str(root / source), "--score-column", "score", "--json", "-"])
    assert code == 0
    streamed = json.loads(capsys.readouterr().out)
    table = read_table(root / "one.csv", strings=["country"]) if source.endswith("csv") else data["current"]
    in_memory = drift_report(baseline, table, score_column="score").to_dict()
    assert streamed == json.loads(json.dumps(in_memory))


def test_csv_empty_text_is_missing_as_read_table_does(tmp_path: Path, data: dict) -> None:
    baseline = data["baseline"]
    frame = data["current"].head(500).copy()
    frame.loc[:99, "country"] = ""
    frame.to_csv(tmp_path / "e.csv", index=False)
    got = stream_counts(baseline, str(tmp_path / "e.csv")).counts
    expected = bin_counts(baseline, read_table(tmp_path / "e.csv", strings=["country"]))
    assert got == expected
    assert got.missing[got.names.index("country")] >= 100
    assert got.feature("country")[-1] == 0  # "" is not an unknown category


def test_a_file_without_a_baseline_column_is_a_clear_error(tmp_path: Path, data: dict, capsys) -> None:
    root = tmp_path / "bad"
    write_parts(data["current"], root, 2)
    pq.write_table(pa.Table.from_pandas(data["current"].drop(columns=["tail"]).head(10)), root / "part-9.parquet")
    with pytest.raises(ValueError, match=r"part-9.parquet\) has no column for baseline feature\(s\) 'tail'"):
        stream_counts(data["baseline"], str(root))
    assert cli(["drift", str(data["root"] / "b.json"), str(root)]) == 2
    assert "has no column for baseline feature(s) 'tail'" in capsys.readouterr().err
    single = tmp_path / "single.parquet"
    pq.write_table(pa.Table.from_pandas(data["current"].drop(columns=["tail"])), single)
    assert cli(["drift", str(data["root"] / "b.json"), str(single)]) == 2
    assert "the data has no column for baseline feature(s) 'tail'" in capsys.readouterr().err


def test_reference_data_ks_is_exact_below_the_sample_size(data: dict, capsys: pytest.CaptureFixture) -> None:
    root, baseline = data["root"], data["baseline"]
    args = ["drift", str(root / "b.json"), str(root / "flat"), "--reference-data", str(root / "train.parquet")]
    assert cli([*args, "--json", "-"]) == 0
    streamed = json.loads(capsys.readouterr().out)
    exact = drift_report(baseline, data["current"], reference_data=data["train"]).to_dict()
    assert [f["ks_pvalue"] for f in streamed["features"]] == pytest.approx([f["ks_pvalue"] for f in exact["features"]])
    assert cli([*args, "--sample-rows", "1000", "--json", "-"]) == 0
    assert "uniform samples of at most 1,000 rows" in capsys.readouterr().err


def _without_time(baseline: object) -> dict:
    d = baseline.to_dict()
    d.pop("created")
    for f in d["features"]:  # mean/std are summed in another order: equal to rounding, compared apart
        f.get("summary", {}).pop("mean", None)
        f.get("summary", {}).pop("std", None)
    return d


def test_streaming_fit_of_small_data_is_the_in_memory_fit(tmp_path: Path, data: dict) -> None:
    train = data["train"].assign(region=lambda f: np.where(f["x"] > 0, "north", "south"))
    train["label"] = (np.random.default_rng(3).random(len(train)) < train["score"]).astype(int)
    write_parts(train, tmp_path / "t", 4)
    options = dict(model="m", version="1", score_column="score", segments=["region"], decision=0.3,
                   label_column="label", positive_label=1)  # fmt: skip
    streamed = fit_baseline_stream(tmp_path / "t", batch_size=3000, **options)
    in_memory = fit_baseline(train, **options)
    assert _without_time(streamed) == _without_time(in_memory)
    for s, m in zip(streamed.numeric, in_memory.numeric):
        assert s.mean == pytest.approx(m.mean, rel=1e-12) and s.std == pytest.approx(m.std, rel=1e-12)


def _rank_error(ordered: np.ndarray, edges: np.ndarray, bins: int) -> float:
    """Worst distance from a target quantile to the nearest edge's rank interval [F(e-), F(e)]."""
    below = np.searchsorted(ordered, edges, side="left") / ordered.size
    upto = np.searchsorted(ordered, edges, side="right") / ordered.size
    worst = 0.0
    for q in np.linspace(0.0, 1.0, bins + 1)[1:-1]:
        worst = max(worst, float(np.maximum(0.0, np.maximum(below - q, q - upto)).min()))
    return worst


def test_sampled_edges_have_rank_error_below_half_a_percent(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    n = 2_000_000
    columns = {
        "normal": rng.normal(0, 1, n),
        "pareto": rng.pareto(0.8, n),  # infinite mean: a very heavy tail
        "ties": rng.poisson(1.5, n).astype(np.float64),
        "mixed": np.where(rng.random(n) < 0.3, 0.0, rng.lognormal(0, 2, n)),
    }
    pq.write_table(pa.table(columns), tmp_path / "big.parquet", row_group_size=250_000)
    baseline = fit_baseline_stream(tmp_path / "big.parquet", model="m", version="1", bins=20)
    for name, values in columns.items():
        ordered = np.sort(values)
        profile = baseline.feature(name)
        assert _rank_error(ordered, profile.edges_array(), 20) <= 0.005, name
        expected = _numpy_counts(profile.edges, values) / n  # the reference fractions are exact
        np.testing.assert_allclose(profile.fractions, expected, rtol=0, atol=1e-15)


def test_row_sample_keeps_everything_below_capacity_and_merges() -> None:
    values = np.arange(1000, dtype=np.float64)
    sample = RowSample(["v"], capacity=5000)
    for chunk in np.array_split(values, 7):
        sample.add({"v": chunk})
    assert sample.complete and np.array_equal(sample.values("v"), values)
    a, b = RowSample(["v"], capacity=100, seed=1), RowSample(["v"], capacity=100, seed=2)
    a.add({"v": values[:500]})
    b.add({"v": values[500:]})
    merged = a.merge(b).values("v")
    assert merged.size == 100 and len(set(merged.tolist())) == 100
    assert 20 < int((merged < 500).sum()) < 80  # both halves are represented


def _peak_rss_mib(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    """The child's own peak RSS (VmHWM, polled): ``ru_maxrss`` of a child would also count this
    process's pages at fork time."""
    with tempfile.TemporaryFile() as sink, subprocess.Popen(argv, env=env, stdout=sink) as proc:
        peak = 0.0
        while proc.poll() is None:
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) / 1024)
            except (OSError, ValueError):
                pass
            time.sleep(0.01)
        assert proc.returncode == 0
        sink.seek(0)
        return peak, sink.read().decode()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_cli_peak_rss_is_bounded_by_the_batch_not_the_rows(tmp_path: Path) -> None:
    """8 files x 500k rows x 20 float64 columns (640 MB as a table) stream in well under that."""
    rng = np.random.default_rng(11)
    names = [f"f{j}" for j in range(20)]
    train = pa.table({n: rng.normal(0, 1, 50_000) for n in names})
    baseline = fit_baseline(train, model="m", version="1")
    baseline.save(tmp_path / "b.json")
    (tmp_path / "d").mkdir()
    expected = None
    for i in range(8):
        part = pa.table({n: rng.normal(0.1, 1, 500_000) for n in names})
        pq.write_table(part, tmp_path / "d" / f"p{i}.parquet", row_group_size=100_000)
        counts = bin_counts(baseline, part)
        expected = counts if expected is None else expected + counts
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "otel_ml.cli", "drift", str(tmp_path / "b.json"), str(tmp_path / "d"),
            "--write-counts", str(tmp_path / "c.json"), "--json", "-"]  # fmt: skip
    peak_mib, stdout = _peak_rss_mib(argv, env)
    print(f"peak RSS {peak_mib:.0f} MiB")
    assert peak_mib < 500, f"peak RSS {peak_mib:.0f} MiB: the table alone is 610 MiB"
    from otel_ml.drift import BinCounts, report_from_counts

    assert BinCounts.from_json((tmp_path / "c.json").read_text()) == expected
    assert json.loads(stdout) == report_from_counts(baseline, expected).to_dict()


@pytest.fixture(scope="module")
def xc_baseline() -> Any:
    rng = np.random.default_rng(0)
    return fit_baseline({"x": rng.normal(5, 2, 2000), "c": rng.choice(["a", "b"], 2000)}, model="m", version="v")


@pytest.mark.parametrize(
    ("files", "missing"),
    [
        ({"a.csv": "x,c\n1,a\n5,b\n", "b.csv": "x,c\n4.5,a\n7.25,b\n"}, 0),  # integers, then decimals
        ({"a.csv": "x,c\n,a\n,b\n", "b.csv": "x,c\n4.5,a\n7.25,b\n"}, 2),  # an all-empty column first
        (
            {  # pandas writes int64 for a day without NaN, float64 for a day with one
                "a.parquet": pa.table({"x": pa.array([1, 5], pa.int64()), "c": ["a", "b"]}),
                "b.parquet": pa.table({"x": pa.array([4.5, None]), "c": ["a", "b"]}),
            },
            1,
        ),
    ],
)
def test_files_whose_numbers_pyarrow_types_differently_stream_as_one(
    tmp_path: Path, xc_baseline: Any, files: dict[str, Any], missing: int
) -> None:
    """A data set's schema is its first file's: numeric features are read as float64 in every file."""
    for name, content in files.items():
        if name.endswith(".parquet"):
            pq.write_table(content, tmp_path / name)
        else:
            (tmp_path / name).write_text(content)
    (tmp_path / "README").write_text("not data: a directory's other files are skipped")
    counts = stream_counts(xc_baseline, str(tmp_path)).counts
    assert counts.rows == 4 and counts.missing[0] == missing
    values = [1, 5, 4.5, 7.25] if missing == 0 else [4.5, 7.25] if missing == 2 else [1, 5, 4.5]
    assert counts.feature("x").tolist() == right_closed_counts(xc_baseline.feature("x").edges, values).tolist()
