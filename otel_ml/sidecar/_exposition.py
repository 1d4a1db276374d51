"""The sidecar's ``/metrics`` text, written fast and byte for byte as prometheus_client writes it.

A sidecar page holds thousands of samples (6,500 lines for three models of 50 features), and
prometheus_client's encoders spend about 15 us on each: every label name is re-validated and
re-escaped on every sample. Our metric and label names are constants from :mod:`otel_ml._names`,
valid in the legacy character set, so they need no escaping; label values are escaped by the
library's own rule (backslash, newline, double quote), memoised per distinct value; numbers are
formatted by the library's ``floatToGoString``. Anything outside that plain shape (another
family type, a name outside the legacy set, a timestamp or exemplar, an escaping scheme that
rewrites names) is handed to prometheus_client's encoder whole, so the output is always the
library's. ``tests/test_exposition.py`` pins the equality on real pages and hostile values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

from prometheus_client import exposition
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as om_exposition
from prometheus_client.utils import floatToGoString

from ._series import Gauge

__all__ = ["PageWriter", "encode_families", "encode_gauges", "encode_page", "fast_format"]

_LEGACY_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")  # no ':': OpenMetrics' writer rewrites it in sample names
_LEGACY_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_PLAIN_TYPES = frozenset({"counter", "gauge", "histogram"})
_OM_SUFFIXES = ("_created", "_gsum", "_gcount")  # the text format moves these to extra families
_SAME_FOR_LEGACY = frozenset({om_exposition.UNDERSCORES, om_exposition.ALLOWUTF8})  # leave legacy names as they are
_MEMO_LIMIT = 100_000
_CHECKED_LABELS: set[tuple[str, ...]] = set()  # label-name tuples of gauges found legacy-valid

Header = tuple[str, str, str]  # family name (without _total), type, help
Encoded = list[tuple[Header, str]]  # a part of a page: each family's sample lines


class _Families:
    """A ``collect()``-able view of families already collected, for the library's encoders."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


class _Writer:
    """Sample lines of plain families; memoises escaped label values and whole label sets (the
    same model, window and feature labels recur in every windowed family of a page)."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}
        self._label_sets: dict[tuple[tuple[str, str], ...], str] = {}

    def value(self, raw: str) -> str:
        escaped = self._values.get(raw)
        if escaped is None:
            if len(self._values) >= _MEMO_LIMIT:
                self._values.clear()  # hostile-cardinality insurance: the memo never outgrows this
            escaped = raw.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
            self._values[raw] = escaped
        return escaped

    def _label_set(self, items: tuple[tuple[str, str], ...]) -> str:
        if len(self._label_sets) >= _MEMO_LIMIT:
            self._label_sets.clear()
        value = self.value
        text = self._label_sets[items] = "{" + ",".join([f'{k}="{value(v)}"' for k, v in sorted(items)]) + "}"
        return text

    def label_set(self, items: tuple[tuple[str, str], ...]) -> str:
        """``{name="value",...}`` of one label set, sorted by name as the library writes it."""
        return self._label_sets.get(items) or self._label_set(items)

    def lines(self, metric: Metric, out: list[str]) -> None:
        memo, label_set, number = self._label_sets, self._label_set, _go_float
        for s in metric.samples:
            if s.labels:
                items = tuple(s.labels.items())
                out.append(f"{s.name}{memo.get(items) or label_set(items)} {number(s.value)}\n")
            else:
                out.append(f"{s.name} {number(s.value)}\n")


def _go_float(value: float) -> str:
    """``floatToGoString`` with its common case inlined: a finite float below 1e6 is its repr."""
    if type(value) is float and -1e6 < value < 1e6:
        return repr(value)
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


_WRITER = _Writer()


def _plain(metric: Metric, openmetrics_format: bool) -> bool:
    """Whether the fast writer gives exactly the library's lines for this family."""
    if metric.type not in _PLAIN_TYPES or metric.unit or not _LEGACY_NAME.match(metric.name):
        return False
    checked: set[tuple[str, ...]] = set()
    for s in metric.samples:
        if s.timestamp is not None or s.exemplar is not None or getattr(s, "native_histogram", None) is not None:
            return False
        if not openmetrics_format and s.name.endswith(_OM_SUFFIXES):
            return False
        keys = tuple(s.labels)
        if keys not in checked:
            if not all(_LEGACY_LABEL.match(k) for k in keys):
                return False
            checked.add(keys)
        if not _LEGACY_NAME.match(s.name):
            return False
    return True


def _help(documentation: str, openmetrics_format: bool) -> str:
    if openmetrics_format:  # OpenMetrics escapes help like a label value
        return _WRITER.value(documentation)
    return documentation.replace("\\", r"\\").replace("\n", r"\n")


def _header(header: Header, openmetrics_format: bool) -> str:
    name, kind, documentation = header
    if kind == "counter" and not openmetrics_format:
        name += "_total"
    return f"# HELP {name} {_help(documentation, openmetrics_format)}\n# TYPE {name} {kind}\n"


def _assemble(parts: Iterable[Encoded], openmetrics_format: bool) -> bytes:
    """One page from encoded parts: each family once, its parts' lines in the parts' order."""
    families: dict[str, tuple[Header, list[str]]] = {}
    for part in parts:
        for header, text in part:
            found = families.get(header[0])
            if found is None:
                families[header[0]] = (header, [text])
            else:
                found[1].append(text)
    out = [_header(header, openmetrics_format) + "".join(texts) for header, texts in families.values()]
    if openmetrics_format:
        out.append("# EOF\n")
    return "".join(out).encode("utf-8")


def encode_families(families: Sequence[Metric], openmetrics_format: bool) -> Encoded | None:
    """Plain families as encoded parts; None if one is not plain (the library must write them)."""
    if not all(_plain(m, openmetrics_format) for m in families):
        return None
    out: Encoded = []
    for metric in families:
        lines: list[str] = []
        _WRITER.lines(metric, lines)
        out.append(((metric.name, metric.type, metric.documentation), "".join(lines)))
    return out


def encode_gauges(gauges: Sequence[Gauge]) -> Encoded | None:
    """The sidecar's computed gauges as encoded parts, grouped by family in first-seen order.

    A model's gauges share one labels dict per feature and window across their families, so
    label sets are looked up by the dict's identity first (the list keeps every dict alive
    for the call, so an identity cannot be reused within it)."""
    by_family: dict[str, tuple[Header, list[str]]] = {}
    by_identity: dict[int, str] = {}
    label_set = _WRITER.label_set
    checked = _CHECKED_LABELS
    for inst, labels, value in gauges:
        name = inst.prometheus
        rendered = by_identity.get(id(labels))
        if rendered is None:
            keys = tuple(labels)
            if keys not in checked:
                if not all(_LEGACY_LABEL.match(k) for k in keys) or not _LEGACY_NAME.match(name):
                    return None
                checked.add(keys)
            rendered = by_identity[id(labels)] = label_set(tuple(labels.items()))
        found = by_family.get(name)
        if found is None:
            if not _LEGACY_NAME.match(name):
                return None
            found = by_family[name] = ((name, "gauge", inst.description), [])
        found[1].append(f"{name}{rendered} {_go_float(value)}\n")
    return [(header, "".join(lines)) for header, lines in by_family.values()]


class PageWriter:
    """Encoded parts cached by key, so a scrape re-encodes only the parts that changed."""

    def __init__(self) -> None:
        self._parts: dict[tuple[str, ...], tuple[tuple[Any, ...], Encoded]] = {}

    def part(
        self, part_id: tuple[str, ...], key: tuple[Any, ...], encode: Callable[[], Encoded | None]
    ) -> Encoded | None:
        cached = self._parts.get(part_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        encoded = encode()
        if encoded is not None:
            self._parts[part_id] = (key, encoded)
        return encoded

    def keep(self, part_ids: Iterable[tuple[str, ...]]) -> None:
        """Forget parts that are no longer on the page."""
        wanted = set(part_ids)
        for stale in [p for p in self._parts if p not in wanted]:
            del self._parts[stale]

    @staticmethod
    def page(parts: Sequence[Encoded], openmetrics_format: bool) -> bytes:
        return _assemble(parts, openmetrics_format)


def fast_format(accept: str) -> tuple[bool | None, str]:
    """(OpenMetrics?, content type) for this ``Accept`` header; None: the library must encode."""
    encoder, content_type = choose_encoder(accept)
    func = encoder.func if isinstance(encoder, partial) else encoder
    options: dict[str, Any] = encoder.keywords if isinstance(encoder, partial) else {}
    if options.get("escaping", om_exposition.UNDERSCORES) not in _SAME_FOR_LEGACY:
        return None, content_type
    if func is exposition.generate_latest:
        return False, content_type
    if func is om_exposition.generate_latest and options.get("version", "1.0.0") == "1.0.0":
        return True, content_type
    return None, content_type


def encode_page(families: Sequence[Metric], accept: str = "") -> tuple[bytes, str]:
    """(body, content type) of ``families`` for a scrape with this ``Accept`` header."""
    openmetrics_format, content_type = fast_format(accept)
    if openmetrics_format is not None:
        encoded = encode_families(families, openmetrics_format)
        if encoded is not None:
            return _assemble([encoded], openmetrics_format), content_type
    encoder, content_type = choose_encoder(accept)
    return encoder(_Families(families)), content_type
