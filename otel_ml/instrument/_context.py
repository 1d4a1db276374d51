"""What the wrapped function can reach of the monitored call it runs in.

A context variable holds the call's :class:`CallState` (its request id and fallback reason), so
:func:`current_request_id` and :func:`mark_fallback` work from anywhere below the decorated
function, threads and tasks included when they copy the context. A second one holds the models
whose call is in progress, so a monitored call inside a monitored call of the same model and
version is not counted again (like OpenTelemetry's ``suppress_instrumentation``).
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from itertools import count

__all__ = ["ACTIVE", "CURRENT", "CallState", "current_request_id", "mark_fallback"]

_ids = count(1)
_ID_PREFIX = os.urandom(6).hex()  # request ids stay unique across processes and restarts


class CallState:
    """Per-call state reachable from inside the wrapped function (request id, fallback)."""

    __slots__ = ("_request_id", "fallback")

    def __init__(self, request_id: str | None = None) -> None:
        self._request_id = request_id
        self.fallback: str | None = None

    @property
    def request_id(self) -> str:
        """The id given by the ``request_id=`` callback, else a generated one (made on first use)."""
        if self._request_id is None:
            self._request_id = f"{_ID_PREFIX}-{next(_ids):x}"
        return self._request_id

    @request_id.setter
    def request_id(self, value: str) -> None:
        self._request_id = value


CURRENT: ContextVar[CallState | None] = ContextVar("otel_ml_call", default=None)
# (model, version) pairs whose monitored call is in progress in this context: nested calls of
# the same model (predict -> predict_proba, both decorated) are the caller's, not new predictions.
ACTIVE: ContextVar[frozenset[tuple[str, str]]] = ContextVar("otel_ml_active", default=frozenset())


def current_request_id() -> str | None:
    """The request id of the prediction being made, for returning it to the caller and
    posting the outcome (label) to the sidecar later. ``None`` outside a monitored call."""
    call = CURRENT.get()
    return None if call is None else call.request_id


def mark_fallback(reason: str = "fallback") -> None:
    """Mark the current monitored call as answered by a fallback (rules, cache, default).

    Counted in ``ml_prediction_fallbacks_total{ml_fallback_reason=...}`` and put on the span.
    Outside a monitored call this does nothing.
    """
    call = CURRENT.get()
    if call is not None:
        call.fallback = reason
