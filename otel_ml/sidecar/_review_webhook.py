"""Push review items to a webhook as they arrive: in seq order, at least once, kill -9 safe.

A background thread reads the pending items after its cursor, POSTs them as ``{"items": [...]}``
(the objects of ``GET /v1/review/queue``, each with ``seq`` and ``weight``) and moves the cursor,
persisted in the queue's own file, only after a 2xx answer. A crash between the answer and the
cursor's write sends that batch again: the receiver deduplicates by ``seq`` (or by model, version
and request id). Failures (connection errors, timeouts, any non-2xx) back off exponentially up to
``max_backoff`` and are counted; the batch is retried as it was, so order is kept.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from ._review_queue import ReviewQueue
from ._throttle import Throttle

__all__ = ["WebhookSettings", "ReviewWebhook"]

_log = logging.getLogger("otel_ml.sidecar")


@dataclass(frozen=True)
class WebhookSettings:
    url: str
    batch: int = 100
    timeout: float = 5.0
    interval: float = 1.0  # how often to look for new items when idle
    max_backoff: float = 60.0
    token: str | None = None  # sent as a bearer token, if the receiver wants one


class ReviewWebhook:
    """The sender; ``run(stop)`` in a thread until ``stop`` is set, or ``send_once()``."""

    def __init__(
        self, queue: ReviewQueue, settings: WebhookSettings, on_failure: Callable[[], None] | None = None
    ) -> None:
        """``on_failure`` is told of every failed delivery (the sidecar counts them on /metrics)."""
        self.queue = queue
        self.settings = settings
        self._on_failure = on_failure
        self.sent = 0
        self.failures = 0
        self._throttle = Throttle()

    def send_once(self) -> int:
        """POST the next batch after the cursor; returns how many items were delivered (0: none
        pending). Raises ``OSError`` (``urllib.error.URLError`` included) when delivery failed."""
        cursor = self.queue.webhook_cursor
        items = self.queue.pending_items(cursor, self.settings.batch)
        if not items:
            return 0
        headers = {"Content-Type": "application/json"}
        if self.settings.token:
            headers["Authorization"] = f"Bearer {self.settings.token}"
        body = json.dumps({"items": items}, allow_nan=False).encode()
        request = urllib.request.Request(self.settings.url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.settings.timeout) as response:
            response.read(1 << 16)
            if not 200 <= response.status < 300:  # urlopen raises for >= 400; 1xx/3xx end here
                raise OSError(f"webhook answered HTTP {response.status}")
        self.queue.set_webhook_cursor(items[-1]["seq"])
        self.sent += len(items)
        return len(items)

    def run(self, stop: threading.Event) -> None:
        backoff = 0.0
        while not stop.is_set():
            try:
                delivered = self.send_once()
            except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts, a bad URL
                self.failures += 1
                if self._on_failure is not None:
                    self._on_failure()
                backoff = min(self.settings.max_backoff, max(self.settings.interval, 2 * backoff))
                if self._throttle.allow("webhook"):
                    _log.warning("review webhook %s failed (%s); retrying in %gs", self.settings.url, exc, backoff)
                stop.wait(backoff)
                continue
            except Exception:  # never the end of the thread
                _log.exception("review webhook failed")
                stop.wait(self.settings.max_backoff)
                continue
            backoff = 0.0
            if delivered < self.settings.batch:
                stop.wait(self.settings.interval)
