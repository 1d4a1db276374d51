"""The batch path: send a scoring job's predictions to a sidecar, so their labels can join later.

A batch-scoring job attaches one request id per row; the sidecar's ``POST /v1/predictions``
stores them in its join store as if they had come from spans. The wire format is one JSON
object per request with one column per field (``model``, ``version``, ``request_ids``,
``scores``, optional ``decisions``, ``segments`` and ``times``), all columns the same length.
Large jobs go in chunks (one gzip-compressed request per ``chunk_rows`` rows), so a failure
names how many rows the sidecar already accepted and the job can resume from there.
Only the stdlib talks HTTP (``urllib``): the app gains no dependency.
"""

from __future__ import annotations

import gzip
import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from .._frame import as_labels

__all__ = ["PREDICTIONS_PATH", "PredictionExportError", "encode_prediction_chunks", "export_predictions"]

PREDICTIONS_PATH = "/v1/predictions"
DEFAULT_CHUNK_ROWS = 50_000
_BODY_EXCERPT = 300  # characters of the sidecar's error body kept in the message


class PredictionExportError(RuntimeError):
    """The sidecar refused a chunk or could not be reached; ``rows_sent`` rows were accepted
    before it (in order), so a retry can start at that row."""

    def __init__(self, message: str, *, rows_sent: int, status: int | None = None) -> None:
        super().__init__(message)
        self.rows_sent = rows_sent
        self.status = status


def export_predictions(
    endpoint: str,
    *,
    model: str,
    version: str,
    request_ids: Any,
    scores: Any,
    decisions: Any = None,
    segments: Mapping[str, Any] | None = None,
    times: Any = None,
    shadow_of: str | None = None,
    timeout: float = 10.0,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    headers: Mapping[str, str] | None = None,
) -> int:
    """POST predictions to a sidecar's ``/v1/predictions``; returns the number of rows sent.

    ``endpoint`` is the sidecar's base URL (``http://sidecar:9464``, the path is added) or the
    full URL. ``request_ids`` are strings (the ids the labels will be posted with), ``scores``
    numbers (``None`` or NaN: no score; infinite values are refused), ``decisions`` and the
    columns of ``segments`` any scalars, spelled as the app spells labels (``True`` is
    ``"true"``, ``1.0`` is ``"1"``); ``times`` unix seconds (default: when the sidecar receives
    them). ``shadow_of`` names the version whose requests these predictions re-scored (a
    candidate scored offline on the primary's request ids): a label for such a request id then
    also counts the pair. Lists, numpy arrays and pandas Series all work. Everything is checked before the
    first request; a refused or failed request raises :class:`PredictionExportError`.
    """
    url = _url(endpoint)
    chunks = encode_prediction_chunks(
        model=model,
        version=version,
        request_ids=request_ids,
        scores=scores,
        decisions=decisions,
        segments=segments,
        times=times,
        shadow_of=shadow_of,
        chunk_rows=chunk_rows,
    )
    sent = 0
    for rows, body in chunks:
        _post(url, body, timeout, headers or {}, sent)
        sent += rows
    return sent


def encode_prediction_chunks(
    *,
    model: str,
    version: str,
    request_ids: Any,
    scores: Any,
    decisions: Any = None,
    segments: Mapping[str, Any] | None = None,
    times: Any = None,
    shadow_of: str | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Iterator[tuple[int, bytes]]:
    """The request bodies :func:`export_predictions` sends: ``(rows, gzip(JSON))`` per chunk.

    All arguments are validated here, before the first chunk is yielded."""
    if not isinstance(model, str) or not model or not isinstance(version, str) or not version:
        raise ValueError("model= and version= must be non-empty strings")
    if shadow_of is not None and (not isinstance(shadow_of, str) or not shadow_of or shadow_of == version):
        raise ValueError("shadow_of= must be another version's name (a non-empty string)")
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    ids = _request_ids(request_ids)
    n = len(ids)
    columns: dict[str, Any] = {"request_ids": ids, "scores": _scores(scores, n)}
    if decisions is not None:
        columns["decisions"] = _labels(decisions, n, "decisions")
    if segments:
        if not isinstance(segments, Mapping) or not all(isinstance(k, str) and k for k in segments):
            raise ValueError("segments= maps segment keys (non-empty strings) to columns")
        columns["segments"] = {key: _labels(col, n, f"segments[{key!r}]") for key, col in segments.items()}
    if times is not None:
        columns["times"] = _times(times, n)
    head = {"model": model, "version": version, **({} if shadow_of is None else {"shadow_of": shadow_of})}
    return _chunks(head, columns, n, chunk_rows)


def _chunks(head: dict[str, str], columns: dict[str, Any], n: int, size: int) -> Iterator[tuple[int, bytes]]:
    for start in range(0, n, size):
        stop = min(start + size, n)
        body: dict[str, Any] = dict(head)
        for name, column in columns.items():
            if isinstance(column, dict):
                body[name] = {key: values[start:stop] for key, values in column.items()}
            else:
                body[name] = column[start:stop]
        text = json.dumps(body, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
        yield stop - start, gzip.compress(text.encode("utf-8", "surrogatepass"), compresslevel=6)


def _as_list(values: Any, what: str) -> list[Any]:
    if isinstance(values, (str, bytes)) or isinstance(values, Mapping):
        raise ValueError(f"{what} must be a column (list, array or Series), got {type(values).__name__}")
    if hasattr(values, "tolist"):
        out = values.tolist()
        if not isinstance(out, list):
            raise ValueError(f"{what} must be one-dimensional")
        return out
    try:
        return list(values)
    except TypeError:
        raise ValueError(f"{what} must be a column (list, array or Series), got {type(values).__name__}") from None


def _request_ids(values: Any) -> list[str]:
    ids = _as_list(values, "request_ids")
    bad = next((i for i, v in enumerate(ids) if not isinstance(v, str) or not v), None)
    if bad is not None:
        raise ValueError(f"request_ids[{bad}] = {ids[bad]!r}: request ids are non-empty strings")
    return ids


def _check_length(values: list[Any] | npt.NDArray[Any], n: int, what: str) -> None:
    if len(values) != n:
        raise ValueError(f"{what} has {len(values)} values for {n} request ids; all columns have one value per row")


def _scores(values: Any, n: int) -> list[float | None]:
    items = _as_list(values, "scores")
    _check_length(items, n, "scores")
    arr = np.asarray(items)
    if arr.dtype.kind == "O":  # None (or pandas NA) among the numbers: read one by one
        bad = next((i for i, v in enumerate(items) if _not_a_score(v)), None)
        if bad is not None:
            raise ValueError(f"scores[{bad}] = {items[bad]!r}: scores are numbers or None")
        floats = np.array([math.nan if _no_score(v) else float(v) for v in items], dtype=np.float64)
    elif (arr.dtype.kind in "iuf" and arr.ndim == 1) or arr.size == 0:
        floats = arr.astype(np.float64).reshape(-1)
    else:
        raise ValueError(f"scores must be numbers or None, got dtype {arr.dtype} {arr.shape}")
    infinite = np.flatnonzero(np.isinf(floats))
    if infinite.size:
        i = int(infinite[0])
        raise ValueError(f"scores[{i}] = {floats[i]}: scores must be finite (None or NaN for no score)")
    out: list[float | None] = floats.tolist()
    for i in np.flatnonzero(np.isnan(floats)).tolist():
        out[i] = None
    return out


def _no_score(value: Any) -> bool:
    return value is None or type(value).__name__ == "NAType"


def _not_a_score(value: Any) -> bool:
    if _no_score(value):
        return False
    return isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating))


def _labels(values: Any, n: int, what: str) -> list[str | None]:
    items = _as_list(values, what)
    _check_length(items, n, what)
    column = np.empty(len(items), dtype=object)
    column[:] = items
    return as_labels(column).tolist()  # type: ignore[no-any-return]


def _times(values: Any, n: int) -> list[float]:
    arr = np.asarray(values)
    if arr.dtype.kind == "O" and arr.size and all(isinstance(v, datetime) for v in arr.tolist()):
        # datetimes (pandas' time zone aware ones among them); a naive one is UTC, as in numpy
        arr = np.array([(v if v.tzinfo else v.replace(tzinfo=UTC)).timestamp() for v in arr.tolist()])
    if arr.dtype.kind == "M":  # numpy / pandas datetimes
        arr = arr.astype("datetime64[ns]").astype(np.int64) / 1e9
    if arr.dtype.kind not in "iuf" or arr.ndim != 1:
        raise ValueError(f"times must be unix seconds (numbers) or datetimes, got dtype {arr.dtype} {arr.shape}")
    _check_length(arr, n, "times")
    floats = arr.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(floats) | (floats < 0))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"times[{i}] = {floats[i]}: times are finite unix seconds")
    return floats.tolist()  # type: ignore[no-any-return]


def _url(endpoint: str) -> str:
    parts = urllib.parse.urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"endpoint must be an http(s) URL such as http://sidecar:9464, got {endpoint!r}")
    if parts.path in ("", "/"):
        parts = parts._replace(path=PREDICTIONS_PATH)
    return urllib.parse.urlunsplit(parts)


def _post(url: str, body: bytes, timeout: float, headers: Mapping[str, str], sent: int) -> None:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read(_BODY_EXCERPT * 4).decode("utf-8", "replace")[:_BODY_EXCERPT].strip()
        raise PredictionExportError(
            f"{url} refused the predictions after row {sent}: HTTP {exc.code} {exc.reason}: {detail}",
            rows_sent=sent,
            status=exc.code,
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PredictionExportError(
            f"cannot send predictions to {url} after row {sent}: {reason}", rows_sent=sent
        ) from None
