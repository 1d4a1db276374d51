"""Bodies of ``/v1/labels`` and ``/v1/predictions``: JSON in, validated events out, all or nothing.

A label event names its prediction one of three ways: a ``request_id`` joined against the
prediction store, a signed ``token`` the app handed out (any sidecar can count it, no store), or
the prediction itself inline (``model``, ``version``, ``score``, ``decision``, ``segments``).
``/v1/predictions`` is the batch path: columns of request ids, scores, decisions and segments
from a batch-scoring job, stored to wait for their labels like spans' predictions.
Every body is validated as a whole before any of it is used; messages name the event and field,
never the payload's text.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass
from typing import Any

from .._label_hygiene import MAX_LABEL_VALUE_CHARS, MAX_REQUEST_ID_BYTES, label_value
from ._outcomes import describe_kind, normalize_outcome
from ._series import MAX_SEGMENTS, IngestError, Prediction

__all__ = [
    "LabelEvent",
    "parse_label_events",
    "parse_predictions",
    "request_id_ok",
    "MAX_REQUEST_ID_BYTES",
    "MAX_TOKEN_CHARS",
    "DEFAULT_LABEL_SOURCE",
]

MAX_TOKEN_CHARS = 512
MAX_SOURCE_CHARS = 64
DEFAULT_LABEL_SOURCE = "api"
MISSING = "__missing__"  # a segment value a batch row does not have (BoundedLabels' missing label)
_EPOCH_MIN, _EPOCH_MAX = 946684800.0, 4102444800.0  # 2000-01-01 .. 2100-01-01: anything else is a unit mistake


@dataclass(frozen=True)
class LabelEvent:
    """One posted label: the outcome, when it was observed, who sent it, and how to find its prediction."""

    outcome: str
    request_id: str | None = None
    token: str | None = None
    inline: Prediction | None = None
    label_time: float | None = None  # Unix seconds; None: when it arrived
    source: str = DEFAULT_LABEL_SOURCE


def request_id_ok(rid: str) -> bool:
    return len(rid) <= MAX_REQUEST_ID_BYTES and len(rid.encode("utf-8", "surrogatepass")) <= MAX_REQUEST_ID_BYTES


def _json(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise IngestError(400, "malformed_json", f"{what} must be JSON ({where})") from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise IngestError(400, "malformed_json", f"{what} must be UTF-8 JSON of sane depth and numbers") from None


def _objects(data: Any, key: str, what: str) -> list[Any]:
    if isinstance(data, dict) and key in data:
        data = data[key]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise IngestError(400, f"bad_{what}", f'expected an object, a list of them or {{"{key}": [...]}}')
    return data


def _bad(where: str, why: str, reason: str = "bad_label_event") -> IngestError:
    return IngestError(400, reason, f"{where}: {why}")


def _request_id(value: Any, where: str, reason: str = "bad_label_event") -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _bad(where, "request_id must be a string", reason)
    rid = str(value)
    if not rid:
        raise _bad(where, "request_id must not be empty", reason)
    if not request_id_ok(rid):
        raise _bad(where, f"request_id longer than {MAX_REQUEST_ID_BYTES} bytes", "request_id_too_long")
    return rid


def _scalar_text(value: Any, where: str, reason: str = "bad_label_event") -> str:
    """A label value from a scalar, made exposition-safe (control characters replaced, over-long
    text truncated) as every label the sidecar takes from data."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return label_value(value)
    if isinstance(value, (int, float)):
        return label_value(str(value)[:MAX_LABEL_VALUE_CHARS])
    raise _bad(where, f"expected a string, number or boolean, got {describe_kind(value)}", reason)


def _score(value: Any, where: str, reason: str = "bad_label_event") -> float | None:
    if value is None:
        return None
    try:
        score = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    except OverflowError:  # an integer beyond any float
        score = math.nan
    if not math.isfinite(score):
        raise _bad(where, "expected a finite number or null", reason)
    return score


def _decision(value: Any, where: str, reason: str = "bad_label_event") -> str | None:
    if value is None:
        return None
    try:
        return normalize_outcome(value)
    except ValueError as exc:
        raise _bad(where, str(exc), reason) from None


def _timestamp(value: Any, where: str, reason: str = "bad_label_event") -> float | None:
    """Unix seconds from a number or an RFC 3339 string (``2026-12-03T10:00:00Z``)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            parsed = _dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise _bad(where, "expected RFC 3339 time like 2026-12-03T10:00:00Z or Unix seconds", reason) from None
        if parsed.tzinfo is None:
            raise _bad(where, "an RFC 3339 time needs its offset (Z or +hh:mm)", reason)
        seconds = parsed.timestamp()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
    else:
        raise _bad(where, f"expected a time, got {describe_kind(value)}", reason)
    if not _EPOCH_MIN <= seconds <= _EPOCH_MAX:
        raise _bad(where, "time outside 2000..2100 (Unix seconds, not milliseconds)", reason)
    return seconds


def _segments(value: Any, where: str, reason: str = "bad_label_event") -> tuple[tuple[str, str], ...]:
    segments = value or {}
    if not isinstance(segments, dict) or len(segments) > MAX_SEGMENTS:
        raise _bad(where, f"segments must be an object of at most {MAX_SEGMENTS} keys", reason)
    return tuple(
        sorted((_scalar_text(k, where, reason), _scalar_text(v, f"{where}.{k}", reason)) for k, v in segments.items())
    )


def _inline(event: dict[str, Any], rid: str | None, where: str) -> Prediction:
    """The prediction a label event carries itself (model, version, score, decision, segments)."""
    if not event.get("version") or not event.get("model"):
        raise _bad(where, "an inline prediction needs model and version")
    return Prediction(
        rid or "",
        _scalar_text(event["model"], where + ".model"),
        _scalar_text(event["version"], where + ".version"),
        _score(event.get("score"), where + ".score"),
        _decision(event.get("decision"), where + ".decision"),
        _segments(event.get("segments"), where + ".segments"),
        _timestamp(event.get("prediction_time"), where + ".prediction_time") or 0.0,
    )


def _source(value: Any, where: str) -> str:
    if value is None:
        return DEFAULT_LABEL_SOURCE
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_SOURCE_CHARS:
        raise _bad(where, f"source must be a non-empty string of at most {MAX_SOURCE_CHARS} characters")
    return label_value(value.strip())


def _token(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_TOKEN_CHARS:
        raise _bad(where, f"token must be a non-empty string of at most {MAX_TOKEN_CHARS} characters")
    return value


def parse_label_events(body: bytes) -> list[LabelEvent]:
    """Every event of a ``/v1/labels`` body, or :class:`IngestError` (400) naming the first bad one."""
    out: list[LabelEvent] = []
    for i, event in enumerate(_objects(_json(body, "labels"), "labels", "label_event")):
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
        token = _token(event.get("token"), where + ".token")
        inline = _inline(event, rid, where) if "model" in event else None
        if sum(x is not None for x in (token, inline)) > 1:
            raise _bad(where, "give a token or an inline prediction, not both")
        if inline is None and token is None and not rid:
            raise _bad(where, "needs 'request_id', 'token' or an inline prediction (model, version, ...)")
        out.append(
            LabelEvent(
                outcome,
                rid,
                token,
                inline,
                _timestamp(event.get("label_time"), where + ".label_time"),
                _source(event.get("source"), where + ".source"),
            )
        )
    return out


def _column(block: dict[str, Any], key: str, rows: int, where: str) -> list[Any] | None:
    value = block.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != rows:
        raise _bad(f"{where}.{key}", f"expected a list of {rows} values (one per request id)", "bad_predictions")
    return value


def parse_predictions(body: bytes, max_rows: int) -> list[Prediction]:
    """The rows of a ``/v1/predictions`` body (columnar blocks, see the module docstring)."""
    out: list[Prediction] = []
    bad = "bad_predictions"
    for i, block in enumerate(_objects(_json(body, "predictions"), "predictions", "predictions")):
        where = f"predictions[{i}]"
        if not isinstance(block, dict):
            raise _bad(where, "expected an object", bad)
        if not block.get("model") or not block.get("version"):
            raise _bad(where, "needs model and version", bad)
        model = _scalar_text(block["model"], where + ".model", bad)
        version = _scalar_text(block["version"], where + ".version", bad)
        shadow_of = block.get("shadow_of")  # a batch job scoring a candidate on the primary's requests
        shadow_of = None if shadow_of is None else _scalar_text(shadow_of, where + ".shadow_of", bad)
        rids = block.get("request_ids")
        if not isinstance(rids, list):
            raise _bad(where + ".request_ids", "expected a list of request ids", bad)
        if len(out) + len(rids) > max_rows:
            raise IngestError(413, "too_many_predictions", f"at most {max_rows} predictions per request")
        n = len(rids)
        scores = _column(block, "scores", n, where) or [None] * n
        decisions = _column(block, "decisions", n, where) or [None] * n
        times = _column(block, "times", n, where) or [None] * n
        seg_block = block.get("segments") or {}
        if not isinstance(seg_block, dict) or len(seg_block) > MAX_SEGMENTS:
            raise _bad(where + ".segments", f"expected an object of at most {MAX_SEGMENTS} columns", bad)
        seg_columns = [  # a null column is no column (as a null scores or decisions column)
            (_scalar_text(k, where + ".segments", bad), column)
            for k in seg_block
            if (column := _column(seg_block, k, n, where + ".segments")) is not None
        ]
        for j in range(n):
            row = f"{where}[{j}]"
            rid = _request_id(rids[j], row + ".request_id", bad)
            if rid is None:
                raise _bad(row, "request_id must not be null", bad)
            segments = tuple(  # a null value is a missing one, spelled as the app's counters spell it
                sorted(
                    (key, MISSING if column[j] is None else _scalar_text(column[j], f"{row}.segments.{key}", bad))
                    for key, column in seg_columns
                )
            )
            out.append(
                Prediction(
                    rid,
                    model,
                    version,
                    _score(scores[j], row + ".score", bad),
                    _decision(decisions[j], row + ".decision", bad),
                    segments,
                    _timestamp(times[j], row + ".time", bad) or 0.0,
                    shadow_of,
                )
            )
    return out
