"""The shape every alerting rule is written in, shared by the alert groups.

Rules are written with an abstract level (:data:`PAGE` or :data:`TICKET`) and no team or
runbook; :func:`otel_ml.mixin.alerts.alert_groups` maps the level to a severity and adds the
rest. Annotation texts name a model, feature or segment with the same label templates.
"""

from __future__ import annotations

from .. import _names as n
from .._durations import prometheus_duration
from ._rule_helpers import Rule
from .config import MixinConfig

__all__ = [
    "FEATURE_TEXT",
    "MODEL_TEXT",
    "PAGE",
    "SEGMENT_TEXT",
    "TICKET",
    "Rule",
    "across_restarts",
    "alert",
    "label",
]

PAGE = "page"  # maps to MixinConfig.severity_page
TICKET = "ticket"  # maps to MixinConfig.severity_ticket


def label(name: str) -> str:
    """The alert template of a label value."""
    return "{{ $labels." + name + " }}"


MODEL_TEXT = f"{label(n.LABEL_MODEL_NAME)} {label(n.LABEL_MODEL_VERSION)}"
FEATURE_TEXT = f"feature {label(n.LABEL_FEATURE)} of {MODEL_TEXT}"
SEGMENT_TEXT = f"segment {label(n.LABEL_SEGMENT_KEY)}={label(n.LABEL_SEGMENT)} of {MODEL_TEXT}"


def alert(name: str, expr: str, for_: str, level: str, summary: str, description: str, **labels: str) -> Rule:
    """One alerting rule at an abstract level, its ``for:`` checked at generation."""
    prometheus_duration(for_)  # a typo in a for: duration fails at generation, not in Prometheus
    return {
        "alert": name,
        "expr": expr.strip() + "\n",
        "for": for_,
        "labels": {"severity": level, **labels},
        "annotations": {"summary": summary, "description": description},
    }


def across_restarts(c: MixinConfig, rules: list[Rule]) -> list[Rule]:
    """Add ``keep_firing_for`` (right after ``for``) to alerts that read the sidecar's windows.

    A sidecar restart leaves their series stale for a scrape or two; without it a firing alert
    would resolve and restart its ``for:``.
    """
    if prometheus_duration(c.keep_firing_for) == 0:
        return rules
    out = []
    for rule in rules:
        copy: Rule = {}
        for key, value in rule.items():
            copy[key] = value
            if key == "for":
                copy["keep_firing_for"] = c.keep_firing_for
        out.append(copy)
    return out
