"""otel-ml: make production ML models observable with OpenTelemetry and Prometheus.

The public API is re-exported here from private implementation modules; each re-exported
object's ``__module__`` is rewritten so reprs and docs show ``otel_ml.X``.

Importing it stays cheap for the app (``bench/instrumentation.py`` measures it): what only the
OTLP export (the OTel metrics SDK) or fitting a baseline needs is imported on first use of the
name, through the module ``__getattr__`` (PEP 562).
"""

import typing

from ._lazy import lazy_names as _lazy_names
from ._prices import PriceError, Prices, TokenPrice
from ._version import __version__ as __version__
from .baseline import Baseline, BaselineError
from .instrument import (
    Capture,
    ModelMonitor,
    Observation,
    PredictionCapture,
    PredictionExportError,
    Review,
    Shadow,
    add_cost,
    add_tokens,
    capture_prediction,
    current_prediction_token,
    current_request_id,
    export_predictions,
    mark_fallback,
    monitor,
    raw_request,
    start_http_server,
)

if typing.TYPE_CHECKING:
    from .baseline import fit_baseline
    from .instrument import OtlpMetricsPusher, start_otlp_exporter

_LAZY = {
    "OtlpMetricsPusher": "otel_ml.instrument._otlp",
    "fit_baseline": "otel_ml.baseline._fit",
    "start_otlp_exporter": "otel_ml.instrument._otlp",
}

__all__ = [
    "Baseline",
    "BaselineError",
    "Capture",
    "ModelMonitor",
    "Observation",
    "OtlpMetricsPusher",
    "PredictionCapture",
    "PredictionExportError",
    "PriceError",
    "Prices",
    "Review",
    "Shadow",
    "TokenPrice",
    "add_cost",
    "add_tokens",
    "capture_prediction",
    "current_prediction_token",
    "current_request_id",
    "export_predictions",
    "fit_baseline",
    "mark_fallback",
    "monitor",
    "raw_request",
    "start_http_server",
    "start_otlp_exporter",
]

for _name in __all__:
    if _name not in _LAZY:
        globals()[_name].__module__ = "otel_ml"
del _name


__getattr__, __dir__ = _lazy_names(globals(), _LAZY, rename=True)
