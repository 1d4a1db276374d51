"""otel-ml: make production ML models observable with OpenTelemetry and Prometheus.

The public API is re-exported here from private implementation modules; each re-exported
object's ``__module__`` is rewritten so reprs and docs show ``otel_ml.X``.
"""

from ._version import __version__ as __version__
from .baseline import Baseline, BaselineError, fit_baseline
from .instrument import (
    ModelMonitor,
    Observation,
    OtlpMetricsPusher,
    PredictionCapture,
    PredictionExportError,
    Shadow,
    capture_prediction,
    current_prediction_token,
    current_request_id,
    export_predictions,
    mark_fallback,
    monitor,
    start_http_server,
    start_otlp_exporter,
)

__all__ = [
    "Baseline",
    "BaselineError",
    "ModelMonitor",
    "Observation",
    "OtlpMetricsPusher",
    "PredictionCapture",
    "PredictionExportError",
    "Shadow",
    "capture_prediction",
    "current_prediction_token",
    "current_request_id",
    "export_predictions",
    "fit_baseline",
    "mark_fallback",
    "monitor",
    "start_http_server",
    "start_otlp_exporter",
]

for _name in __all__:
    globals()[_name].__module__ = "otel_ml"
del _name
