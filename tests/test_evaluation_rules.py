"""The evaluation recording rules (realised and CBPE performance) against independent oracles.

Random labelled predictions are turned into the counters the sidecar and the app export (two
replicas, each with part of the rows), promtool evaluates the shipped recording rules on them,
and every recorded value must equal what sklearn / numpy compute on the same binned scores:
``roc_auc_score`` on the bin index (Mann-Whitney with ties counted half), precision, recall, F1
and accuracy of the served decisions, ``brier_score_loss``, ``log_loss``, ECE by hand; CBPE
as a weighted ``roc_auc_score`` / ``precision_score`` on the expected positives and negatives
per bin. The same values must come out of one replica carrying the sums, and a quiet window
must record nothing (no NaN, no 0).
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from _rule_vocabulary import NO_PROMTOOL, PROMTOOL, ROOT
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

from otel_ml.mixin._rule_helpers import le_value

pytestmark = pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)

RULES = ROOT / "alert_rules" / "otel-ml-recording.yaml"
EDGES = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
THRESHOLD = 0.7  # the served rule: score > 0.7 decides "true"; 0.7 is an edge
MODEL = 'ml_model_name="loans", ml_model_version="v7"'
SIDECAR = f'job="otel-ml-sidecar", {MODEL}'
REF = {"roc_auc": (0.81, 0.012), "precision": (0.62, 0.03), "recall": (0.55, 0.035)}
CHUNK = 2000
REFERENCE_LABELS = 40_000  # labelled reference rows: the reference value's own error is in the band
TOLERANCE = 1e-9


def _uppers() -> list[str]:
    return [le_value(e) for e in EDGES] + ["+Inf"]


def _lowers() -> list[str]:
    return ["-Inf"] + [le_value(e) for e in EDGES]


def _bin(scores: np.ndarray) -> np.ndarray:
    """Bin index: (lower, upper] as the cumulative le buckets count."""
    return np.searchsorted(EDGES, scores, side="left")


def _data(seed: int = 7, rows: int = 3000) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    score = np.round(rng.beta(2, 3, rows), 4)
    y = (rng.random(rows) < np.clip(score * 1.1, 0, 1)).astype(int)
    region = np.where(rng.random(rows) < 0.4, "EU", "US")
    replica = rng.integers(0, 2, rows)
    window_score = np.round(rng.beta(2.2, 3, 5000), 4)  # the app's (unlabelled) window
    window_replica = rng.integers(0, 2, 5000)
    calibration = np.round(np.linspace(0.05, 0.95, len(EDGES) + 1), 3)
    return {
        "score": score,
        "y": y,
        "region": region,
        "replica": replica,
        "window_score": window_score,
        "window_replica": window_replica,
        "calibration": calibration,
    }


def _counter(name: str, labels: str, value: float) -> dict[str, str]:
    """A counter that goes 0 -> value at 1m and stays: increase() over any window holding both is exact."""
    return {"series": f"{name}{{{labels}}}", "values": f"0 {value!r}x10"}


def _gauge(name: str, labels: str, value: float) -> dict[str, str]:
    return {"series": f"{name}{{{labels}}}", "values": f"{value!r}x11"}


def _series(d: dict[str, np.ndarray], replicas: tuple[int, ...]) -> list[dict[str, str]]:
    """Sidecar counters per replica (instance), app score buckets per replica, baseline gauges."""
    out: list[dict[str, str]] = []
    groups = {0: [0], 1: [1]} if replicas == (0, 1) else {0: [0, 1]}
    for replica, members in groups.items():
        rows = np.isin(d["replica"], members)
        sc = f'{SIDECAR}, instance="sc{replica}"'
        for key, value, seg_rows in (("__all__", "__all__", rows), ("region", "EU", rows & (d["region"] == "EU"))):
            seg = f'{sc}, ml_segment_key="{key}", ml_segment="{value}"'
            s, y = d["score"][seg_rows], d["y"][seg_rows]
            for outcome, hit in (("true", y == 1), ("false", y == 0)):
                labels = f'{seg}, ml_outcome="{outcome}"'
                for upper, edge in zip(_uppers(), [*EDGES, np.inf]):
                    out.append(
                        _counter("ml_labelled_score_bucket", f'{labels}, le="{upper}"', float(np.sum(s[hit] <= edge)))
                    )
                out.append(_counter("ml_labelled_score_count", labels, float(np.sum(hit))))
                out.append(_counter("ml_labelled_score_sum", labels, float(np.sum(s[hit]))))
            bins = _bin(s)
            for b, upper in enumerate(_uppers()):
                if np.any(bins == b):  # a bin without labelled predictions has no series yet
                    out.append(
                        _counter(
                            "ml_labelled_score_bin_sum_total",
                            f'{seg}, ml_bin_upper="{upper}"',
                            float(np.sum(s[bins == b])),
                        )
                    )
            decision = s > THRESHOLD
            for dec in (True, False):
                for yy in (1, 0):
                    count = float(np.sum((decision == dec) & (y == yy)))
                    if count:  # counters exist only after their first increment
                        labels = f'{seg}, ml_decision="{str(dec).lower()}", ml_outcome="{str(bool(yy)).lower()}"'
                        out.append(_counter("ml_outcomes_total", labels, count))
            out.append(_counter("ml_outcome_squared_error_total", seg, float(np.sum((s - y) ** 2))))
            p = np.clip(s, 1e-15, 1 - 1e-15)
            out.append(
                _counter("ml_outcome_log_loss_total", seg, float(-np.sum(y * np.log(p) + (1 - y) * np.log(1 - p))))
            )
        app = f'{MODEL}, job="app", instance="app{replica}"'
        w = d["window_score"][np.isin(d["window_replica"], members)]
        for upper, edge in zip(_uppers(), [*EDGES, np.inf]):
            out.append(_counter("ml_prediction_score_bucket", f'{app}, le="{upper}"', float(np.sum(w <= edge))))
    for upper, lower, q in zip(_uppers(), _lowers(), d["calibration"]):
        edges = f'{SIDECAR}, ml_bin_upper="{upper}", ml_bin_lower="{lower}"'
        out.append(_gauge("ml_score_reference_ratio", edges, 0.1))
        out.append(_gauge("ml_score_reference_positive_ratio", edges, float(q)))
        above = 1.0 if lower != "-Inf" and float(lower) >= THRESHOLD else 0.0
        out.append(_gauge("ml_score_reference_positive_decision", edges, above))
    for metric, (value, std) in REF.items():
        out.append(_gauge("ml_reference_performance", f'{SIDECAR}, ml_metric="{metric}"', value))
        out.append(_gauge("ml_reference_performance_stddev", f'{SIDECAR}, ml_metric="{metric}"', std))
    out.append(_gauge("ml_reference_chunk_predictions", SIDECAR, float(CHUNK)))
    out.append(_gauge("ml_reference_labelled_predictions", SIDECAR, float(REFERENCE_LABELS)))
    return out


def _realised(d: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, float]:
    s, y = d["score"][rows], d["y"][rows]
    decision = (s > THRESHOLD).astype(int)
    bins = _bin(s)
    positives_per_bin = np.bincount(bins[y == 1], minlength=len(EDGES) + 1)
    sums_per_bin = np.bincount(bins, weights=s, minlength=len(EDGES) + 1)
    n = len(s)
    return {
        "roc_auc": roc_auc_score(y, bins),  # binned scores: ties inside a bin count half
        "precision": precision_score(y, decision),
        "recall": recall_score(y, decision),
        "f1": f1_score(y, decision),
        "accuracy": accuracy_score(y, decision),
        "calibration_error": float(np.sum(np.abs(sums_per_bin - positives_per_bin)) / n),
        "brier_score": brier_score_loss(y, s),
        "log_loss": log_loss(y, s, labels=[0, 1]),
        "labels": n,
    }


def _estimated(d: dict[str, np.ndarray]) -> dict[str, float]:
    """CBPE as weighted sklearn metrics: per bin a positive row of weight n_b q_b, a negative of n_b (1 - q_b)."""
    counts = np.bincount(_bin(d["window_score"]), minlength=len(EDGES) + 1).astype(float)
    q = d["calibration"]
    bins = np.arange(len(counts))
    score = np.concatenate([bins, bins])
    y = np.concatenate([np.ones_like(bins), np.zeros_like(bins)])
    weight = np.concatenate([counts * q, counts * (1 - q)])
    lower = np.concatenate([[-np.inf], EDGES])
    decided = np.concatenate([lower >= THRESHOLD, lower >= THRESHOLD]).astype(int)
    return {
        "roc_auc": roc_auc_score(y, score, sample_weight=weight),
        "precision": precision_score(y, decided, sample_weight=weight),
        "recall": recall_score(y, decided, sample_weight=weight),
        "f1": f1_score(y, decided, sample_weight=weight),
        "accuracy": accuracy_score(y, decided, sample_weight=weight),
        "predictions": float(counts.sum()),
    }


def _close(expr: str, labels: str, expected: float) -> dict[str, Any]:
    return {
        "expr": f"abs({expr} - {expected!r}) < bool {TOLERANCE}",
        "eval_time": "5m",
        "exp_samples": [{"labels": "{" + labels + "}", "value": 1}],
    }


def _cases(d: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    cases = []
    segments = {"__all__": np.ones(len(d["y"]), bool), "EU": d["region"] == "EU"}
    for segment, rows in segments.items():
        key = "__all__" if segment == "__all__" else "region"
        labels = f'{MODEL}, ml_segment_key="{key}", ml_segment="{segment}"'
        expected = _realised(d, rows)
        selector = f'{{ml_segment="{segment}"}}'
        for metric in (
            "roc_auc",
            "precision",
            "recall",
            "f1",
            "accuracy",
            "calibration_error",
            "brier_score",
            "log_loss",
        ):
            cases.append(_close(f"ml:online_{metric}:1h{selector}", labels, expected[metric]))
        cases.append(_close(f"ml:labelled_predictions:increase1h{selector}", labels, expected["labels"]))
        for metric, (ref, std) in REF.items():
            band = ref - 3 * std * math.sqrt(CHUNK / expected["labels"] + CHUNK / REFERENCE_LABELS)
            sel = f'{{ml_segment="{segment}", ml_metric="{metric}"}}'
            cases.append(_close(f"ml:online_reference_band_lower:1h{sel}", f'{labels}, ml_metric="{metric}"', band))
    estimated = _estimated(d)
    for metric in ("roc_auc", "precision", "recall", "f1", "accuracy"):
        cases.append(_close(f"ml:estimated_{metric}:1h", MODEL, estimated[metric]))
    for metric, (ref, std) in REF.items():
        spread = 3 * std * math.sqrt(CHUNK / estimated["predictions"] + CHUNK / REFERENCE_LABELS)
        for side, value in (("lower", ref - spread), ("upper", ref + spread)):
            sel = f'{{ml_metric="{metric}"}}'
            cases.append(_close(f"ml:estimated_reference_band_{side}:1h{sel}", f'{MODEL}, ml_metric="{metric}"', value))
    return cases


def _run(tmp_path: Path, tests: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    doc = {"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": tests}
    path = tmp_path / "evaluation_test.yaml"
    path.write_text(yaml.safe_dump(doc, width=100000))
    assert PROMTOOL
    return subprocess.run([PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("replicas", [(0, 1), (0,)], ids=["two-replicas", "one-replica-with-the-sums"])
def test_recorded_metrics_equal_sklearn_on_the_same_binned_scores(tmp_path: Path, replicas: tuple[int, ...]) -> None:
    d = _data()
    test = {"interval": "1m", "input_series": _series(d, replicas), "promql_expr_test": _cases(d)}
    result = _run(tmp_path, [test])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


def test_the_cbpe_formula_equals_the_cumulative_mann_whitney_sum() -> None:
    """The rules' rewrite (no cumulative sum of expected positives) is the textbook sum on bins."""
    rng = np.random.default_rng(3)
    counts, q = rng.integers(0, 500, 12).astype(float), rng.random(12)
    e, n = counts * q, counts
    below = np.concatenate([[0.0], np.cumsum(n)[:-1]])
    rewritten = (np.sum(e * (below + n / 2)) - e.sum() ** 2 / 2) / (e.sum() * (n.sum() - e.sum()))
    negatives = n - e
    cumulative = np.cumsum(e)
    textbook = np.sum(negatives * (e.sum() - cumulative + e / 2)) / (e.sum() * negatives.sum())
    assert rewritten == pytest.approx(textbook, abs=1e-12)


def test_a_quiet_window_records_no_sample(tmp_path: Path) -> None:
    """Counters that stopped moving an hour ago: every ratio is absent, never NaN or 0."""
    d = _data()
    series = []
    for s in _series(d, (0, 1)):
        values = s["values"]
        if values.startswith("0 "):  # counters: flat at their final value for 2h
            values = values.split()[1].split("x")[0] + "x130"
        else:
            values = values.split("x")[0] + "x130"
        series.append({"series": s["series"], "values": values})
    ratios = [f"ml:online_{m}:1h" for m in ("roc_auc", "precision", "recall", "f1", "accuracy")]
    ratios += [f"ml:online_{m}:1h" for m in ("calibration_error", "brier_score", "log_loss")]
    ratios += ["ml:online_reference_band_lower:1h", "ml:estimated_reference_band_lower:1h"]
    ratios += [f"ml:estimated_{m}:1h" for m in ("roc_auc", "precision", "recall", "f1", "accuracy")]
    cases = [{"expr": r, "eval_time": "125m", "exp_samples": []} for r in ratios]
    cases.append(
        {
            "expr": "count(ml:labelled_predictions:increase1h == 0)",
            "eval_time": "125m",
            "exp_samples": [{"labels": "{}", "value": 2}],
        }
    )
    result = _run(tmp_path, [{"interval": "1m", "input_series": series, "promql_expr_test": cases}])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
