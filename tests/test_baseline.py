"""Baseline fitting, the JSON format and its validation.

Fractions are checked against pandas' own binning (``pd.cut`` with right-closed intervals)
and ``value_counts``/``groupby``, not against the fitter's arithmetic.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from otel_ml import Baseline, BaselineError, fit_baseline
from otel_ml.baseline import CategoricalProfile, NumericProfile, quantile_edges
from otel_ml.cli import main as cli


def _pandas_fractions(values: pd.Series, edges: tuple[float, ...]) -> np.ndarray:
    cuts = pd.cut(values.dropna(), bins=[-np.inf, *edges, np.inf], right=True)
    return cuts.value_counts(normalize=True, sort=False).to_numpy()


class TestNumericFit:
    def test_ten_quantile_bins_of_a_continuous_feature(self, baseline: Baseline, training_frame: pd.DataFrame) -> None:
        f = baseline.feature("balance_z")
        assert isinstance(f, NumericProfile)
        assert f.bin_count == 10 and len(f.edges) == 9
        np.testing.assert_allclose(f.fractions, _pandas_fractions(training_frame["balance_z"], f.edges), atol=1e-12)
        # quantile bins of a continuous variable hold about a tenth each
        np.testing.assert_allclose(f.fractions, 0.1, atol=0.002)
        assert f.count == len(training_frame)
        assert f.mean == pytest.approx(training_frame["balance_z"].mean())
        assert f.min == training_frame["balance_z"].min() and f.max == training_frame["balance_z"].max()

    def test_heavy_ties_collapse_duplicate_edges(self, baseline: Baseline, training_frame: pd.DataFrame) -> None:
        f = baseline.feature("n_items")  # Poisson(2): many repeated quantiles
        assert isinstance(f, NumericProfile)
        assert list(f.edges) == sorted(set(f.edges))
        assert len(f.edges) < 9
        # right-closed: the first bin (-inf, 0] holds exactly the zeros
        assert f.edges[0] == 0.0
        assert f.fractions[0] == pytest.approx((training_frame["n_items"] == 0).mean())
        np.testing.assert_allclose(f.fractions, _pandas_fractions(training_frame["n_items"], f.edges), atol=1e-12)

    def test_edges_are_rounded_to_six_significant_digits(self, baseline: Baseline) -> None:
        for f in baseline.numeric:
            for e in f.edges:
                assert float(f"{e:.6g}") == e

    def test_constant_and_empty_columns(self) -> None:
        b = fit_baseline({"c": np.full(100, 3.5), "e": np.full(100, np.nan)}, model="m", version="1")
        c, e = b.feature("c"), b.feature("e")
        assert isinstance(c, NumericProfile) and isinstance(e, NumericProfile)
        assert c.edges == (3.5,) and c.fractions == (1.0, 0.0)
        assert e.edges == () and e.count == 0 and e.missing_fraction == 1.0

    def test_missing_values_are_counted_not_binned(self) -> None:
        x = np.array([1.0, 2.0, np.nan, 4.0, np.inf, 5.0, None], dtype=object)
        b = fit_baseline({"x": x.astype(float)}, model="m", version="1", bins=2)
        f = b.feature("x")
        assert isinstance(f, NumericProfile)
        assert f.count == 4 and f.missing_fraction == pytest.approx(3 / 7)
        assert sum(f.fractions) == pytest.approx(1.0)

    def test_quantile_edges_validates_bins(self) -> None:
        with pytest.raises(ValueError):
            quantile_edges(np.arange(10.0), 0)
        assert quantile_edges(np.arange(10.0), 1).size == 0


class TestCategoricalFit:
    def test_vocabulary_is_ordered_by_frequency(self, baseline: Baseline, training_frame: pd.DataFrame) -> None:
        f = baseline.feature("country")
        assert isinstance(f, CategoricalProfile)
        counts = training_frame["country"].value_counts(normalize=True)
        assert list(f.vocabulary) == list(counts.index)
        np.testing.assert_allclose(f.fractions[:-1], counts.to_numpy())
        assert f.fractions[-1] == 0.0  # nothing rare with 5 categories and top-50
        assert f.bin_labels[-2:] == ("__other__", "__unknown__")

    def test_top_k_folds_the_rest_into_other(self, training_frame: pd.DataFrame) -> None:
        b = fit_baseline(training_frame[["country"]], model="m", version="1", top_k=2)
        f = b.feature("country")
        assert isinstance(f, CategoricalProfile)
        assert f.vocabulary == ("US", "DE")
        share = training_frame["country"].value_counts(normalize=True)
        assert f.fractions[2] == pytest.approx(share[["FR", "BR", "JP"]].sum())
        assert set(f.rare_values) == {"FR", "BR", "JP"}

    def test_numbers_can_be_declared_categorical_and_none_is_missing(self) -> None:
        data = {"code": [1, 2, 2, 3, None, 2], "flag": [True, False, True, True, None, True]}
        b = fit_baseline(pd.DataFrame(data), model="m", version="1", categorical=["code"])
        code, flag = b.feature("code"), b.feature("flag")
        assert isinstance(code, CategoricalProfile) and isinstance(flag, CategoricalProfile)
        assert code.vocabulary[0] == "2" and code.missing_fraction == pytest.approx(1 / 6)
        assert flag.vocabulary == ("true", "false")


class TestScoreAndDecisions:
    def test_score_bins_and_decision_rates(self, baseline: Baseline, training_frame: pd.DataFrame) -> None:
        assert baseline.score is not None
        assert "score" not in baseline.feature_names
        np.testing.assert_allclose(
            baseline.score.fractions, _pandas_fractions(training_frame["score"], baseline.score.edges), atol=1e-12
        )
        approved = training_frame["score"] > 0.7
        rates = baseline.score.decision_rates
        assert rates["__all__"]["__all__"]["true"] == pytest.approx(approved.mean())
        by_country = approved.groupby(training_frame["country"]).mean()
        for country, share in by_country.items():
            assert rates["country"][country]["true"] == pytest.approx(share)
            assert sum(rates["country"][country].values()) == pytest.approx(1.0)

    def test_decision_column(self) -> None:
        frame = pd.DataFrame({"x": [1.0, 2, 3, 4], "s": [0.1, 0.2, 0.8, 0.9], "d": ["no", "no", "yes", "no"]})
        b = fit_baseline(frame, model="m", version="1", score_column="s", decision_column="d")
        assert b.feature_names == ("x",)
        assert b.score is not None and b.score.decision_rates["__all__"]["__all__"] == {"no": 0.75, "yes": 0.25}

    def test_decisions_need_scores(self) -> None:
        with pytest.raises(BaselineError, match="need the scores"):
            fit_baseline({"x": [1.0, 2.0]}, model="m", version="1", decision=0.5)


class TestFileFormat:
    def test_round_trip(self, baseline: Baseline, tmp_path: Path) -> None:
        path = baseline.save(tmp_path / "b.json")
        loaded = Baseline.load(path)
        assert loaded == baseline
        assert [p.name for p in tmp_path.iterdir()] == ["b.json"]  # atomic write left no temp file
        data = json.loads(path.read_text())
        assert data["schema"] == "otel-ml/baseline" and data["schema_version"] == 1
        assert data["model"] == {"name": "fraud", "version": "v3"}
        assert data["library_version"] and data["created"].endswith("Z")

    @pytest.mark.parametrize(
        ("mutate", "message"),
        [
            (lambda d: d.pop("model"), r"^model: missing"),
            (lambda d: d.update(schema="other"), r"^schema: expected"),
            (lambda d: d.update(schema_version=99), r"^schema_version: this otel-ml reads version 1"),
            (lambda d: d["features"][0].update(edges=[1.0, 0.5]), r"features\[0\]\.edges: must be strictly increasing"),
            (lambda d: d["features"][1].update(fractions=[0.5, 0.5]), r"features\[1\]\.fractions: expected \d+ values"),
            (
                lambda d: d["features"][0].update(edges=[1.0, "x"]),
                r"features\[0\]\.edges\[1\]: expected a finite number",
            ),
            (
                lambda d: d["features"][3].update(type="text"),
                r"features\[3\]\.type: must be 'numeric' or 'categorical'",
            ),
            (
                lambda d: d["features"][3].update(vocabulary=["US", "US", "DE", "FR", "BR"]),
                r"features\[3\]\.vocabulary: values must be unique",
            ),
            (lambda d: d["features"][2].update(count=-1), r"features\[2\]\.count: must be >= 0"),
            (
                lambda d: d["features"][2].update(missing_fraction=1.5),
                r"features\[2\]\.missing_fraction: must be a fraction",
            ),
            (lambda d: d.update(row_count="many"), r"^row_count: expected an integer, got str"),
            (lambda d: d["score"]["decision_rates"].pop("__all__"), r"score\.decision_rates: must include the overall"),
            (lambda d: d["features"].append(copy.deepcopy(d["features"][0])), r"features\[5\]\.name: duplicate"),
        ],
    )
    def test_validation_names_the_bad_field(self, baseline: Baseline, mutate: Any, message: str) -> None:
        data = baseline.to_dict()
        mutate(data)
        with pytest.raises(BaselineError, match=message):
            Baseline.from_dict(data)

    def test_load_reports_the_file(self, tmp_path: Path) -> None:
        bad = tmp_path / "bad.json"
        bad.write_text("{not json")
        with pytest.raises(BaselineError, match="bad.json: not valid JSON"):
            Baseline.load(bad)
        with pytest.raises(BaselineError, match="cannot read baseline file"):
            Baseline.load(tmp_path / "absent.json")


class TestCli:
    @pytest.mark.parametrize("suffix", [".csv", ".parquet"])
    def test_fit_from_file_matches_fit_from_frame(
        self, training_frame: pd.DataFrame, tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        data = tmp_path / f"train{suffix}"
        if suffix == ".csv":
            training_frame.to_csv(data, index=False)
        else:
            training_frame.to_parquet(data)
        out = tmp_path / "b.json"
        code = cli(
            [
                "baseline",
                "fit",
                str(data),
                "--model",
                "fraud",
                "--version",
                "v3",
                "--score-column",
                "score",
                "--segments",
                "country",
                "--decision-threshold",
                "0.7",
                "-o",
                str(out),
            ]
        )
        assert code == 0
        assert "wrote" in capsys.readouterr().out
        from_file = Baseline.load(out)
        direct = fit_baseline(
            training_frame, model="fraud", version="v3", score_column="score", segments=["country"], decision=0.7
        )
        for a, b in zip(from_file.features, direct.features):
            assert a.name == b.name and a.fractions == pytest.approx(b.fractions)
        assert from_file.score is not None and direct.score is not None
        assert from_file.score.decision_rates == direct.score.decision_rates

    def test_fit_reports_bad_input(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        code = cli(["baseline", "fit", str(tmp_path / "nope.csv"), "--model", "m", "--version", "1", "-o", "x.json"])
        assert code == 2
        assert "no such file" in capsys.readouterr().err

    def test_show(self, baseline: Baseline, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        path = baseline.save(tmp_path / "b.json")
        assert cli(["baseline", "show", str(path)]) == 0
        out = capsys.readouterr().out
        assert "balance_z" in out and "country" in out


def test_empty_csv_fields_are_missing_not_a_category(tmp_path: Path) -> None:
    data = tmp_path / "t.csv"
    data.write_text("amount,country\n1.5,US\n2.5,\n3.5,DE\n,US\n")
    out = tmp_path / "b.json"
    assert cli(["baseline", "fit", str(data), "--model", "m", "--version", "1", "-o", str(out), "--no-progress"]) == 0
    b = Baseline.load(out)
    country, amount = b.feature("country"), b.feature("amount")
    assert isinstance(country, CategoricalProfile) and country.vocabulary == ("US", "DE")
    assert country.missing_fraction == pytest.approx(1 / 4) and amount.missing_fraction == pytest.approx(1 / 4)
