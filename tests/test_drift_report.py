"""Per-feature drift of a data table against a baseline, and the ``otel-ml drift`` command.

Bin counts are checked against pandas' own binning (``pd.cut``, right-closed) and
``value_counts``; PSI is then recomputed in the test from those counts, and KS/Wasserstein
against scipy.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from otel_ml import Baseline
from otel_ml.baseline import CategoricalProfile, NumericProfile
from otel_ml.cli import main as cli
from otel_ml.drift import DriftReport, drift_report


def _hand_psi(reference: np.ndarray, counts: np.ndarray) -> float:
    a = np.maximum(counts / counts.sum(), 1e-4)
    r = np.maximum(reference, 1e-4)
    return float(np.sum((a - r) * np.log(a / r)))


def _current(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    return frame.sample(n=n, random_state=seed).reset_index(drop=True)


@pytest.fixture(scope="module")
def drifted(training_frame: pd.DataFrame) -> pd.DataFrame:
    """5,000 fresh rows where balance_z moved by one standard deviation and 'XX' is a new country."""
    from conftest import make_training_frame

    frame = make_training_frame(5000, seed=42)
    frame["balance_z"] = frame["balance_z"] + 1.0
    frame.loc[:249, "country"] = "XX"
    frame.loc[250:299, "amount"] = np.nan
    frame.loc[300:399, "device"] = None
    return frame


class TestReport:
    def test_quiet_data_is_ok_everywhere(self, baseline: Baseline) -> None:
        from conftest import make_training_frame

        report = drift_report(baseline, make_training_frame(5000, seed=7), score_column="score")
        assert report.verdict == "ok"
        assert [f.name for f in report.features] == [*baseline.feature_names, "score"]
        assert report.feature("score").kind == "score"
        assert all(f.psi < f.psi_critical for f in report.features)

    def test_drift_is_found_where_it_is(self, baseline: Baseline, drifted: pd.DataFrame) -> None:
        report = drift_report(baseline, drifted, score_column="score")
        assert report.feature("balance_z").verdict == "drift"
        assert report.feature("device").verdict == "ok"
        assert report.feature("n_items").verdict == "ok"
        assert "balance_z" in report.names_with("drift")
        assert report.verdict == "drift"
        assert report.row_count == 5000 and report.reference_row_count == baseline.row_count

    def test_numeric_psi_uses_right_closed_bins(self, baseline: Baseline, drifted: pd.DataFrame) -> None:
        f = baseline.feature("balance_z")
        assert isinstance(f, NumericProfile)
        counts = pd.cut(drifted["balance_z"], [-np.inf, *f.edges, np.inf], right=True).value_counts(sort=False)
        got = drift_report(baseline, drifted).feature("balance_z")
        assert got.psi == pytest.approx(_hand_psi(f.fractions_array(), counts.to_numpy()), rel=1e-12)
        assert got.count == 5000 and got.bins == 10

    def test_values_on_an_edge_go_to_the_lower_bin(self) -> None:
        base = Baseline("m", "v", (NumericProfile("x", (0.0, 1.0), (0.25, 0.5, 0.25), 1000),), 1000)
        # (-inf, 0]: 0, 0   (0, 1]: 1, 1, 0.5   (1, inf): 2
        report = drift_report(base, {"x": np.array([0.0, 0.0, 1.0, 1.0, 0.5, 2.0])}, min_count=1)
        assert report.feature("x").psi == pytest.approx(_hand_psi(np.array([0.25, 0.5, 0.25]), np.array([2, 3, 1])))

    def test_categorical_bins_other_and_unknown(self, baseline: Baseline, drifted: pd.DataFrame) -> None:
        f = baseline.feature("country")
        assert isinstance(f, CategoricalProfile)
        seen = drifted["country"].value_counts()
        counts = np.array([seen.get(v, 0) for v in f.vocabulary] + [0, seen.get("XX", 0)])  # no rare values here
        got = drift_report(baseline, drifted).feature("country")
        assert got.unknown_ratio == pytest.approx(250 / 5000)
        assert got.psi == pytest.approx(_hand_psi(f.fractions_array(), counts), rel=1e-12)
        assert got.bins == len(f.vocabulary) + 2
        assert got.pvalue < 1e-10  # the reference never had __unknown__

    def test_missing_values_are_not_binned(self, baseline: Baseline, drifted: pd.DataFrame) -> None:
        report = drift_report(baseline, drifted)
        got = report.feature("amount")
        assert got.count == 4950 and got.missing_ratio == pytest.approx(50 / 5000)
        device = report.feature("device")
        f = baseline.feature("device")
        assert isinstance(f, CategoricalProfile)
        seen = drifted["device"].value_counts()  # pandas leaves None out
        counts = np.array([seen.get(v, 0) for v in f.vocabulary] + [0, 0])
        assert device.count == 4900 and device.missing_ratio == pytest.approx(100 / 5000)
        assert device.psi == pytest.approx(_hand_psi(f.fractions_array(), counts), rel=1e-12)

    def test_raw_reference_gives_ks_and_wasserstein(
        self, baseline: Baseline, training_frame: pd.DataFrame, drifted: pd.DataFrame
    ) -> None:
        report = drift_report(baseline, drifted, reference_data=training_frame, score_column="score")
        got = report.feature("amount")
        ref = training_frame["amount"].to_numpy()
        cur = drifted["amount"].dropna().to_numpy()
        expected = stats.ks_2samp(ref, cur)
        assert got.ks_statistic == pytest.approx(expected.statistic)
        assert got.ks_pvalue == pytest.approx(expected.pvalue)
        assert got.wasserstein == pytest.approx(stats.wasserstein_distance(ref, cur))
        assert report.feature("balance_z").wasserstein == pytest.approx(1.0, abs=0.05)
        assert report.feature("score").ks_pvalue is not None
        assert report.feature("country").ks_pvalue is None  # categorical: no KS
        assert drift_report(baseline, drifted).feature("amount").ks_pvalue is None  # no raw reference

    def test_empty_data_is_insufficient_not_zero(self, baseline: Baseline, training_frame: pd.DataFrame) -> None:
        report = drift_report(baseline, training_frame.iloc[:0])
        assert report.verdict == "insufficient_data"
        assert all(math.isnan(f.psi) and f.count == 0 for f in report.features)
        doc = json.loads(json.dumps(report.to_dict(), allow_nan=False))
        assert doc["features"][0]["psi"] is None and doc["features"][0]["verdict"] == "insufficient_data"

    def test_json_document(self, baseline: Baseline, drifted: pd.DataFrame) -> None:
        doc = drift_report(baseline, drifted).to_dict()
        json.dumps(doc, allow_nan=False)
        assert doc["schema"] == "otel-ml/drift-report" and doc["verdict"] == "drift"
        assert doc["model"] == {"name": "fraud", "version": "v3"}
        assert {"psi", "psi_critical", "js_distance", "pvalue", "verdict", "status"} <= set(doc["features"][0])

    def test_bad_input(self, baseline: Baseline, drifted: pd.DataFrame) -> None:
        with pytest.raises(ValueError, match="'device'"):
            drift_report(baseline, drifted.drop(columns=["device"]))
        with pytest.raises(ValueError, match="no column 'nope'"):
            drift_report(baseline, drifted, score_column="nope")
        no_score = Baseline(baseline.model_name, baseline.model_version, baseline.features, baseline.row_count)
        with pytest.raises(ValueError, match="no score profile"):
            drift_report(no_score, drifted, score_column="score")

    def test_report_type(self, baseline: Baseline, drifted: pd.DataFrame) -> None:
        assert isinstance(drift_report(baseline, drifted.to_dict(orient="list")), DriftReport)


# ---------------------------------------------------------------------------------------------
# the command line


@pytest.fixture
def files(tmp_path: Path, baseline: Baseline, training_frame: pd.DataFrame, drifted: pd.DataFrame) -> dict[str, Path]:
    from conftest import make_training_frame

    paths = {
        "baseline": baseline.save(tmp_path / "fraud.baseline.json"),
        "quiet": tmp_path / "quiet.parquet",
        "drifted": tmp_path / "drifted.parquet",
        "drifted_csv": tmp_path / "drifted.csv",
        "train": tmp_path / "train.parquet",
    }
    make_training_frame(3000, seed=3).to_parquet(paths["quiet"])
    drifted.to_parquet(paths["drifted"])
    drifted.to_csv(paths["drifted_csv"], index=False)
    training_frame.to_parquet(paths["train"])
    return paths


def run(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, str, str]:
    code = cli(["drift", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


class TestCli:
    def test_table(self, files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
        code, out, _ = run(capsys, files["baseline"], files["drifted"], "--score-column", "score")
        assert code == 0  # reports, does not fail without --fail-on
        for text in ("balance_z", "country", "score", "PSI", "critical", "JS", "p-value", "drift", "verdict: drift"):
            assert text in out, text
        assert "KS p" not in out

    def test_fail_on(self, files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
        assert run(capsys, files["baseline"], files["drifted"], "--fail-on", "drift")[0] == 1
        assert run(capsys, files["baseline"], files["quiet"], "--fail-on", "drift")[0] == 0
        assert run(capsys, files["baseline"], files["quiet"], "--fail-on", "warn")[0] == 0
        assert run(capsys, files["baseline"], files["drifted"], "--fail-on", "never")[0] == 0
        # a drift threshold nothing reaches turns the drifted feature into a warning
        assert run(capsys, files["baseline"], files["drifted"], "--drift", "1e9", "--fail-on", "drift")[0] == 0
        assert run(capsys, files["baseline"], files["drifted"], "--drift", "1e9", "--fail-on", "warn")[0] == 1

    def test_json_file_and_csv_input(
        self, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        out_path = tmp_path / "report.json"
        code, out, _ = run(capsys, files["baseline"], files["drifted_csv"], "--json", out_path)
        assert code == 0 and "balance_z" in out
        doc = json.loads(out_path.read_text())
        verdicts = {f["name"]: f["verdict"] for f in doc["features"]}
        assert verdicts["balance_z"] == "drift" and verdicts["n_items"] == "ok"

    def test_json_to_stdout_is_only_json(self, files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
        code, out, _ = run(capsys, files["baseline"], files["quiet"], "--json", "-", "--alpha", "0.05")
        doc = json.loads(out)
        assert code == 0 and doc["alpha"] == 0.05 and doc["verdict"] == "ok"

    def test_reference_data_adds_ks(self, files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
        code, out, _ = run(capsys, files["baseline"], files["drifted"], "--reference-data", files["train"])
        assert code == 0 and "KS p" in out and "Wasserstein" in out

    @pytest.mark.parametrize(
        ("extra", "message"),
        [
            (["--alpha", "2"], "--alpha"),
            (["--warn", "0.3", "--drift", "0.2"], "--warn"),
            (["--min-count", "0"], "--min-count"),
            (["--score-column", "nope"], "nope"),
        ],
    )
    def test_bad_options_exit_2(
        self, files: dict[str, Path], capsys: pytest.CaptureFixture[str], extra: list[str], message: str
    ) -> None:
        code, _, err = run(capsys, files["baseline"], files["drifted"], *extra)
        assert code == 2 and message in err and err.startswith("otel-ml drift:")

    def test_bad_files_exit_2(self, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        code, _, err = run(capsys, files["baseline"], tmp_path / "missing.parquet")
        assert code == 2 and "missing.parquet" in err
        bad = tmp_path / "bad.json"
        bad.write_text("{}")
        code, _, err = run(capsys, bad, files["drifted"])
        assert code == 2 and "schema" in err
        pd.DataFrame({"other": [1, 2]}).to_parquet(tmp_path / "other.parquet")
        code, _, err = run(capsys, files["baseline"], tmp_path / "other.parquet")
        assert code == 2 and "no column" in err

    def test_help(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exc:
            cli(["drift", "--help"])
        out = capsys.readouterr().out
        assert exc.value.code == 0
        for text in ("--fail-on", "critical value", "insufficient_data", "--reference-data", "exit status"):
            assert text in out, text
