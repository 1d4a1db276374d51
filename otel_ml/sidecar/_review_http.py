"""The review endpoints' work, off the event loop: items in, the queue and the rates out.

``POST /v1/review/items`` (``{"items": [...]}``, answered ``{"accepted": n, "duplicates": m}``
after COMMIT), ``GET /v1/review/queue?cursor=&limit=&model=&version=`` (pending items with
``seq > cursor`` in seq order, each with ``seq`` and ``weight = 1 / pi``, and ``next_cursor``:
at least once, an item stays until labelled or expired, the consumer keeps its cursor) and
``GET /v1/review/rates?model=&version=`` (see :mod:`._review_rates`). All on the ingest listener,
behind its bearer token: the queue holds request ids (and features when configured).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from ._ingest import Reply, _json_body
from ._otlp_input import JSON
from ._review_input import parse_review_items
from ._review_rates import review_rates
from ._series import IngestError
from ._state import SidecarState

__all__ = ["handle_review_items", "handle_review_queue", "handle_review_rates", "MAX_QUEUE_PAGE"]

MAX_QUEUE_PAGE = 1000
_DEFAULT_PAGE = 100
_MAX_PARAM_CHARS = 256


def handle_review_items(state: SidecarState, limit: int, body: bytes, headers: Mapping[str, str]) -> Reply:
    items = parse_review_items(
        _json_body(body, headers, limit, "review items"), state.settings.review.max_items_per_request, state.models
    )
    result = state.add_review_items(items)
    return 200, json.dumps({"accepted": result.accepted, "duplicates": result.duplicates}).encode(), JSON


def _bad_param(why: str) -> IngestError:
    return IngestError(400, "bad_review_query", why)


def _int_param(params: Mapping[str, str], key: str, default: int, lo: int, hi: int) -> int:
    text = params.get(key)
    if text is None or text == "":
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise _bad_param(f"{key} must be a non-negative integer")
    value = int(text)
    if not lo <= value <= hi:
        raise _bad_param(f"{key} must be between {lo} and {hi}")
    return value


def _text_param(params: Mapping[str, str], key: str, required: bool = False) -> str | None:
    text = params.get(key)
    if text is None or text == "":
        if required:
            raise _bad_param(f"{key} is required")
        return None
    if len(text) > _MAX_PARAM_CHARS:
        raise _bad_param(f"{key} longer than {_MAX_PARAM_CHARS} characters")
    return text


def _check_params(params: Mapping[str, str], allowed: frozenset[str]) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise _bad_param(f"unknown parameters {unknown[:5]}; expected some of {sorted(allowed)}")


_QUEUE_PARAMS = frozenset({"cursor", "limit", "model", "version"})
_RATES_PARAMS = frozenset({"model", "version"})


def handle_review_queue(state: SidecarState, params: Mapping[str, str]) -> Reply:
    _check_params(params, _QUEUE_PARAMS)
    cursor = _int_param(params, "cursor", 0, 0, 2**63 - 1)
    limit = _int_param(params, "limit", _DEFAULT_PAGE, 1, MAX_QUEUE_PAGE)
    model, version = _text_param(params, "model"), _text_param(params, "version")
    if state.reviews.error is not None:
        raise IngestError(503, "review_queue_unavailable", state.reviews.error)
    items = state.reviews.queue.pending_items(cursor, limit, model, version)
    next_cursor = items[-1]["seq"] if items else cursor
    body = json.dumps({"items": items, "next_cursor": next_cursor}, allow_nan=False)
    return 200, body.encode(), JSON


def handle_review_rates(state: SidecarState, params: Mapping[str, str]) -> Reply:
    _check_params(params, _RATES_PARAMS)
    key = (_text_param(params, "model", True) or "", _text_param(params, "version", True) or "")
    with state.lock:
        model = state.models.get(key)
        if model is None:
            raise IngestError(404, "unknown_model", f"no baseline for model {key[0]!r} version {key[1]!r}")
        answer = review_rates(model, state.settings.review.rates, state.clock())
    return 200, json.dumps(answer, allow_nan=False).encode(), JSON
