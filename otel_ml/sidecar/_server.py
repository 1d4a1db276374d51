"""HTTP endpoints of the sidecar: OTLP/HTTP ingest, labels, /metrics, /healthz, /readyz.

Standard library ``ThreadingHTTPServer``: one thread per connection, no framework. Every
ingest request is checked in order (auth, length, size limit, media type, decoding) before
the state is touched, and every rejection is a 4xx with a one-line reason, a log line without
payload content, and a count in ``ml_sidecar_ingest_errors_total{reason}``.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf.message import Message
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from .._version import __version__
from ._otlp_input import (
    JSON,
    PROTOBUF,
    IngestError,
    decode_body,
    decompress,
    metric_batches,
    predictions_from_traces,
)
from ._outcomes import parse_label_events
from ._state import SidecarState

__all__ = ["SidecarServer", "DEFAULT_MAX_BODY_BYTES"]

_log = logging.getLogger("otel_ml.sidecar")
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
_INDEX = (
    "otel-ml sidecar {version}\n\n"
    "GET  /metrics      drift, decision rates and coverage for Prometheus\n"
    "GET  /healthz      liveness\n"
    "GET  /readyz       readiness (baselines loaded, state restored)\n"
    "POST /v1/metrics   OTLP/HTTP metrics (protobuf or JSON, gzip)\n"
    "POST /v1/traces    OTLP/HTTP traces (ml.predict spans, for joining labels)\n"
    'POST /v1/labels    delayed labels: {{"request_id": ..., "label": ...}} or a list\n'
)


class _RateLimitedLog:
    """One log line per reason per minute: a flood of bad requests must not flood the logs."""

    def __init__(self, interval: float = 60.0) -> None:
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()
        self.interval = interval

    def warning(self, reason: str, message: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(reason, -self.interval) < self.interval:
                return
            self._last[reason] = now
        _log.warning("rejected input (%s): %s", reason, message)


class SidecarServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        state: SidecarState,
        registry: CollectorRegistry,
        *,
        token: str | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        super().__init__(address, _Handler)
        self.state = state
        self.registry = registry
        self.token = token
        self.max_body_bytes = max_body_bytes
        self.rejections = _RateLimitedLog()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _Handler(BaseHTTPRequestHandler):
    server: SidecarServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stall
    server_version = f"otel-ml-sidecar/{__version__}"

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s %s", self.address_string(), format % args)

    # -- responses --------------------------------------------------------------------------------
    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "text/plain; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _reject(self, error: IngestError, headers: dict[str, str] | None = None) -> None:
        self.server.state.count_error(error.reason)
        self.server.rejections.warning(error.reason, f"{self.command} {self.path}: {error}")
        media = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        message = f"{error.reason}: {error}"
        if media == PROTOBUF:
            from google.rpc import status_pb2

            body, ctype = status_pb2.Status(code=3, message=message).SerializeToString(), PROTOBUF
        elif media == JSON:
            body, ctype = json.dumps({"code": 3, "message": message}).encode(), JSON
        else:
            body, ctype = (message + "\n").encode(), "text/plain; charset=utf-8"
        self._send(error.status, body, ctype, headers)

    # -- GET --------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._send(200, encoder(self.server.registry), content_type)
        elif path == "/healthz":
            self._send(200, b"ok\n")
        elif path == "/readyz":
            ready = self.server.state.ready
            self._send(200 if ready else 503, b"ready\n" if ready else b"not ready\n")
        elif path == "/":
            self._send(200, _INDEX.format(version=__version__).encode())
        else:
            self._send(404, b"not found\n")

    do_HEAD = do_GET

    # -- POST -------------------------------------------------------------------------------------
    def do_POST(self) -> None:
        path = self.path.split("?")[0]
        handlers = {"/v1/metrics": self._metrics, "/v1/traces": self._traces, "/v1/labels": self._labels}
        handler = handlers.get(path)
        if handler is None:
            self._drain()
            self._send(404, b"not found: POST /v1/metrics, /v1/traces or /v1/labels\n")
            return
        try:
            self._authorize()
            body = self._body()
            handler(body)
        except IngestError as exc:
            extra = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            if exc.status in (401, 411, 413):
                self.close_connection = True  # the unread body must not be parsed as the next request
                extra = {**(extra or {}), "Connection": "close"}
            self._reject(exc, extra)
        except Exception:
            _log.exception("internal error on %s", path)
            self.server.state.count_error("internal_error")
            self._send(500, b"internal error\n")

    def _drain(self) -> None:
        length = self.headers.get("Content-Length")
        if length and length.isdigit() and int(length) <= self.server.max_body_bytes:
            self.rfile.read(int(length))
        else:
            self.close_connection = True

    def _authorize(self) -> None:
        token = self.server.token
        if not token:
            return
        given = self.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise IngestError(401, "unauthorized", "missing or wrong bearer token")

    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None:
            raise IngestError(411, "length_required", "Content-Length is required")
        if not length.isdigit():
            raise IngestError(400, "bad_request", "Content-Length is not a number")
        size = int(length)
        if size > self.server.max_body_bytes:
            raise IngestError(413, "too_large", f"body of {size} bytes exceeds the {self.server.max_body_bytes} limit")
        return self.rfile.read(size)

    def _decode(self, body: bytes, message: type[Message]) -> Message:
        return decode_body(
            body,
            self.headers.get("Content-Type", ""),
            self.headers.get("Content-Encoding", ""),
            message,
            self.server.max_body_bytes,
        )

    def _ok(self, response: Message) -> None:
        media = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if media == JSON:
            from google.protobuf import json_format

            self._send(200, json_format.MessageToJson(response).encode(), JSON)
        else:
            self._send(200, response.SerializeToString(), PROTOBUF)

    def _metrics(self, body: bytes) -> None:
        request = self._decode(body, ExportMetricsServiceRequest)
        batches, unlabelled = metric_batches(request)
        if unlabelled:
            self.server.state.count_error("missing_model_labels", unlabelled)
        result = self.server.state.apply_metrics(batches, "otlp")
        response = ExportMetricsServiceResponse()
        rejected = sum(result.rejected.values()) + unlabelled
        if rejected:
            response.partial_success.rejected_data_points = rejected
            response.partial_success.error_message = ", ".join(f"{k}={v}" for k, v in sorted(result.rejected.items()))
        self._ok(response)

    def _traces(self, body: bytes) -> None:
        request = self._decode(body, ExportTraceServiceRequest)
        self.server.state.add_predictions(predictions_from_traces(request))
        self._ok(ExportTraceServiceResponse())

    def _labels(self, body: bytes) -> None:
        media = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if media != JSON:
            raise IngestError(415, "unsupported_media_type", f"labels must be {JSON}")
        raw = decompress(body, self.headers.get("Content-Encoding", ""), self.server.max_body_bytes)
        events = parse_label_events(raw)
        joined, unmatched = self.server.state.apply_labels(events)
        self._send(200, json.dumps({"joined": joined, "unmatched": unmatched}).encode(), JSON)
