"""Small PromQL builders and recording-rule names shared by the alert and recording rules.

They exist so that selectors, label lists, numbers and recorded series are spelled one way
everywhere: a selector merges the user's matcher (``MixinConfig.app_selector`` /
``sidecar_selector``) with the rule's own, every ``by``/``on`` list carries
``MixinConfig.aggregation_labels``, and an alert reads a recording by the same function that
names it.
"""

from __future__ import annotations

from typing import Any

from .. import _binning
from .. import _names as n
from .config import MixinConfig

__all__ = [
    "DECISION",
    "FEATURE",
    "MODEL",
    "PSI_EPSILON",
    "Rule",
    "SEGMENT",
    "app",
    "labels",
    "latency_burn_rate_record",
    "le_value",
    "num",
    "ratio_record",
    "record",
    "selector",
    "short",
    "sidecar",
    "skew",
]

Rule = dict[str, Any]  # one rule as it is written to YAML

MODEL: tuple[str, ...] = (n.LABEL_MODEL_NAME, n.LABEL_MODEL_VERSION)
FEATURE: tuple[str, ...] = (*MODEL, n.LABEL_FEATURE)
SEGMENT: tuple[str, ...] = (*MODEL, n.LABEL_SEGMENT_KEY, n.LABEL_SEGMENT)
DECISION: tuple[str, ...] = (*SEGMENT, n.LABEL_DECISION)


def record(name: str, expr: str, **labels: str) -> Rule:
    """A recording rule; ``labels`` are added to the series it records."""
    rule: Rule = {"record": name, "expr": expr.strip() + "\n"}
    if labels:
        rule["labels"] = labels
    return rule


# Smoothing of empty bins in PSI: the very floor the sidecar's numpy PSI uses.
PSI_EPSILON = repr(_binning.PSI_EPSILON)


def selector(base: str, *matchers: str) -> str:
    """``{base, matchers...}``, or the empty string when there is nothing to match."""
    parts = [m for m in (base.strip(), *matchers) if m]
    return "{" + ", ".join(parts) + "}" if parts else ""


def app(config: MixinConfig, *matchers: str) -> str:
    """Selector for series the instrumented apps export (scraped directly or via the sidecar)."""
    return selector(config.app_selector, *matchers)


def sidecar(config: MixinConfig, *matchers: str) -> str:
    """Selector for the sidecar's own outputs."""
    return selector(config.sidecar_selector, *matchers)


def skew(config: MixinConfig, *matchers: str) -> str:
    """Selector for the series ``otel-ml skew replay`` pushes to a Pushgateway (its last replay)."""
    return selector(config.skew_selector, *matchers)


def labels(config: MixinConfig, *names: str) -> str:
    """A ``by``/``on`` label list, with the configured aggregation labels appended."""
    return ", ".join(dict.fromkeys((*names, *config.aggregation_labels)))


def num(value: float) -> str:
    """A number as PromQL and annotations should show it: 0.01, not 0.010000000000000009."""
    return format(value, ".10g")


def le_value(bound: float) -> str:
    """The ``le`` label of a bucket bound exactly as the app exposes it (prometheus_client)."""
    from prometheus_client.utils import floatToGoString

    return str(floatToGoString(bound))  # type: ignore[no-untyped-call]


def short(name: str) -> str:
    """A metric name inside a recording rule name, where the ``ml:`` prefix already says "ml"."""
    return name.removeprefix("ml_")


def ratio_record(family: str, window: str) -> str:
    """Name of the recorded share of calls counted by ``family`` (errors, fallbacks)."""
    return f"ml:{short(family)}:ratio_rate{window}"


def latency_burn_rate_record(window: str) -> str:
    """Name of the recorded latency-SLO burn rate over ``window``."""
    return f"ml:prediction_latency_slo:burnrate{window}"
