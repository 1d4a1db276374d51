"""Runbooks: one per alert, reachable from its runbook_url, complete, with PromQL that parses."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from _rule_vocabulary import NO_PROMTOOL, PROMTOOL, ROOT, promtool_check, unknown_tokens

from otel_ml.mixin._rule_helpers import num
from otel_ml.mixin.alerts import alert_groups, alert_names
from otel_ml.mixin.config import DEFAULT_CONFIG, MixinConfig

RUNBOOKS = ROOT / "runbooks"
SECTIONS = ("Meaning", "Impact", "Diagnosis", "Likely causes", "Mitigation", "Verify recovery", "Escalation")
MITIGATIONS = ("roll back", "fall back to rules", "retrain with recent data")  # the minimum set
_PROMQL = re.compile(r"```promql\n(.*?)```", re.DOTALL)
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_QUOTED_DEFAULT = re.compile(r"`(?!ml_)([a-z]+(?:_[a-z0-9]+)+)` \((?!see )([^)]+)\)")  # `field` (default)


def _pages() -> dict[str, str]:
    return {p.stem: p.read_text(encoding="utf-8") for p in sorted(RUNBOOKS.glob("*.md")) if p.name != "README.md"}


def _sections(text: str) -> dict[str, str]:
    parts = re.split(r"^## (.+)$", text, flags=re.MULTILINE)
    return {title.strip(): body for title, body in zip(parts[1::2], parts[2::2])}


def _runbook_name(url: str, config: MixinConfig) -> str:
    prefix, _, suffix = config.runbook_url_pattern.partition("{alertname}")
    assert url.startswith(prefix) and url.endswith(suffix), url
    return url[len(prefix) : len(url) - len(suffix)]


def test_every_runbook_url_resolves_to_a_page() -> None:
    for group in alert_groups(DEFAULT_CONFIG):
        for rule in group["rules"]:
            name = _runbook_name(rule["annotations"]["runbook_url"], DEFAULT_CONFIG)
            assert name == rule["alert"]
            assert (RUNBOOKS / f"{name}.md").is_file(), f"runbooks/{name}.md missing"


def test_every_page_belongs_to_an_alert_and_is_indexed() -> None:
    names = alert_names(DEFAULT_CONFIG)
    assert sorted(_pages()) == sorted(names)
    index = (RUNBOOKS / "README.md").read_text(encoding="utf-8")
    for name in names:
        assert f"]({name}.md)" in index, f"runbooks/README.md does not link {name}"


@pytest.mark.parametrize("name", sorted(_pages()))
def test_page_has_every_section_and_the_basics(name: str) -> None:
    text = _pages()[name]
    assert text.startswith(f"# {name}\n")
    sections = _sections(text)
    assert list(sections) == list(SECTIONS)
    for title, body in sections.items():
        assert body.strip(), f"{name}: empty section {title}"
    assert _PROMQL.search(sections["Diagnosis"]), f"{name}: no PromQL to paste in Diagnosis"
    assert "otel-ml / " in sections["Diagnosis"], f"{name}: Diagnosis names no dashboard"


def test_model_alerts_cover_the_standard_mitigations() -> None:
    serving = {"MLLatencySLOBurn", "MLPredictionErrorRate"}  # retraining does not fix latency or crashes
    monitoring = {
        "MLSidecarDown",
        "MLSidecarNotIngesting",
        "MLSidecarIngestErrors",
        "MLSidecarScrapeTargetDown",
        "MLInstrumentationErrors",
        "MLJoinStoreEvicting",
        "MLShadowDropping",  # the shadow comparison loses pairs; served traffic is untouched
    }
    # the outcome pipeline: no model change fixes it, but each page says when a model action is (not) due
    pipeline = {"MLLabelCoverageCollapsed", "MLLabelDelayGrowing"}
    # the price table and the review queue: no model action fixes them either
    pipeline |= {"MLPricesStale", "MLReviewBacklogGrowing"}
    pipeline |= {"MLSkewReplayStale"}  # the scheduled replay stopped: it says nothing about the decisions
    for name, text in _pages().items():
        mitigation = _sections(text)["Mitigation"].lower()
        expected = () if name in monitoring | pipeline else MITIGATIONS[:2] if name in serving else MITIGATIONS
        for step in expected:
            assert step in mitigation, f"{name}: Mitigation does not mention {step!r}"


def _default_forms(value: object) -> set[str]:
    """How a default may be written in prose: 30m, 200, 0.25 s, 5%, 10 points, ±30%."""
    if isinstance(value, tuple):
        return {", ".join(map(str, value))}
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return {str(value)}
    return {num(value), f"{num(value * 100)}%", f"{num(value * 100)} points"}


def test_config_defaults_quoted_in_runbooks_are_current() -> None:
    """Every "`field` (default)" in a runbook names a real MixinConfig field with its current default."""
    defaults = {f.name: getattr(DEFAULT_CONFIG, f.name) for f in dataclasses.fields(MixinConfig)}
    quoted = 0
    for name, text in _pages().items():
        for field, prose in _QUOTED_DEFAULT.findall(text):
            assert field in defaults, f"{name}: no MixinConfig field {field!r}"
            forms = _default_forms(defaults[field])
            assert any(form in prose for form in forms), f"{name}: `{field}` ({prose}) but the default is {forms}"
            quoted += 1
    assert quoted >= len(_pages())


def test_dashboard_panels_named_in_runbooks_exist() -> None:
    from otel_ml.mixin import dashboards

    titles: set[str] = set()
    for board in dashboards.build_dashboards(DEFAULT_CONFIG).values():
        titles.add(board["title"])
        titles.update(p["title"] for p in board.get("panels", []))
        titles.update(p["title"] for row in board.get("panels", []) for p in row.get("panels", []))
    not_panels = {"Status → Targets"}  # Prometheus UI, not Grafana
    for name, text in _pages().items():
        sections = _sections(text)
        named = set(_BOLD.findall(sections["Diagnosis"] + sections["Verify recovery"])) - not_panels
        assert named <= titles, f"{name}: no such dashboard or panel {sorted(named - titles)}"


def test_runbook_promql_uses_only_real_names() -> None:
    exprs = [e for text in _pages().values() for e in _PROMQL.findall(text)]
    assert len(exprs) >= 2 * len(_pages())
    assert unknown_tokens(exprs) == set()


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
def test_runbook_promql_parses(tmp_path: Path) -> None:
    exprs = {f"{name}#{i}": e for name, text in _pages().items() for i, e in enumerate(_PROMQL.findall(text))}
    result = promtool_check(exprs, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


_SIDECAR_SETTING = re.compile(r"`(decisions|drift)\.([a-z_]+)` \(([^)]+)\)")  # `decisions.alpha` (0.005)


def test_sidecar_defaults_quoted_in_runbooks_are_current() -> None:
    """Every "`decisions.key` (default)" / "`drift.key` (default)" is the sidecar's current default."""
    from otel_ml.drift import DecisionSettings
    from otel_ml.sidecar import SidecarConfig

    outputs = SidecarConfig(baselines=()).state.outputs
    sections = {
        "decisions": dataclasses.asdict(DecisionSettings()),
        "drift": {
            "alpha": outputs.alpha,
            "warn": outputs.warn,
            "drift": outputs.drift,
            "multiplicity": outputs.multiplicity,
        },
    }
    quoted = 0
    for name, text in _pages().items():
        for section, key, prose in _SIDECAR_SETTING.findall(text):
            assert key in sections[section], f"{name}: the sidecar has no setting {section}.{key}"
            forms = _default_forms(sections[section][key])
            assert prose in forms, f"{name}: `{section}.{key}` ({prose}) but the default is {forms}"
            quoted += 1
    assert quoted >= 8
