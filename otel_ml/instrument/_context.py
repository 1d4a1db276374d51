"""What the wrapped function can reach of the monitored call it runs in.

A context variable holds the call's :class:`CallState` (its request id, fallback reason and
prediction token), so :func:`current_request_id`, :func:`current_prediction_token` and
:func:`mark_fallback` work from anywhere below the decorated function, threads and tasks
included when they copy the context. A second one holds the models whose call is in progress,
so a monitored call inside a monitored call of the same model and version is not counted again
(like OpenTelemetry's ``suppress_instrumentation``). A third one, set by
:func:`capture_prediction`, hands the request id and token of a call back to its caller.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from itertools import count
from typing import Any

from .._names import BASIS_BILLED
from ._usage import CallUsage

__all__ = [
    "ACTIVE",
    "CAPTURED",
    "CURRENT",
    "CallState",
    "CapturedRow",
    "PredictionCapture",
    "add_cost",
    "add_tokens",
    "capture_prediction",
    "current_prediction_token",
    "current_request_id",
    "mark_fallback",
]

_ids = count(1)
_ID_PREFIX = os.urandom(6).hex()  # request ids stay unique across processes and restarts


def _new_prefix_after_fork() -> None:
    """A forked worker (gunicorn --preload, multiprocessing fork) draws its own prefix: else every
    worker would make the parent's ids, and review and label joins would mix their predictions."""
    global _ID_PREFIX
    _ID_PREFIX = os.urandom(6).hex()


os.register_at_fork(after_in_child=_new_prefix_after_fork)


# one sampled row of a call for the skew capture: its id, row index (-1: a single row), raw, features, segments
CapturedRow = tuple[str, int, Any, dict[str, Any], dict[str, str | None]]


class CallState:
    """Per-call state reachable from inside the wrapped function (request id, fallback, token)."""

    __slots__ = ("_request_id", "capture", "fallback", "nested_cpu", "review_pi", "token", "usage")

    def __init__(self, request_id: str | None = None) -> None:
        self._request_id = request_id
        self.fallback: str | None = None
        self.token: str | None = None  # set only by monitors that mint tokens
        self.usage: CallUsage | None = None  # costs and tokens reported inside the call
        self.review_pi: float | None = None  # review sampling: pi if selected, 0.0 if not, None: not sampled
        self.nested_cpu = 0  # CPU time of monitored calls of other models inside this one (billed to them)
        self.capture: list[CapturedRow] | None = None  # the skew capture's rows, copied at the start

    def reported(self) -> CallUsage:
        if self.usage is None:
            self.usage = CallUsage()
        return self.usage

    def prediction_token(self, score: float | None) -> str | None:
        """The call's token (a monitor without a token key has none)."""
        return self.token

    @property
    def request_id(self) -> str:
        """The id given by the ``request_id=`` callback, else a generated one (made on first use)."""
        if self._request_id is None:
            self._request_id = f"{_ID_PREFIX}-{next(_ids):x}"  # the module global: new in a forked child
        return self._request_id

    @request_id.setter
    def request_id(self, value: str) -> None:
        self._request_id = value


CURRENT: ContextVar[CallState | None] = ContextVar("otel_ml_call", default=None)
# (model, version) pairs whose monitored call is in progress in this context: nested calls of
# the same model (predict -> predict_proba, both decorated) are the caller's, not new predictions.
ACTIVE: ContextVar[frozenset[tuple[str, str]]] = ContextVar("otel_ml_active", default=frozenset())


class PredictionCapture:
    """What :func:`capture_prediction` hands back: the last monitored call that returned in its block."""

    __slots__ = ("request_id", "token")

    def __init__(self) -> None:
        self.request_id: str | None = None
        self.token: str | None = None

    def __repr__(self) -> str:
        return f"PredictionCapture(request_id={self.request_id!r}, token={self.token!r})"


CAPTURED: ContextVar[PredictionCapture | None] = ContextVar("otel_ml_capture", default=None)


@contextmanager
def capture_prediction() -> Iterator[PredictionCapture]:
    """Read a monitored call's request id and token after it returned, outside the function::

        with otel_ml.capture_prediction() as p:
            score = predict(row)
        return {"score": score, "token": p.token, "request_id": p.request_id}

    The last monitored call that returns inside the block fills it (a call that raised does
    not); ``token`` stays ``None`` unless the monitor mints tokens and the call was one row.
    """
    capture = PredictionCapture()
    reset = CAPTURED.set(capture)
    try:
        yield capture
    finally:
        CAPTURED.reset(reset)


def current_request_id() -> str | None:
    """The request id of the prediction being made, for returning it to the caller and
    posting the outcome (label) to the sidecar later. ``None`` outside a monitored call."""
    call = CURRENT.get()
    return None if call is None else call.request_id


def current_prediction_token(score: float | None = None) -> str | None:
    """The prediction token of the call being made, to return to the caller with the score.

    A token is the signed prediction (score, decision, segments, request id) the label
    producer posts back with the outcome to any sidecar. The score is known only once the
    function has it, so pass it: ``return {"score": s, "token": current_prediction_token(s)}``;
    the call's span and :func:`capture_prediction` carry the same token when the function
    returns that score. Without ``score``, the token already made in this call. ``None``
    outside a monitored call, for a monitor without a token key, or for a batch.
    """
    call = CURRENT.get()
    return None if call is None else call.prediction_token(score)


def mark_fallback(reason: str = "fallback") -> None:
    """Mark the current monitored call as answered by a fallback (rules, cache, default).

    Counted in ``ml_prediction_fallbacks_total{ml_fallback_reason=...}`` and put on the span.
    Outside a monitored call this does nothing.
    """
    call = CURRENT.get()
    if call is not None:
        call.fallback = reason


def add_cost(usd: float, *, basis: str = BASIS_BILLED) -> None:
    """Add what the current monitored call cost outside this process (a paid API, a vendor model).

    Counted in ``ml_cost_usd_total{ml_cost_source="api", ml_cost_basis=basis}`` on the call's model,
    version (and cost segment), and put on its span as ``ml.cost.usd``. ``basis`` says how the
    amount was arrived at: ``"billed"`` (the vendor's own figure for this call, the default) or
    ``"configured_rate"`` (your price times usage); bases are never summed. Several calls add up.
    Outside a monitored call this does nothing (use :meth:`ModelMonitor.add_cost` there); a
    negative, non-finite or absurd amount (over $1M) is not counted but counted as an
    instrumentation error (``invalid_usage``), and the call is unaffected.
    """
    call = CURRENT.get()
    if call is not None:
        try:
            call.reported().add_cost(usd, basis)
        except Exception:  # never into the app: the call's report is marked invalid instead
            call.reported().invalid = "add_cost() failed on its arguments"


def add_tokens(input: int = 0, output: int = 0, *, model: str | None = None) -> None:
    """Add the tokens the current monitored call used with an LLM (OTel GenAI's input/output).

    Counted in ``ml_tokens_total{gen_ai_token_type}`` and, priced with the monitor's price table
    entry for ``model`` (the LLM's name, OTel's ``gen_ai.request.model``; ``"*"`` prices any
    other), in ``ml_cost_usd_total{ml_cost_source="tokens", ml_cost_basis="configured_rate"}``.
    On the span as ``gen_ai.usage.input_tokens`` and ``gen_ai.usage.output_tokens``. Tokens the
    table has no price for are counted, not priced, and reported once as ``unpriced_tokens``.
    Outside a monitored call this does nothing.
    """
    call = CURRENT.get()
    if call is not None:
        try:
            call.reported().add_tokens(input, output, model)
        except Exception:
            call.reported().invalid = "add_tokens() failed on its arguments"
