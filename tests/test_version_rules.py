"""The shipped version-comparison rules agree with the numpy reference on random cases (promtool).

Random shadow pairs (with and without labels) and canaries, split over two pods, go through
the committed recording rules in promtool; every check, every verdict and the Wilson bounds
must equal what :mod:`otel_ml.evaluation._versions` computes from the same counts, and checks
that must not be judged (segments below their minimum) must be absent.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from _rule_vocabulary import NO_PROMTOOL, PROMTOOL, ROOT

from otel_ml.evaluation import _versions as v
from otel_ml.mixin.config import DEFAULT_CONFIG as C

pytestmark = pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)

Z = v.bonferroni_z(C.version_confidence, C.version_max_checks)
ALL = "__all__"
REGIONS = ("A", "B")


class Case:
    """Input series and expected checks, built side by side from the same counts."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.series: list[dict[str, str]] = []
        self.checks: dict[tuple[str, str, str, str, str], int] = {}  # (model, cand, check, key, seg)
        self.bounds: dict[tuple[str, str, str], tuple[float, float]] = {}  # (model, cand, segment)

    def counter(self, name: str, labels: dict[str, str], total: int) -> None:
        """``total`` split at random over pods a and b, each a counter from 0 to its share at 1m."""
        first = int(self.rng.binomial(total, 0.5))
        for pod, share in (("a", first), ("b", total - first)):
            text = ", ".join(f'{k}="{val}"' for k, val in sorted({**labels, "job": "app", "instance": pod}.items()))
            self.series.append({"series": f"{name}{{{text}}}", "values": f"0 {share}x10"})

    def shadow(self, model: str, cand: str) -> None:
        rng, budget = self.rng, C.version_flip_budget
        key = {"ml_model_name": model, "ml_model_version": "p", "ml_shadow_version": cand}
        totals = np.zeros(2, dtype=np.int64)
        for region in REGIONS:
            n = int(rng.choice([0, 60, 150, 250, 600, 1500, 4000]))
            f = int(rng.binomial(n, rng.choice([0.0, 0.01, 0.03, budget, 0.07, 0.12])))
            totals += (n - f, f)
            self._pairs(key, ("region", region), n - f, f)
            self._flip_check(model, cand, "region", region, f, n, C.version_min_segment_pairs, judged_only=True)
        self._pairs(key, (ALL, ALL), int(totals[0]), int(totals[1]))
        self._flip_check(model, cand, ALL, ALL, int(totals[1]), int(totals.sum()), C.version_min_pairs)
        if rng.random() < 0.5:
            self._labelled(model, cand, {**key, "job": "otel-ml-sidecar"})

    def _pairs(self, key: dict[str, str], seg: tuple[str, str], same: int, flips: int) -> None:
        labels = {**key, "ml_segment_key": seg[0], "ml_segment": seg[1]}
        self.counter("ml_shadow_pairs_total", {**labels, "ml_flip": "none"}, same)
        self.counter("ml_shadow_pairs_total", {**labels, "ml_flip": "false_to_true"}, flips // 2)
        self.counter("ml_shadow_pairs_total", {**labels, "ml_flip": "true_to_false"}, flips - flips // 2)

    def _flip_check(
        self, model: str, cand: str, key: str, seg: str, f: int, n: int, minimum: int, judged_only: bool = False
    ) -> None:
        if n > 0:
            lower, upper = v.wilson_bounds(f, n, Z)
            self.bounds[(model, cand, seg)] = (float(lower), float(upper))
        if judged_only and n < minimum:
            return
        self.checks[(model, cand, "flip_rate", key, seg)] = int(v.flip_check(f, n, C.version_flip_budget, minimum, Z))

    def _labelled(self, model: str, cand: str, key: dict[str, str]) -> None:
        rng = self.rng
        n = int(rng.choice([100, 300, 1000, 3000]))
        discordant = int(rng.binomial(n, 0.15))
        b = int(rng.binomial(discordant, rng.choice([0.3, 0.5, 0.6, 0.8])))
        c = discordant - b
        cells = {"both_correct": n - discordant - n // 10, "primary_only": b, "shadow_only": c, "both_wrong": n // 10}
        for outcome, count in cells.items():
            labels = {**key, "ml_segment_key": ALL, "ml_segment": ALL, "ml_pair_outcome": outcome}
            self.sidecar_counter("ml_shadow_labelled_pairs_total", labels, count)
        if n >= C.version_min_labelled_pairs:
            lower, upper = v.paired_difference_bounds(b, c, n, Z)
            check = v.noninferiority_check(lower, upper, C.version_accuracy_margin, True)
            self.checks[(model, cand, "paired_accuracy", ALL, ALL)] = int(check)

    def sidecar_counter(self, name: str, labels: dict[str, str], total: int) -> None:
        text = ", ".join(f'{k}="{val}"' for k, val in sorted({**labels, "instance": "sc1"}.items()))
        self.series.append({"series": f"{name}{{{text}}}", "values": f"0 {total}x10"})

    def canary(self, model: str) -> None:
        """Reference "r" (more predictions) and candidate "k": decision rates per region, errors, latency."""
        rng = self.rng
        sides: dict[str, dict[str, Any]] = {}
        for version, scale, floor in (("r", 10, 6000), ("k", 1, 0)):  # r always has more predictions
            n = {region: int(rng.choice([50, 150, 300, 800, 2500, 6000])) * scale + floor for region in REGIONS}
            share = rng.choice([0.3, 0.32, 0.36, 0.45])
            pos = {region: int(rng.binomial(n[region], share)) for region in REGIONS}
            calls = sum(n.values())
            errors = int(rng.binomial(calls, rng.choice([0.0, 0.002, 0.01, 0.05])))
            slow = int(rng.binomial(calls, rng.choice([0.005, 0.01, 0.05])))
            sides[version] = {"n": n, "pos": pos, "calls": calls, "errors": errors, "slow": slow}
            key = {"ml_model_name": model, "ml_model_version": version}
            for region in (*REGIONS, ALL):
                seg_n = calls if region == ALL else n[region]
                seg_pos = sum(pos.values()) if region == ALL else pos[region]
                seg = {"ml_segment_key": ALL if region == ALL else "region", "ml_segment": region}
                self.counter("ml_predictions_total", {**key, **seg, "ml_decision": "true"}, seg_pos)
                self.counter("ml_predictions_total", {**key, **seg, "ml_decision": "false"}, seg_n - seg_pos)
            self.counter("ml_prediction_duration_seconds_count", key, calls)
            self.counter("ml_prediction_duration_seconds_bucket", {**key, "le": "0.25"}, calls - slow)
            self.counter("ml_prediction_duration_seconds_bucket", {**key, "le": "+Inf"}, calls)
            self.counter("ml_prediction_errors_total", {**key, "error_type": "E"}, errors)
        self._canary_checks(model, sides["k"], sides["r"])

    def _canary_checks(self, model: str, k: dict[str, Any], r: dict[str, Any]) -> None:
        for region in (*REGIONS, ALL):
            nk = k["calls"] if region == ALL else k["n"][region]
            nr = r["calls"] if region == ALL else r["n"][region]
            pk = sum(k["pos"].values()) if region == ALL else k["pos"][region]
            pr = sum(r["pos"].values()) if region == ALL else r["pos"][region]
            minimum = C.version_min_pairs if region == ALL else C.version_min_segment_pairs
            if region != ALL and min(nk, nr) < minimum:
                continue
            bounds = v.two_proportion_bounds(pk, nk, pr, nr, Z)
            check = v.equivalence_check(*bounds, C.version_decision_rate_budget, min(nk, nr) >= minimum)
            self.checks[(model, "k", "decision_rate", ALL if region == ALL else "region", region)] = int(check)
        judged = min(k["calls"], r["calls"]) >= C.version_min_pairs
        for check, field, budget in (
            ("error_rate", "errors", C.version_error_rate_budget),
            ("latency", "slow", C.version_latency_budget),
        ):
            bounds = v.two_proportion_bounds(k[field], k["calls"], r[field], r["calls"], Z)
            self.checks[(model, "k", check, ALL, ALL)] = int(v.noninferiority_check(*bounds, budget, judged))

    def tests(self) -> list[dict[str, Any]]:
        cases = []
        for (model, cand, check, key, seg), value in self.checks.items():
            sel = (
                f'ml_model_name="{model}", ml_candidate_version="{cand}", ml_check="{check}", '
                f'ml_segment_key="{key}", ml_segment="{seg}"'
            )
            cases.append(_count(f"ml:version_check:1h{{{sel}}} == {value}", 1))
        by_pair: dict[tuple[str, str], list[int]] = {}
        for (model, cand, *_), value in self.checks.items():
            by_pair.setdefault((model, cand), []).append(value)
        for (model, cand), values in by_pair.items():
            sel = f'ml_model_name="{model}", ml_candidate_version="{cand}"'
            cases.append(_count(f"ml:version_check:1h{{{sel}}}", len(values)))  # nothing extra judged
            cases.append(_count(f"ml:version_verdict:1h{{{sel}}} == {v.verdict(values)}", 1))
        for (model, cand, seg), (lower, upper) in self.bounds.items():
            sel = f'ml_model_name="{model}", ml_candidate_version="{cand}", ml_segment="{seg}"'
            cases.append(_count(f"abs(ml:shadow_flip_ratio_lower:1h{{{sel}}} - {lower!r}) < 1e-9", 1))
            cases.append(_count(f"abs(ml:shadow_flip_ratio_upper:1h{{{sel}}} - {upper!r}) < 1e-9", 1))
        return cases


def _count(expr: str, expected: int) -> dict[str, Any]:
    return {"expr": f"count({expr})", "eval_time": "10m", "exp_samples": [{"labels": "{}", "value": expected}]}


def test_rules_equal_the_numpy_reference_on_random_cases(tmp_path: Path) -> None:
    case = Case(np.random.default_rng(14))
    for i in range(40):
        case.shadow("shadowed", f"s{i}")
    for j in range(20):
        case.canary(f"canary{j}")
    outcomes = {(check, value) for (_, _, check, _, _), value in case.checks.items()}
    checks = ("flip_rate", "paired_accuracy", "decision_rate", "error_rate", "latency")
    assert outcomes == {(check, value) for check in checks for value in (-1, 0, 1)}, "every check, every outcome"
    doc = {
        "rule_files": [str(ROOT / "alert_rules" / "otel-ml-recording.yaml")],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": case.series, "promql_expr_test": case.tests()}],
    }
    path = tmp_path / "versions_vs_numpy.yaml"
    path.write_text(yaml.safe_dump(doc, width=100000))
    assert PROMTOOL
    result = subprocess.run([PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-6000:]
