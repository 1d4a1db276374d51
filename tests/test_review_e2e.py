"""Human review end to end: real app processes with ``@monitor(review=...)``, a real sidecar
process, reviewers paging its queue and answering through ``/v1/labels``.

The issue's replica test runs here through the whole stack: the ids the sidecar queues are the
same whether one process or four serve the traffic, and both equal the rule computed
independently with hashlib. The reviews then come back and the stratified estimate from the
sidecar's and the app's counters matches a hand count over the selected predictions.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from conftest import SidecarProcess
from prometheus_client.parser import text_string_to_metric_families

from otel_ml import _names as n
from otel_ml import fit_baseline
from otel_ml._review_sampling import stratified_error_rate

SALT = "e2e-salt"
RATE = 0.2
N_CALLS = 2400

_REPLICA = textwrap.dedent(
    """
    import json, sys
    from prometheus_client import CollectorRegistry, generate_latest
    from otel_ml import Baseline, ModelMonitor, Review

    baseline, url, first, step, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    registry = CollectorRegistry()
    mon = ModelMonitor(
        baseline=Baseline.load(baseline), segments=["region"], decision=0.5, request_id=lambda row: row["id"],
        review=Review(sidecar=url, rate=%(rate)r, salt=%(salt)r, segment="region"), registry=registry,
    )
    predict = mon(lambda row: row["score"])
    for i in range(first, %(n)d, step):
        score = (i * 7919 %% 1000) / 1000
        predict({"id": f"req-{i}", "x": score, "region": "eu" if i %% 3 else "us", "score": score})
    assert mon.review.client.flush(30)
    open(out, "w").write(generate_latest(registry).decode())
    mon.close()
    """
) % {"rate": RATE, "salt": SALT, "n": N_CALLS}


def _score(i: int) -> float:
    return (i * 7919 % 1000) / 1000


def _truth(i: int) -> str:
    """The outcome a reviewer finds: errors concentrate near the 0.5 threshold."""
    s = _score(i)
    wrong = abs(s - 0.5) < 0.05 and i % 2 == 0 or i % 97 == 0
    served = s > 0.5
    return str(served != wrong).lower()


def _selected(rid: str) -> bool:
    h = int.from_bytes(hashlib.blake2b(rid.encode(), key=SALT.encode(), digest_size=8).digest(), "little")
    return Fraction(h) < Fraction(RATE) * 2**64


@pytest.fixture(scope="module")
def baseline_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    scores = rng.uniform(size=5000)
    train = {"x": scores, "region": rng.choice(["eu", "us"], 5000)}
    baseline = fit_baseline(train, model="rev", version="v1", scores=scores, segments=["region"], decision=0.5)
    return baseline.save(tmp_path_factory.mktemp("rev") / "rev.baseline.json")


def _serve(baseline: Path, url: str, replicas: int, workdir: Path) -> list[str]:
    script = workdir / "replica.py"
    script.write_text(_REPLICA)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(baseline), url, str(k), str(replicas), str(workdir / f"m{k}.txt")],
            stderr=subprocess.PIPE,
        )
        for k in range(replicas)
    ]
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err.decode()
    return [(workdir / f"m{k}.txt").read_text() for k in range(replicas)]


def _queued(url: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = 0
    while True:
        page = requests.get(url + "/v1/review/queue", params={"cursor": cursor, "limit": 500}, timeout=10).json()
        items += page["items"]
        if not page["items"]:
            return items
        cursor = page["next_cursor"]


def _counter(texts: list[str], name: str) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for text in texts:
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name == name:
                    key = (s.labels[n.LABEL_SEGMENT], s.labels[n.LABEL_STRATUM])
                    out[key] = out.get(key, 0.0) + s.value
    return out


@pytest.mark.slow
def test_one_and_four_replicas_queue_the_same_ids_and_reviews_give_the_stratified_estimate(
    baseline_path: Path, tmp_path: Path
) -> None:
    expected = {f"req-{i}" for i in range(N_CALLS) if _selected(f"req-{i}")}
    queued: dict[int, list[dict[str, Any]]] = {}
    texts: dict[int, list[str]] = {}
    for replicas in (1, 4):
        sidecar = SidecarProcess("--baseline", str(baseline_path), "--state-file", str(tmp_path / f"s{replicas}.npz"))
        try:
            workdir = tmp_path / f"r{replicas}"
            workdir.mkdir()
            texts[replicas] = _serve(baseline_path, sidecar.url, replicas, workdir)
            queued[replicas] = _queued(sidecar.url)
            if replicas == 4:
                _review_and_check(sidecar.url, queued[4], texts[4])
        finally:
            sidecar.kill(signal.SIGTERM)
    ids = {k: {item["request_id"] for item in v} for k, v in queued.items()}
    assert ids[1] == ids[4] == expected
    assert len(queued[4]) == len(expected)  # each once: no duplicates from four senders
    assert all(item["pi"] == RATE and item["weight"] == pytest.approx(1 / RATE) for item in queued[4])
    population = {k: sum(_counter(t, n.REVIEW_POPULATION.series).values()) for k, t in texts.items()}
    sampled = {k: sum(_counter(t, n.REVIEW_SAMPLED.series).values()) for k, t in texts.items()}
    assert population == {1: N_CALLS, 4: N_CALLS}
    assert sampled == {1: len(expected), 4: len(expected)}


def _review_and_check(url: str, items: list[dict[str, Any]], texts: list[str]) -> None:
    """Reviewers answer every queued item; the sidecar counts correct/error per stratum."""
    labels = [
        {"request_id": item["request_id"], "label": _truth(int(item["request_id"].split("-")[1])), "source": "review"}
        for item in items
    ]
    for start in range(0, len(labels), 200):
        r = requests.post(url + "/v1/labels", json={"labels": labels[start : start + 200]}, timeout=10)
        assert r.status_code == 200, r.text
    text = requests.get(url + "/metrics", timeout=10).text
    labelled: dict[tuple[str, str, str], float] = {}
    pending = None
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == n.REVIEW_LABELLED.series:
                labelled[(s.labels[n.LABEL_SEGMENT], s.labels[n.LABEL_STRATUM], s.labels[n.LABEL_OUTCOME])] = s.value
            if s.name == n.REVIEW_PENDING.prometheus:
                pending = s.value
    assert pending == 0
    # hand count: an item is an error when the reviewer's label differs from the served decision
    by_stratum: dict[tuple[str, str], list[int]] = {}
    for item in items:
        i = int(item["request_id"].split("-")[1])
        error = _truth(i) != ("true" if _score(i) > 0.5 else "false")
        acc = by_stratum.setdefault((item["segment"], item["stratum"]), [0, 0])
        acc[0] += 1
        acc[1] += error
    for (segment, stratum), (reviewed, errors) in by_stratum.items():
        assert labelled.get((segment, stratum, n.REVIEW_ERROR), 0) == errors
        assert labelled.get((segment, stratum, n.REVIEW_CORRECT), 0) == reviewed - errors
    population = _counter(texts, n.REVIEW_POPULATION.series)
    keys = sorted(by_stratum)
    assert set(keys) <= set(population), (sorted(population)[:5], keys[:5])
    p, se = stratified_error_rate(
        [population[k] for k in keys], [by_stratum[k][0] for k in keys], [by_stratum[k][1] for k in keys]
    )
    true_rate = np.mean([_truth(i) != ("true" if _score(i) > 0.5 else "false") for i in range(N_CALLS)])
    assert abs(p - true_rate) < 3 * se, (p, se, true_rate)
