"""Serving capture for training/serving skew: a hash-sampled share of calls, written to a spool.

``@monitor(capture=Capture("/var/lib/otel-ml/capture", rate=0.01))`` writes, for a sampled row, the
raw request, the features the model was served, its score and decision, the segment values, the
request id and the time (the model version, decision threshold and ``tags`` are in each file's
header) so that ``otel-ml skew replay`` can run the raw request through the training pipeline and
say what the difference did to scores and decisions.

A row is sampled when ``hash64(salt, request_id) < rate * 2^64`` (a batch's rows by
``row_hashes``, ids ``<id>#<row>``), like review sampling: every replica picks the same requests,
and a request captured by one monitor is the one a replay of another can be joined with. The row
is encoded on the calling thread (a copy as it was served: the app may reuse its dicts) and only
then queued; disk I/O happens on the spool's thread.

Off by default, because a capture is a copy of what users sent: the raw request may hold personal
data. The spool is bounded (``max_bytes``) and its files are created 0600.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _names as n
from .._capture_format import encode_line, header
from .._frame import Columns, is_single_row, to_columns
from .._review_sampling import hasher64, row_hashes, row_id, selected_rows, threshold64
from .._version import __version__
from ._counting import scalar_label
from ._spool import HOST, Spool, SpoolLimits

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from ._call import Counted, Reader
    from ._context import CallState
    from ._counters import ModelCounters

__all__ = ["Capture", "CaptureSink", "raw_request"]

MiB = 1 << 20
_RAW: ContextVar[Any] = ContextVar("otel_ml_raw_request", default=None)


@contextmanager
def raw_request(raw: Any) -> Iterator[None]:
    """Name the raw request of the monitored calls made inside the block (for skew capture):
    ``with otel_ml.raw_request(body): score = predict(features(body))``. A dict or list body is
    copied (shallowly) as it enters the block: code inside that sets its fields does not change it."""
    token = _RAW.set(_snapshot(raw))  # as it arrived: online code that normalises it in place comes later
    try:
        yield
    finally:
        _RAW.reset(token)


@dataclass(frozen=True)
class Capture:
    """Serving capture for skew replays (``@monitor(capture=Capture(directory, rate=0.01))``).

    ``directory`` is the spool (created if missing; share it with the replay job, not with other
    models' monitors). ``rate`` is the sampled share of rows. ``raw`` picks the raw request out of
    the call's ``(args, kwargs)``; without it the raw request is the one named by
    :func:`raw_request` around the call (else ``null``: such rows cannot be replayed). A batch's raw
    request should be a sequence or DataFrame with one element per row. ``tags`` go into each
    file's header (the pipeline's version, the feature store snapshot: what a replay must match).

    The spool holds at most ``max_bytes``, in files of ``file_bytes`` finished at least every
    ``file_seconds``; the oldest files are deleted first. A row over ``max_record_bytes`` encoded,
    and rows arriving while ``queue_size`` rows wait for the writer, are dropped and counted.
    """

    directory: str | os.PathLike[str]
    rate: float = 0.01
    raw: Callable[[tuple[Any, ...], dict[str, Any]], Any] | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    salt: str | None = None
    max_bytes: int = 256 * MiB
    file_bytes: int = 16 * MiB
    file_seconds: float = 300.0
    max_record_bytes: int = 256 * 1024
    queue_size: int = 10_000

    def __post_init__(self) -> None:
        if isinstance(self.rate, bool) or not isinstance(self.rate, (int, float)) or not 0.0 < self.rate <= 1.0:
            raise ValueError(f"Capture(rate={self.rate!r}): the sampled share of rows, in (0, 1]")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in dict(self.tags).items()):
            raise ValueError("Capture(tags=...): a mapping of strings to strings")
        self.limits()  # validate the sizes now, not at the first sampled call

    def limits(self) -> SpoolLimits:
        return SpoolLimits(
            max_bytes=self.max_bytes,
            file_bytes=self.file_bytes,
            file_seconds=self.file_seconds,
            max_record_bytes=self.max_record_bytes,
            queue_size=self.queue_size,
        )


class CaptureSink:
    """One monitor's capture: sampling, encoding and the hand-off to its spool (a call sink)."""

    stage = "capture"  # how its failures are counted

    def __init__(
        self,
        config: Capture,
        counters: ModelCounters,
        *,
        segments: tuple[str, ...],
        feature_names: tuple[str, ...],
        threshold: float | None,
    ) -> None:
        self.config = config
        self.counters = counters
        self._segments = segments
        self._feature_names = feature_names
        name, version = counters.model_name, counters.model_version
        self.salt = (config.salt if config.salt is not None else f"otel-ml-capture/{name}/{version}").encode()
        self._threshold = threshold64(config.rate)
        self._hash = hasher64(self.salt)

        def file_header() -> dict[str, Any]:
            return header(
                model=name,
                version=version,
                threshold=threshold,
                segments=segments,
                feature_names=feature_names,
                tags=dict(config.tags),
                pid=os.getpid(),
                host=HOST,
                started=time.time(),
                library=__version__,
            )

        self.spool = Spool(
            config.directory, file_header, config.limits(), counters.add_captured, counters.add_capture_dropped
        )

    def enter(self, call: CallState, args: tuple[Any, ...], kwargs: dict[str, Any], read: Reader) -> None:
        """At the call's start: pick its sampled rows and copy them as they are passed in (a model that
        fills or scales its input in place must not change what was served). Most calls: one hash."""
        features = read(args, kwargs)
        request_id = call.request_id
        if _row(features):
            if self._hash(request_id) >= self._threshold:
                return
            segments = {k: scalar_label(features.get(k)) for k in self._segments}
            call.capture = [(request_id, -1, self._raw((args, kwargs)), self._row_features(features), segments)]
            return
        columns = to_columns(features, self._feature_names)
        rows = columns.n_rows
        picked = np.flatnonzero(selected_rows(row_hashes(self.salt, request_id, rows), self.config.rate)).tolist()
        if not picked:
            return
        names = self._feature_names or tuple(columns.names)
        raw_rows = _per_row(self._raw((args, kwargs)), rows)
        call.capture = [
            (
                row_id(request_id, i),
                i,
                raw_rows(i),
                {name: _cell(columns, name, i) for name in names},
                {k: scalar_label(_cell(columns, k, i)) for k in self._segments},
            )
            for i in picked  # the sampled rows only: a few per batch
        ]

    def submit(
        self,
        call: CallState,
        span: Span | None,
        features: Any,
        inputs: tuple[tuple[Any, ...], dict[str, Any]],
        counted: Counted,
    ) -> None:
        """At the call's end (a successful one): the sampled rows with their scores and decisions, written."""
        pending = call.capture
        if not pending:
            return
        call.capture = None
        _, scores, decisions = counted
        labels = None if decisions is None or isinstance(decisions, str) else np.asarray(decisions)
        for request_id, i, raw, row, segments in pending:
            if i < 0:
                score = scores if isinstance(scores, float) else None
                decision = decisions if isinstance(decisions, str) else None
            else:
                score = None if scores is None or np.ndim(scores) == 0 else float(scores[i])
                decision = None if labels is None or labels.ndim == 0 else scalar_label(labels[i])
            self._put(request_id, raw, row, score, decision, segments)
        if span is not None and span.is_recording():
            span.set_attribute(n.ATTR_CAPTURED, True)

    def _raw(self, inputs: tuple[tuple[Any, ...], dict[str, Any]]) -> Any:
        pick = self.config.raw
        return _snapshot(pick(*inputs)) if pick is not None else _RAW.get()

    def _row_features(self, row: Mapping[str, Any]) -> dict[str, Any]:
        names = self._feature_names or tuple(k for k in row if isinstance(k, str))
        return {name: row.get(name) for name in names}

    def _put(
        self,
        request_id: str,
        raw: Any,
        features: dict[str, Any],
        score: float | None,
        decision: str | None,
        segments: dict[str, str | None],
    ) -> None:
        record = {
            "request_id": request_id,
            "time": time.time(),
            "raw": raw,
            "features": features,
            "score": score if score is None or math.isfinite(score) else None,
            "decision": decision,
            "segments": segments,
        }
        try:
            line = encode_line(record)
        except (TypeError, ValueError, RecursionError, UnicodeError):
            self.counters.add_capture_dropped(n.CAPTURE_DROP_UNSERIALIZABLE, 1)
            return
        self.spool.put(line)

    def close(self) -> None:
        self.spool.close()


_SCALARS = frozenset({float, int, str, bool, type(None)})


def _row(features: Any) -> bool:
    """A single row, as ``_counting`` decides it (a plain dict of scalars first, without the ABC check)."""
    if type(features) is dict:
        return type(next(iter(features.values()), None)) in _SCALARS or is_single_row(features)
    return is_single_row(features)


def _snapshot(raw: Any) -> Any:
    """A shallow copy of a raw request (its top-level fields as they are now), else the object."""
    if type(raw) is dict:
        return dict(raw)
    if type(raw) is list:
        return list(raw)
    return raw


def _cell(columns: Columns, name: str, i: int) -> Any:
    column = columns.raw(name)
    if column is None:
        return None
    value = column.iloc[i] if hasattr(column, "iloc") else column[i]
    return value.item() if isinstance(value, np.generic) else value


def _per_row(raw: Any, rows: int) -> Callable[[int], Any]:
    """Row ``i``'s raw request out of a batch's: a DataFrame's row, a sequence's element, else none."""
    if raw is None:
        return lambda i: None
    if hasattr(raw, "iloc") and hasattr(raw, "columns") and len(raw) == rows:
        # one row's frame, not ``iloc[i]`` (one Series: an int column next to a float one would be upcast)
        return lambda i: {str(k): v for k, v in raw.iloc[i : i + 1].to_dict("records")[0].items()}
    if isinstance(raw, (list, tuple, np.ndarray)) and len(raw) == rows:
        return lambda i: raw[i]
    return lambda i: None
