"""The review recording rules (ml:review_error_rate:<w> and its standard errors) against numpy.

Random strata (fixed seeds) are turned into the counters the app (population, over two replicas)
and the sidecar (reviews by outcome) export; promtool evaluates the shipped recording rules and
every recorded value must equal the design's formula computed here with numpy:
p = sum_h N_h e_h / r_h / sum_h N_h and Var = sum_h (N_h / N)^2 p_h (1 - p_h) / r_h over strata with
r_h > 0, per review segment and overall. Once ``otel_ml._review_sampling.stratified_error_rate``
(helper S) is on main, the same numbers are checked against it too. The hand-worked values of
``tests/rules/review_test.yaml`` are checked against the formula here as well.
"""

from __future__ import annotations

import importlib
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from _rule_vocabulary import NO_PROMTOOL, PROMTOOL, ROOT

RULES = ROOT / "alert_rules" / "otel-ml-recording.yaml"
HAND = ROOT / "tests" / "rules" / "review_test.yaml"
SC, APP = 'job="otel-ml-sidecar"', 'job="app"'
MODEL = 'ml_model_name="m", ml_model_version="1"'
SEGMENTS = ("EU", "US", "APAC")
STRATA = ("(-Inf,0.2]", "(0.2,0.45]", "(0.45,0.5]", "(0.5,0.55]", "(0.55,0.8]", "(0.8,+Inf)", "none")


def numpy_estimate(population: Any, reviewed: Any, errors: Any) -> tuple[float, float, float]:
    """p, stderr and the z-test's stderr (p_h smoothed to (e + 0.5) / (r + 1)) by the design's formula."""
    n, r, e = (np.asarray(x, dtype=np.float64) for x in (population, reviewed, errors))
    keep = r > 0
    w = n[keep] / n[keep].sum()
    p_h, s_h = e[keep] / r[keep], (e[keep] + 0.5) / (r[keep] + 1)
    p = float(np.sum(w * p_h))
    return (
        p,
        float(np.sqrt(np.sum(w**2 * p_h * (1 - p_h) / r[keep]))),
        float(np.sqrt(np.sum(w**2 * s_h * (1 - s_h) / r[keep]))),
    )


def _reference() -> Any:
    """helper S's numpy reference, once it is on main (None until then)."""
    try:
        module = importlib.import_module("otel_ml._review_sampling")
    except ImportError:
        return None
    return getattr(module, "stratified_error_rate", None)


def _data(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (len(SEGMENTS), len(STRATA))
    population = rng.integers(50, 5000, shape)
    reviewed = np.minimum(population, rng.integers(0, 60, shape))
    reviewed[0, 2] = 0  # a stratum nobody reviewed in the window: left out
    rate = rng.uniform(0.0, 0.5, shape)
    errors = rng.binomial(reviewed, rate)
    errors[1, :] = np.where(reviewed[1, :] > 0, 0, errors[1, :])  # a segment without errors: p 0, stderr 0
    return {"population": population, "reviewed": reviewed, "errors": errors}


def _counter(series: str, value: int) -> dict[str, str]:
    return {"series": series, "values": f"0 {value}x10"}


def _series(d: dict[str, np.ndarray]) -> list[dict[str, str]]:
    out = []
    for i, segment in enumerate(SEGMENTS):
        for j, stratum in enumerate(STRATA):
            h = f'{MODEL}, ml_segment_key="region", ml_segment="{segment}", ml_stratum="{stratum}"'
            n, r, e = (int(d[k][i, j]) for k in ("population", "reviewed", "errors"))
            out.append(_counter(f'ml_review_population_total{{{APP}, instance="a", {h}}}', n - n // 4))
            out.append(_counter(f'ml_review_population_total{{{APP}, instance="b", {h}}}', n // 4))
            out.append(_counter(f'ml_review_labelled_total{{{SC}, {h}, ml_outcome="correct"}}', r - e))
            if e:
                out.append(_counter(f'ml_review_labelled_total{{{SC}, {h}, ml_outcome="error"}}', e))
    return out


def _expected(d: dict[str, np.ndarray]) -> dict[tuple[str, str], tuple[float, float, float]]:
    out = {
        ("region", s): numpy_estimate(*(d[k][i] for k in ("population", "reviewed", "errors")))
        for i, s in enumerate(SEGMENTS)
    }
    out[("__all__", "__all__")] = numpy_estimate(*(d[k].ravel() for k in ("population", "reviewed", "errors")))
    return out


def _promtool(
    tmp_path: Path, series: list[dict[str, str]], cases: list[dict[str, Any]]
) -> subprocess.CompletedProcess[str]:
    doc = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": cases}],
    }
    path = tmp_path / "review_rules_test.yaml"
    path.write_text(yaml.safe_dump(doc, width=100000))
    assert PROMTOOL
    return subprocess.run([PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
@pytest.mark.parametrize("seed", [3, 11])
def test_recorded_estimate_equals_numpy(tmp_path: Path, seed: int) -> None:
    d = _data(seed)
    expected = _expected(d)
    cases = []
    for index, record in enumerate(
        ("ml:review_error_rate", "ml:review_error_rate_stderr", "ml:review_error_rate_test_stderr")
    ):
        for window in ("24h", "7d"):
            samples = [
                {
                    "labels": f'{{ml_model_name="m", ml_model_version="1", ml_segment_key="{k}", ml_segment="{s}"}}',
                    "value": round(v[index], 6),
                }
                for (k, s), v in expected.items()
            ]
            cases.append({"expr": f"round({record}:{window}, 0.000001)", "eval_time": "5m", "exp_samples": samples})
    zero = [("region", "US")]
    assert all(expected[key][1] == 0 and expected[key][2] > 0 for key in zero)  # the smoothed stderr is never 0
    result = _promtool(tmp_path, _series(d), cases)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
def test_a_window_without_reviews_records_nothing(tmp_path: Path) -> None:
    h = 'ml_model_name="m", ml_model_version="1", ml_segment_key="__all__", ml_segment="__all__", ml_stratum="none"'
    series = [
        {"series": f"ml_review_population_total{{{APP}, {h}}}", "values": "0+10x10"},  # traffic, nobody reviews
        {"series": f'ml_review_labelled_total{{{SC}, {h}, ml_outcome="error"}}', "values": "4x10"},  # old reviews
    ]
    cases = [
        {"expr": f"{record}:24h", "eval_time": "5m", "exp_samples": []}
        for record in ("ml:review_error_rate", "ml:review_error_rate_stderr", "ml:review_error_rate_test_stderr")
    ]
    result = _promtool(tmp_path, series, cases)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hand_worked_example_agrees_with_numpy() -> None:
    """The expected values written in tests/rules/review_test.yaml are the formula's."""
    doc = yaml.safe_load(HAND.read_text())
    series = doc["tests"][0]["input_series"]
    counts: dict[tuple[str, ...], dict[str, float]] = {}
    for s in series:
        labels = dict(re.findall(r'(\w+)="([^"]*)"', s["series"]))
        if labels.get("ml_model_name") not in ("loans", "cards"):
            continue
        key = (labels["ml_model_name"], labels["ml_segment_key"], labels["ml_segment"], labels["ml_stratum"])
        value = float(s["values"].split()[-1].split("x")[0]) if s["values"].startswith("0 ") else 0.0
        cell = counts.setdefault(key, {"n": 0.0, "r": 0.0, "e": 0.0})
        if s["series"].startswith("ml_review_population_total"):
            cell["n"] += value
        else:
            cell["r"] += value
            cell["e"] += value if labels["ml_outcome"] == "error" else 0.0
    got = {}
    for case in doc["tests"][0]["promql_expr_test"][:3]:
        for sample in case["exp_samples"]:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', sample["labels"]))
            got.setdefault((labels["ml_model_name"], labels["ml_segment_key"], labels["ml_segment"]), []).append(
                sample["value"]
            )
    assert len(got) == 4
    for (model, key, segment), values in got.items():
        cells = [v for k, v in counts.items() if k[0] == model and (key == "__all__" or (k[1], k[2]) == (key, segment))]
        n, r, e = (np.array([c[x] for c in cells]) for x in "nre")
        assert values == [round(x, 4) for x in numpy_estimate(n, r, e)], (model, key, segment)
        reference = _reference()
        if reference is not None:
            p, se = reference(n, r, e)
            assert (round(p, 4), round(se, 4)) == tuple(values[:2])
