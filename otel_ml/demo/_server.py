"""A small model server for the demo and the end-to-end test: ``POST /predict`` and ``GET /metrics``.

It is what a user's service looks like with otel-ml: the predict function is wrapped with
``@monitor``, Prometheus (or the sidecar) scrapes ``/metrics`` from the app's own registry, and
spans go to whatever tracer provider the app configured. The model's candidate version, when it
has one, is scored in shadow on every request (its answer is never served).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from .._prices import Prices
from ..instrument import Capture, ModelMonitor, Review, Shadow, add_tokens, current_request_id, raw_request
from ._features import online_features
from ._model import SEGMENT, THRESHOLD, DemoModel

__all__ = ["EXPLAIN_LLM", "ModelServer"]

EXPLAIN_LLM = "demo-llm"  # the (simulated) LLM that writes an explanation for each flagged case
EXPLAIN_TOKENS = (120, 40)  # its input and output tokens per explanation
CAPTURE_RATE = 0.2  # the share of requests captured for skew replays (a real service: 0.01 or less)


class ModelServer:
    """Serves one model on 127.0.0.1; ``start()`` returns self, ``url`` is its base URL."""

    def __init__(
        self,
        model: DemoModel,
        *,
        registry: CollectorRegistry | None = None,
        tracer_provider: Any = None,
        port: int = 0,
        review_url: str | None = None,
        prices: Prices | None = None,
        capture_dir: Path | None = None,
    ) -> None:
        """``review_url`` (the sidecar) turns on review sampling; ``prices`` prices the calls;
        ``capture_dir`` captures a fifth of the requests for skew replays (raw body, served features)."""
        self.model = model
        self.registry = registry or CollectorRegistry()
        # Every request: v2's windows then hold what v1's do (the sidecar's simulated drift
        # critical values are shared); its worker keeps within max_load, a quarter of a CPU.
        shadow = (
            () if model.candidate is None else (Shadow(self._predict_candidate, baseline=model.candidate_baseline),)
        )
        self.monitor = ModelMonitor(
            baseline=model.baseline,
            segments=[SEGMENT],
            decision=THRESHOLD,
            score=lambda result: result["score"],
            tracer_provider=tracer_provider,
            registry=self.registry,
            shadow=shadow,
            prices=prices,
            cost_segment=None if prices is None else SEGMENT,
            # a tenth of the calls until the sidecar's rates arrive (then its quotas decide)
            review=None if review_url is None else Review(sidecar=review_url, rate=0.1, segment=SEGMENT),
            capture=None
            if capture_dir is None
            else Capture(capture_dir, rate=CAPTURE_RATE, file_seconds=5.0, tags={"pipeline": "demo-online/1"}),
        )
        self.predict = self.monitor(self._predict)
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    def _predict(self, features: dict[str, Any]) -> dict[str, Any]:
        score = float(self.model.score(pd.DataFrame([features]))[0])
        if score > THRESHOLD:  # a flagged case gets a written explanation: simulated, no LLM is called
            add_tokens(input=EXPLAIN_TOKENS[0], output=EXPLAIN_TOKENS[1], model=EXPLAIN_LLM)
        return {"score": score, "flagged": score > THRESHOLD, "request_id": current_request_id()}

    def _predict_candidate(self, features: dict[str, Any]) -> dict[str, Any]:
        return {"score": float(self.model.score_candidate(pd.DataFrame([features]))[0])}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> ModelServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), daemon=True, name="demo-model-server"
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.monitor.close()  # stops the shadow's worker too


def _handler(app: ModelServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stall

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self._send(404, b"not found\n", "text/plain")
                return
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._send(200, encoder(app.registry), content_type)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path != "/predict":
                self._send(404, b"not found\n", "text/plain")
                return
            try:
                row = json.loads(body)  # the raw request; the model is served what the online pipeline makes of it
                with raw_request(row):
                    result = app.predict(online_features(row))
            except Exception as exc:
                self._send(500, json.dumps({"error": type(exc).__name__}).encode(), "application/json")
                return
            self._send(200, json.dumps(result).encode(), "application/json")

    return Handler
