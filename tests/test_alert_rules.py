"""The generated rule files: fresh, valid for promtool, unit-tested, complete and configurable."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from _rule_vocabulary import NO_PROMTOOL, PROMTOOL, ROOT, unknown_tokens

from otel_ml.mixin.alerts import alert_groups, alert_names
from otel_ml.mixin.config import DEFAULT_CONFIG
from otel_ml.mixin.generate import (
    ALERTS_FILE,
    PROMETHEUS_RULE_FILE,
    RECORDING_FILE,
    rule_file_texts,
    rule_groups,
    write_rule_files,
)
from otel_ml.mixin.rules import recording_groups

RULES_DIR = ROOT / "alert_rules"
TESTS_DIR = ROOT / "tests" / "rules"
FILES = (ALERTS_FILE, RECORDING_FILE, PROMETHEUS_RULE_FILE)
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _alerts(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for g in groups for r in g["rules"] if "alert" in r]


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, check=False, timeout=600, cwd=ROOT)


# (a) ------------------------------------------------------------------------------------------
def test_committed_files_are_fresh(tmp_path: Path) -> None:
    paths = write_rule_files(DEFAULT_CONFIG, tmp_path)
    assert [p.name for p in paths] == list(FILES)
    for path in paths:
        committed = RULES_DIR / path.name
        assert committed.exists(), f"{committed} missing: run `otel-ml mixin generate`"
        assert committed.read_bytes() == path.read_bytes(), (
            f"{committed} is stale: regenerate with `otel-ml mixin generate` "
            "(or otel_ml.mixin.generate.write_rule_files(DEFAULT_CONFIG, 'alert_rules'))"
        )


def test_output_is_deterministic() -> None:
    first, second = rule_file_texts(DEFAULT_CONFIG), rule_file_texts(DEFAULT_CONFIG)
    assert first == second
    assert all(text.endswith("\n") and not text.endswith("\n\n") for text in first.values())


# (b) (c) --------------------------------------------------------------------------------------
@needs_promtool
def test_promtool_check_rules_is_clean() -> None:
    result = _promtool("check", "rules", str(RULES_DIR / ALERTS_FILE), str(RULES_DIR / RECORDING_FILE))
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "FAILED" not in out and "lint" not in out.lower() and "warn" not in out.lower(), out


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    tests = sorted(str(p.relative_to(ROOT)) for p in TESTS_DIR.glob("*.yaml"))
    assert tests
    result = _promtool("test", "rules", *tests)
    assert result.returncode == 0, result.stdout + result.stderr


# (d) ------------------------------------------------------------------------------------------
def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    rule_files: set[str] = set()
    for path in TESTS_DIR.glob("*.yaml"):
        doc = _load(path)
        rule_files.update(str((path.parent / f).resolve()) for f in doc["rule_files"])
        for group in doc["tests"]:
            for case in group.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    names = set(alert_names(DEFAULT_CONFIG))
    assert str(RULES_DIR / ALERTS_FILE) in rule_files
    assert names - firing == set(), "alerts without a firing test case"
    assert names - silent == set(), "alerts without a test case that must stay silent"
    assert (firing | silent) - names == set(), "test cases for alerts that do not exist"


def test_test_files_stay_out_of_the_rule_directory() -> None:
    # Prometheus refuses to start when a glob like alert_rules/*.yaml picks up a test file.
    assert sorted(p.name for p in RULES_DIR.iterdir()) == sorted(FILES)


# (e) ------------------------------------------------------------------------------------------
def test_every_alert_has_labels_annotations_and_runbook() -> None:
    alerts = _alerts(_load(RULES_DIR / ALERTS_FILE)["groups"])
    assert len(alerts) >= 12
    for rule in alerts:
        name = rule["alert"]
        assert rule["labels"]["severity"] in {DEFAULT_CONFIG.severity_page, DEFAULT_CONFIG.severity_ticket}, name
        assert rule["labels"]["team"] == DEFAULT_CONFIG.team, name
        for key in ("summary", "description", "runbook_url"):
            assert rule["annotations"].get(key), (name, key)
        assert rule["annotations"]["runbook_url"] == DEFAULT_CONFIG.runbook_url(name)
        assert "{{ $labels." in rule["annotations"]["description"], name
        assert rule["for"], name


def test_rules_use_only_real_names() -> None:
    exprs = [r["expr"] for g in rule_groups(DEFAULT_CONFIG) for r in g["rules"]]
    assert unknown_tokens(exprs) == set()


def test_alert_names_are_unique_per_severity() -> None:
    seen = [(r["alert"], r["labels"]["severity"]) for r in _alerts(alert_groups(DEFAULT_CONFIG))]
    assert len(seen) == len(set(seen))
    assert alert_names(DEFAULT_CONFIG) == list(dict.fromkeys(name for name, _ in seen))


# (f) ------------------------------------------------------------------------------------------
def test_prometheusrule_has_the_same_groups() -> None:
    manifest = _load(RULES_DIR / PROMETHEUS_RULE_FILE)
    assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
    assert manifest["kind"] == "PrometheusRule"
    assert manifest["metadata"]["name"] == DEFAULT_CONFIG.prometheus_rule_name
    assert manifest["metadata"]["labels"] == DEFAULT_CONFIG.prometheus_rule_labels
    plain = _load(RULES_DIR / RECORDING_FILE)["groups"] + _load(RULES_DIR / ALERTS_FILE)["groups"]
    assert manifest["spec"]["groups"] == plain
    assert plain == rule_groups(DEFAULT_CONFIG)


# (g) ------------------------------------------------------------------------------------------
def _by_name(config: Any) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for r in _alerts(alert_groups(config))}


def test_config_overrides_change_the_output() -> None:
    config = DEFAULT_CONFIG.with_overrides(
        team="fraud-ds",
        severity_page="page",
        drift_for="10s",
        alert_window="5m",
        decision_rate_min_relative_change=0.5,
        sidecar_selector='job="ml-sidecar", namespace="fraud"',
        app_selector='namespace="fraud"',
        aggregation_labels=("cluster",),
        extra_alert_labels={"service": "fraud-api"},
        alert_label_overrides={"MLFeatureDrift": {"severity": "critical", "team": "drift-squad"}},
        runbook_url_pattern="https://runbooks.example.com/ml/{alertname}",
    )
    alerts = _by_name(config)
    drift = alerts["MLFeatureDrift"]
    assert drift["for"] == "10s"
    assert 'ml_window="5m"' in drift["expr"] and 'job="ml-sidecar", namespace="fraud"' in drift["expr"]
    assert drift["labels"] == {"severity": "critical", "team": "drift-squad", "service": "fraud-api"}
    assert drift["annotations"]["runbook_url"] == "https://runbooks.example.com/ml/MLFeatureDrift"
    assert ">= 0.5" in alerts["MLSegmentDecisionRateChange"]["expr"]
    assert alerts["MLPredictionErrorRate"]["labels"]["severity"] == "page"
    assert alerts["MLSidecarDown"]["labels"]["team"] == "fraud-ds"
    assert "ml_model_name, ml_model_version, ml_feature, cluster" in drift["expr"]
    recording = "\n".join(r["expr"] for g in recording_groups(config) for r in g["rules"])
    assert 'ml_feature_value_bucket{namespace="fraud"}' in recording
    assert "ml_model_name, ml_model_version, cluster" in recording


@needs_promtool
def test_overridden_config_is_still_valid_promql(tmp_path: Path) -> None:
    config = DEFAULT_CONFIG.with_overrides(
        app_selector='namespace="fraud"',
        aggregation_labels=("cluster", "namespace"),
        fleet_psi_windows=("1h", "24h"),
        error_rate_window="10m",
        performance_metrics=("roc_auc", "f1"),
        evaluation_windows=("6h",),
        label_coverage_floor=0.2,
        label_delay_budget_seconds=0.0,
        decision_rate_min_relative_change=0.25,
        decision_rate_min_absolute_change=0.03,
    )
    paths = write_rule_files(config, tmp_path)
    result = _promtool("check", "rules", *(str(p) for p in paths[:2]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ml:feature_psi:24h" in paths[1].read_text()
    assert "ml:prediction_errors:ratio_rate10m" in paths[0].read_text()
    assert "ml:online_roc_auc:6h" in paths[1].read_text() and "ml:estimated_roc_auc:6h" in paths[1].read_text()
    alerts = paths[0].read_text()
    assert "ml:online_f1:24h" in alerts and "ml:online_recall:24h" not in alerts
    assert "< 0.2" in alerts and "> 1209600" not in alerts


def _rendered(annotations: dict[str, str], labels: dict[str, str], value: str) -> dict[str, str]:
    """The annotations as Prometheus renders them for simple templates (labels and one $value pipe)."""
    out = {}
    for key, text in annotations.items():
        for label, label_value in labels.items():
            text = text.replace("{{ $labels." + label + " }}", label_value)
        out[key] = re.sub(r"\{\{ \$value[^}]*\}\}", value, text)
    return out


@needs_promtool
def test_short_durations_fire_fast(tmp_path: Path) -> None:
    """How an end-to-end test gets rules that fire in seconds: same generator, shorter config."""
    config = DEFAULT_CONFIG.with_overrides(drift_for="10s", alert_window="1m")
    write_rule_files(config, tmp_path / "rules")
    test = {
        "rule_files": ["rules/" + ALERTS_FILE, "rules/" + RECORDING_FILE],
        "evaluation_interval": "5s",
        "tests": [
            {
                "interval": "5s",
                "input_series": [
                    {
                        "series": 'ml_feature_drift_status{job="otel-ml-sidecar", ml_model_name="m", '
                        'ml_model_version="1", ml_feature="f", ml_window="1m"}',
                        "values": "2x10",
                    },
                    {
                        "series": 'ml_feature_psi{job="otel-ml-sidecar", ml_model_name="m", '
                        'ml_model_version="1", ml_feature="f", ml_window="1m"}',
                        "values": "0.5x10",
                    },
                ],
                "alert_rule_test": [
                    {"alertname": "MLFeatureDrift", "eval_time": "5s"},
                    {
                        "alertname": "MLFeatureDrift",
                        "eval_time": "10s",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "team": "ml-platform",
                                    "ml_model_name": "m",
                                    "ml_model_version": "1",
                                    "ml_feature": "f",
                                },
                                "exp_annotations": _rendered(
                                    _by_name(config)["MLFeatureDrift"]["annotations"],
                                    {"ml_model_name": "m", "ml_model_version": "1", "ml_feature": "f"},
                                    "0.500",
                                ),
                            }
                        ],
                    },
                ],
            }
        ],
    }
    (tmp_path / "short_test.yaml").write_text(yaml.safe_dump(test))
    result = subprocess.run(
        [PROMTOOL or "promtool", "test", "rules", "short_test.yaml"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"latency_slo_threshold_seconds": 0.3}, "not a bucket bound"),
        ({"drift_for": "half an hour"}, "not a Prometheus duration"),
        ({"drift_for": "1.5h"}, "not a Prometheus duration"),  # the sidecar's config reads it; Prometheus does not
        ({"alert_window": " 5m"}, "not a Prometheus duration"),
        ({"keep_firing_for": "10m "}, "not a Prometheus duration"),
        ({"alert_label_overrides": {"MLNoSuchAlert": {"team": "x"}}}, "unknown alerts"),
        ({"latency_slo_target": 1.0}, "between 0 and 1"),
        ({"performance_metrics": ("brier_score",)}, "performance_metrics must name some of"),
        ({"estimated_performance_metrics": ()}, "estimated_performance_metrics must name some of"),
        ({"performance_coverage_cohort": "2d"}, "performance_coverage_cohort must be one of"),
        ({"label_coverage_drop_ratio": 0.0}, "nothing to alert on"),
        ({"label_delay_budget_seconds": 0.0, "label_delay_growth_ratio": 0.0}, "nothing to alert on"),
        ({"label_delay_quantile": 1.0}, "between 0 and 1"),
        ({"positive_outcome": ""}, "non-empty"),
        ({"decision_rate_min_absolute_change": -0.01}, "must be >= 0"),
        ({"version_confidence": 1.0}, "0 < confidence < 1"),
        ({"version_windows": ()}, "at least one window"),
        ({"version_flip_budget": 0.0}, "between 0 and 1"),
        ({"version_min_pairs": 0}, ">= 1"),
        ({"version_reference_window": "1 day"}, "not a Prometheus duration"),
        ({"cost_budget_usd_per_1k": {"allocaton": 1.0}}, "unknown ml_cost_basis"),
        ({"cost_budget_usd_per_1k": {"billed": 0.0}}, "budgets must be > 0"),
        ({"cost_budget_min_predictions": 0}, ">= 1"),
        ({"cost_windows": ("1 hour",)}, "not a Prometheus duration"),
        ({"review_windows": ("7 days",)}, "not a Prometheus duration"),
        ({"prices_max_age_seconds": 0.0}, "must be > 0"),
        ({"review_error_rate_band": (0.2, 0.1)}, "0 <= lower <= upper <= 1"),
        ({"review_error_rate_tolerance": -0.01}, "must be >= 0"),
        ({"review_error_rate_z": 0.0}, "review_error_rate_z must be > 0"),
        ({"review_pending_sla_seconds": 0.0, "review_backlog_growth_ratio": 0.0}, "nothing to alert on"),
        ({"skew_flip_budget": 0.0}, "skew_flip_budget must be between 0 and 1"),
        ({"skew_min_rows": 0}, "skew_min_rows >= 1"),
        ({"skew_replay_max_age": "2 days"}, "not a Prometheus duration"),
        ({"skew_replay_max_age": "0s"}, "skew_replay_max_age must be > 0"),
    ],
)
def test_bad_config_fails_at_generation(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rule_groups(DEFAULT_CONFIG.with_overrides(**changes))


def test_fleet_psi_example_agrees_with_the_sidecars_numpy_psi() -> None:
    """The hand-worked values in tests/rules/fleet_psi_test.yaml are what the sidecar computes too."""
    from otel_ml.drift import psi

    doc = _load(TESTS_DIR / "fleet_psi_test.yaml")
    expected = {
        sample["labels"]: sample["value"]
        for case in doc["tests"][0]["promql_expr_test"]
        if "psi:1h" in case["expr"]
        for sample in case["exp_samples"]
    }
    by_feature = {}
    for labels, value in expected.items():
        feature = re.search(r'ml_feature="(\w+)"', labels)
        by_feature[feature.group(1) if feature else "score"] = value
    # window counts and reference fractions of the example, as the YAML's input series define them
    cases = {
        "amount": ([0.1, 0.4, 0.4, 0.1], [0, 1200, 1200, 1200]),
        "country": ([0.6, 0.3, 0.1, 0.0], [3000, 0, 600, 2400]),  # US, DE, __other__, __unknown__
        "device": ([0.6, 0.3, 0.1, 0.0], [3000, 0, 600, 2400]),
        "score": ([0.8, 0.2], [3000, 3000]),
    }
    assert set(by_feature) == set(cases)
    for feature, (reference, counts) in cases.items():
        assert round(float(psi(reference, counts)), 4) == by_feature[feature], feature


# (h) restarts and starts (issue 10) ----------------------------------------------------------
WINDOWED_ALERTS = {
    "MLFeatureDrift",
    "MLScoreDistributionShift",
    "MLFeatureMissingRatioHigh",
    "MLUnknownCategorySurge",
    "MLSegmentDecisionRateChange",
    "MLOnlinePerformanceDrop",
    "MLEstimatedPerformanceDrop",
    "MLLabelCoverageCollapsed",
}


def test_sidecar_window_alerts_keep_firing_across_a_restart() -> None:
    shipped = {r["alert"]: r for r in _alerts(_load(RULES_DIR / ALERTS_FILE)["groups"])}
    assert {name for name, r in shipped.items() if "keep_firing_for" in r} == WINDOWED_ALERTS
    assert all(shipped[name]["keep_firing_for"] == "10m" for name in WINDOWED_ALERTS)
    assert list(shipped["MLFeatureDrift"])[:4] == ["alert", "expr", "for", "keep_firing_for"]
    longer = _by_name(DEFAULT_CONFIG.with_overrides(keep_firing_for="20m"))
    assert longer["MLUnknownCategorySurge"]["keep_firing_for"] == "20m"
    off = _by_name(DEFAULT_CONFIG.with_overrides(keep_firing_for="0s"))
    assert not any("keep_firing_for" in r for r in off.values())
    with pytest.raises(ValueError, match="not a Prometheus duration"):
        alert_groups(DEFAULT_CONFIG.with_overrides(keep_firing_for="ten minutes"))


def test_decision_rate_alert_reads_the_verdict_not_counts() -> None:
    """The sidecar's status carries the minimum counts of both windows: no count, no offset, no fixed ratio."""
    expr = _by_name(DEFAULT_CONFIG)["MLSegmentDecisionRateChange"]["expr"]
    assert "ml_segment_decision_rate_status{" in expr and ") == 2)" in expr
    assert "offset" not in expr and "ml_segment_window_predictions" not in expr
    assert ">=" not in expr and "abs(" not in expr  # the kit's own minimums are off by default
    baseline_only = _by_name(DEFAULT_CONFIG.with_overrides(decision_rate_references=("baseline",)))
    assert 'ml_reference=~"baseline"}' in baseline_only["MLSegmentDecisionRateChange"]["expr"]
    assert "previous_window" not in baseline_only["MLSegmentDecisionRateChange"]["expr"]
    with pytest.raises(ValueError, match="at least one ml_reference"):
        alert_groups(DEFAULT_CONFIG.with_overrides(decision_rate_references=()))


_SEGMENT = (
    'job="otel-ml-sidecar", ml_model_name="m", ml_model_version="1", ml_segment_key="region", '
    'ml_segment="{segment}", ml_decision="{decision}", ml_window="1h"'
)


def _segment_series(segment: str, decision: str, rate: float, change: float | None) -> list[dict[str, str]]:
    """A sidecar that says "changed" (2) for one segment and decision against the baseline, for 40m."""
    labels = _SEGMENT.format(segment=segment, decision=decision)
    series = [
        {"series": f'ml_segment_decision_rate_status{{{labels}, ml_reference="baseline"}}', "values": "2x40"},
        {"series": f"ml_segment_decision_rate{{{labels}}}", "values": f"{rate}x40"},
    ]
    if change is not None:  # the sidecar exports no relative change when the reference rate is 0
        series.append(
            {
                "series": f'ml_segment_decision_rate_change{{{labels}, ml_reference="baseline"}}',
                "values": f"{change}x40",
            }
        )
    return series


@needs_promtool
def test_kit_minimum_effect_raises_the_bar_on_changed_verdicts(tmp_path: Path) -> None:
    """decision_rate_min_relative/absolute_change: a team demands more than the sidecar, without reconfiguring it."""
    config = DEFAULT_CONFIG.with_overrides(
        decision_rate_min_relative_change=0.3, decision_rate_min_absolute_change=0.05
    )
    write_rule_files(config, tmp_path / "rules")
    # (segment, decision, rate now, relative change): reference = now / (1 + change)
    cases = [
        ("EU", "true", 0.13, -0.35),  # 0.20 -> 0.13: 35% and 7 points: pages
        ("US", "true", 0.15, -0.25),  # 0.20 -> 0.15: 5 points but 25%: below 30%
        ("NO", "review", 0.02, -0.5),  # 0.04 -> 0.02: 50% but 2 points: below 5 points
        ("IT", "true", 0.0, -1.0),  # collapsed to zero: pages (no division by 1 + change = 0)
        ("PL", "decline", 0.08, None),  # never made in training (no ratio): 8 points, pages with +Inf
        ("FR", "decline", 0.03, None),  # never made in training, 3 points: below 5 points
    ]
    series = [s for segment, decision, rate, change in cases for s in _segment_series(segment, decision, rate, change)]
    annotations = _by_name(config)["MLSegmentDecisionRateChange"]["annotations"]
    paged = {"EU": ("true", "-35%"), "IT": ("true", "-100%"), "PL": ("decline", "+Inf%")}
    expected = []
    for segment, (decision, value) in sorted(paged.items()):
        labels = {
            "ml_model_name": "m",
            "ml_model_version": "1",
            "ml_segment_key": "region",
            "ml_segment": segment,
            "ml_decision": decision,
            "ml_reference": "baseline",
        }
        expected.append(
            {
                "exp_labels": {"severity": "critical", "team": "ml-platform", **labels},
                "exp_annotations": _rendered(annotations, labels, value),
            }
        )
    assert "by at least 30% relative and 5 points absolute" in expected[0]["exp_annotations"]["description"]
    test = {
        "rule_files": ["rules/" + ALERTS_FILE, "rules/" + RECORDING_FILE],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {"alertname": "MLSegmentDecisionRateChange", "eval_time": "29m"},
                    {"alertname": "MLSegmentDecisionRateChange", "eval_time": "30m", "exp_alerts": expected},
                ],
            }
        ],
    }
    (tmp_path / "minimum_test.yaml").write_text(yaml.safe_dump(test))
    result = _promtool_in(tmp_path, "minimum_test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def _promtool_in(cwd: Path, test_file: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL or "promtool", "test", "rules", test_file],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=cwd,
    )


def test_unanswered_scrapes_are_not_ingest_errors() -> None:
    alerts = _by_name(DEFAULT_CONFIG)
    assert 'reason!~"scrape_unreachable|scrape_timeout"' in alerts["MLSidecarIngestErrors"]["expr"]
    assert 'reason=~"scrape_unreachable|scrape_timeout"' in alerts["MLSidecarScrapeTargetDown"]["expr"]
    assert alerts["MLSidecarScrapeTargetDown"]["for"] == "10m"
    # the sidecar raises exactly these reasons when a target does not answer
    from otel_ml.sidecar._scrape import UNREACHABLE_REASONS

    assert set(DEFAULT_CONFIG.scrape_unreachable_reasons) == set(UNREACHABLE_REASONS)


# (i) the README's customisation route: a YAML file of MixinConfig overrides -----------------
def test_mixin_generate_applies_a_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from otel_ml.cli import main

    overrides = tmp_path / "overrides.yaml"
    overrides.write_text(
        "team: fraud-ds\ndrift_for: 1h\nkeep_firing_for: 20m\ndecision_rate_min_relative_change: 0.5\n"
        "extra_alert_labels: {service: fraud-api}\nsidecar_windows: [1h, 6h]\n"
    )
    assert main(["mixin", "generate", "--output-dir", str(tmp_path / "out"), "--config", str(overrides)]) == 0
    assert "otel-ml-alerts.yaml" in capsys.readouterr().out
    alerts = {r["alert"]: r for r in _alerts(_load(tmp_path / "out" / "alert_rules" / ALERTS_FILE)["groups"])}
    drift = alerts["MLFeatureDrift"]
    assert (drift["for"], drift["keep_firing_for"]) == ("1h", "20m")
    assert drift["labels"] == {"severity": "warning", "team": "fraud-ds", "service": "fraud-api"}
    assert ">= 0.5" in alerts["MLSegmentDecisionRateChange"]["expr"]
    assert (tmp_path / "out" / "dashboards" / "otel-ml-model.json").is_file()


@pytest.mark.parametrize(
    "text, message",
    [
        ("team: x\ndrfit_for: 1h\n", "unknown MixinConfig field(s): drfit_for"),
        ("decision_rate_min_relative_change: lots\n", "decision_rate_min_relative_change: expected float, got str"),
        ("decision_rate_min_count: 200\n", "decision_rate_min_count (replaced by the sidecar's decisions: min_count"),
        ("decision_rate_change_threshold: 0.3\n", "(replaced by decision_rate_min_relative_change"),
        ("performance_metric: ml_online_recall\n", "performance_metric (replaced by performance_metrics"),
        ("extra_alert_labels: {service: 3}\n", "extra_alert_labels.service: expected str, got int"),
        ("latency_page_windows: [1h]\n", "latency_page_windows: expected a list of 2 items"),
        ("drift_for: half an hour\n", "not a Prometheus duration"),
        ("- team\n", "expected a mapping of MixinConfig fields"),
    ],
)
def test_a_bad_config_file_is_an_error_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    from otel_ml.cli import main

    overrides = tmp_path / "overrides.yaml"
    overrides.write_text(text)
    assert main(["mixin", "generate", "--output-dir", str(tmp_path / "out"), "--config", str(overrides)]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not (tmp_path / "out" / "alert_rules").exists()


def test_the_readme_overrides_example_generates(tmp_path: Path) -> None:
    from otel_ml.cli import main

    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```yaml\n(# overrides\.yaml\n.*?)```", readme, re.DOTALL)
    assert block, "README: no overrides.yaml example"
    (tmp_path / "overrides.yaml").write_text(block.group(1))
    assert main(["mixin", "generate", "--config", str(tmp_path / "overrides.yaml"), "--output-dir", str(tmp_path)]) == 0
    drift = _by_name_in(tmp_path / "alert_rules" / ALERTS_FILE)["MLFeatureDrift"]
    assert drift["labels"]["team"] == "fraud-ds" and 'namespace="fraud"' in drift["expr"]


def _by_name_in(path: Path) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for r in _alerts(_load(path)["groups"])}


# (j) cost and review (issue 16) --------------------------------------------------------------
@needs_promtool
def test_cost_and_review_variants_are_valid_promql(tmp_path: Path) -> None:
    """A configured review band, a tolerance, one budgeted basis, no budget at all, extra labels."""
    variants = {
        "band": DEFAULT_CONFIG.with_overrides(
            review_error_rate_band=(0.02, 0.1), cost_budget_usd_per_1k={"billed": 0.5}, aggregation_labels=("cluster",)
        ),
        "tolerance": DEFAULT_CONFIG.with_overrides(
            review_error_rate_tolerance=0.02, opencost_selector='job="opencost"'
        ),
        "no-budget": DEFAULT_CONFIG.with_overrides(cost_budget_usd_per_1k={}, review_backlog_growth_ratio=0.0),
    }
    for name, config in variants.items():
        paths = write_rule_files(config, tmp_path / name)
        result = _promtool("check", "rules", *(str(p) for p in paths[:2]))
        assert result.returncode == 0, (name, result.stdout + result.stderr)
    alerts = {name: _by_name(config) for name, config in variants.items()}
    band = alerts["band"]["MLReviewErrorRateOutOfBand"]["expr"]
    model, segment = (
        'ml:review_error_rate:24h{ml_segment_key="__all__"}',
        'ml:review_error_rate:24h{ml_segment_key!="__all__"}',
    )
    assert f"({model} - 0.1)" in band and f"(0.02 - {model})" in band  # the model's estimate at z
    assert f"({segment} - 0.1)" in band and "> 4.055" in band  # each segment's at the Bonferroni z
    assert "ml_reference_performance" not in band and "cluster" in band
    cost = alerts["band"]["MLCostOverBudget"]["expr"]
    assert 'ml_cost_basis="billed"} > 0.5' in cost and "configured_rate" not in cost
    tolerance = alerts["tolerance"]["MLReviewErrorRateOutOfBand"]["expr"]
    assert "- 0.02)" in tolerance and "+ 0.02)" in tolerance and 'ml_metric="accuracy"' in tolerance
    assert "MLCostOverBudget" not in alerts["no-budget"] and "MLPricesStale" in alerts["no-budget"]
    assert "offset" not in alerts["no-budget"]["MLReviewBacklogGrowing"]["expr"]
    recording = "\n".join(r["expr"] for g in recording_groups(variants["tolerance"]) for r in g["rules"])
    assert 'container_cpu_allocation{job="opencost"}' in recording and "on (node)" in recording


def test_review_band_and_budgets_load_from_a_config_file(tmp_path: Path) -> None:
    from otel_ml.mixin.config import load_config

    path = tmp_path / "overrides.yaml"
    path.write_text("review_error_rate_band: [0.02, 0.1]\ncost_budget_usd_per_1k: {billed: 2}\n")
    config = load_config(path)
    assert config.review_error_rate_band == (0.02, 0.1) and config.cost_budget_usd_per_1k == {"billed": 2.0}
    path.write_text("review_error_rate_band: null\n")
    assert load_config(path).review_error_rate_band is None
    path.write_text("review_error_rate_band: [0.1]\n")
    with pytest.raises(ValueError, match="expected a list of 2 items"):
        load_config(path)


def test_skew_rules_follow_the_config() -> None:
    """The replay's job, the budget, the test's z, the minimum rows and the maximum age come from MixinConfig."""
    config = DEFAULT_CONFIG.with_overrides(
        skew_selector='job="replays", env="prod"',
        skew_flip_budget=0.02,
        skew_flip_z=2.33,
        skew_min_rows=2000,
        skew_replay_max_age="7d",
        aggregation_labels=("cluster",),
    )
    alerts = _by_name(config)
    flips, stale = alerts["MLSkewDecisionFlipsOverBudget"], alerts["MLSkewReplayStale"]
    assert "* 0.02 + 0.375" in flips["expr"] and "> 2.33" in flips["expr"] and ">= 2000" in flips["expr"]
    assert 'ml_skew_rows_total{job="replays", env="prod", ml_segment_key="__all__"}' in flips["expr"]
    assert "ml_model_name, ml_model_version, cluster" in flips["expr"]
    assert "cluster=%q" in flips["annotations"]["description"]  # the counts it prints are the alert's own
    assert "> 604800" in stale["expr"] and 'job="replays", env="prod"' in stale["expr"]
    assert "7d (skew_replay_max_age)" in stale["annotations"]["description"]
    recording = {r["record"]: r["expr"] for g in recording_groups(config) for r in g["rules"] if "record" in r}
    assert 'job="replays", env="prod"' in recording["ml:skew_decision_flip_ratio"]
