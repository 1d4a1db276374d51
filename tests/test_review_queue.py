"""The sidecar's human-review part over real HTTP: the queue (kill -9, cursor paging at least
once, duplicates, full, expiry, hostile bodies), review labels counted by stratum and outcome and
never in the unweighted outcome counters, rates from pushed population counters, the webhook
against a real receiver across a restart, and the app's gauges pushed over OTLP."""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from conftest import SidecarProcess, free_port
from conftest import otlp_kv as _kv
from conftest import population_request as _population_request
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from prometheus_client.parser import text_string_to_metric_families

from otel_ml import Baseline
from otel_ml import _names as n
from otel_ml.sidecar import ScrapeTarget, Sidecar, SidecarConfig
from otel_ml.sidecar._review_config import ReviewSettings
from otel_ml.sidecar._review_input import ReviewItem, parse_review_items
from otel_ml.sidecar._review_queue import ReviewQueue
from otel_ml.sidecar._review_rates import RateSettings
from otel_ml.sidecar._series import IngestError, LimitSettings
from otel_ml.sidecar._state import StateSettings

PB = {"Content-Type": "application/x-protobuf"}
DAY = 86400.0


def item(rid: str, **over: Any) -> dict[str, Any]:
    base = {
        "request_id": rid,
        "model": "fraud",
        "version": "v3",
        "segment_key": "country",
        "segment": "US",
        "stratum": "(0.65,0.7]",
        "pi": 0.25,
        "score": 0.68,
        "decision": "false",
        "time": 1.8e9,
        "salt_id": "0badc0de",
    }
    return {**base, **over}


def samples(url: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = requests.get(url + "/metrics", timeout=5).text
    return {
        tuple(sorted(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == name
    }


def one(url: str, name: str, **labels: str) -> float | None:
    found = [v for lab, v in samples(url, name).items() if all(dict(lab).get(k) == x for k, x in labels.items())]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def read_all(url: str, limit: int = 100, **params: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = 0
    while True:
        r = requests.get(url + "/v1/review/queue", params={"cursor": cursor, "limit": limit, **params}, timeout=10)
        assert r.status_code == 200, r.text
        page = r.json()
        out += page["items"]
        if not page["items"]:
            assert page["next_cursor"] == cursor
            return out
        assert page["next_cursor"] == page["items"][-1]["seq"]
        cursor = page["next_cursor"]


def post_items(url: str, items: list[dict[str, Any]]) -> requests.Response:
    return requests.post(url + "/v1/review/items", json={"items": items}, timeout=30)


def review_label(url: str, rid: str, label: Any) -> requests.Response:
    return requests.post(url + "/v1/labels", json={"request_id": rid, "label": label, "source": "review"}, timeout=10)


@pytest.fixture
def baseline_file(baseline: Baseline, tmp_path: Path) -> Path:
    return baseline.save(tmp_path / "fraud-v3.baseline.json")


def start(
    baseline_file: Path, tmp_path: Path, review: ReviewSettings | None = None, combinations: int = 5000, **kw: Any
) -> Sidecar:
    limits = LimitSettings(max_segment_combinations=combinations)
    settings = StateSettings(review=review or ReviewSettings(), limits=limits)
    config = SidecarConfig(
        baselines=(baseline_file,),
        listen=("127.0.0.1", 0),
        windows=("10m", "1h"),
        state_file=tmp_path / "state.npz",
        state=settings,
        **kw,
    )
    return Sidecar(config).start()


@pytest.fixture
def sidecar(baseline_file: Path, tmp_path: Path) -> Iterator[Sidecar]:
    side = start(baseline_file, tmp_path)
    yield side
    side.stop()


# -- durability ---------------------------------------------------------------------------------
def test_queue_survives_kill_9_with_no_loss(
    baseline: Baseline, tmp_path: Path, processes: list[SidecarProcess]
) -> None:
    path = baseline.save(tmp_path / "b.json")
    args = ["--baseline", str(path), "--window", "10m", "--state-file", str(tmp_path / "s.npz")]
    first = SidecarProcess(*args)
    processes.append(first)
    ids = [f"req-{i}" for i in range(600)]
    for chunk in range(0, len(ids), 100):
        r = post_items(first.url, [item(rid, pi=0.1 + (i % 9) / 10) for i, rid in enumerate(ids[chunk : chunk + 100])])
        assert r.status_code == 200 and r.json() == {"accepted": 100, "duplicates": 0}, r.text
    for rid in ids[:7]:  # reviewed before the crash: counted once, never again
        assert review_label(first.url, rid, True).json() == {"joined": 1, "unmatched": 0}
    first.kill(signal.SIGKILL)  # no SIGTERM, no snapshot: only what was committed before each 200
    second = SidecarProcess(*args)
    processes.append(second)
    got = read_all(second.url, limit=77)
    assert [x["request_id"] for x in got] == ids[7:]  # every pending item, in seq order
    assert [x["seq"] for x in got] == sorted(x["seq"] for x in got)
    assert all(x["weight"] == pytest.approx(1 / x["pi"]) for x in got)
    assert one(second.url, "ml_review_queued_total") == 600
    assert one(second.url, "ml_review_pending") == 593
    assert one(second.url, "ml_review_labelled_total", ml_outcome="error") == 7  # decision false, label true
    assert review_label(second.url, ids[0], True).json() == {"joined": 0, "unmatched": 1}  # a duplicate now
    assert one(second.url, "ml_review_labelled_total", ml_outcome="error") == 7
    assert one(second.url, "ml_labels_unmatched_total", reason="duplicate") == 1


def test_an_unusable_queue_file_refuses_with_503_until_moved_away(baseline_file: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "review.sqlite"
    garbage.write_bytes(b"not a database at all, but someone's notes")
    side = start(baseline_file, tmp_path, ReviewSettings(queue_file=garbage))
    try:
        r = post_items(side.url, [item("a")])
        assert r.status_code == 503 and "not an SQLite database" in r.text
        assert requests.get(side.url + "/v1/review/queue").status_code == 503
        assert review_label(side.url, "a", True).status_code == 503
        ready = requests.get(side.url + "/readyz")
        assert ready.status_code == 503 and "review" in ready.text
        assert not side.state.reviews.retry()  # an existing file is never replaced
        assert garbage.read_bytes().startswith(b"not a database")
        garbage.unlink()  # the operator moves it away
        assert side.state.reviews.retry()
        assert post_items(side.url, [item("a")]).json() == {"accepted": 1, "duplicates": 0}
        assert requests.get(side.url + "/readyz").status_code == 200
    finally:
        side.stop()


# -- cursor, duplicates, full, expiry ----------------------------------------------------------
def test_cursor_paging_is_at_least_once(sidecar: Sidecar) -> None:
    url = sidecar.url
    assert post_items(url, [item(f"r{i}") for i in range(10)]).status_code == 200
    first = requests.get(url + "/v1/review/queue", params={"cursor": 0, "limit": 3}).json()
    assert [x["request_id"] for x in first["items"]] == ["r0", "r1", "r2"]
    # a consumer that crashed before keeping its cursor reads the same page again
    again = requests.get(url + "/v1/review/queue", params={"cursor": 0, "limit": 3}).json()
    assert again == first
    assert review_label(url, "r4", False).status_code == 200  # reviewed: leaves the queue
    rest = requests.get(url + "/v1/review/queue", params={"cursor": first["next_cursor"], "limit": 1000}).json()
    assert [x["request_id"] for x in rest["items"]] == [f"r{i}" for i in (3, 5, 6, 7, 8, 9)]
    # items not reviewed stay: a new reader from 0 still sees them
    assert [x["request_id"] for x in read_all(url)] == [f"r{i}" for i in range(10) if i != 4]
    assert post_items(url, [item("other", version="v3", model="fraud")]).status_code == 200
    filtered = read_all(url, model="fraud", version="v3")
    assert len(filtered) == 10
    assert read_all(url, model="nobody") == []


def test_duplicates_are_idempotent(sidecar: Sidecar) -> None:
    url = sidecar.url
    body = [item("a"), item("b"), item("a")]  # "a" twice in one body too
    assert post_items(url, body).json() == {"accepted": 2, "duplicates": 1}
    assert post_items(url, body).json() == {"accepted": 0, "duplicates": 3}
    assert one(url, "ml_review_queued_total") == 2
    assert [x["request_id"] for x in read_all(url)] == ["a", "b"]
    # the same request id of another version is another item
    assert one(url, "ml_review_pending") == 2


def test_full_queue_refuses_with_507_after_deleting_labelled_items(baseline_file: Path, tmp_path: Path) -> None:
    side = start(baseline_file, tmp_path, ReviewSettings(max_items=5))
    try:
        url = side.url
        assert post_items(url, [item(f"r{i}") for i in range(5)]).json()["accepted"] == 5
        before = read_all(url)
        r = post_items(url, [item("x1"), item("x2")])
        assert r.status_code == 507, r.text
        assert "full" in r.text
        assert read_all(url) == before  # nothing of the refused body was stored
        assert one(url, "ml_review_queue_dropped_total", reason="full") == 2
        assert one(url, "ml_sidecar_ingest_errors_total", reason="review_queue_full") == 1
        assert post_items(url, [item("r0")]).json() == {"accepted": 0, "duplicates": 1}  # a retry still fits
        for rid in ("r1", "r3"):
            review_label(url, rid, True)
        assert post_items(url, [item("x1"), item("x2")]).json()["accepted"] == 2  # labelled ones made room
        assert [x["request_id"] for x in read_all(url)] == ["r0", "r2", "r4", "x1", "x2"]
        assert one(url, "ml_review_pending") == 5
        assert post_items(url, [item("x3")]).status_code == 507  # only pending items left
        assert one(url, "ml_review_queue_dropped_total", reason="full") == 3
        assert one(url, "ml_review_labelled_total", ml_outcome="error") == 2  # counts outlive deleted items
    finally:
        side.stop()


def _items(prefix: str, count: int) -> list[ReviewItem]:
    return [
        ReviewItem(f"{prefix}{i}", "fraud", "v3", "country", "US", "(0.65,0.7]", 0.5, 0.68, "true", None, "0badc0de")
        for i in range(count)
    ]


def _judge(decision: str | None, label: str) -> str | None:
    return None if decision is None else ("correct" if decision == label else "error")


def test_expiry_and_retention(tmp_path: Path) -> None:
    day = DAY
    queue = ReviewQueue(tmp_path / "q.sqlite", max_items=100, retention=7 * day, max_pending_age=30 * day)
    t0 = 1.8e9
    queue.add(_items("old", 3), t0)
    queue.add(_items("new", 2), t0 + 20 * day)
    queue.label([("old0", "true", None)], t0 + 1 * day, _judge)  # labelled on day 1: kept until day 8
    assert queue.expire(t0 + 7 * day) == (0, 0)
    assert queue.expire(t0 + 8 * day + 1) == (0, 1)  # retention over: deleted, not "expired"
    assert queue.expire(t0 + 30 * day + 1) == (2, 0)  # old1, old2 pending for 30 days
    assert [x["request_id"] for x in queue.pending_items(0, 100)] == ["new0", "new1"]
    assert queue.counts[("dropped", "fraud", "v3", "expired")] == 2
    assert queue.counts[("labelled", "fraud", "v3", "country", "US", "(0.65,0.7]", "correct")] == 1
    assert queue.rows == 2 and queue.pending == {("fraud", "v3"): 2}
    queue.close()
    reopened = ReviewQueue(tmp_path / "q.sqlite")  # counters and pending counts come back from the file
    assert reopened.counts[("dropped", "fraud", "v3", "expired")] == 2
    assert reopened.rows == 2 and reopened.pending == {("fraud", "v3"): 2}
    # seq numbers are never reused, so a cursor stays valid after deletions
    reopened.add(_items("later", 1), t0 + 31 * day)
    assert reopened.pending_items(0, 100)[-1]["seq"] == 6
    reopened.close()


def test_expired_items_are_counted_on_metrics(sidecar: Sidecar) -> None:
    post_items(sidecar.url, [item("a"), item("b")])
    sidecar.state.tick(now=time.time() + 31 * DAY)
    assert one(sidecar.url, "ml_review_queue_dropped_total", reason="expired") == 2
    assert one(sidecar.url, "ml_review_pending") == 0
    assert one(sidecar.url, "ml_review_oldest_pending_age_seconds") == 0


# -- review labels -----------------------------------------------------------------------------
def test_review_labels_count_per_stratum_and_outcome_and_never_in_outcomes(sidecar: Sidecar) -> None:
    url = sidecar.url
    strata = ["(0.65,0.7]", "(0.7,0.71]", "(0.9,+Inf)"]
    decisions = ["true", "false"]
    items = [
        item(f"r{i}", stratum=strata[i % 3], decision=decisions[i % 2], segment=("US", "DE")[i % 4 // 2])
        for i in range(24)
    ]
    labels = [bool(i % 5 < 2) for i in range(24)]
    assert post_items(url, items).json()["accepted"] == 24
    # the same requests also wait in the join store: an "api" label would join them
    body = {
        "model": "fraud",
        "version": "v3",
        "request_ids": [x["request_id"] for x in items],
        "segments": {"country": [x["segment"] for x in items]},
    }
    assert requests.post(url + "/v1/predictions", json=body).status_code == 200
    answer = requests.post(
        url + "/v1/labels",
        json=[{"request_id": x["request_id"], "label": y, "source": "review"} for x, y in zip(items, labels)],
    ).json()
    assert answer == {"joined": 24, "unmatched": 0}
    expected: dict[tuple[str, str, str], int] = {}
    for x, y in zip(items, labels):  # correct iff (decision is "true") == label
        outcome = "correct" if (x["decision"] == "true") == y else "error"
        key = (x["segment"], x["stratum"], outcome)
        expected[key] = expected.get(key, 0) + 1
    got = {
        (d["ml_segment"], d["ml_stratum"], d["ml_outcome"]): v
        for lab, v in samples(url, "ml_review_labelled_total").items()
        if (d := dict(lab))["ml_model_name"] == "fraud" and d["ml_segment_key"] == "country"
    }
    assert got == expected
    assert samples(url, n.OUTCOMES.series) == {}  # the stratified sample never enters the unweighted counts
    assert one(url, "ml_labels_received_total", ml_source="review") == 24
    assert one(url, "ml_review_pending") == 0
    # an ordinary label for one of them still joins its prediction (the store was there all along)
    requests.post(url + "/v1/labels", json={"request_id": "r0", "label": True})
    assert sum(samples(url, n.OUTCOMES.series).values()) == 2  # __all__ + its segment: the one api label


def test_review_label_for_an_id_not_queued(sidecar: Sidecar) -> None:
    r = review_label(sidecar.url, "never-queued", True)
    assert r.json() == {"joined": 0, "unmatched": 1}
    assert one(sidecar.url, "ml_labels_unmatched_total", reason="not_queued") == 1
    assert one(sidecar.url, "ml_labels_unmatched_total", reason="unknown_request_id") == 0
    assert samples(sidecar.url, "ml_review_labelled_total") == {}


def test_items_without_a_decision_are_marked_but_not_judged(sidecar: Sidecar) -> None:
    post_items(sidecar.url, [item("nodecision", decision=None)])
    review_label(sidecar.url, "nodecision", True)
    assert one(sidecar.url, "ml_review_pending") == 0
    assert samples(sidecar.url, "ml_review_labelled_total") == {}
    assert one(sidecar.url, "ml_labels_unmatched_total", reason="no_decision") == 1


def test_labelled_series_are_bounded_across_restarts(baseline_file: Path, tmp_path: Path) -> None:
    side = start(baseline_file, tmp_path, combinations=2)
    try:
        post_items(side.url, [item("a", stratum="(0.1,0.2]"), item("b", stratum="(0.2,0.3]")])
    finally:
        side.stop()
    side = start(baseline_file, tmp_path, combinations=2)  # the budget spent before is still spent
    try:
        post_items(side.url, [item("c", stratum="(0.3,0.4]"), item("d", stratum="(0.1,0.2]", segment="DE")])
        for rid in "abcd":
            review_label(side.url, rid, False)
        series = samples(side.url, "ml_review_labelled_total")
        got: dict[tuple[str, str, str], float] = {}
        for lab, v in series.items():  # both outcomes per stratum (from 0): summed here
            key = (dict(lab)["ml_segment_key"], dict(lab)["ml_segment"], dict(lab)["ml_stratum"])
            got[key] = got.get(key, 0) + v
        assert len(series) == 2 * len(got)
        assert got == {
            ("country", "US", "(0.1,0.2]"): 1,
            ("country", "US", "(0.2,0.3]"): 1,
            ("__other__", "__other__", "__other__"): 2,
        }
    finally:
        side.stop()


# -- rates -------------------------------------------------------------------------------------
def test_rates_from_the_ingested_population(baseline_file: Path, tmp_path: Path, baseline: Baseline) -> None:
    assert baseline.score is not None and baseline.score.decision_threshold == 0.7
    rates = RateSettings(quota=2, threshold_quota=5, segment_floor=10, window=DAY)
    side = start(baseline_file, tmp_path, ReviewSettings(rates=rates))
    try:
        url = side.url
        params = {"model": "fraud", "version": "v3"}
        before = requests.get(url + "/v1/review/rates", params=params).json()
        assert before["default"] == 1.0 and before["rates"] == []  # no volume yet: nothing to flood with
        started = side.state.models[("fraud", "v3")].rings["10m"].times[0]
        side.state.clock = lambda: started + 3600.0  # an hour of traffic: volumes x 24 per day
        volumes = {
            ("country", "US", "(-Inf,0.5]"): 40_000.0,
            ("country", "US", "(0.69,0.7]"): 1_000.0,  # touches the threshold 0.7
            ("country", "US", "(0.9,+Inf)"): 500.0,
            ("country", "JP", "(-Inf,0.5]"): 20.0,  # rare segment: the floor raises it
        }
        r = requests.post(url + "/v1/metrics", data=_population_request(volumes), headers=PB)
        assert r.status_code == 200, r.text
        answer = requests.get(url + "/v1/review/rates", params=params).json()
        assert (answer["model"], answer["version"], answer["window"]) == ("fraud", "v3", DAY)
        got = {(x["segment_key"], x["segment"], x["stratum"]): x for x in answer["rates"]}
        daily = {k: int(v) * 24.0 for k, v in volumes.items()}  # the OTLP int points, scaled to a day
        assert {k: x["volume"] for k, x in got.items()} == pytest.approx({k: v for k, v in daily.items() if v})
        us = [k for k in daily if k[1] == "US"]
        quota = {k: 5.0 if k[2] == "(0.69,0.7]" else 2.0 for k in daily}
        # US: expected reviews 2 + 5 + 2 = 9 < floor 10, nothing capped at 1: every quota x 10/9
        for k in us:
            assert got[k]["pi"] == pytest.approx(min(1.0, quota[k] * 10 / 9 / daily[k]))
            assert got[k]["quota"] == quota[k]
        jp = ("country", "JP", "(-Inf,0.5]")
        assert got[jp]["pi"] == pytest.approx(10 / daily[jp])  # the floor alone: 10 of 480 a day
        # an unseen stratum gets quota x strata seen / model's daily volume
        assert answer["default"] == pytest.approx(2 * len(got) / sum(daily.values()))
    finally:
        side.stop()


class _App(BaseHTTPRequestHandler):
    """An app's /metrics as prometheus_client exposes the review population counter."""

    text = ""

    def do_GET(self) -> None:
        body = self.text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_rates_from_a_scraped_population(baseline_file: Path, tmp_path: Path) -> None:
    name = n.REVIEW_POPULATION.series
    _App.text = (
        f"# TYPE {n.REVIEW_POPULATION.prometheus} counter\n"
        f'{name}{{ml_model_name="fraud",ml_model_version="v3",ml_segment_key="__all__",ml_segment="__all__",'
        f'ml_stratum="(0.1,0.2]"}} 4800\n'
        f'{name}{{ml_model_name="fraud",ml_model_version="v3",ml_segment_key="__all__",ml_segment="__all__",'
        f'ml_stratum="(0.7,0.71]"}} 10\n'
    )
    app = ThreadingHTTPServer(("127.0.0.1", free_port()), _App)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    side = start(baseline_file, tmp_path)
    try:
        started = side.state.models[("fraud", "v3")].rings["10m"].times[0]
        side.state.clock = lambda: started + 2 * 3600.0  # two hours: x 12 per day
        side.scrape_once(ScrapeTarget(f"http://127.0.0.1:{app.server_port}/metrics", 1, 2))
        answer = requests.get(side.url + "/v1/review/rates", params={"model": "fraud", "version": "v3"}).json()
        got = {x["stratum"]: (x["volume"], x["pi"]) for x in answer["rates"]}
        # 57,600 a day at quota 20; 120 a day touching the threshold 0.7 at quota 50
        assert got == {"(0.1,0.2]": (57_600.0, pytest.approx(20 / 57_600)), "(0.7,0.71]": (120.0, 50 / 120)}
    finally:
        side.stop()
        app.shutdown()
        app.server_close()


def test_bad_queries_are_400(sidecar: Sidecar) -> None:
    url = sidecar.url
    for query in (
        "cursor=-1",
        "cursor=abc",
        "cursor=1e3",
        "limit=0",
        "limit=1001",
        "cursor=99999999999999999999",
        "bogus=1",
        "cursor=1&cursor=2",
        "model=" + "m" * 300,
    ):
        r = requests.get(f"{url}/v1/review/queue?{query}")
        assert r.status_code == 400, (query, r.text)
    assert requests.get(url + "/v1/review/queue?limit=1000").status_code == 200
    assert requests.get(url + "/v1/review/rates?model=fraud").status_code == 400
    assert requests.get(url + "/v1/review/rates?model=fraud&version=v9").status_code == 404
    assert one(url, "ml_sidecar_ingest_errors_total", reason="bad_review_query") == 10


def test_auth_and_the_metrics_only_listener(baseline_file: Path, tmp_path: Path) -> None:
    side = start(baseline_file, tmp_path, token="s3cret", metrics_listen=("127.0.0.1", 0))
    try:
        auth = {"Authorization": "Bearer s3cret"}
        assert requests.get(side.url + "/v1/review/queue").status_code == 401
        assert requests.get(side.url + "/v1/review/rates?model=fraud&version=v3").status_code == 401
        assert post_items(side.url, [item("a")]).status_code == 401
        ok = requests.post(side.url + "/v1/review/items", json={"items": [item("a")]}, headers=auth)
        assert ok.status_code == 200
        assert requests.get(side.url + "/v1/review/queue", headers=auth).json()["items"][0]["request_id"] == "a"
        # request ids never on the read-only listener
        assert requests.get(side.metrics_url + "/v1/review/queue", headers=auth).status_code == 404
        assert requests.get(side.metrics_url + "/metrics").status_code == 200
    finally:
        side.stop()


# -- hostile bodies ----------------------------------------------------------------------------
HOSTILE: list[tuple[str, bytes, int]] = [
    ("pi NaN", b'{"items": [' + json.dumps(item("h")).replace("0.25", "NaN").encode() + b"]}", 400),
    ("pi huge", json.dumps({"items": [item("h", pi=1e308 * 10)]}).replace("Infinity", "1e999").encode(), 400),
    ("pi zero", json.dumps({"items": [item("h", pi=0)]}).encode(), 400),
    ("pi above one", json.dumps({"items": [item("h", pi=1.5)]}).encode(), 400),
    ("pi negative", json.dumps({"items": [item("h", pi=-0.1)]}).encode(), 400),
    ("pi string", json.dumps({"items": [item("h", pi="0.5")]}).encode(), 400),
    ("pi bool", json.dumps({"items": [item("h", pi=True)]}).encode(), 400),
    ("pi missing", json.dumps({"items": [{k: v for k, v in item("h").items() if k != "pi"}]}).encode(), 400),
    ("huge int", b'{"items": [' + json.dumps(item("h")).replace("0.25", "1" * 5000).encode() + b"]}", 400),
    ("long request id", json.dumps({"items": [item("x" * 300)]}).encode(), 400),
    ("numeric request id", json.dumps({"items": [item("h", request_id=12)]}).encode(), 400),
    ("empty request id", json.dumps({"items": [item("")]}).encode(), 400),
    ("unknown model", json.dumps({"items": [item("h", version="v9")]}).encode(), 400),
    ("long segment", json.dumps({"items": [item("h", segment="s" * 300)]}).encode(), 400),
    ("segment object", json.dumps({"items": [item("h", segment={"a": 1})]}).encode(), 400),
    ("bad stratum", json.dumps({"items": [item("h", stratum="DROP TABLE")]}).encode(), 400),
    ("long stratum", json.dumps({"items": [item("h", stratum="(" + "1" * 80 + ",2]")]}).encode(), 400),
    ("bad salt id", json.dumps({"items": [item("h", salt_id="xyz")]}).encode(), 400),
    ("score NaN", b'{"items": [' + json.dumps(item("h")).replace("0.68", "NaN").encode() + b"]}", 400),
    ("score string", json.dumps({"items": [item("h", score="high")]}).encode(), 400),
    ("decision list", json.dumps({"items": [item("h", decision=[1])]}).encode(), 400),
    ("time in ms", json.dumps({"items": [item("h", time=1.8e12)]}).encode(), 400),
    ("features nested", json.dumps({"items": [item("h", features={"a": {"b": 1}})]}).encode(), 400),
    (
        "features huge",
        json.dumps({"items": [item("h", features={f"f{i}": "v" * 200 for i in range(200)})]}).encode(),
        400,
    ),
    ("features list", json.dumps({"items": [item("h", features=[1, 2])]}).encode(), 400),
    ("feature nested list", json.dumps({"items": [item("h", features={"v": [[1.0]]})]}).encode(), 400),
    ("deep json", b'{"items": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400),
    ("not json", b"items=1", 400),
    ("items a string", b'{"items": "all of them"}', 400),
    ("item a number", b'{"items": [1]}', 400),
    ("good then bad", json.dumps({"items": [item("good"), item("bad", pi=2)]}).encode(), 400),
    ("too many items", json.dumps({"items": [item(f"m{i}") for i in range(1001)]}).encode(), 413),
]


def test_hostile_bodies_are_4xx_and_change_nothing(sidecar: Sidecar) -> None:
    url = sidecar.url
    features = {"amount": 12.5, "country": "US", "embedding": [0.1, -2.0, None], "flag": True}
    assert post_items(url, [item("kept", features=features)]).status_code == 200
    before = read_all(url)
    assert before[0]["features"] == features
    for name, body, status in HOSTILE:
        r = requests.post(url + "/v1/review/items", data=body, headers={"Content-Type": "application/json"})
        assert r.status_code == status, (name, r.status_code, r.text)
        assert len(r.text) < 400, name  # a one-line reason, never the payload echoed
    r = requests.post(url + "/v1/review/items", data=b"{}", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    assert read_all(url) == before
    assert one(url, "ml_review_queued_total") == 1
    errors = samples(url, "ml_sidecar_ingest_errors_total")
    reasons = {dict(lab)["reason"]: v for lab, v in errors.items()}
    assert reasons["too_many_review_items"] == 1 and reasons["unknown_model"] == 1
    assert reasons["request_id_too_long"] == 1 and reasons["malformed_json"] == 3  # not json, deep, huge int
    assert reasons["bad_review_item"] == len(HOSTILE) - 6
    # an item without features stores none (the app sends them only when configured)
    post_items(url, [item("plain")])
    assert "features" not in read_all(url)[-1]


# -- webhook -------------------------------------------------------------------------------------
class _Receiver(BaseHTTPRequestHandler):
    batches: list[list[int]] = []
    failing = True
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.lock:
            if type(self).failing:
                self.send_response(503)
                self.end_headers()
                type(self).batches.append([])
                return
            type(self).batches.append([x["seq"] for x in json.loads(body)["items"]])
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _wait(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_webhook_delivers_at_least_once_across_kill_9(
    baseline: Baseline, tmp_path: Path, processes: list[SidecarProcess]
) -> None:
    _Receiver.batches, _Receiver.failing = [], True
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = tmp_path / "sidecar.yaml"
        hook = {"url": f"http://127.0.0.1:{server.server_port}/hook", "batch": 4, "timeout": "2s"}
        hook.update({"interval": "0.05s", "max_backoff": "0.2s"})
        config.write_text(
            yaml.safe_dump(
                {
                    "models": [{"baseline": str(baseline.save(tmp_path / "b.json"))}],
                    "windows": ["10m"],
                    "state_file": str(tmp_path / "s.npz"),
                    "review": {"webhook": hook},
                }
            )
        )
        first = SidecarProcess("--config", str(config))
        processes.append(first)
        assert post_items(first.url, [item(f"r{i}") for i in range(10)]).status_code == 200
        _wait(lambda: len(_Receiver.batches) >= 3)  # failing: retried with backoff, the cursor stays
        _wait(lambda: (one(first.url, "ml_review_webhook_failures_total") or 0) >= 3)  # and counted
        first.kill(signal.SIGKILL)
        _Receiver.failing = False
        second = SidecarProcess("--config", str(config))
        processes.append(second)
        _wait(lambda: {s for b in _Receiver.batches for s in b} >= set(range(1, 11)))
        assert post_items(second.url, [item(f"n{i}") for i in range(5)]).status_code == 200
        _wait(lambda: {s for b in _Receiver.batches for s in b} >= set(range(1, 16)))
        delivered = [b for b in _Receiver.batches if b]
        assert all(b == sorted(b) and len(b) <= 4 for b in delivered)  # seq order, the configured batch
        assert [s for b in delivered for s in b] == list(range(1, 16))  # the 2xx moved the cursor: no resend
        assert one(second.url, "ml_review_webhook_failures_total") == 0  # a new process, none failed
    finally:
        server.shutdown()
        server.server_close()


# -- app gauges over OTLP ----------------------------------------------------------------------
def _gauge_request(source: str, price_hash: str, updated: float) -> bytes:
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.attributes.append(_kv("service.instance.id", source))
    scope = rm.scope_metrics.add()
    model = [_kv(n.ATTR_MODEL_NAME, "fraud"), _kv(n.ATTR_MODEL_VERSION, "v3")]
    info = scope.metrics.add(name=n.PRICE_CONFIG_INFO.otel_name)
    point = info.gauge.data_points.add(time_unix_nano=2, as_int=1)
    point.attributes.extend(
        [*model, _kv(n.LABEL_PRICE_HASH, price_hash), _kv(n.LABEL_PRICE_UPDATED, "2026-11-01T00:00:00Z")]
    )
    stamp = scope.metrics.add(name=n.PRICE_CONFIG_UPDATED.otel_name, unit="s")
    stamp.gauge.data_points.add(time_unix_nano=2, as_double=updated).attributes.extend(model)
    return request.SerializeToString()


def test_app_gauges_over_otlp_are_reexposed_per_source_and_expire(sidecar: Sidecar) -> None:
    url = sidecar.url
    for _ in range(3):  # pushed again and again: a gauge, never summed
        assert requests.post(url + "/v1/metrics", data=_gauge_request("a", "abc", 1.79e9), headers=PB).ok
    assert requests.post(url + "/v1/metrics", data=_gauge_request("b", "def", 1.78e9), headers=PB).ok
    info = samples(url, n.PRICE_CONFIG_INFO.prometheus)
    assert {dict(k)[n.LABEL_PRICE_HASH]: v for k, v in info.items()} == {"abc": 1.0, "def": 1.0}
    assert all(dict(k)[n.LABEL_MODEL_NAME] == "fraud" for k in info)
    assert one(url, n.PRICE_CONFIG_UPDATED.prometheus) == 1.78e9  # the oldest table in use
    assert samples(url, n.PRICE_CONFIG_INFO.prometheus + "_total") == {}
    sidecar.state.tick(now=time.time() + sidecar.state.settings.source_ttl + 1)
    assert samples(url, n.PRICE_CONFIG_INFO.prometheus) == {}


def test_exposition_with_review_series_is_promtool_clean(sidecar: Sidecar) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (apt-get install prometheus)")
    url = sidecar.url
    post_items(url, [item("a"), item("b", stratum="(0.9,+Inf)"), item("c", stratum="none", decision="true")])
    review_label(url, "a", True)
    review_label(url, "c", True)
    review_label(url, "zz", True)
    requests.post(url + "/v1/metrics", data=_gauge_request("a", "abc", 1.79e9), headers=PB)
    requests.post(url + "/v1/metrics", data=_population_request({("country", "US", "(0.65,0.7]"): 10}), headers=PB)
    text = requests.get(url + "/metrics").text
    assert "ml_review_labelled_total" in text and "ml_price_config_info" in text
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


_JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=300),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(item("h"))) | st.just("features"), _JSON, max_size=4))
def test_any_field_value_is_a_4xx_or_a_sane_item(fields: dict[str, Any]) -> None:
    body = json.dumps({"items": [{**item("h"), **fields}]}).encode()
    try:
        (parsed,) = parse_review_items(body, 10, {("fraud", "v3")})
    except IngestError as exc:
        assert 400 <= exc.status < 500 and len(str(exc)) < 300
        return
    assert 0.0 < parsed.pi <= 1.0 and math.isfinite(parsed.pi)
    assert parsed.score is None or math.isfinite(parsed.score)
    assert parsed.request_id and len(parsed.request_id.encode("utf-8", "surrogatepass")) <= 256
    for text in (parsed.model, parsed.version, parsed.segment_key, parsed.segment, parsed.stratum):
        assert 0 < len(text) <= 256
    assert parsed.features is None or len(parsed.features) <= 16 * 1024
