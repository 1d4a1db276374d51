"""In-process instrumentation: the ``@monitor`` decorator and its exposition paths.

The OTLP path (``_otlp``: the OTel metrics SDK) is imported on first use of its names.
"""

import typing

from .._lazy import lazy_names as _lazy_names
from ._capture import Capture, raw_request
from ._context import add_cost, add_tokens
from ._counters import ModelCounters
from ._export import PredictionExportError, export_predictions
from ._monitor import (
    ModelMonitor,
    Observation,
    PredictionCapture,
    Shadow,
    capture_prediction,
    current_prediction_token,
    current_request_id,
    mark_fallback,
    monitor,
)
from ._multiproc import MULTIPROC_DIR_ENV, multiproc_dir, set_multiproc_dir
from ._prometheus import (
    CountersCollector,
    collector_for,
    counts_families,
    make_asgi_app,
    make_wsgi_app,
    start_http_server,
)
from ._review import Review
from ._snapshot import CountsSnapshot

if typing.TYPE_CHECKING:
    from ._otlp import OtlpMetricsPusher, counts_metrics_data, start_otlp_exporter

_LAZY = dict.fromkeys(("OtlpMetricsPusher", "counts_metrics_data", "start_otlp_exporter"), "._otlp")

__all__ = [
    "MULTIPROC_DIR_ENV",
    "Capture",
    "CountersCollector",
    "CountsSnapshot",
    "ModelCounters",
    "ModelMonitor",
    "Observation",
    "OtlpMetricsPusher",
    "PredictionCapture",
    "PredictionExportError",
    "Review",
    "Shadow",
    "add_cost",
    "add_tokens",
    "capture_prediction",
    "collector_for",
    "counts_families",
    "counts_metrics_data",
    "current_prediction_token",
    "current_request_id",
    "export_predictions",
    "make_asgi_app",
    "make_wsgi_app",
    "mark_fallback",
    "monitor",
    "multiproc_dir",
    "raw_request",
    "set_multiproc_dir",
    "start_http_server",
    "start_otlp_exporter",
]


__getattr__, __dir__ = _lazy_names(globals(), _LAZY)  # the app that only serves /metrics never needs the SDK
