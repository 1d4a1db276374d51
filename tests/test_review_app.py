"""Review sampling inside ``@monitor``: strata, the deterministic selection and its counts.

The selection is checked against an independent computation of the rule the issue states,
``blake2b(request_id, key=salt) < pi * 2^64``, written out here with hashlib.
"""

from __future__ import annotations

import hashlib
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from scipy import stats

from otel_ml import ModelMonitor, Review, current_request_id
from otel_ml import _names as n


def _selected(salt: bytes, request_id: str, pi: float) -> bool:
    """The issue's rule, computed independently: a keyed blake2b as an unsigned 64-bit integer."""
    h = int.from_bytes(hashlib.blake2b(request_id.encode(), key=salt, digest_size=8).digest(), "little")
    return Fraction(h) < Fraction(pi) * 2**64


def _review_counts(registry: CollectorRegistry) -> dict[tuple[str, str, str], tuple[float, float]]:
    text = generate_latest(registry).decode()
    out: dict[tuple[str, str, str], list[float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name in (n.REVIEW_POPULATION.series, n.REVIEW_SAMPLED.series):
                key = (s.labels[n.LABEL_SEGMENT_KEY], s.labels[n.LABEL_SEGMENT], s.labels[n.LABEL_STRATUM])
                out.setdefault(key, [0.0, 0.0])[s.name == n.REVIEW_SAMPLED.series] = s.value
    return {k: (v[0], v[1]) for k, v in out.items()}


def test_single_rows_are_selected_by_the_hash_of_their_request_id() -> None:
    registry = CollectorRegistry()
    review = Review(rate=0.3, salt="s3cret")
    mon = ModelMonitor("m", "v1", decision=0.5, review=review, request_id=lambda row: row["id"], registry=registry)
    seen: dict[str, float] = {}

    @mon
    def predict(row: dict[str, Any]) -> float:
        assert current_request_id() == row["id"]
        return row["score"]

    rng = np.random.default_rng(7)
    for i in range(2000):
        rid, score = f"order-{i}", float(rng.uniform())
        predict({"id": rid, "score": score})
        seen[rid] = score
    expected = {rid for rid in seen if _selected(b"s3cret", rid, 0.3)}
    counts = _review_counts(registry)
    assert sum(p for p, _ in counts.values()) == 2000
    assert sum(s for _, s in counts.values()) == len(expected)
    # strata: bins of the score, finer around the 0.5 threshold ("(0.49,0.5]" exists)
    assert (n.ALL, n.ALL, "(0.49,0.5]") in counts and (n.ALL, n.ALL, "(0.8,+Inf)") in counts
    in_bin = sum(1 for s in seen.values() if 0.49 < s <= 0.5)
    assert counts[(n.ALL, n.ALL, "(0.49,0.5]")][0] == in_bin


def test_the_span_says_whether_and_with_which_probability_a_call_was_selected() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    mon = ModelMonitor(
        "m",
        "v1",
        review=Review(rate=0.5, salt="x"),
        request_id=lambda r: r["id"],
        tracer_provider=provider,
        registry=CollectorRegistry(),
    )
    predict = mon(lambda row: 0.4)
    for i in range(40):
        predict({"id": f"r{i}"})
    for span in exporter.get_finished_spans():
        assert span.attributes is not None
        rid = str(span.attributes[n.ATTR_REQUEST_ID])
        assert span.attributes[n.ATTR_REVIEW_SAMPLED] is _selected(b"x", rid, 0.5)
        assert (n.ATTR_REVIEW_PROBABILITY in span.attributes) is _selected(b"x", rid, 0.5)


def test_strata_follow_the_review_segment_and_every_segment_value_counts() -> None:
    registry = CollectorRegistry()
    mon = ModelMonitor(
        "m", "v1", segments=["region"], decision=0.7, review=Review(rate=1.0, segment="region"), registry=registry
    )
    predict = mon(lambda row: row["score"])
    for region, score, times in (("EU", 0.1, 5), ("EU", 0.695, 3), ("US", 0.71, 2)):
        for _ in range(times):
            predict({"region": region, "score": score})
    counts = _review_counts(registry)
    assert counts == {
        ("region", "EU", "(-Inf,0.2]"): (5, 5),
        ("region", "EU", "(0.69,0.7]"): (3, 3),
        ("region", "US", "(0.7,0.71]"): (2, 2),
    }


def test_a_batch_is_stratified_and_sampled_row_by_row() -> None:
    registry = CollectorRegistry()
    mon = ModelMonitor(  # a fixed request id: the rows' hashes, and so the test, are the same every run
        "m", "v1", decision=0.5, review=Review(rate=0.2, salt="b"), request_id=lambda f: "batch-3", registry=registry
    )
    rng = np.random.default_rng(3)
    scores = rng.uniform(size=20_000)
    predict = mon(lambda frame: scores[: len(frame)])
    predict(pd.DataFrame({"x": np.zeros(20_000)}))
    counts = _review_counts(registry)
    population = sum(p for p, _ in counts.values())
    sampled = sum(s for _, s in counts.values())
    assert population == 20_000
    low, high = stats.binom.interval(0.99, 20_000, 0.2)
    assert low <= sampled <= high
    for (_, _, stratum), (p, s) in counts.items():  # every stratum on its own, too
        lo, hi = stats.binom.interval(0.999, int(p), 0.2)
        assert lo <= s <= hi, (stratum, p, s)


def test_the_same_request_ids_are_selected_by_another_monitor_with_the_same_salt() -> None:
    def selected_ids(salt: str | None) -> set[str]:
        registry = CollectorRegistry()
        mon = ModelMonitor(
            "m", "v1", review=Review(rate=0.25, salt=salt), request_id=lambda r: r["id"], registry=registry
        )
        chosen: set[str] = set()
        predict = mon(lambda row: 0.3)
        for i in range(400):
            predict({"id": f"q{i}"})
            if _selected((salt or "otel-ml/m/v1").encode(), f"q{i}", 0.25):
                chosen.add(f"q{i}")
        counts = _review_counts(registry)
        assert sum(s for _, s in counts.values()) == len(chosen)
        return chosen

    assert selected_ids(None) == selected_ids(None)  # the default salt is the model's, the same everywhere
    a, b = selected_ids("one"), selected_ids("two")
    assert a != b and 0.1 < len(a & b) / max(len(a), 1) < 0.45  # another salt draws another sample


@pytest.mark.parametrize(
    ("config", "says"),
    [
        (lambda: Review(rate=1.5), "between 0 and 1"),
        (lambda: Review(), "needs sidecar="),
        (lambda: Review(rate=0.1, bins=0), "bins"),
    ],
)
def test_a_bad_review_config_is_refused(config: Any, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        config()


def test_the_review_segment_must_be_a_monitored_segment() -> None:
    with pytest.raises(ValueError, match="segments"):
        ModelMonitor("m", "v1", segments=["region"], review=Review(rate=0.1, segment="tenant"), registry=None)
