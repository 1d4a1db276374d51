"""Drift is controlled per table / model: each feature's critical value is at alpha / features."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_training_frame
from scipy import stats

from otel_ml import Baseline
from otel_ml.cli import main as cli
from otel_ml.drift import drift_report


@pytest.fixture(scope="module")
def quiet() -> pd.DataFrame:
    return make_training_frame(400, seed=41)


def test_each_feature_is_tested_at_alpha_over_the_family(baseline: Baseline, quiet: pd.DataFrame) -> None:
    family = drift_report(baseline, quiet, score_column="score", alpha=0.01)
    single = drift_report(baseline, quiet, score_column="score", alpha=0.01, multiplicity="per_series")
    k = len(family.features)
    assert k == len(baseline.features) + 1
    assert all(f.alpha == pytest.approx(0.01 / k) for f in family.features)
    assert all(f.alpha == 0.01 for f in single.features)
    for f, g in zip(family.features, single.features):
        # where the chi-square value applies the ratio is the quantile ratio of chi2 with bins - 1 dof
        assert f.psi_critical > g.psi_critical
        ratio = stats.chi2.ppf(1 - 0.01 / k, f.bins - 1) / stats.chi2.ppf(0.99, f.bins - 1)
        assert f.psi_critical / g.psi_critical == pytest.approx(ratio, rel=0.35)


def test_cli_shows_the_level_per_feature(
    baseline: Baseline, quiet: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, data = tmp_path / "b.json", tmp_path / "q.csv"
    baseline.save(base)
    quiet.to_csv(data, index=False)
    assert cli(["drift", str(base), str(data), "--score-column", "score", "--alpha", "0.02"]) == 0
    out = capsys.readouterr().out
    k = len(baseline.features) + 1
    assert "level" in out and f"{0.02 / k:.2g}" in out and "holm" in out
    assert cli(["drift", str(base), str(data), "--json", "-", "--multiplicity", "per_series"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["multiplicity"] == "per_series" and {f["alpha"] for f in doc["features"]} == {0.01}
    assert np.isfinite([f["psi_critical"] for f in doc["features"]]).all()
