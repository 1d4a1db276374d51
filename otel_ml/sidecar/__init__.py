"""The sidecar exporter: rolling windows, drift and decision rates for Prometheus.

Names are imported on first use (PEP 562): the ``otel-ml`` command line imports this package
to register ``otel-ml sidecar``, and the state, statistics and HTTP server (scipy, starlette,
uvicorn) cost half a second that ``otel-ml drift --help`` must not pay.
"""

import typing

from .._lazy import lazy_names as _lazy_names

if typing.TYPE_CHECKING:
    from .._durations import parse_duration
    from ._app import Sidecar
    from ._config import ConfigError, ScrapeTarget, SidecarConfig
    from ._outputs import OutputSettings
    from ._persist import load_state, save_state
    from ._series import LimitSettings
    from ._server import HttpLimits
    from ._state import SidecarState, StateSettings
    from ._windows import WindowSpec

_LAZY = {
    "ConfigError": "._config",
    "HttpLimits": "._server",
    "LimitSettings": "._series",
    "OutputSettings": "._outputs",
    "ScrapeTarget": "._config",
    "Sidecar": "._app",
    "SidecarConfig": "._config",
    "SidecarState": "._state",
    "StateSettings": "._state",
    "WindowSpec": "._windows",
    "load_state": "._persist",
    "parse_duration": ".._durations",
    "save_state": "._persist",
}

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


__getattr__, __dir__ = _lazy_names(globals(), _LAZY)
