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
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .. import _names as n
from ._otlp_input import IngestError, Prediction
from ._series import RawSample

__all__ = ["JoinStore", "Outcome", "parse_label_events", "outcome_samples", "normalize_outcome"]

SQUARED_ERROR = n.OUTCOME_SQUARED_ERROR.series
_TRUE = {"true", "1", "yes", "y", "positive", "pos", "fraud"}
_FALSE = {"false", "0", "no", "n", "negative", "neg", "legit"}


def normalize_outcome(value: Any) -> str:
    """``true``/``false`` for booleans, 0/1 and their usual spellings; other strings as given."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)) and math.isfinite(value):
        return "true" if value else "false"
    text = str(value).strip()
    if text.lower() in _TRUE:
        return "true"
    if text.lower() in _FALSE:
        return "false"
    if not text:
        raise ValueError("empty label")
    return text


@dataclass(frozen=True)
class Outcome:
    prediction: Prediction
    outcome: str


class JoinStore:
    """Predictions waiting for their label: at most ``capacity`` entries, each for ``ttl`` seconds."""

    def __init__(self, capacity: int = 200_000, ttl: float = 3 * 86400.0) -> None:
        self.capacity = capacity
        self.ttl = ttl
        self._items: OrderedDict[str, tuple[float, Prediction]] = OrderedDict()
        self.evicted = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, predictions: Iterable[Prediction], now: float) -> int:
        added = 0
        for p in predictions:
            self._items[p.request_id] = (now + self.ttl, p)
            self._items.move_to_end(p.request_id)
            added += 1
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
            self.evicted += 1
        return added

    def pop(self, request_id: str, now: float) -> tuple[Prediction | None, str]:
        """The prediction for this id and ``"ok"``, or None and why (``unknown``/``expired``)."""
        item = self._items.pop(request_id, None)
        if item is None:
            return None, "unknown_request_id"
        expires, prediction = item
        if expires < now:
            self.expired += 1
            return None, "expired"
        return prediction, "ok"

    def expire(self, now: float) -> None:
        while self._items:
            rid, (expires, _) = next(iter(self._items.items()))
            if expires >= now:
                break
            del self._items[rid]
            self.expired += 1

    def items(self) -> Iterator[tuple[str, float, Prediction]]:
        for rid, (expires, p) in self._items.items():
            yield rid, expires, p

    def restore(self, items: Iterable[tuple[str, float, Prediction]]) -> None:
        for rid, expires, p in items:
            self._items[rid] = (expires, p)


def _events(body: bytes) -> list[Any]:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IngestError(400, "malformed_json", f"labels must be JSON: {exc}") from None
    if isinstance(data, dict) and "labels" in data:
        data = data["labels"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise IngestError(400, "bad_label_event", 'expected a label object, a list of them or {"labels": [...]}')
    return data


def parse_label_events(body: bytes) -> list[tuple[str | None, Prediction | None, str]]:
    """(request id, inline prediction, outcome) per event; validated as a whole before any is used."""
    out: list[tuple[str | None, Prediction | None, str]] = []
    for i, event in enumerate(_events(body)):
        if not isinstance(event, dict):
            raise IngestError(400, "bad_label_event", f"labels[{i}]: expected an object")
        if "label" not in event:
            raise IngestError(400, "bad_label_event", f"labels[{i}]: missing 'label'")
        try:
            outcome = normalize_outcome(event["label"])
        except ValueError as exc:
            raise IngestError(400, "bad_label_event", f"labels[{i}].label: {exc}") from None
        rid = event.get("request_id")
        inline = None
        if "model" in event:
            segments = event.get("segments") or {}
            score = event.get("score")
            if not isinstance(segments, dict) or not event.get("version"):
                raise IngestError(
                    400, "bad_label_event", f"labels[{i}]: an inline prediction needs version and segments as an object"
                )
            if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
                raise IngestError(400, "bad_label_event", f"labels[{i}].score: expected a number")
            decision = event.get("decision")
            inline = Prediction(
                str(rid or ""),
                str(event["model"]),
                str(event["version"]),
                None if score is None else float(score),
                None if decision is None else normalize_outcome(decision),
                tuple(sorted((str(k), str(v)) for k, v in segments.items())),
            )
        elif not rid:
            raise IngestError(400, "bad_label_event", f"labels[{i}]: needs 'request_id' (or an inline prediction)")
        out.append((None if rid is None else str(rid), inline, outcome))
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
