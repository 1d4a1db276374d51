"""The sidecar exporter: rolling windows, drift and decision rates for Prometheus."""

from .._durations import parse_duration
from ._app import Sidecar
from ._config import ConfigError, ScrapeTarget, SidecarConfig
from ._outputs import OutputSettings
from ._persist import load_state, save_state
from ._series import LimitSettings
from ._server import HttpLimits
from ._state import SidecarState, StateSettings
from ._windows import WindowSpec

__all__ = [
    "ConfigError",
    "HttpLimits",
    "LimitSettings",
    "OutputSettings",
    "ScrapeTarget",
    "Sidecar",
    "SidecarConfig",
    "SidecarState",
    "StateSettings",
    "WindowSpec",
    "load_state",
    "parse_duration",
    "save_state",
]
