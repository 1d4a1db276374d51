"""Alerting rules as data: every group a pure function of :class:`MixinConfig`.

The groups are written in :mod:`otel_ml.mixin._data_alerts` (drift, coverage, decisions: the
sidecar's verdicts), :mod:`otel_ml.mixin._evaluation_alerts` (realised and estimated performance,
label coverage and delay, the join store), :mod:`otel_ml.mixin._version_alerts` (shadow and
canary comparison), :mod:`otel_ml.mixin._serving_alerts` (latency, errors, the sidecar
itself), :mod:`otel_ml.mixin._cost_alerts` (cost per 1K, prices) and
:mod:`otel_ml.mixin._review_alerts` (review backlog, weighted error rate) and
:mod:`otel_ml.mixin._skew_alerts` (training/serving skew replays), with an abstract
level (:data:`PAGE` or :data:`TICKET`) and no team or runbook.
:func:`alert_groups` then passes over every alert once (:func:`_finish`) to set ``severity``,
``team``, the extra and overridden labels and ``runbook_url``, and to check that ``summary``
and ``description`` exist, so no alert can ship without them (the kubernetes-mixin
``add-runbook-links`` idea).
"""

from __future__ import annotations

from typing import Any

from ._alert_helpers import PAGE, TICKET, Rule
from ._cost_alerts import cost_alerts
from ._data_alerts import coverage_alerts, decision_alerts, drift_alerts
from ._evaluation_alerts import evaluation_alerts
from ._review_alerts import review_alerts
from ._serving_alerts import serving_alerts, sidecar_alerts
from ._skew_alerts import skew_alerts
from ._version_alerts import version_alerts
from .config import MixinConfig

__all__ = ["PAGE", "TICKET", "alert_groups", "alert_names"]


_GROUPS = (
    ("otel-ml.drift", drift_alerts),
    ("otel-ml.coverage", coverage_alerts),
    ("otel-ml.decisions", decision_alerts),
    ("otel-ml.evaluation", evaluation_alerts),
    ("otel-ml.versions", version_alerts),
    ("otel-ml.serving", serving_alerts),
    ("otel-ml.sidecar", sidecar_alerts),
    ("otel-ml.cost", cost_alerts),
    ("otel-ml.review", review_alerts),
    ("otel-ml.skew", skew_alerts),
)

_REQUIRED_ANNOTATIONS = ("summary", "description")


def _finish(rule: Rule, c: MixinConfig) -> Rule:
    """Severity, team, extra labels, overrides and runbook_url: the one pass every alert goes through."""
    name = rule["alert"]
    levels = {PAGE: c.severity_page, TICKET: c.severity_ticket}
    labels = dict(rule["labels"])
    level = labels.pop("severity")
    if level not in levels:
        raise ValueError(f"{name}: severity must be PAGE or TICKET, got {level!r}")
    labels = {
        "severity": levels[level],
        "team": c.team,
        **c.extra_alert_labels,
        **labels,
        **c.alert_label_overrides.get(name, {}),
    }
    missing = [a for a in _REQUIRED_ANNOTATIONS if not rule["annotations"].get(a)]
    if missing:
        raise ValueError(f"{name}: missing annotations {missing}")
    annotations = {**rule["annotations"], "runbook_url": c.runbook_url(name)}
    return {**rule, "labels": labels, "annotations": annotations}


def alert_groups(config: MixinConfig) -> list[dict[str, Any]]:
    """The alerting rule groups, every alert finished by :func:`_finish`."""
    unknown = set(config.alert_label_overrides) - {r["alert"] for _, build in _GROUPS for r in build(config)}
    if unknown:
        raise ValueError(f"alert_label_overrides names unknown alerts: {sorted(unknown)}")
    return [{"name": name, "rules": [_finish(r, config) for r in build(config)]} for name, build in _GROUPS]


def alert_names(config: MixinConfig) -> list[str]:
    """Every alert name, once each, in file order (two rules may share a name, e.g. two burn rates)."""
    names = (r["alert"] for g in alert_groups(config) for r in g["rules"])
    return list(dict.fromkeys(names))
