"""Bodies of ``POST /v1/review/items``: JSON in, validated review items out, all or nothing.

An item is one prediction the app's hash sampler selected for human review (the wire contract
with ``otel_ml.instrument._review_client``): its request id, model, version, stratum, the
inclusion probability ``pi`` it was selected with (its weight is ``1 / pi``), score, decision,
time, the salt's id and, only when the app is configured to send them, feature values. The
whole body is validated before any of it is used, so a hostile item (a NaN or huge ``pi``, an
over-long string, a wrong type, a deep document) is a 400 that changes nothing held.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from .._label_hygiene import MAX_LABEL_VALUE_CHARS, label_value, storable_request_id
from ._label_input import _json, _objects, _request_id, _score, _timestamp
from ._outcomes import describe_kind, normalize_outcome
from ._series import IngestError

__all__ = [
    "ReviewItem",
    "parse_review_items",
    "MAX_FEATURES",
    "MAX_FEATURES_BYTES",
    "MAX_STRATUM_CHARS",
    "MAX_FEATURE_LIST",
]

BAD = "bad_review_item"
MAX_STRATUM_CHARS = 64
MAX_FEATURES = 256  # feature values per item (only sent when the monitor has review_features=True)
MAX_FEATURES_BYTES = 16 * 1024  # of one item's features as stored JSON
MAX_FEATURE_LIST = 1024  # values of one list feature (scalars only: no nesting)
_NUMBER = r"(?:[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)"
# "(-Inf,0.1]", "(0.65,0.7]", "(0.9,+Inf)": a review bin spelled like ``le`` (S's stratum_labels), or "none"
_STRATUM = re.compile(rf"\((?:-Inf|{_NUMBER}),(?:{_NUMBER}\]|\+Inf\))|none")
_SALT_ID = re.compile(r"[0-9a-f]{8}")
_MIN_PI = 2.0**-64  # threshold64 of anything smaller is 0: such a pi selects nothing, and 1 / pi may overflow


@dataclass(frozen=True)
class ReviewItem:
    """One sampled prediction waiting for its review; ``features`` is stored JSON, or None."""

    request_id: str
    model: str
    version: str
    segment_key: str
    segment: str
    stratum: str
    pi: float
    score: float | None
    decision: str | None
    time: float | None
    salt_id: str
    features: str | None = None


def _bad(where: str, why: str) -> IngestError:
    return IngestError(400, BAD, f"{where}: {why}")


def _text(item: dict[str, Any], key: str, where: str, limit: int = MAX_LABEL_VALUE_CHARS) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value or len(value) > limit:
        got = describe_kind(value) if not isinstance(value, str) else f"{len(value)} characters"
        raise _bad(f"{where}.{key}", f"expected a non-empty string of at most {limit} characters, got {got}")
    return label_value(value)


def _pi(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(where, f"expected a number in (0, 1], got {describe_kind(value)}")
    try:
        pi = float(value)
    except OverflowError:
        pi = math.inf
    if not _MIN_PI <= pi <= 1.0:  # NaN fails too
        raise _bad(where, "an inclusion probability must be in [2^-64, 1] (below it no hash is selected)")
    return pi


def _feature_value(value: Any, where: str) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:
            number = math.nan
        if not math.isfinite(number):
            raise _bad(where, "a feature value must be a finite number, a string, a boolean or null")
        return value
    if isinstance(value, str) and len(value) <= MAX_LABEL_VALUE_CHARS:
        return value
    raise _bad(where, f"a feature value must be a scalar (strings of at most {MAX_LABEL_VALUE_CHARS} characters)")


def _features(value: Any, where: str) -> str | None:
    """The item's feature values as compact JSON (only present when the app was configured to send them)."""
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > MAX_FEATURES:
        raise _bad(where, f"expected an object of at most {MAX_FEATURES} feature values")
    for key, v in value.items():
        if len(key) > MAX_LABEL_VALUE_CHARS:
            raise _bad(where, f"feature names have at most {MAX_LABEL_VALUE_CHARS} characters")
        if isinstance(v, list):  # a vector feature (the app turns numpy arrays into lists)
            if len(v) > MAX_FEATURE_LIST:
                raise _bad(f"{where}.{key[:64]}", f"a list feature has at most {MAX_FEATURE_LIST} values")
            for x in v:
                _feature_value(x, f"{where}.{key[:64]}")
        else:
            _feature_value(v, f"{where}.{key[:64]}")
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    if len(text) > MAX_FEATURES_BYTES:
        raise _bad(where, f"feature values take more than {MAX_FEATURES_BYTES} bytes")
    return text


def _decision(value: Any, where: str) -> str | None:
    if value is None:
        return None
    try:
        return normalize_outcome(value)
    except ValueError as exc:
        raise _bad(where, str(exc)) from None


def _item(item: Any, where: str) -> ReviewItem:
    if not isinstance(item, dict):
        raise _bad(where, f"expected an object, got {describe_kind(item)}")
    rid = _request_id(item.get("request_id"), where + ".request_id", BAD)
    if rid is None or not isinstance(item.get("request_id"), str):
        raise _bad(where + ".request_id", "expected a non-empty string")
    if not storable_request_id(rid):
        raise _bad(where + ".request_id", "expected valid UTF-8 (no lone surrogates)")
    stratum = _text(item, "stratum", where, MAX_STRATUM_CHARS)
    if _STRATUM.fullmatch(stratum) is None:
        raise _bad(where + ".stratum", 'expected a review bin like "(0.65,0.7]", "(0.9,+Inf)" or "none"')
    salt_id = item.get("salt_id")
    if not isinstance(salt_id, str) or _SALT_ID.fullmatch(salt_id) is None:
        raise _bad(where + ".salt_id", "expected 8 lower-case hex digits (of sha256(salt))")
    return ReviewItem(
        rid,
        _text(item, "model", where),
        _text(item, "version", where),
        _text(item, "segment_key", where),
        _text(item, "segment", where),
        stratum,
        _pi(item.get("pi"), where + ".pi"),
        _score(item.get("score"), where + ".score", BAD),
        _decision(item.get("decision"), where + ".decision"),
        _timestamp(item.get("time"), where + ".time", BAD),
        salt_id,
        _features(item.get("features"), where + ".features"),
    )


def parse_review_items(body: bytes, max_items: int, models: Collection[tuple[str, str]]) -> list[ReviewItem]:
    """Every item of the body, or :class:`IngestError`: 400 naming the first bad item, 413 for
    more than ``max_items``, 400 ``unknown_model`` for a model version no baseline describes (its
    counters would have no bound, and its reviews no population to be weighed against)."""
    raw = _objects(_json(body, "review items"), "items", "review_item")
    if len(raw) > max_items:
        raise IngestError(413, "too_many_review_items", f"at most {max_items} review items per request")
    items = [_item(item, f"items[{i}]") for i, item in enumerate(raw)]
    for i, item in enumerate(items):
        if (item.model, item.version) not in models:
            raise IngestError(
                400, "unknown_model", f"items[{i}]: no baseline for model {item.model!r} version {item.version!r}"
            )
    return items
