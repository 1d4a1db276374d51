"""otel-ml: make production ML models observable with OpenTelemetry and Prometheus.

The public API is re-exported here; implementation modules are private.
"""

from ._version import __version__
from .baseline import Baseline, BaselineError, fit_baseline
from .instrument import (
    ModelMonitor,
    current_request_id,
    mark_fallback,
    monitor,
    start_http_server,
)

__all__ = [
    "Baseline",
    "BaselineError",
    "ModelMonitor",
    "__version__",
    "current_request_id",
    "fit_baseline",
    "mark_fallback",
    "monitor",
    "start_http_server",
]
