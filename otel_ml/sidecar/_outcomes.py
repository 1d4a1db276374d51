"""Delayed labels: join outcomes to the predictions they judge, by request id.

Single-row ``ml.predict`` spans (pushed to ``/v1/traces``) leave their request id, score,
decision and segments in a bounded store (capacity and TTL); a label posted later to
``/v1/labels`` is joined to it and becomes confusion-matrix counts and a squared score error
per segment, kept as sidecar-owned counters so the same windows apply. A label event may also
carry the prediction itself (model, version, score, decision, segments), needing no join.
"""

from __future__ import annotations

import json
import math
import sys
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .. import _names as n
from .._label_hygiene import MAX_LABEL_VALUE_CHARS, label_value
from ._series import MAX_SEGMENTS, IngestError, Prediction, RawSample

__all__ = [
    "JoinStore",
    "Outcome",
    "OutcomeVocabulary",
    "parse_label_events",
    "outcome_samples",
    "normalize_outcome",
    "MAX_REQUEST_ID_BYTES",
    "request_id_ok",
]

SQUARED_ERROR = n.OUTCOME_SQUARED_ERROR.series
_TRUE = {"true", "1", "yes", "y", "positive", "pos", "fraud"}
_FALSE = {"false", "0", "no", "n", "negative", "neg", "legit"}
MAX_REQUEST_ID_BYTES = 256  # longer ids are refused: each waiting prediction costs memory per byte
_ENTRY_BYTES = 500  # dict and order-link slots with their slack, tuple, float, int, Prediction, its __dict__ (measured)
_SEGMENT_BYTES = 64  # the pair tuple and its slot in the segments tuple


def request_id_ok(rid: str) -> bool:
    return len(rid) <= MAX_REQUEST_ID_BYTES and len(rid.encode("utf-8", "surrogatepass")) <= MAX_REQUEST_ID_BYTES


def normalize_outcome(value: Any) -> str:
    """``true``/``false`` for booleans, 0/1 and their usual spellings; other strings as given.

    Anything else (null, an object or list, NaN, another number, an empty or over-long string)
    is a ``ValueError``: a label must be a value, not something that merely prints as one.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if value in (0, 1):
            return "true" if value else "false"
        raise ValueError("a numeric label must be 0 or 1")
    if not isinstance(value, str):
        raise ValueError(f"expected a string, boolean or 0/1, got {_kind(value)}")
    text = value.strip()
    if text.lower() in _TRUE:
        return "true"
    if text.lower() in _FALSE:
        return "false"
    if not text or len(text) > MAX_LABEL_VALUE_CHARS:
        raise ValueError("a label must be a non-empty string of at most 256 characters")
    return label_value(text)


def _kind(value: Any) -> str:
    return {type(None): "null", dict: "an object", list: "a list"}.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class OutcomeVocabulary:
    """The label values the sidecar accepts: the configured positive and negative outcome, and
    the usual boolean spellings of each (``true``/``1``/``yes`` ... map to the positive one)."""

    positive: str
    negative: str

    def canonical(self, text: str) -> str | None:
        if text in (self.positive, self.negative):
            return text
        low = text.lower()
        if low in _TRUE:
            return self.positive
        if low in _FALSE:
            return self.negative
        return None


@dataclass(frozen=True)
class Outcome:
    prediction: Prediction
    outcome: str


def entry_bytes(p: Prediction) -> int:
    """An estimate (from above) of the memory one waiting prediction holds, strings included."""
    size = _ENTRY_BYTES + sys.getsizeof(p.request_id) + sys.getsizeof(p.model) + sys.getsizeof(p.version)
    if p.decision is not None:
        size += sys.getsizeof(p.decision)
    for key, value in p.segments:
        size += _SEGMENT_BYTES + sys.getsizeof(key) + sys.getsizeof(value)
    return size


class JoinStore:
    """Predictions waiting for their label: at most ``capacity`` entries and ``max_bytes`` of
    memory (estimated per entry, strings included), each for ``ttl`` seconds; the oldest go first."""

    def __init__(self, capacity: int, ttl: float, max_bytes: int) -> None:
        self.capacity = capacity
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[str, tuple[float, Prediction, int]] = OrderedDict()
        self.evicted = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._items)

    def _put(self, expires: float, p: Prediction) -> None:
        old = self._items.pop(p.request_id, None)
        if old is not None:
            self.bytes -= old[2]
        size = entry_bytes(p)
        self._items[p.request_id] = (expires, p, size)
        self.bytes += size

    def _evict(self) -> None:
        while self._items and (len(self._items) > self.capacity or self.bytes > self.max_bytes):
            _, (_, _, size) = self._items.popitem(last=False)
            self.bytes -= size
            self.evicted += 1

    def add(self, predictions: Iterable[Prediction], now: float) -> int:
        added = 0
        for p in predictions:
            self._put(now + self.ttl, p)
            self._evict()  # as it goes: a large batch never holds more than the bounds
            added += 1
        return added

    def pop(self, request_id: str, now: float) -> tuple[Prediction | None, str]:
        """The prediction for this id and ``"ok"``, or None and why (``unknown``/``expired``)."""
        item = self._items.pop(request_id, None)
        if item is None:
            return None, "unknown_request_id"
        expires, prediction, size = item
        self.bytes -= size
        if expires < now:
            self.expired += 1
            return None, "expired"
        return prediction, "ok"

    def expire(self, now: float) -> None:
        while self._items:
            rid, (expires, _, size) = next(iter(self._items.items()))
            if expires >= now:
                break
            del self._items[rid]
            self.bytes -= size
            self.expired += 1

    def items(self) -> Iterator[tuple[str, float, Prediction]]:
        for rid, (expires, p, _) in self._items.items():
            yield rid, expires, p

    def restore(self, items: Iterable[tuple[str, float, Prediction]]) -> None:
        """Entries read back from a saved state, held to today's limits (ids too long are dropped)."""
        for rid, expires, p in items:
            if rid == p.request_id and request_id_ok(rid) and _well_formed(p):
                self._put(expires, p)
        self._evict()


def _well_formed(p: Prediction) -> bool:
    """A prediction whose fields have the types ingest would have given them (saved state may lie)."""
    return (
        all(isinstance(x, str) for x in (p.request_id, p.model, p.version))
        and (p.decision is None or isinstance(p.decision, str))
        and (p.score is None or (isinstance(p.score, float) and math.isfinite(p.score)))
        and isinstance(p.segments, tuple)
        and len(p.segments) <= MAX_SEGMENTS
        and all(len(s) == 2 and isinstance(s[0], str) and isinstance(s[1], str) for s in p.segments)
    )


def _events(body: bytes) -> list[Any]:
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise IngestError(400, "malformed_json", f"labels must be JSON ({where})") from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise IngestError(400, "malformed_json", "labels must be UTF-8 JSON of sane depth and numbers") from None
    if isinstance(data, dict) and "labels" in data:
        data = data["labels"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise IngestError(400, "bad_label_event", 'expected a label object, a list of them or {"labels": [...]}')
    return data


def _bad(where: str, why: str, reason: str = "bad_label_event") -> IngestError:
    return IngestError(400, reason, f"{where}: {why}")


def _request_id(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _bad(where, "request_id must be a string")
    rid = str(value)
    if not request_id_ok(rid):
        raise _bad(where, f"request_id longer than {MAX_REQUEST_ID_BYTES} bytes", "request_id_too_long")
    return rid


def _scalar_text(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return label_value(str(value))
    raise _bad(where, f"expected a string, number or boolean, got {_kind(value)}")


def _score(value: Any, where: str) -> float | None:
    if value is None:
        return None
    try:
        score = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    except OverflowError:
        score = math.nan
    if not math.isfinite(score):
        raise _bad(where, "expected a finite number")
    return score


def _inline(event: dict[str, Any], rid: str | None, where: str) -> Prediction:
    """The prediction a label event carries itself (model, version, score, decision, segments)."""
    segments = event.get("segments") or {}
    if not isinstance(segments, dict) or len(segments) > MAX_SEGMENTS:
        raise _bad(where, f"segments must be an object of at most {MAX_SEGMENTS} keys")
    if not event.get("version") or not event.get("model"):
        raise _bad(where, "an inline prediction needs model and version")
    score = _score(event.get("score"), where + ".score")
    decision = event.get("decision")
    try:
        decided = None if decision is None else normalize_outcome(decision)
    except ValueError as exc:
        raise _bad(where + ".decision", str(exc)) from None
    return Prediction(
        rid or "",
        _scalar_text(event["model"], where + ".model"),
        _scalar_text(event["version"], where + ".version"),
        score,
        decided,
        tuple(sorted((_scalar_text(k, where), _scalar_text(v, f"{where}.segments")) for k, v in segments.items())),
    )


def parse_label_events(body: bytes) -> list[tuple[str | None, Prediction | None, str]]:
    """(request id, inline prediction, outcome) per event; validated as a whole before any is used.

    Error messages name the event and field, never the payload's text."""
    out: list[tuple[str | None, Prediction | None, str]] = []
    for i, event in enumerate(_events(body)):
        where = f"labels[{i}]"
        if not isinstance(event, dict):
            raise _bad(where, "expected an object")
        if "label" not in event:
            raise _bad(where, "missing 'label'")
        try:
            outcome = normalize_outcome(event["label"])
        except ValueError as exc:
            raise _bad(where + ".label", str(exc), "bad_label") from None
        rid = _request_id(event.get("request_id"), where)
        inline = _inline(event, rid, where) if "model" in event else None
        if inline is None and not rid:
            raise _bad(where, "needs 'request_id' (or an inline prediction)")
        out.append((rid, inline, outcome))
    return out


def outcome_samples(outcome: Outcome, positive_outcome: str = "true") -> list[RawSample]:
    """Delta samples for one joined outcome: one per segment key plus the overall ``__all__``."""
    p = outcome.prediction
    decision = p.decision or "none"
    y = 1.0 if outcome.outcome == positive_outcome else 0.0
    samples: list[RawSample] = []
    for key, segment in ((n.ALL, n.ALL), *p.segments):
        samples.append(
            (
                n.OUTCOMES.series,
                (
                    (n.LABEL_SEGMENT_KEY, key),
                    (n.LABEL_SEGMENT, segment),
                    (n.LABEL_DECISION, decision),
                    (n.LABEL_OUTCOME, outcome.outcome),
                ),
                1.0,
            )
        )
        if p.score is not None and math.isfinite(p.score):
            labels = ((n.LABEL_SEGMENT_KEY, key), (n.LABEL_SEGMENT, segment))
            samples.append((SQUARED_ERROR, labels, (p.score - y) ** 2))
    return samples
