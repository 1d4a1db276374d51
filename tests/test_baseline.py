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
from conftest import client_le, sample_value

from otel_ml import Baseline, BaselineError, fit_baseline
from otel_ml.baseline import CategoricalProfile, NumericProfile, quantile_edges
from otel_ml.cli import main as cli
from otel_ml.evaluation import reference_band


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
        assert "calibration" not in out  # fitted without labels

    def test_show_a_labelled_baseline(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        rng = np.random.default_rng(2)
        s = rng.random(5000)
        labelled = fit_baseline({"x": s}, model="m", version="1", scores=s, labels=rng.random(5000) < s, decision=0.5)
        path = labelled.save(tmp_path / "b.json")
        assert cli(["baseline", "show", str(path)]) == 0
        out = " ".join(capsys.readouterr().out.split())  # rich wraps at the terminal's width
        assert "calibration: 5,000 labelled rows" in out and "served rule score > 0.5" in out
        assert "reference performance (10 chunks of 500): roc_auc 0." in out


def test_empty_csv_fields_are_missing_not_a_category(tmp_path: Path) -> None:
    data = tmp_path / "t.csv"
    data.write_text("amount,country\n1.5,US\n2.5,\n3.5,DE\n,US\n")
    out = tmp_path / "b.json"
    assert cli(["baseline", "fit", str(data), "--model", "m", "--version", "1", "-o", str(out), "--no-progress"]) == 0
    b = Baseline.load(out)
    country, amount = b.feature("country"), b.feature("amount")
    assert isinstance(country, CategoricalProfile) and country.vocabulary == ("US", "DE")
    assert country.missing_fraction == pytest.approx(1 / 4) and amount.missing_fraction == pytest.approx(1 / 4)


@pytest.mark.parametrize("declared", [True, False])
def test_csv_null_spellings_in_text_columns_are_categories(tmp_path: Path, declared: bool) -> None:
    # "NA" (Namibia), "null", "nan" ... are text in JSON and Parquet: a CSV must not read them as missing
    data = tmp_path / "t.csv"
    data.write_text("amount,country\nNA,NA\n2.5,null\n3.5,nan\n4.5,N/A\n5.5,US\n6.5,\n")
    out = tmp_path / "b.json"
    args = ["baseline", "fit", str(data), "--model", "m", "--version", "1", "-o", str(out), "--no-progress"]
    assert cli([*args, *(["--categorical", "country"] if declared else [])]) == 0
    b = Baseline.load(out)
    country, amount = b.feature("country"), b.feature("amount")
    assert isinstance(country, CategoricalProfile)
    assert set(country.vocabulary) == {"NA", "null", "nan", "N/A", "US"}
    assert country.missing_fraction == pytest.approx(1 / 6)  # only the empty field
    assert amount.missing_fraction == pytest.approx(1 / 6)  # a numeric column's NA is still missing


class TestTiedEdges:
    """Rounding an edge must never move a training value across it."""

    @staticmethod
    def tied(seed: int = 3) -> np.ndarray:
        rng = np.random.default_rng(seed)
        # 30 % of the rows share one value with seven significant digits; the rest sit close by.
        return np.concatenate([np.full(3000, 0.1234567), 0.1234567 + rng.normal(0.0, 2e-7, 7000)])

    @staticmethod
    def cumulative(values: np.ndarray, edges: Any) -> list[int]:
        return [int((values <= e).sum()) for e in edges]  # right-closed: values <= edge

    def test_bin_counts_equal_the_counts_of_the_exact_quantiles(self) -> None:
        values = self.tied()
        exact = np.quantile(values, np.linspace(0.0, 1.0, 11)[1:-1])
        f = fit_baseline({"x": values}, model="m", version="1").feature("x")
        assert isinstance(f, NumericProfile)
        fitted_counts = np.diff([0, *self.cumulative(values, f.edges), values.size])
        np.testing.assert_allclose(np.asarray(f.fractions) * f.count, fitted_counts, atol=1e-6)
        # the same rows below each edge as below the unrounded quantile (empty bins aside)
        assert set(self.cumulative(values, f.edges)) == set(self.cumulative(values, exact))
        # the data is the hard case: six significant digits would move the tied 30 %
        six = [float(f"{q:.6g}") for q in exact]
        moved = max(abs(a - b) for a, b in zip(self.cumulative(values, six), self.cumulative(values, exact)))
        assert moved >= 0.3 * values.size

    def test_the_app_counts_tied_rows_in_the_baselines_bins(self) -> None:
        from prometheus_client import CollectorRegistry

        from otel_ml import ModelMonitor

        values = self.tied(seed=4)
        b = fit_baseline({"x": values}, model="m", version="1")
        registry = CollectorRegistry()
        ModelMonitor(baseline=b, registry=registry)(lambda x: np.zeros(len(x["x"])))({"x": values})
        f = b.feature("x")
        assert isinstance(f, NumericProfile)
        buckets = set()
        for le in client_le(f.edges)[:-1]:
            labels = {"ml_model_name": "m", "ml_model_version": "1", "ml_feature": "x", "le": le}
            buckets.add(sample_value(registry, "ml_feature_value_bucket", labels))
        exact = np.quantile(values, np.linspace(0.0, 1.0, 11)[1:-1])
        assert buckets == set(self.cumulative(values, exact))  # the app's le buckets hold the exact quantiles' rows

    def test_edges_nobody_crosses_stay_short(self) -> None:
        values = np.random.default_rng(5).normal(100.0, 15.0, 5000)
        for edge in quantile_edges(values):
            assert float(f"{edge:.6g}") == edge


class TestCategoryIdentityAtFit:
    def test_boolean_spellings_are_one_category(self) -> None:
        col = np.empty(11, dtype=object)
        col[:] = [True, "True", "true", "TRUE", np.True_, False, "False", "false", "FALSE", np.False_, None]
        f = fit_baseline({"flag": col}, model="m", version="1").feature("flag")
        assert isinstance(f, CategoricalProfile)
        assert f.vocabulary == ("false", "true") and f.fractions == (0.5, 0.5, 0.0)
        assert f.missing_fraction == pytest.approx(1 / 11)

    def test_pandas_nullable_booleans(self) -> None:
        frame = pd.DataFrame({"flag": pd.array([True, False, None, True], dtype="boolean")})
        f = fit_baseline(frame, model="m", version="1").feature("flag")
        assert isinstance(f, CategoricalProfile)
        assert f.vocabulary == ("true", "false") and f.missing_fraction == pytest.approx(0.25)

    def test_integral_numbers_are_one_category(self) -> None:
        col = np.empty(8, dtype=object)
        col[:] = [1, 1.0, "1", "1.0", np.int64(1), 2, "2", "01"]
        f = fit_baseline({"code": col}, model="m", version="1", categorical=["code"]).feature("code")
        assert isinstance(f, CategoricalProfile)
        assert f.vocabulary == ("1", "2", "01")  # a leading zero is a different code (a zip code)
        assert f.fractions[:3] == pytest.approx((5 / 8, 2 / 8, 1 / 8))


def _categorical_frame(n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(11)
    tier = rng.choice([1.0, 2.0, 3.0], n)
    tier[::17] = np.nan  # pandas writes a float column: "1.0" in CSV
    return pd.DataFrame(
        {
            "zip": rng.choice(["01234", "02139", "94105", "00501"], n),  # CSV inference would make these ints
            "flag": rng.random(n) < 0.4,  # CSV: True/False
            "plan": rng.choice([1, 2, 3], n),  # a numeric code declared categorical
            "tier": tier,
            "x": rng.normal(size=n),
        }
    )


class TestFilesAgreeOnCategories:
    """A CSV-fitted baseline and Parquet / JSON data see the same categories."""

    @pytest.fixture
    def files(self, tmp_path: Path) -> dict[str, Path]:
        frame = _categorical_frame()
        paths = {s: tmp_path / f"data{s}" for s in (".csv", ".parquet", ".jsonl", ".json")}
        frame.to_csv(paths[".csv"], index=False)
        frame.to_parquet(paths[".parquet"])
        frame.to_json(paths[".jsonl"], orient="records", lines=True)
        frame.to_json(paths[".json"], orient="records")
        return paths

    def _fit(self, data: Path, out: Path) -> Baseline:
        args = ["baseline", "fit", str(data), "--model", "m", "--version", "1", "-o", str(out), "--no-progress"]
        assert cli([*args, "--categorical", "zip", "plan", "tier"]) == 0
        return Baseline.load(out)

    def test_every_format_fits_the_same_vocabularies(
        self, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        fitted = {s: self._fit(p, tmp_path / f"b{s}.json") for s, p in files.items()}
        expected = _categorical_frame()
        csv = fitted[".csv"]
        zip_profile = csv.feature("zip")
        assert isinstance(zip_profile, CategoricalProfile)
        assert set(zip_profile.vocabulary) == set(expected["zip"])  # leading zeros kept
        assert set(csv.feature("flag").vocabulary) == {"true", "false"}  # type: ignore[union-attr]
        assert set(csv.feature("tier").vocabulary) == {"1", "2", "3"}  # type: ignore[union-attr]
        for suffix, b in fitted.items():
            for f in csv.categorical:
                other = b.feature(f.name)
                assert isinstance(other, CategoricalProfile), (suffix, f.name)
                assert other.vocabulary == f.vocabulary, (suffix, f.name)
                assert other.fractions == pytest.approx(f.fractions), (suffix, f.name)

    @pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl", ".json"])
    def test_drift_of_the_same_data_is_zero_against_a_csv_baseline(
        self, files: dict[str, Path], tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        baseline = tmp_path / "b.json"
        self._fit(files[".csv"], baseline)
        capsys.readouterr()
        assert cli(["drift", str(baseline), str(files[suffix]), "--json", "-", "--no-progress"]) == 0
        report = json.loads(capsys.readouterr().out)
        for f in report["features"]:
            if f["kind"] == "categorical":
                assert f["unknown_ratio"] == 0.0, f
            assert f["psi"] == pytest.approx(0.0, abs=1e-12), f


# -- labelled baselines: decision threshold edge, calibration, reference performance -----------------


def _labelled(seed: int, n: int = 20_000, kind: str = "logit") -> tuple[np.ndarray, np.ndarray]:
    """Seeded (scores, labels) of a few ordinary shapes, and one with rare positives."""
    rng = np.random.default_rng(seed)
    if kind == "logit":  # positives shifted up on the logit scale, 30 % positive
        y = rng.random(n) < 0.3
        return 1 / (1 + np.exp(-(rng.normal(0, 1, n) + 1.5 * y - 1))), y
    if kind == "calibrated":  # y ~ Bernoulli(score), skewed scores
        s = rng.beta(2, 5, n)
        return s, rng.random(n) < s
    if kind == "strong":  # well-separated, balanced
        y = rng.random(n) < 0.5
        return 1 / (1 + np.exp(-(rng.normal(0, 1, n) + 3 * y))), y
    y = rng.random(n) < 0.05  # rare positives, concentrated in the top bins
    return 1 / (1 + np.exp(-(rng.normal(0, 1, n) + 2 * y - 3))), y


class TestLabelledBaseline:
    @pytest.mark.parametrize("kind", ["logit", "calibrated", "strong"])
    @pytest.mark.parametrize("seed", [0, 1, 2])
    def test_thirty_score_bins_give_the_exact_auc_within_2e_3(self, kind: str, seed: int) -> None:
        from sklearn.metrics import roc_auc_score

        s, y = _labelled(seed, kind=kind)
        b = fit_baseline({"x": s}, model="m", version="1", scores=s, labels=y)
        assert b.score is not None and b.score.bin_count == 30
        assert b.score.performance is not None
        deviation = abs(b.score.performance.value["roc_auc"] - roc_auc_score(y, s))
        assert deviation < 2e-3, f"binned AUC {deviation:.2e} off the exact AUC ({kind}, seed {seed})"

    def test_rare_positives_are_the_hard_case(self) -> None:
        # 5 % positives, most in the top bins: measured ~2e-3 (up to 2.7e-3 over 20 seeds) at 30 bins
        from sklearn.metrics import roc_auc_score

        s, y = _labelled(0, kind="rare")
        dev = {}
        for bins in (10, 30, 50):
            b = fit_baseline({"x": s}, model="m", version="1", scores=s, labels=y, score_bins=bins)
            assert b.score is not None and b.score.performance is not None
            dev[bins] = abs(b.score.performance.value["roc_auc"] - roc_auc_score(y, s))
        assert dev[30] < 3e-3 and dev[50] < 1e-3 and dev[10] > dev[30] > dev[50], dev

    def test_the_decision_threshold_is_an_edge(self, baseline: Baseline, training_frame: pd.DataFrame) -> None:
        score = baseline.score
        assert score is not None and score.decision_threshold == 0.7 and 0.7 in score.edges
        np.testing.assert_allclose(score.fractions, _pandas_fractions(training_frame["score"], score.edges), atol=1e-12)
        k = score.first_positive_bin
        assert k is not None and score.edges[k - 1] == 0.7
        # le=0.7 splits the decisions exactly: the bins above hold the approved share
        assert sum(score.fractions[k:]) == pytest.approx(score.decision_rates["__all__"]["__all__"]["true"])

    def test_calibration_is_isotonic_on_the_bin_rates(self) -> None:
        from sklearn.isotonic import IsotonicRegression

        s, y = _labelled(3, n=3000, kind="calibrated")  # few rows a bin: raw rates violate monotonicity
        b = fit_baseline({"x": s}, model="m", version="1", scores=s, labels=y)
        assert b.score is not None and b.score.calibration is not None
        bins = np.searchsorted(b.score.edges_array(), s)
        n = np.bincount(bins, minlength=b.score.bin_count)
        rates = np.bincount(bins, weights=y, minlength=b.score.bin_count) / n
        assert np.any(np.diff(rates) < 0)
        oracle = IsotonicRegression().fit(np.arange(n.size), rates, sample_weight=n).predict(np.arange(n.size))
        np.testing.assert_allclose(b.score.calibration, oracle, atol=1e-12)
        assert b.score.labelled_count == 3000 and b.score.positive_label == "true"

    def test_reference_performance_at_the_served_rule(self) -> None:
        from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

        s, y = _labelled(4)
        b = fit_baseline({"x": s}, model="m", version="1", scores=s, labels=y, decision=0.4)
        assert b.score is not None and b.score.performance is not None
        perf = b.score.performance
        assert perf.chunk_size == 500 and perf.chunks == 40
        bins = np.searchsorted(b.score.edges_array(), s)
        predicted = s > 0.4
        expected = {
            "roc_auc": roc_auc_score(y, bins),
            "precision": precision_score(y, predicted),
            "recall": recall_score(y, predicted),
            "f1": f1_score(y, predicted),
            "accuracy": accuracy_score(y, predicted),
        }
        assert perf.value == pytest.approx(expected)
        # a chunk of 500 rows has roughly the binomial spread of its accuracy
        acc = expected["accuracy"]
        assert perf.stddev["accuracy"] == pytest.approx(np.sqrt(acc * (1 - acc) / 500), rel=0.3)
        lower, upper = reference_band(perf.value["roc_auc"], perf.stddev["roc_auc"], 500, 2000)
        assert upper - lower == pytest.approx(6 * perf.stddev["roc_auc"] * 0.5)

    @pytest.mark.parametrize(
        ("labels", "positive"),
        [
            (lambda y: y, "true"),
            (lambda y: y.astype(int), "true"),
            (lambda y: y.astype(int), 1),
            (lambda y: np.where(y, "TRUE", "False"), True),
            (lambda y: np.where(y, "repaid", "default"), "repaid"),
        ],
    )
    def test_label_spellings(self, labels: Any, positive: Any) -> None:
        s, y = _labelled(5, n=2000)
        b = fit_baseline({"x": s}, model="m", version="1", scores=s, labels=labels(y), positive_label=positive)
        reference = fit_baseline({"x": s}, model="m", version="1", scores=s, labels=y)
        assert b.score is not None and reference.score is not None
        assert b.score.calibration == reference.score.calibration

    def test_missing_labels_are_left_out(self) -> None:
        s, y = _labelled(6, n=4000)
        labels = np.where(y, "yes", "no").astype(object)
        labels[::4] = None
        frame = pd.DataFrame({"x": s, "score": s, "outcome": labels})
        b = fit_baseline(
            frame, model="m", version="1", score_column="score", label_column="outcome", positive_label="yes"
        )
        assert b.feature_names == ("x",)
        assert b.score is not None and b.score.labelled_count == 3000 and b.score.count == 4000
        kept = np.ones(4000, dtype=bool)
        kept[::4] = False
        from sklearn.isotonic import IsotonicRegression

        bins = np.searchsorted(b.score.edges_array(), s[kept])
        n = np.bincount(bins, minlength=30)
        rates = np.bincount(bins, weights=y[kept], minlength=30) / n
        oracle = IsotonicRegression().fit(np.arange(30), rates, sample_weight=n).predict(np.arange(30))
        np.testing.assert_allclose(b.score.calibration, oracle, atol=1e-12)  # the labelled rows only
        assert b.score.positive_label == "yes"

    def test_label_errors(self) -> None:
        s, y = _labelled(7, n=200)
        with pytest.raises(BaselineError, match="not among the labels"):
            fit_baseline({"x": s}, model="m", version="1", scores=s, labels=np.where(y, "a", "b"))
        with pytest.raises(BaselineError, match="not both"):
            fit_baseline({"x": s, "y": y}, model="m", version="1", scores=s, labels=y, label_column="y")
        with pytest.raises(BaselineError, match="expected 200 values"):
            fit_baseline({"x": s}, model="m", version="1", scores=s, labels=y[:10])
        with pytest.raises(BaselineError, match="needs the scores"):
            fit_baseline({"x": s}, model="m", version="1", labels=y)
        with pytest.raises(BaselineError, match="is not in the data"):
            fit_baseline({"x": s}, model="m", version="1", scores=s, label_column="nope")

    def test_few_labels_give_a_calibration_but_no_performance(self) -> None:
        s, y = _labelled(8, n=300)
        b = fit_baseline({"x": s}, model="m", version="1", scores=s, labels=y)
        assert b.score is not None and b.score.calibration is not None and b.score.performance is None

    def test_round_trip_and_old_files(self, tmp_path: Path) -> None:
        s, y = _labelled(9, n=5000)
        b = fit_baseline({"x": s}, model="m", version="1", scores=s, labels=y, decision=0.5)
        assert Baseline.load(b.save(tmp_path / "b.json")) == b
        data = b.to_dict()
        for key in ("decision_threshold", "calibration", "positive_label", "labelled_count", "performance"):
            data["score"].pop(key)
        old = Baseline.from_dict(data)  # a file written before labelled baselines
        assert old.score is not None and old.score.calibration is None and old.score.performance is None
        assert old.score.decision_threshold is None and old.score.first_positive_bin is None

    def test_the_profile_knows_the_evaluation_metric_names(self) -> None:
        from otel_ml.baseline._profile import PERFORMANCE_METRICS as in_profile
        from otel_ml.evaluation import PERFORMANCE_METRICS

        assert in_profile == PERFORMANCE_METRICS

    @pytest.mark.parametrize(
        ("mutate", "message"),
        [
            (lambda d: d["score"].update(calibration=[0.5]), r"score\.calibration: expected 31 values"),
            (lambda d: d["score"]["calibration"].__setitem__(0, 1.5), r"score\.calibration: every value"),
            (lambda d: d["score"].update(decision_threshold=0.123), r"score\.decision_threshold: 0\.123 must be one"),
            (lambda d: d["score"].pop("positive_label"), r"score\.positive_label: a calibration needs"),
            (lambda d: d["score"].update(labelled_count=10**9), r"score\.labelled_count: 1000000000 labelled rows"),
            (
                lambda d: d["score"]["performance"]["metrics"].update(auc={"value": 0.5, "stddev": 0.1}),
                r"score\.performance\.metrics\.auc: unknown metric",
            ),
            (
                lambda d: d["score"]["performance"]["metrics"]["roc_auc"].update(stddev=-1),
                r"score\.performance\.metrics\.roc_auc\.stddev: must be in",
            ),
            (lambda d: d["score"]["performance"].update(chunks=1), r"score\.performance: needs chunk_size"),
            (lambda d: d["score"].update(calibration=None), r"score\.performance: reference performance needs"),
        ],
    )
    def test_validation_of_the_labelled_fields(self, mutate: Any, message: str) -> None:
        s, y = _labelled(10, n=5000)
        data = fit_baseline({"x": s}, model="m", version="1", scores=s, labels=y, decision=0.5).to_dict()
        mutate(data)
        with pytest.raises(BaselineError, match=message):
            Baseline.from_dict(data)

    def test_cli_label_column(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        s, y = _labelled(11, n=6000)
        data = tmp_path / "train.csv"
        outcome = np.where(y, "repaid", "default").astype(object)
        outcome[:100] = None
        pd.DataFrame({"x": s, "score": s, "outcome": outcome}).to_csv(data, index=False)
        out = tmp_path / "b.json"
        args = ["baseline", "fit", str(data), "--model", "m", "--version", "1", "-o", str(out), "--no-progress"]
        opts = ["--score-column", "score", "--label-column", "outcome", "--positive-label", "repaid"]
        assert cli([*args, *opts, "--decision-threshold", "0.5"]) == 0
        printed = capsys.readouterr().out
        assert "5,900 rows calibrated" in printed and "100 rows without a label" in printed
        assert "reference performance (11 chunks of 500)" in printed
        b = Baseline.load(out)
        assert b.feature_names == ("x",) and b.score is not None
        assert b.score.positive_label == "repaid" and b.score.labelled_count == 5900
        assert b.score.decision_threshold == 0.5 and b.score.performance is not None
        assert set(b.score.performance.value) == {"roc_auc", "precision", "recall", "f1", "accuracy"}

    def test_cli_score_edges_from_a_stable_version(self, tmp_path: Path) -> None:
        """A candidate fitted with its stable version's score edges shares every score bucket with
        it (the threshold is still an edge), and its fractions are counted on those edges."""
        rng = np.random.default_rng(3)
        stable_scores, candidate_scores = rng.beta(2, 5, 4000), rng.beta(2.5, 5, 4000)
        stable = fit_baseline({"x": stable_scores}, model="m", version="7", scores=stable_scores, decision=0.5)
        stable_path = tmp_path / "v7.json"
        stable.save(stable_path)
        data = tmp_path / "train.csv"
        pd.DataFrame({"x": candidate_scores, "score": candidate_scores}).to_csv(data, index=False)
        out = tmp_path / "v8.json"
        args = ["baseline", "fit", str(data), "--model", "m", "--version", "8", "-o", str(out), "--no-progress"]
        assert cli([*args, "--score-column", "score", "--score-edges-from", str(stable_path)]) == 0
        candidate = Baseline.load(out)
        assert stable.score is not None and candidate.score is not None
        assert candidate.score.edges == stable.score.edges and 0.5 in candidate.score.edges
        expected = np.histogram(candidate_scores, bins=[-np.inf, *stable.score.edges, np.inf])[0]  # no ties at edges
        np.testing.assert_allclose(candidate.score.fractions, expected / expected.sum(), atol=1e-12)
        no_score = tmp_path / "plain.json"
        fit_baseline({"x": stable_scores}, model="m", version="6").save(no_score)
        assert cli([*args, "--score-column", "score", "--score-edges-from", str(no_score)]) == 2
