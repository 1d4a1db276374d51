"""OTLP/HTTP input: decode metrics and traces requests into sidecar samples and predictions.

Bodies arrive as protobuf or JSON (the OTLP/HTTP encodings), optionally gzip-compressed.
Decoding is all-or-nothing and happens before any state is touched: a malformed payload is
an :class:`IngestError` with the HTTP status and the reason label it is counted under.
Metric names are the OTel names from ``_names``; each is translated to the Prometheus sample
names the app's own exposition uses (histograms to ``_bucket{le}`` holding each bin's count as
sent, ``_count``, ``_sum``; monotonic sums to ``_total``), so OTLP and scraping feed one code path.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import zlib
from collections.abc import Iterator
from typing import Any, NamedTuple

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from .. import _names as n
from .._label_hygiene import MAX_LABEL_NAME_CHARS, MAX_LABEL_VALUE_CHARS, label_name, label_value
from ._series import MAX_SEGMENTS, IngestError, Labels, MetricBatch, Prediction

__all__ = [
    "AppGaugePoint",
    "app_gauge_points",
    "decompress",
    "decode_body",
    "metric_batches",
    "predictions_from_traces",
]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_DELTA = 1  # AggregationTemporality.DELTA in the OTLP proto


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise IngestError(415, "unsupported_encoding", "unsupported Content-Encoding (use gzip or identity)")
    try:
        if encoding == "gzip":
            with gzip.GzipFile(fileobj=io.BytesIO(body)) as gz:
                out = gz.read(limit + 1)
        else:
            out = zlib.decompressobj().decompress(body, limit + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise IngestError(400, "bad_compression", f"cannot decompress the body ({type(exc).__name__})") from None
    if len(out) > limit:  # a small gzip bomb must not become a large allocation
        raise IngestError(413, "too_large", f"decompressed body exceeds the {limit} byte limit")
    return out


def decode_body(body: bytes, content_type: str, content_encoding: str, message: type[Message], limit: int) -> Message:
    """Parse an OTLP/HTTP body into ``message``; raises :class:`IngestError` on anything malformed."""
    raw = decompress(body, content_encoding, limit)
    media = content_type.split(";")[0].strip().lower()
    out = message()
    if media == PROTOBUF:
        try:
            out.ParseFromString(raw)
        except (DecodeError, RuntimeWarning, ValueError):
            raise IngestError(400, "malformed_protobuf", f"the body is not a valid {message.__name__}") from None
        return out
    if media == JSON:
        try:
            json_format.Parse(raw.decode("utf-8"), out, ignore_unknown_fields=True)
        except (json_format.ParseError, UnicodeDecodeError, ValueError, RecursionError, TypeError):
            raise IngestError(400, "malformed_json", f"the body is not a valid OTLP JSON {message.__name__}") from None
        return out
    raise IngestError(415, "unsupported_media_type", f"Content-Type must be {PROTOBUF} or {JSON}")


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return None if kind is None else getattr(any_value, kind)


def _attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


def _label_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


MAX_BOUNDS = 1000  # explicit bounds per histogram point: more is a hostile payload, not a histogram
_SCALAR = frozenset({"string_value", "bool_value", "int_value", "double_value"})


class _Cache:
    """A memo with a fixed weight budget that starts over when full: bounded memory whatever arrives."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.weight = 0
        self.items: dict[Any, Any] = {}

    def put(self, key: Any, value: Any, weight: int = 1) -> None:
        if self.weight + weight > self.budget:
            self.items.clear()
            self.weight = 0
        self.items[key] = value
        self.weight += weight


_LABEL_OF = _Cache(10_000)  # OTel attribute key -> (Prometheus label or None, what was done to it)
_BUCKET_LABELS = _Cache(200_000)  # (labels, bounds) -> bucket label tuples, weighed by bucket count


def _label_of(key: str) -> tuple[str | None, str]:
    found: tuple[str | None, str] | None = _LABEL_OF.items.get(key)
    if found is None:
        found = label_name(key)
        if len(key) <= MAX_LABEL_NAME_CHARS:  # an over-long key is not worth remembering
            _LABEL_OF.put(key, found)
    return found


def _point_labels(kvs: Any, fixes: dict[str, int]) -> tuple[str | None, str | None, Labels]:
    """(model, version, other labels in arrival order) of one data point, in one pass.

    Keys that are reserved or invalid label names are dropped or renamed, values that are not
    scalars dropped, over-long values truncated; each such fix is counted in ``fixes``.
    """
    model = version = None
    pairs = []
    for kv in kvs:
        value = kv.value
        kind = value.WhichOneof("value")
        if kind == "string_value":
            text = value.string_value
            if len(text) > MAX_LABEL_VALUE_CHARS:
                text = text[:MAX_LABEL_VALUE_CHARS]
        elif kind in _SCALAR:
            text = _label_value(getattr(value, kind))
        else:
            fixes["invalid_label"] = fixes.get("invalid_label", 0) + 1
            continue
        key = kv.key
        if key == n.ATTR_MODEL_NAME:
            model = text
        elif key == n.ATTR_MODEL_VERSION:
            version = text
        else:
            label, how = _label_of(key)
            if how != "ok":
                fixes[how] = fixes.get(how, 0) + 1
            if label is not None:
                pairs.append((label, text))
    return model, version, tuple(pairs)


def _histogram_bounds(point: Any) -> tuple[float, ...]:
    """The point's bounds; a point too large or inconsistent to be a histogram rejects the request."""
    bounds = tuple(point.explicit_bounds)
    if len(bounds) > MAX_BOUNDS:
        raise IngestError(400, "too_many_buckets", f"a histogram point has more than {MAX_BOUNDS} bounds")
    if len(point.bucket_counts) != (len(bounds) + 1 if point.bucket_counts or bounds else 0):
        raise IngestError(400, "bad_histogram", "a histogram point needs one more bucket count than bounds")
    return bounds


def _bucket_labels(attrs: Labels, bounds: tuple[float, ...]) -> tuple[Labels, ...]:
    """The label tuples of every bucket of one histogram series (memoised: they repeat every push,
    so the bounds are checked once per distinct histogram, not per point)."""
    found: tuple[Labels, ...] | None = _BUCKET_LABELS.items.get((attrs, bounds))
    if found is None:
        if any(not math.isfinite(b) for b in bounds) or any(a >= b for a, b in zip(bounds, bounds[1:])):
            raise IngestError(400, "bad_histogram", "histogram bounds must be finite and strictly increasing")
        found = tuple((*attrs, ("le", le)) for le in n.le_labels(bounds))
        _BUCKET_LABELS.put((attrs, bounds), found, len(found))
    return found


def _source_id(resource_attributes: dict[str, Any]) -> str:
    items = sorted((k, _label_value(v)) for k, v in resource_attributes.items())
    digest = hashlib.sha1(repr(items).encode(), usedforsecurity=False).hexdigest()[:16]
    return "otlp:" + digest


def _points(metric: Any) -> Iterator[tuple[str, Any, bool]]:
    kind = metric.WhichOneof("data")
    if kind == "histogram":
        cumulative = metric.histogram.aggregation_temporality != _DELTA
        for p in metric.histogram.data_points:
            yield "histogram", p, cumulative
    elif kind == "sum":
        cumulative = metric.sum.aggregation_temporality != _DELTA
        for p in metric.sum.data_points:
            yield "sum", p, cumulative


def _add_histogram(batch: MetricBatch, instrument: n.Instrument, attrs: Labels, point: Any) -> None:
    labels = _bucket_labels(attrs, _histogram_bounds(point))
    bucket = instrument.bucket_series  # per-bin counts, as OTLP carries them and the store keeps them
    batch.samples.extend((bucket, lab, float(c)) for lab, c in zip(labels, point.bucket_counts))
    batch.samples.append((instrument.count_series, attrs, float(point.count)))
    batch.samples.append((instrument.sum_series, attrs, float(point.sum)))


def metric_batches(request: ExportMetricsServiceRequest) -> tuple[list[MetricBatch], int]:
    """Samples per (source, model, version, temporality); also the number of points skipped
    because they carried no model labels (counted as ``missing_model_labels``)."""
    batches: dict[tuple[str, str, str, bool, int], MetricBatch] = {}
    unlabelled = 0
    for rm in request.resource_metrics:
        source = _source_id(_attributes(rm.resource.attributes))
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                instrument = n.INSTRUMENTS.get(metric.name)
                if instrument is None:
                    continue  # not an otel-ml metric: a collector may forward anything
                for kind, point, cumulative in _points(metric):
                    fixes: dict[str, int] = {}
                    model, version, attrs = _point_labels(point.attributes, fixes)
                    if not model or not version:
                        unlabelled += 1
                        continue
                    key = (source, model, version, cumulative, point.start_time_unix_nano)
                    batch = batches.get(key)
                    if batch is None:
                        batch = batches[key] = MetricBatch(
                            source, model, version, cumulative, point.start_time_unix_nano
                        )
                    for reason, count in fixes.items():
                        batch.fixes[reason] = batch.fixes.get(reason, 0) + count
                    if kind == "histogram":
                        _add_histogram(batch, instrument, attrs, point)
                    else:
                        value = point.as_double if point.WhichOneof("value") == "as_double" else point.as_int
                        batch.samples.append((instrument.series, attrs, float(value)))
    return list(batches.values()), unlabelled


_GAUGES = {i.otel_name: i for i in n.APP_GAUGES}


class AppGaugePoint(NamedTuple):
    """The last value of one of the app's gauges (``n.APP_GAUGES``) from one source."""

    source: str
    model: str
    version: str
    instrument: n.Instrument
    labels: Labels
    value: float


def app_gauge_points(request: ExportMetricsServiceRequest) -> list[AppGaugePoint]:
    """The app's gauges in a metrics request (gauge points, or non-monotonic sums of these names):
    per-process facts such as the price table in use, kept apart from the counters, never summed."""
    out = []
    for rm in request.resource_metrics:
        source = _source_id(_attributes(rm.resource.attributes))
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                instrument = _GAUGES.get(metric.name)
                kind = metric.WhichOneof("data")
                if instrument is None or kind not in ("gauge", "sum"):
                    continue
                data = metric.gauge if kind == "gauge" else metric.sum
                if kind == "sum" and metric.sum.is_monotonic:
                    continue
                for point in data.data_points:
                    model, version, attrs = _point_labels(point.attributes, {})
                    value = point.as_double if point.WhichOneof("value") == "as_double" else float(point.as_int)
                    if model and version and math.isfinite(value):
                        out.append(AppGaugePoint(source, model, version, instrument, tuple(sorted(attrs)), value))
    return out


def predictions_from_traces(request: ExportTraceServiceRequest) -> list[Prediction]:
    """The ``ml.predict`` spans that carry a request id (single-row calls)."""
    out = []
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                if span.name != n.SPAN_NAME:
                    continue
                attrs = _attributes(span.attributes)
                rid, model, version = (
                    attrs.get(n.ATTR_REQUEST_ID),
                    attrs.get(n.ATTR_MODEL_NAME),
                    attrs.get(n.ATTR_MODEL_VERSION),
                )
                if not rid or not model or not version or attrs.get(n.ATTR_BATCH_SIZE, 1) != 1:
                    continue
                score = attrs.get(n.ATTR_SCORE)
                decision = attrs.get(n.ATTR_PREDICTION_DECISION)
                shadow_of = attrs.get(n.ATTR_SHADOW_OF)
                segments = tuple(
                    sorted(
                        (label_value(k[len(n.ATTR_SEGMENT_PREFIX) :]), label_value(_label_value(v)))
                        for k, v in attrs.items()
                        if k.startswith(n.ATTR_SEGMENT_PREFIX) and k != n.ATTR_SEGMENT_KEY
                    )
                )[:MAX_SEGMENTS]
                out.append(
                    Prediction(
                        str(rid),
                        str(model),
                        str(version),
                        float(score) if isinstance(score, (int, float)) else None,
                        None if decision is None else label_value(_label_value(decision)),
                        segments,
                        span.start_time_unix_nano / 1e9,
                        None if not shadow_of else label_value(_label_value(shadow_of)),
                    )
                )
    return out
