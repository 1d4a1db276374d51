"""The sidecar's decisions: and drift: settings reach the verdicts, with clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from otel_ml.drift import DecisionSettings
from otel_ml.sidecar import OutputSettings
from otel_ml.sidecar._config import ConfigError, SidecarConfig

SHIPPED = Path(__file__).resolve().parents[1] / "exporters" / "sidecar.yaml"


def config(**sections: Any) -> SidecarConfig:
    return SidecarConfig.from_mapping({"models": [{"baseline": "m.json"}], **sections})


def test_defaults_split_one_percent_between_drift_and_decisions() -> None:
    c = config()
    outputs = c.state_settings().outputs
    assert outputs.alpha + outputs.decisions.alpha <= 0.01
    assert outputs.multiplicity == "holm" and outputs.decisions == DecisionSettings()


def test_the_shipped_file_states_the_defaults() -> None:
    data = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    d = DecisionSettings()
    assert data["decisions"] == {
        "alpha": d.alpha,
        "min_relative_change": d.min_relative_change,
        "min_absolute_change": d.min_absolute_change,
        "min_count": d.min_count,
        "multiplicity": d.multiplicity,
    }
    assert data["drift"]["alpha"] == OutputSettings.alpha and data["drift"]["multiplicity"] == "holm"


def test_settings_reach_the_outputs() -> None:
    c = config(
        decisions={"alpha": 0.001, "min_relative_change": 0.2, "min_count": 500, "multiplicity": "per_series"},
        drift={"alpha": 0.01, "multiplicity": "per_series"},
    )
    outputs = c.state_settings().outputs
    assert outputs.decisions == DecisionSettings(
        alpha=0.001, min_relative_change=0.2, min_count=500, multiplicity="per_series"
    )
    assert outputs.alpha == 0.01 and outputs.multiplicity == "per_series"


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"decisions": {"alpha": 2}}, "decisions.alpha"),
        ({"decisions": {"multiplicity": "none"}}, "decisions.multiplicity"),
        ({"decisions": {"min_count": 0}}, "min_count"),
        ({"decisions": {"threshold": 0.3}}, r"decisions: unknown settings \['threshold'\]"),
        ({"drift": {"multiplicity": "sidak"}}, "drift.multiplicity"),
        ({"drift": {"alpha": 0}}, "drift.alpha"),
    ],
)
def test_bad_settings_are_config_errors(sections: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config(**sections)
