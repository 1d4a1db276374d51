"""HTTP endpoints of the sidecar: OTLP/HTTP ingest, labels, review, /metrics, /healthz, /readyz.

A starlette application served by uvicorn (:mod:`._listener`). The event loop only moves
bytes: decoding, applying and rendering the exposition run in worker threads, so a large
payload or a scrape never stops ``/healthz`` from answering. Every ingest request is checked
in order (auth, length, size limit, complete body, media type, decoding) before the state is
touched, and every rejection is a 4xx with a one-line reason, a log line without payload
content, and a count in ``ml_sidecar_ingest_errors_total{reason}``.

With ``metrics_address`` a second listener serves only ``GET /metrics``, ``/healthz`` and
``/readyz`` (for the pod IP), while the main one (loopback) also takes ingest and serves the
review queue and rates (``GET /v1/review/...``, behind the ingest token: they hold request ids).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from .._version import __version__
from ._collector import Exposition
from ._ingest import handle_labels, handle_metrics, handle_predictions, handle_traces
from ._listener import Listeners, bind
from ._otlp_input import JSON, PROTOBUF
from ._review_http import handle_review_items, handle_review_queue, handle_review_rates
from ._series import IngestError
from ._state import SidecarState
from ._throttle import Throttle

__all__ = ["SidecarServer", "HttpLimits"]

_log = logging.getLogger("otel_ml.sidecar")
_errors = logging.getLogger("otel_ml.sidecar.http")  # rate-limited (see _listener)
_TEXT = "text/plain; charset=utf-8"
_INDEX = (
    "otel-ml sidecar {version}\n\n"
    "GET  /metrics      drift, decision rates and coverage for Prometheus (gzip if accepted)\n"
    "GET  /healthz      liveness\n"
    "GET  /readyz       readiness (baselines loaded, state restored and writable), with warnings\n"
    "POST /v1/metrics   OTLP/HTTP metrics (protobuf or JSON, gzip)\n"
    "POST /v1/traces    OTLP/HTTP traces (ml.predict spans, for joining labels)\n"
    'POST /v1/labels    delayed labels: {{"request_id": ..., "label": ...}} (or "token": ...), or a list\n'
    'POST /v1/predictions  batch predictions: {{"model", "version", "request_ids": [...], "scores": [...]}}\n'
    'POST /v1/review/items items sampled for human review: {{"items": [...]}}\n'
    "GET  /v1/review/queue pending review items: ?cursor=<seq>&limit=<n<=1000>&model=&version=\n"
    "GET  /v1/review/rates inclusion probabilities for the app's review sampler: ?model=&version=\n"
)
Readiness = Callable[[], tuple[bool, list[str]]]


@dataclass(frozen=True)
class HttpLimits:
    """What one request may cost: its body size, and the time to send its headers, then its body."""

    max_body_bytes: int = 8 * 1024 * 1024
    read_timeout: float = 10.0


class _RateLimitedLog:
    """One log line per reason per minute: a flood of bad requests must not flood the logs."""

    def __init__(self, interval: float = 60.0) -> None:
        self._throttle = Throttle(interval)

    def warning(self, reason: str, message: str) -> None:
        if self._throttle.allow(reason):
            _log.warning("rejected input (%s): %s", reason, message)


def _media(request: Request) -> str:
    return (request.headers.get("content-type") or "").split(";")[0].strip().lower()


class SidecarServer:
    """The listeners and the ASGI applications behind them; ``start()``, then ``stop()``."""

    def __init__(
        self,
        address: tuple[str, int],
        state: SidecarState,
        exposition: Exposition,
        *,
        token: str | None = None,
        limits: HttpLimits = HttpLimits(),
        metrics_address: tuple[str, int] | None = None,
        readiness: Readiness | None = None,
    ) -> None:
        self.state = state
        self.exposition = exposition
        self.token = token
        self.max_body_bytes = limits.max_body_bytes
        self.read_timeout = limits.read_timeout
        self.readiness: Readiness = readiness or (lambda: (state.ready, []))
        self.rejections = _RateLimitedLog()
        self._inflight = 0  # body bytes being read or decoded; only touched on the event loop
        self._limiters: dict[str, anyio.CapacityLimiter] = {}
        sockets = [bind(address)]
        if metrics_address is not None:
            sockets.append(bind(metrics_address))
        self.addresses = [s.getsockname()[:2] for s in sockets]
        apps = [(sockets[0], self._app(ingest=True))]
        if metrics_address is not None:
            apps.append((sockets[1], self._app(ingest=False)))
        self._listeners = Listeners(apps, read_timeout=limits.read_timeout, on_error=state.count_error)

    @property
    def url(self) -> str:
        return self._url(0)

    @property
    def metrics_url(self) -> str:
        """The metrics-only listener's URL (the main one when there is none)."""
        return self._url(len(self.addresses) - 1)

    def _url(self, i: int) -> str:
        host, port = self.addresses[i]
        return f"http://[{host}]:{port}" if ":" in str(host) else f"http://{host}:{port}"

    def start(self) -> SidecarServer:
        self._listeners.start()
        return self

    def stop(self) -> None:
        self._listeners.stop()

    # -- applications -------------------------------------------------------------------------
    def _app(self, *, ingest: bool) -> Starlette:
        routes = [
            Route("/metrics", self._metrics_endpoint, methods=["GET"]),
            Route("/healthz", self._healthz, methods=["GET"]),
            Route("/readyz", self._readyz, methods=["GET"]),
        ]
        if ingest:
            routes += [
                Route("/", self._index, methods=["GET"]),
                Route("/v1/metrics", self._ingest(handle_metrics), methods=["POST"]),
                Route("/v1/traces", self._ingest(handle_traces), methods=["POST"]),
                Route("/v1/labels", self._ingest(handle_labels), methods=["POST"]),
                Route("/v1/predictions", self._ingest(handle_predictions), methods=["POST"]),
                Route("/v1/review/items", self._ingest(handle_review_items), methods=["POST"]),
                # request ids (and features when configured): the ingest listener and its token only
                Route("/v1/review/queue", self._query(handle_review_queue), methods=["GET"]),
                Route("/v1/review/rates", self._query(handle_review_rates), methods=["GET"]),
            ]
        return Starlette(routes=routes, exception_handlers={404: self._not_found})

    def _limiter(self, name: str, tokens: int) -> anyio.CapacityLimiter:
        limiter = self._limiters.get(name)
        if limiter is None:  # created on the event loop, on first use
            limiter = self._limiters[name] = anyio.CapacityLimiter(tokens)
        return limiter

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        if request.method == "POST":
            return Response(
                "not found: POST /v1/metrics, /v1/traces, /v1/labels, /v1/predictions or /v1/review/items\n",
                404,
                media_type=_TEXT,
            )
        return Response("not found\n", 404, media_type=_TEXT)

    async def _index(self, request: Request) -> Response:
        return Response(_INDEX.format(version=__version__), media_type=_TEXT)

    async def _healthz(self, request: Request) -> Response:
        return Response("ok\n", media_type=_TEXT)

    async def _readyz(self, request: Request) -> Response:
        ready, notes = self.readiness()
        text = "ready\n" if ready else "not ready\n"
        return Response(text + "".join(f"{line}\n" for line in notes), 200 if ready else 503, media_type=_TEXT)

    async def _metrics_endpoint(self, request: Request) -> Response:
        accept = request.headers.get("accept", "")
        gzip_ok = "gzip" in request.headers.get("accept-encoding", "").lower()
        body, content_type, gzipped = await anyio.to_thread.run_sync(
            self.exposition.render, accept, gzip_ok, limiter=self._limiter("scrape", 2)
        )
        headers = {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"} if gzipped else {"Vary": "Accept-Encoding"}
        return Response(body, media_type=content_type, headers=headers)

    # -- ingest -------------------------------------------------------------------------------
    def _ingest(self, handler: Callable[..., tuple[int, bytes, str]]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            async def work() -> tuple[int, bytes, str]:
                body = await self._body(request)
                try:
                    return await anyio.to_thread.run_sync(
                        handler,
                        self.state,
                        self.max_body_bytes,
                        body,
                        dict(request.headers),
                        limiter=self._limiter("ingest", 4),
                    )
                finally:
                    self._inflight -= len(body)

            return await self._answer(request, work)

        return endpoint

    def _query(self, handler: Callable[..., tuple[int, bytes, str]]) -> Callable[[Request], Any]:
        """A GET endpoint behind the ingest token; its work runs in a worker thread."""

        async def endpoint(request: Request) -> Response:
            async def work() -> tuple[int, bytes, str]:
                params = dict(request.query_params)
                if len(request.query_params.multi_items()) != len(params):
                    raise IngestError(400, "bad_review_query", "a query parameter is given twice")
                return await anyio.to_thread.run_sync(handler, self.state, params, limiter=self._limiter("ingest", 4))

            return await self._answer(request, work)

        return endpoint

    async def _answer(self, request: Request, work: Callable[[], Awaitable[tuple[int, bytes, str]]]) -> Response:
        """Authorize, run an endpoint's work, and answer: a rejection is its 4xx with a counter, any
        other failure a counted 500 (logged, never the payload)."""
        try:
            self._authorize(request)
            status, payload, content_type = await work()
            return Response(payload, status, media_type=content_type)
        except IngestError as exc:
            return self._reject(request, exc)
        except Exception:
            _errors.exception("internal error on %s", request.url.path)
            self.state.count_error("internal_error")
            return Response("internal error\n", 500, media_type=_TEXT)

    def _authorize(self, request: Request) -> None:
        if not self.token:
            return
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        matches = hmac.compare_digest(credentials.strip().encode(), self.token.encode())
        if scheme.lower() != "bearer" or not matches:  # the scheme is case-insensitive (RFC 9110)
            raise IngestError(401, "unauthorized", "missing or wrong bearer token")

    async def _body(self, request: Request) -> bytes:
        """The whole body, within the size limit, the in-flight budget and the read deadline."""
        length = request.headers.get("content-length")
        if length is None:
            raise IngestError(411, "length_required", "Content-Length is required")
        if not length.isdigit():
            raise IngestError(400, "bad_request", "Content-Length is not a number")
        size = int(length)
        if size > self.max_body_bytes:
            raise IngestError(413, "too_large", f"body of {size} bytes exceeds the {self.max_body_bytes} limit")
        received = bytearray()
        try:
            async with asyncio.timeout(self.read_timeout):
                async for chunk in request.stream():
                    received += chunk
                    self._inflight += len(chunk)
                    if self._inflight > 4 * self.max_body_bytes:  # bytes held, not bytes announced
                        raise IngestError(503, "overloaded", "too many request bodies in flight: retry later")
        except (TimeoutError, ClientDisconnect):
            pass
        except BaseException:
            self._inflight -= len(received)
            raise
        if len(received) < size:
            self._inflight -= len(received)
            raise IngestError(
                400, "incomplete_body", f"body ended after {len(received)} of {size} bytes (Content-Length)"
            )
        return bytes(received)

    def _reject(self, request: Request, error: IngestError) -> Response:
        self.state.count_error(error.reason)
        self.rejections.warning(error.reason, f"{request.method} {request.url.path}: {error}")
        message = f"{error.reason}: {error}"
        media = _media(request)
        if media == PROTOBUF:
            from google.rpc import status_pb2

            body, content_type = status_pb2.Status(code=3, message=message).SerializeToString(), PROTOBUF
        elif media == JSON:
            body, content_type = json.dumps({"code": 3, "message": message}).encode(), JSON
        else:
            body, content_type = (message + "\n").encode(), _TEXT
        headers: dict[str, str] = {}
        if error.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        if error.status == 503:
            headers["Retry-After"] = "1"
        if error.status in (401, 411, 413, 503) or error.reason == "incomplete_body":
            headers["Connection"] = "close"  # the unread body must not be parsed as the next request
        return Response(body, error.status, media_type=content_type, headers=headers)
