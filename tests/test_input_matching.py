"""Inputs that don't match the baseline, and one category identity in the app.

An array of the wrong width is never binned by position; named columns are matched by name;
an absent column is missing values plus a counted reason; booleans, their spellings and
integral numbers are one category whatever type they arrive as. Expected counts come from
numpy/pandas comparisons against the baseline's edges, never from otel-ml's binning.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import client_le, sample_value
from prometheus_client import CollectorRegistry

from otel_ml import Baseline, ModelMonitor, fit_baseline

MODEL = {"ml_model_name": "fraud", "ml_model_version": "v3"}
ALL = {"ml_segment_key": "__all__", "ml_segment": "__all__"}


def sample(registry: CollectorRegistry, name: str, model: dict[str, str] = MODEL, **labels: str) -> float:
    """The sample's value; a missing series fails (assert absence with :func:`absent`)."""
    return sample_value(registry, name, {**model, **labels})


def absent(registry: CollectorRegistry, name: str, model: dict[str, str] = MODEL, **labels: str) -> bool:
    return registry.get_sample_value(name, {**model, **labels}) is None


def feature_samples(registry: CollectorRegistry) -> float:
    """Sum of every feature bucket, category and missing count: zero when no feature was counted."""
    total = 0.0
    for fam in registry.collect():
        for s in fam.samples:
            if s.name in ("ml_feature_category_total", "ml_feature_missing_total") or (
                s.name == "ml_feature_value_bucket" and s.labels["le"] == "+Inf"
            ):
                total += s.value
    return total


def scores(n: int) -> Any:
    return lambda x: np.linspace(0.0, 1.0, n)


class TestArrays:
    def test_wrong_width_counts_predictions_not_features(
        self, baseline: Baseline, caplog: pytest.LogCaptureFixture
    ) -> None:
        registry = CollectorRegistry()
        predict = ModelMonitor(baseline=baseline, decision=0.5, registry=registry)(scores(40))
        wide = np.random.default_rng(1).normal(size=(40, 3))  # 3 columns for 5 baseline features
        with caplog.at_level(logging.WARNING, logger="otel_ml"):
            predict(wide)
            predict(wide)
        assert feature_samples(registry) == 0  # nothing binned into the wrong features
        expected_true = int((np.linspace(0.0, 1.0, 40) > 0.5).sum())
        assert sample(registry, "ml_predictions_total", **ALL, ml_decision="true") == 2 * expected_true
        assert sample(registry, "ml_predictions_total", **ALL, ml_decision="false") == 2 * (40 - expected_true)
        assert sample(registry, "ml_prediction_score_count") == 80
        errors = {"error_type": "feature_count_mismatch"}
        assert sample(registry, "ml_instrumentation_errors_total", **errors) == 2
        lines = [r.getMessage() for r in caplog.records if "feature_count_mismatch" in r.getMessage()]
        assert len(lines) == 1 and "3 columns for 5 feature names" in lines[0]

    def test_feature_names_match_columns_by_name(self, baseline: Baseline, training_frame: pd.DataFrame) -> None:
        registry = CollectorRegistry()
        frame = training_frame.head(500)
        names = ["n_items", "extra", "amount", "balance_z", "device", "country"]  # other order, one extra
        array = frame.assign(extra=-1e9)[names].to_numpy(dtype=object)
        ModelMonitor(baseline=baseline, feature_names=names, registry=registry)(scores(500))(array)
        for f in baseline.numeric:
            col = frame[f.name].to_numpy(dtype=float)
            for edge, le in zip(f.edges, client_le(f.edges)):
                bucket = sample(registry, "ml_feature_value_bucket", ml_feature=f.name, le=le)
                assert bucket == (col <= edge).sum(), f.name
        us = sample(registry, "ml_feature_category_total", ml_feature="country", ml_category="US")
        assert us == (frame["country"] == "US").sum()
        assert absent(registry, "ml_instrumentation_errors_total", error_type="feature_count_mismatch")

    def test_named_array_without_a_feature_counts_it_missing(self, baseline: Baseline) -> None:
        registry = CollectorRegistry()
        names = ["amount", "balance_z", "n_items"]
        mon = ModelMonitor(baseline=baseline, feature_names=names, registry=registry)
        mon(scores(7))(np.ones((7, 3)))
        assert sample(registry, "ml_feature_missing_total", ml_feature="country") == 7
        assert sample(registry, "ml_feature_value_bucket", ml_feature="amount", le="+Inf") == 7
        assert sample(registry, "ml_instrumentation_errors_total", error_type="missing_feature") == 1

    def test_duplicate_feature_names_are_refused(self, baseline: Baseline) -> None:
        with pytest.raises(ValueError, match="duplicate"):
            ModelMonitor(baseline=baseline, feature_names=["amount", "amount"], registry=CollectorRegistry())


class TestMissingColumns:
    def test_dataframe_without_a_feature(self, baseline: Baseline, training_frame: pd.DataFrame) -> None:
        registry = CollectorRegistry()
        frame = training_frame.head(300).drop(columns=["score", "balance_z"])
        ModelMonitor(baseline=baseline, registry=registry)(scores(300))(frame)
        assert sample(registry, "ml_feature_missing_total", ml_feature="balance_z") == 300
        assert sample(registry, "ml_feature_missing_total", ml_feature="amount") == 0
        assert sample(registry, "ml_feature_value_bucket", ml_feature="amount", le="+Inf") == 300
        assert sample(registry, "ml_prediction_score_count") == 300
        assert sample(registry, "ml_instrumentation_errors_total", error_type="missing_feature") == 1

    def test_dict_of_columns_without_a_feature(self, baseline: Baseline) -> None:
        registry = CollectorRegistry()
        columns = {"amount": [1.0, 2.0], "balance_z": [0.0, 0.1], "n_items": [1, 2], "country": ["US", "DE"]}
        ModelMonitor(baseline=baseline, registry=registry)(scores(2))(columns)
        assert sample(registry, "ml_feature_missing_total", ml_feature="device") == 2
        assert sample(registry, "ml_instrumentation_errors_total", error_type="missing_feature") == 1

    def test_one_row_without_a_key_is_a_missing_value_not_an_error(self, baseline: Baseline) -> None:
        registry = CollectorRegistry()
        ModelMonitor(baseline=baseline, registry=registry)(lambda x: 0.4)({"amount": 3.0, "country": "US"})
        assert sample(registry, "ml_feature_missing_total", ml_feature="device") == 1
        errors = [s for fam in registry.collect() for s in fam.samples if s.name == "ml_instrumentation_errors_total"]
        assert errors == []


class TestBaselineOfAnotherModel:
    def test_explicit_model_and_version_that_differ_are_logged_naming_both(
        self, baseline: Baseline, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.WARNING, logger="otel_ml"):
            ModelMonitor("churn", "v9", baseline=baseline, registry=CollectorRegistry())
        (line,) = [r.getMessage() for r in caplog.records]
        assert "'churn'" in line and "'v9'" in line and "'fraud'" in line and "'v3'" in line

    def test_matching_or_implicit_names_are_silent(self, baseline: Baseline, caplog: pytest.LogCaptureFixture) -> None:
        with caplog.at_level(logging.WARNING, logger="otel_ml"):
            ModelMonitor(baseline=baseline, registry=CollectorRegistry())
            ModelMonitor("fraud", "v3", baseline=baseline, registry=CollectorRegistry())
        assert caplog.records == []


@pytest.fixture(scope="module")
def flags_baseline() -> Baseline:
    """A boolean feature fitted from numpy bools, a numeric code declared categorical."""
    rng = np.random.default_rng(7)
    n = 1000
    return fit_baseline(
        {"vip": rng.random(n) < 0.3, "plan": rng.choice([1, 2, 3], n), "x": rng.normal(size=n)},
        model="flags",
        version="1",
        categorical=["plan"],
        segments=["vip"],
        scores=rng.random(n),
        decision=0.5,
    )


class TestCategoryIdentity:
    FLAGS = {"ml_model_name": "flags", "ml_model_version": "1"}

    def test_fitted_vocabulary_is_canonical(self, flags_baseline: Baseline) -> None:
        assert sorted(flags_baseline.feature("vip").vocabulary) == ["false", "true"]  # type: ignore[union-attr]
        assert sorted(flags_baseline.feature("plan").vocabulary) == ["1", "2", "3"]  # type: ignore[union-attr]

    def test_every_spelling_of_true_and_one_is_one_category(self, flags_baseline: Baseline) -> None:
        registry = CollectorRegistry()
        predict = ModelMonitor(baseline=flags_baseline, segments=["vip"], registry=registry)(lambda x: 0.9)
        spellings: list[tuple[Any, Any]] = [
            (True, 1),
            ("True", 1.0),
            ("true", "1"),
            ("TRUE", "1.0"),
            (np.bool_(True), np.int64(1)),
            (np.array([True]), np.float32(1.0)),
        ]
        for vip, plan in spellings:
            predict({"vip": vip, "plan": plan, "x": 0.0})
        cat = "ml_feature_category_total"
        assert sample(registry, cat, self.FLAGS, ml_feature="vip", ml_category="true") == len(spellings)
        assert sample(registry, cat, self.FLAGS, ml_feature="plan", ml_category="1") == len(spellings)
        assert absent(registry, cat, self.FLAGS, ml_feature="vip", ml_category="__unknown__")
        assert absent(registry, cat, self.FLAGS, ml_feature="plan", ml_category="__unknown__")
        seg = {"ml_segment_key": "vip", "ml_segment": "true", "ml_decision": "none"}
        assert sample(registry, "ml_predictions_total", self.FLAGS, **seg) == len(spellings)

    def test_batches_of_every_type_agree(self, flags_baseline: Baseline) -> None:
        batches = {
            "numpy bool": {"vip": np.array([True, False, True]), "plan": np.array([1, 2, 1])},
            "strings": {"vip": np.array(["True", "false", "TRUE"]), "plan": np.array(["1", "2", "1.0"])},
            "pandas nullable": pd.DataFrame(
                {
                    "vip": pd.array([True, False, True], dtype="boolean"),
                    "plan": pd.array([1, 2, 1], dtype="Int64"),
                }
            ),
            "objects": {"vip": [True, "False", np.bool_(True)], "plan": [1.0, "2", np.int8(1)]},
        }
        cat = "ml_feature_category_total"
        for label, batch in batches.items():
            registry = CollectorRegistry()
            ModelMonitor(baseline=flags_baseline, segments=["vip"], registry=registry)(lambda x: np.zeros(3))(batch)
            got = [sample(registry, cat, self.FLAGS, ml_feature="vip", ml_category=c) for c in ("true", "false")]
            assert got == [2, 1], label
            got = [sample(registry, cat, self.FLAGS, ml_feature="plan", ml_category=c) for c in ("1", "2")]
            assert got == [2, 1], label
            seg = {"ml_segment_key": "vip", "ml_segment": "true", "ml_decision": "none"}
            assert sample(registry, "ml_predictions_total", self.FLAGS, **seg) == 2, label

    def test_pandas_na_is_missing(self, flags_baseline: Baseline) -> None:
        registry = CollectorRegistry()
        frame = pd.DataFrame({"vip": pd.array([True, None], dtype="boolean"), "x": pd.array([1.5, None], "Float64")})
        ModelMonitor(baseline=flags_baseline, registry=registry)(lambda x: np.zeros(2))(frame)
        assert sample(registry, "ml_feature_missing_total", self.FLAGS, ml_feature="vip") == 1
        assert sample(registry, "ml_feature_missing_total", self.FLAGS, ml_feature="x") == 1
        assert sample(registry, "ml_feature_value_bucket", self.FLAGS, ml_feature="x", le="+Inf") == 1
