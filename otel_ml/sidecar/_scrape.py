"""Scrape input: read the app's Prometheus exposition at an interval, like Prometheus would.

The text is fetched with a timeout and parsed completely before anything is applied, so a
target that times out or answers garbage leaves the state untouched and is counted under an
``ml_sidecar_ingest_errors_total`` reason. A target that does not answer at all (connection
refused, timeout: typically the app not started yet) gets one of :data:`UNREACHABLE_REASONS`,
which the alerts treat as "target down" rather than as rejected input. Samples are grouped per
model version; the target URL is the source identity for reset detection.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Final

from prometheus_client.parser import text_string_to_metric_families

from .. import _names as n
from ._series import ACCEPTED, IngestError, MetricBatch, bins_from_cumulative

__all__ = ["UNREACHABLE_REASONS", "fetch_exposition", "parse_exposition"]

UNREACHABLE = "scrape_unreachable"
TIMEOUT = "scrape_timeout"
UNREACHABLE_REASONS: Final = (UNREACHABLE, TIMEOUT)  # MixinConfig.scrape_unreachable_reasons

ACCEPT = "text/plain;version=0.0.4;q=1,*/*;q=0.1"
MAX_EXPOSITION_BYTES = 64 * 1024 * 1024


def fetch_exposition(url: str, timeout: float, headers: Mapping[str, str] | None = None) -> str:
    """GET the target's exposition text; raises :class:`IngestError` with a ``scrape_*`` reason."""
    request = urllib.request.Request(url, headers={"Accept": ACCEPT, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read(MAX_EXPOSITION_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise IngestError(502, "scrape_http_status", f"scrape of {url} answered HTTP {exc.code}") from None
    except TimeoutError:
        raise IngestError(504, TIMEOUT, f"scrape of {url} timed out after {timeout:g}s") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise IngestError(504, TIMEOUT, f"scrape of {url} timed out after {timeout:g}s") from None
        raise IngestError(502, UNREACHABLE, f"cannot reach {url}: {exc.reason}") from None
    except OSError as exc:
        raise IngestError(502, UNREACHABLE, f"cannot read {url}: {exc}") from None
    if len(body) > MAX_EXPOSITION_BYTES:
        raise IngestError(413, "too_large", f"exposition of {url} exceeds {MAX_EXPOSITION_BYTES} bytes")
    try:
        return bytes(body).decode("utf-8")
    except UnicodeDecodeError:
        raise IngestError(502, "scrape_parse", f"exposition of {url} is not UTF-8 text") from None


def parse_exposition(text: str, source: str) -> list[MetricBatch]:
    """Group the otel-ml samples of an exposition per model version (all-or-nothing parse)."""
    batches: dict[tuple[str, str], MetricBatch] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise IngestError(502, "scrape_parse", f"cannot parse the exposition of {source}: {exc}") from None
    for family in families:
        for sample in family.samples:
            if sample.name not in ACCEPTED:
                continue
            labels = dict(sample.labels)
            model = labels.pop(n.LABEL_MODEL_NAME, None)
            version = labels.pop(n.LABEL_MODEL_VERSION, None)
            if not model or not version:
                continue
            batch = batches.get((model, version))
            if batch is None:
                batch = batches[(model, version)] = MetricBatch(source, model, version, True, 0)
            batch.samples.append((sample.name, tuple(labels.items()), float(sample.value)))
    for batch in batches.values():
        batch.samples = bins_from_cumulative(batch.samples)
    return list(batches.values())
