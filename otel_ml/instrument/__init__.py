"""In-process instrumentation: the ``@monitor`` decorator and its exposition paths."""

from ._counters import CountsSnapshot, ModelCounters
from ._monitor import ModelMonitor, Observation, current_request_id, mark_fallback, monitor
from ._prometheus import MonitorCollector, collector_for, counts_families, start_http_server

__all__ = [
    "CountsSnapshot",
    "ModelCounters",
    "ModelMonitor",
    "MonitorCollector",
    "Observation",
    "collector_for",
    "counts_families",
    "current_request_id",
    "mark_fallback",
    "monitor",
    "start_http_server",
]
