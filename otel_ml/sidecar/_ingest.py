"""What the ingest endpoints do with a complete body, in a worker thread off the event loop.

Each handler decodes the whole body first (raising :class:`IngestError` on anything wrong),
then applies it to the state in one step, and returns ``(status, body, content type)``.
``limit`` is the largest body accepted after decompression (the request size limit).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from google.protobuf.message import Message
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from ._label_input import parse_label_events, parse_predictions
from ._otlp_input import (
    JSON,
    PROTOBUF,
    app_gauge_points,
    decode_body,
    decompress,
    metric_batches,
    predictions_from_traces,
)
from ._series import IngestError
from ._state import SidecarState

__all__ = ["handle_metrics", "handle_traces", "handle_labels", "handle_predictions"]

Reply = tuple[int, bytes, str]


def _media(headers: Mapping[str, str]) -> str:
    return (headers.get("content-type") or "").split(";")[0].strip().lower()


def _decode(body: bytes, headers: Mapping[str, str], message: type[Message], limit: int) -> Message:
    return decode_body(body, headers.get("content-type", ""), headers.get("content-encoding", ""), message, limit)


def _ok(headers: Mapping[str, str], response: Message) -> Reply:
    if _media(headers) == JSON:
        from google.protobuf import json_format

        return 200, json_format.MessageToJson(response).encode(), JSON
    return 200, response.SerializeToString(), PROTOBUF


def handle_metrics(state: SidecarState, limit: int, body: bytes, headers: Mapping[str, str]) -> Reply:
    request = _decode(body, headers, ExportMetricsServiceRequest, limit)
    batches, unlabelled = metric_batches(request)
    if unlabelled:
        state.count_error("missing_model_labels", unlabelled)
    result = state.apply_metrics(batches, "otlp")
    state.apply_app_gauges(app_gauge_points(request))
    response = ExportMetricsServiceResponse()
    rejected = sum(result.rejected.values()) + unlabelled
    if rejected:
        response.partial_success.rejected_data_points = rejected
        response.partial_success.error_message = ", ".join(f"{k}={v}" for k, v in sorted(result.rejected.items()))
    return _ok(headers, response)


def handle_traces(state: SidecarState, limit: int, body: bytes, headers: Mapping[str, str]) -> Reply:
    request = _decode(body, headers, ExportTraceServiceRequest, limit)
    state.add_predictions(predictions_from_traces(request))
    return _ok(headers, ExportTraceServiceResponse())


def _json_body(body: bytes, headers: Mapping[str, str], limit: int, what: str) -> bytes:
    if _media(headers) != JSON:
        raise IngestError(415, "unsupported_media_type", f"{what} must be {JSON}")
    return decompress(body, headers.get("content-encoding", ""), limit)


def handle_labels(state: SidecarState, limit: int, body: bytes, headers: Mapping[str, str]) -> Reply:
    """Labels are logged durably before the 200 goes out: an acknowledged label is never lost."""
    events = parse_label_events(_json_body(body, headers, limit, "labels"))
    joined, unmatched = state.apply_labels(events)
    return 200, json.dumps({"joined": joined, "unmatched": unmatched}).encode(), JSON


def handle_predictions(state: SidecarState, limit: int, body: bytes, headers: Mapping[str, str]) -> Reply:
    """The batch path: columns of request ids and scores from a batch-scoring job, stored for the join."""
    rows = parse_predictions(
        _json_body(body, headers, limit, "predictions"), state.settings.limits.max_predictions_per_request
    )
    stored = state.add_predictions(rows, source="predictions")
    return 200, json.dumps({"received": len(rows), "stored": stored}).encode(), JSON
