"""Label hygiene: what user data may become a Prometheus label value or name.

Prometheus accepts any UTF-8 in a label value, but a lone surrogate cannot be encoded at all
(prometheus_client's exposition and the OTLP protobuf encoder both raise on it, so one such
value would break every scrape), control characters break log lines and dashboards, and an
unbounded length is a memory cost per series. Every label value from user data passes
through :func:`label_value`, every attribute key that becomes a label through :func:`label_name`.
"""

from __future__ import annotations

import re
from typing import Final

from ._names import (
    LABEL_BIN_LOWER,
    LABEL_BIN_UPPER,
    LABEL_MODEL_NAME,
    LABEL_MODEL_VERSION,
    LABEL_REFERENCE,
    LABEL_SOURCE,
    LABEL_WINDOW,
    prometheus_label,
)

__all__ = [
    "MAX_LABEL_NAME_CHARS",
    "MAX_LABEL_VALUE_CHARS",
    "MAX_REQUEST_ID_BYTES",
    "REPLACEMENT",
    "RESERVED_LABEL_NAMES",
    "label_name",
    "label_value",
    "storable_request_id",
]


MAX_LABEL_VALUE_CHARS: Final = 256
MAX_REQUEST_ID_BYTES: Final = 256  # longer request ids are refused: an id is an id, not a document
REPLACEMENT: Final = "\ufffd"
_UNSAFE_VALUE: Final = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_LABEL_NAME: Final = re.compile("[a-zA-Z_][a-zA-Z0-9_]*")
_INVALID_NAME_CHAR: Final = re.compile("[^a-zA-Z0-9_]")
MAX_LABEL_NAME_CHARS: Final = 128
# Label names the sidecar or Prometheus itself sets; an input attribute of that name would
# collide with a generated label (or a target label) and is dropped instead (any ``__*`` too).
RESERVED_LABEL_NAMES: Final = frozenset(
    {
        "le",
        "quantile",
        "job",
        "instance",
        LABEL_MODEL_NAME,
        LABEL_MODEL_VERSION,
        LABEL_WINDOW,
        LABEL_REFERENCE,
        LABEL_BIN_LOWER,
        LABEL_BIN_UPPER,
        LABEL_SOURCE,
    }
)
# ``reason`` is not reserved: the sidecar's own reason-labelled counters are families no input
# may send, and an app family declares it (ml_shadow_dropped_total{reason}).


def storable_request_id(rid: str) -> bool:
    """Whether a request id can be queued for review: at most 256 bytes of valid UTF-8 (a lone
    surrogate cannot be stored or sent as JSON text). The app checks before it sends, the sidecar
    when it receives, with this one rule."""
    try:
        return len(rid) <= MAX_REQUEST_ID_BYTES and len(rid.encode("utf-8")) <= MAX_REQUEST_ID_BYTES
    except UnicodeEncodeError:
        return False


def label_value(value: str) -> str:
    """``value`` made safe for any exposition: lone surrogates and control characters become
    U+FFFD and the length is capped at :data:`MAX_LABEL_VALUE_CHARS` (the common case, a short
    clean string, is returned as is after one regex scan)."""
    if len(value) <= MAX_LABEL_VALUE_CHARS and _UNSAFE_VALUE.search(value) is None:
        return value
    return _UNSAFE_VALUE.sub(REPLACEMENT, value[:MAX_LABEL_VALUE_CHARS])


def label_name(attribute: str) -> tuple[str | None, str]:
    """The Prometheus label an input attribute key becomes, and what was done to it.

    Returns ``(label, "ok")``; ``(label, "renamed_label")`` when the key had to be changed the
    way the OpenTelemetry-to-Prometheus translation does (invalid characters to ``_``, a
    leading digit prefixed with ``key_``); ``(None, "reserved_label")`` for a name that would
    collide with a generated or reserved label (``le``, ``ml_window``, ``__name__``, any
    ``__*`` ...); ``(None, "invalid_label")`` for an empty or over-long key.
    """
    label = prometheus_label(attribute)
    if not label or len(label) > MAX_LABEL_NAME_CHARS:
        return None, "invalid_label"
    how = "ok"
    if _LABEL_NAME.fullmatch(label) is None:
        label = _INVALID_NAME_CHAR.sub("_", label)
        if label[0].isdigit():
            label = "key_" + label
        how = "renamed_label"
    if label.startswith("__") or label in RESERVED_LABEL_NAMES:
        return None, "reserved_label"
    return label, how
