"""Acknowledged labels survive ``kill -9``: the sidecar as a real process, the join store on disk.

A label producer replays a day of outcomes in batches; the sidecar is killed with SIGKILL half way,
long before its next state snapshot, and restarted. The labels it acknowledged are in the store's
log and are counted again from it, so the final counters (joined, unmatched by reason, the labelled
score histogram) equal those of a sidecar that was never killed.
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
import requests
from conftest import SidecarProcess
from prometheus_client.parser import text_string_to_metric_families

from otel_ml import Baseline

JSON = {"Content-Type": "application/json"}
_COUNTERS = (
    "ml_outcomes_total",
    "ml_labels_unmatched_total",
    "ml_labels_received_total",
    "ml_labelled_score_bucket",
    "ml_outcome_squared_error_total",
)


def _counters(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = requests.get(url + "/metrics", timeout=10).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name in _COUNTERS
    }


def _batches(n: int, size: int, seed: int) -> tuple[dict[str, object], list[list[dict[str, object]]]]:
    rng = np.random.default_rng(seed)
    scores = rng.random(n)
    rids = [f"req-{i}" for i in range(n)]
    predictions = {
        "model": "fraud",
        "version": "v3",
        "request_ids": rids,
        "scores": scores.round(6).tolist(),
        "decisions": ["true" if s > 0.7 else "false" for s in scores],
        "segments": {"country": rng.choice(["US", "DE", "FR"], n).tolist()},
    }
    labels = [{"request_id": rid, "label": bool(rng.random() < s)} for rid, s in zip(rids, scores)]
    labels += [{"request_id": f"never-{i}", "label": True} for i in range(n // 20)]  # unknown ids
    labels += labels[: n // 10]  # the producer sends some twice: duplicates
    order = rng.permutation(len(labels))
    shuffled = [labels[i] for i in order]
    return predictions, [shuffled[i : i + size] for i in range(0, len(shuffled), size)]


def _args(baseline_file: Path, state: Path) -> list[str]:
    return ["--baseline", str(baseline_file), "--state-file", str(state), "--persist-interval", "1h"]


@pytest.fixture
def baseline_file(baseline: Baseline, tmp_path: Path) -> Path:
    return baseline.save(tmp_path / "fraud-v3.baseline.json")


def test_acknowledged_labels_survive_kill_9(
    baseline_file: Path, tmp_path: Path, processes: list[SidecarProcess]
) -> None:
    predictions, batches = _batches(4_000, 100, seed=11)

    reference = SidecarProcess(*_args(baseline_file, tmp_path / "reference.npz"))
    processes.append(reference)
    assert requests.post(reference.url + "/v1/predictions", json=predictions, timeout=30).status_code == 200
    for batch in batches:
        assert requests.post(reference.url + "/v1/labels", json=batch, timeout=30).status_code == 200
    expected = _counters(reference.url)
    assert expected, "the reference run counted labels"

    first = SidecarProcess(*_args(baseline_file, tmp_path / "state.npz"))
    processes.append(first)
    assert requests.post(first.url + "/v1/predictions", json=predictions, timeout=30).status_code == 200
    half = len(batches) // 2
    for batch in batches[:half]:
        assert requests.post(first.url + "/v1/labels", json=batch, timeout=30).status_code == 200
    first.kill(signal.SIGKILL)  # the state snapshot is an hour away: only the store's log has them
    second = SidecarProcess(*_args(baseline_file, tmp_path / "state.npz"))
    processes.append(second)
    for batch in batches[half:]:
        assert requests.post(second.url + "/v1/labels", json=batch, timeout=30).status_code == 200
    assert _counters(second.url) == expected


def test_a_kill_during_requests_loses_no_acknowledged_label(
    baseline_file: Path, tmp_path: Path, processes: list[SidecarProcess]
) -> None:
    """Killed while requests are in flight: an unacknowledged batch is sent again (at least once);
    what was acknowledged is counted once, and a resent batch that had been logged is a duplicate."""
    predictions, batches = _batches(3_000, 20, seed=12)
    args = _args(baseline_file, tmp_path / "state.npz")
    first = SidecarProcess(*args)
    processes.append(first)
    assert requests.post(first.url + "/v1/predictions", json=predictions, timeout=30).status_code == 200
    acked: list[int] = []
    unacked: list[int] = []
    done = threading.Event()

    def produce() -> None:
        session = requests.Session()
        for i, batch in enumerate(batches):
            try:
                ok = session.post(first.url + "/v1/labels", data=json.dumps(batch), headers=JSON, timeout=30).ok
            except requests.RequestException:
                ok = False
            (acked if ok else unacked).append(i)
        done.set()

    thread = threading.Thread(target=produce)
    thread.start()
    while len(acked) < len(batches) // 3:
        threading.Event().wait(0.01)
    first.kill(signal.SIGKILL)
    thread.join(timeout=60)
    assert done.is_set() and unacked, "the kill interrupted the producer"
    second = SidecarProcess(*args)
    processes.append(second)
    for i in unacked:
        assert requests.post(second.url + "/v1/labels", json=batches[i], timeout=30).status_code == 200
    got = _counters(second.url)

    reference = SidecarProcess(*_args(baseline_file, tmp_path / "reference.npz"))
    processes.append(reference)
    assert requests.post(reference.url + "/v1/predictions", json=predictions, timeout=30).status_code == 200
    for batch in batches:
        assert requests.post(reference.url + "/v1/labels", json=batch, timeout=30).status_code == 200
    expected = _counters(reference.url)
    joined = {
        k: v for k, v in expected.items() if k[0] != "ml_labels_unmatched_total" and k[0] != "ml_labels_received_total"
    }
    assert {k: got.get(k) for k in joined} == joined, "every label joined exactly once"
    for key, value in expected.items():  # a resent batch that was logged counts its misses again
        if key[0] == "ml_labels_unmatched_total":
            assert got[key] >= value, key
