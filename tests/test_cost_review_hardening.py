"""Cost and human review under hostile input and real deployments: one test per defect an
adversarial review found (each docstring says what was broken and what is promised now).

Real servers only (an in-process Sidecar, a stdlib HTTP server for a slow sidecar, promtool).
"""

# ruff: noqa: E501  (the promtool test series below are one line each)
from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
from conftest import population_request
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from otel_ml import Baseline, ModelMonitor, Review
from otel_ml import _names as n
from otel_ml.instrument._review_client import ReviewClient
from otel_ml.sidecar import Sidecar, SidecarConfig
from otel_ml.sidecar._state import StateSettings


def _rule(salt: bytes, rid: str, pi: float) -> bool:
    """The README's rule, independently: blake2b(request_id, key=salt) as u64 < pi * 2^64."""
    h = int.from_bytes(hashlib.blake2b(rid.encode(), key=salt, digest_size=8).digest(), "little")
    return Fraction(h) < Fraction(pi) * 2**64


def _sampled(registry: CollectorRegistry) -> float:
    total = 0.0
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in fam.samples:
            if s.name == n.REVIEW_SAMPLED.series:
                total += s.value
    return total


def _half(row: Any) -> float:
    return 0.5


def _low(row: Any) -> float:
    return 0.3


def _halves(frame: Any) -> Any:
    return np.full(len(frame), 0.5)


def _frozen(t: float) -> Any:
    def clock() -> float:
        return t

    return clock


@pytest.fixture
def sidecar(baseline: Baseline, tmp_path: Path) -> Iterator[Sidecar]:
    path = baseline.save(tmp_path / "fraud-v3.baseline.json")
    config = SidecarConfig(
        baselines=(path,),
        listen=("127.0.0.1", 0),
        windows=("10m",),
        state_file=tmp_path / "state.npz",
        state=StateSettings(),
    )
    side = Sidecar(config).start()
    yield side
    side.stop()


def _queued(url: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = 0
    while True:
        page = requests.get(url + "/v1/review/queue", params={"cursor": cursor, "limit": 1000}, timeout=10).json()
        if not page["items"]:
            return items
        items += page["items"]
        cursor = page["next_cursor"]


def _row(i: int, rid: str) -> dict[str, Any]:
    return {"id": rid, "amount": 10.0 + i, "balance_z": 0.1, "n_items": 1, "country": "US", "device": "ios"}


def test_a_long_request_id_is_not_sent_and_the_rest_of_the_batch_is_queued(
    sidecar: Sidecar, baseline: Baseline
) -> None:
    """_review_client.py _send_batches: a 4xx drops the whole batch as ``rejected``; the sidecar
    validates a body all or nothing (_review_input.py parse_review_items) and refuses a request id
    over 256 bytes (_label_input.py MAX_REQUEST_ID_BYTES). The app never checks the ids it samples,
    so one prediction whose request id is long (a URL, a composite key) silently loses every other
    sampled prediction posted with it. Expected: the 20 ordinary ids are queued (the bad one dropped
    or shortened on the app side)."""
    mon = ModelMonitor(
        baseline=baseline,
        request_id=lambda row: row["id"],
        review=Review(sidecar=sidecar.url, rate=1.0),
        registry=CollectorRegistry(),
    )
    predict = mon(_half)
    for i in range(20):
        predict(_row(i, f"ok-{i}"))
    predict(_row(99, "x" * 300))  # one long id among them
    assert mon.review is not None and mon.review.client is not None
    mon.review.client.flush(10)
    queued = {item["request_id"] for item in _queued(sidecar.url)}
    mon.close()
    assert {f"ok-{i}" for i in range(20)} <= queued, f"{len(queued)} of 20 ordinary sampled ids were queued"


def _row_rule(salt: bytes, request_id: str, i: int, pi: float) -> bool:
    """README "Human review" 3., the batch rule, in Python integers: splitmix64 of the call's keyed
    BLAKE2b hash plus (row + 1) x the golden gamma, below floor(pi x 2^64)."""
    mask = 2**64 - 1
    base = int.from_bytes(hashlib.blake2b(request_id.encode(), key=salt, digest_size=8).digest(), "little")
    z = (base + (i + 1) * 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    z ^= z >> 31
    return z < int(pi * 2**64)


def test_batch_rows_are_selected_by_the_documented_row_rule(sidecar: Sidecar, baseline: Baseline) -> None:
    """Found in review: the README stated hash64(salt, "<id>#<row>") for batch rows while the code
    uses one keyed hash per call and splitmix64 per row (vectorised). The README now states the
    row rule; an auditor recomputing it from the queued ids gets exactly the queued sample."""
    pi, salt = 0.3, "audit"
    frame = pd.DataFrame([_row(i, "batch-1") for i in range(400)])
    mon = ModelMonitor(
        baseline=baseline,
        request_id=lambda df: "batch-1",
        review=Review(sidecar=sidecar.url, rate=pi, salt=salt),
        registry=CollectorRegistry(),
    )
    predict = mon(_halves)
    predict(frame)
    assert mon.review is not None and mon.review.client is not None
    mon.review.client.flush(10)
    queued = {item["request_id"] for item in _queued(sidecar.url)}
    mon.close()
    assert queued, "nothing queued: the batch path did not run"
    by_rule = {f"batch-1#{i}" for i in range(400) if _row_rule(salt.encode(), "batch-1", i, pi)}
    assert queued == by_rule, f"{len(queued ^ by_rule)} ids differ from the stated rule"


def test_salts_that_differ_after_64_bytes_draw_different_samples() -> None:
    """_review_sampling.py hash64: ``key = salt[:64]``. Review's docstring: "change it and a new set
    of ids is drawn", and the default salt is ``otel-ml/<model>/<version>``: for a model name of
    56+ characters every version of the model (and any two user salts sharing 64 bytes) selects
    exactly the same ids, while salt_id (sha256 of the whole salt) says they are different salts.
    Expected: two different salts select different ids (about pi of them in common)."""

    from otel_ml._review_sampling import hash64, threshold64

    def chosen(model: str, version: str) -> set[str]:
        registry = CollectorRegistry()
        mon = ModelMonitor(model, version, review=Review(rate=0.5), request_id=lambda r: r["id"], registry=registry)
        predict = mon(_low)
        for i in range(400):
            predict({"id": f"q{i}"})
        sampler = mon.review
        assert sampler is not None
        picked = {f"q{i}" for i in range(400) if hash64(sampler.salt, f"q{i}") < threshold64(0.5)}
        assert _sampled(registry) == len(picked)  # the monitor selected by this hash
        mon.close()
        return picked

    name = "recommendation-ranker-for-the-european-storefront-search"  # 57 characters
    v1, v2 = chosen(name, "v1"), chosen(name, "v2")
    assert v1 != v2, "versions v1 and v2 of the model draw the identical review sample"


class _Trickle(BaseHTTPRequestHandler):
    """A sidecar that is slow but alive: the rates answer trickles one byte every 0.25 s."""

    posted = 0

    def do_GET(self) -> None:
        body = b'{"default": 0.1, "rates": []}' + b" " * 60
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        for b in body:
            self.wfile.write(bytes([b]))
            self.wfile.flush()
            time.sleep(0.25)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        type(self).posted += 1
        body = b'{"accepted": 1, "duplicates": 0}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_slow_rates_answer_does_not_hold_item_delivery() -> None:
    """_review_client.py _status: ``urlopen(timeout=)`` bounds each socket read, not the request,
    and the one thread fetches rates before sending items. A sidecar (or a proxy) that answers the
    rates slowly (a byte every 0.25 s, ~22 s) holds every review item for as long, with timeout=0.5
    ("``timeout`` bounds each request", ReviewClient docstring). Expected: the item is POSTed within
    a few timeouts; here it waits for the whole trickle (and a pathological server forever)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = ReviewClient(
        f"http://127.0.0.1:{server.server_address[1]}", model="m", version="v", interval=0.1, timeout=0.5
    )
    try:
        client.submit({"request_id": "a"})
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline and client.sent == 0:
            time.sleep(0.05)
        assert client.sent == 1, "the item was not delivered within 4 s (8x the timeout)"
    finally:
        client._closed = True
        client._stop.set()
        server.shutdown()
        server.server_close()


def _item(rid: str) -> dict[str, Any]:
    return {
        "request_id": rid,
        "model": "fraud",
        "version": "v3",
        "segment_key": "__all__",
        "segment": "__all__",
        "stratum": "none",
        "pi": 0.5,
        "salt_id": "0badc0de",
    }


def test_a_lone_surrogate_request_id_is_a_4xx_on_items_and_not_queued_on_labels(sidecar: Sidecar) -> None:
    """_review_input.py accepts any str request id (request_id_ok encodes with surrogatepass, and
    the app's hash64 hashes lone surrogates on purpose), but _review_queue.py binds it to SQLite as
    UTF-8, which raises UnicodeEncodeError: POST /v1/review/items and a review label answer 500
    ``internal error`` (counted internal_error) instead of a 4xx or accepting the id. Expected: 2xx
    (stored) or 400 with a reason, never 500."""
    body = '{"items": [' + json.dumps(_item("a\ud800b")) + "]}"
    r = requests.post(
        sidecar.url + "/v1/review/items", data=body.encode(), headers={"Content-Type": "application/json"}, timeout=10
    )
    label = '{"request_id": "a\\ud800b", "label": "true", "source": "review"}'
    r2 = requests.post(
        sidecar.url + "/v1/labels", data=label.encode(), headers={"Content-Type": "application/json"}, timeout=10
    )
    assert r.status_code < 500 and r2.status_code < 500, (r.status_code, r.text, r2.status_code, r2.text)


def test_a_lone_surrogate_request_id_does_not_stall_later_review_items(sidecar: Sidecar, baseline: Baseline) -> None:
    """The same id through @monitor: the sidecar's 500 is retried (5xx) with the batch held
    (_review_client.py _send_batches), so the batch and every item after it never reach the queue
    while the app keeps running: the buffer fills and later selections are dropped as buffer_full.
    Expected: the 30 ordinary ids sampled after it are queued."""
    mon = ModelMonitor(
        baseline=baseline,
        request_id=lambda row: row["id"],
        review=Review(sidecar=sidecar.url, rate=1.0),
        registry=CollectorRegistry(),
    )
    predict = mon(_half)
    predict(_row(0, "bad\ud800id"))
    assert mon.review is not None and mon.review.client is not None
    mon.review.client.flush(3)
    for i in range(30):
        predict(_row(i, f"later-{i}"))
    mon.review.client.flush(5)
    queued = {item["request_id"] for item in _queued(sidecar.url)}
    mon.close()
    assert {f"later-{i}" for i in range(30)} <= queued, f"{len(queued)} of the 30 later ids were queued"


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    total = 0.0
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def test_add_cost_counts_a_decimal_amount() -> None:
    """_usage.py CallUsage.add_cost: the comment says "a number (int, float, numpy, Decimal)", but
    the check is ``isinstance(usd, numbers.Real)`` and Decimal is not a numbers.Real: a Decimal
    bill (how money is usually kept) is dropped as ``invalid_usage``. Expected: $0.25 counted."""
    import decimal

    from otel_ml import add_cost

    registry = CollectorRegistry()
    mon = ModelMonitor("m", "v1", registry=registry)

    @mon
    def predict(row: dict[str, Any]) -> float:
        add_cost(decimal.Decimal("0.25"))  # type: ignore[arg-type]
        return 0.5

    predict({"x": 1.0})
    got = _value(registry, n.COST.series, ml_cost_source=n.COST_API, ml_cost_basis=n.BASIS_BILLED)
    mon.close()
    assert got == pytest.approx(0.25)


def test_add_cost_never_raises_into_the_app_on_a_hostile_basis() -> None:
    """_usage.py add_cost compares ``basis == n.BASIS_BILLED`` in an ``elif``: a numpy array basis
    raises ValueError (truth value of an array) out of ``otel_ml.add_cost`` into the app's call.
    Expected: counted as invalid_usage, the call unaffected (the docstring's promise)."""
    from otel_ml import add_cost

    registry = CollectorRegistry()
    mon = ModelMonitor("m", "v1", registry=registry)

    @mon
    def predict(row: dict[str, Any]) -> float:
        add_cost(0.1, basis=np.array(["billed", "x"]))  # type: ignore[arg-type]
        return 0.5

    try:
        assert predict({"x": 1.0}) == 0.5
    finally:
        mon.close()


def test_a_nested_monitored_call_bills_its_cpu_once() -> None:
    """Suspected double count (_call.py: each Call reads the thread clock at entry and exit, with no
    notion of a nested monitored call): an ensemble ``outer`` calling monitored ``inner`` bills the
    inner CPU to both, so the process's compute cost summed over its models is twice the CPU the
    calls used. Expected: 0.2 s of CPU is billed once (outer's own CPU excludes the nested call's)."""
    registry = CollectorRegistry()
    outer_mon = ModelMonitor("outer", "v1", registry=registry)
    inner_mon = ModelMonitor("inner", "v1", registry=registry)

    @inner_mon
    def inner(row: dict[str, Any]) -> float:
        t = time.thread_time()
        while time.thread_time() - t < 0.2:
            pass
        return 0.5

    @outer_mon
    def outer(row: dict[str, Any]) -> float:
        return inner(row)

    outer({"x": 1.0})
    billed = _value(registry, n.PREDICTION_CPU.series)
    outer_mon.close()
    inner_mon.close()
    assert billed == pytest.approx(0.2, rel=0.25), f"{billed:.3f} CPU-seconds billed for 0.2 s of CPU"


def test_a_stratum_quiet_for_one_window_gets_the_default_not_pi_1(baseline: Baseline, tmp_path: Path) -> None:
    """_review_rates.py review_rates: every stratum with a population series is in the table, and
    a stratum whose volume over the window is 0 gets pi = 1 (_review_sampling.py
    inclusion_probabilities: "a stratum without volume gets pi = 1"). The app uses a table entry
    over the default, so when traffic returns to a stratum that was quiet for one window (the
    high-score bin in an incident, a segment's nightly batch) every call of it is queued until the
    next refresh (5 min). The module's own docstring says pi = 1 "would queue every call until the
    next refresh" and gives unseen strata the average pi instead. Expected: the quiet stratum gets
    no more than the default (an average stratum's) pi, never 1."""
    from otel_ml.sidecar._review_config import ReviewSettings
    from otel_ml.sidecar._review_rates import RateSettings

    path = baseline.save(tmp_path / "fraud-v3.baseline.json")
    rates = RateSettings(quota=20, threshold_quota=50, segment_floor=10, window=600.0)
    config = SidecarConfig(
        baselines=(path,),
        listen=("127.0.0.1", 0),
        windows=("10m",),
        state_file=tmp_path / "state.npz",
        state=StateSettings(review=ReviewSettings(rates=rates)),
    )
    side = Sidecar(config).start()
    try:
        started = side.state.models[("fraud", "v3")].rings["10m"].times[0]
        busy, quiet = ("__all__", "__all__", "(-Inf,0.5]"), ("__all__", "__all__", "(0.9,+Inf)")
        pb = {"Content-Type": "application/x-protobuf"}
        for step in range(40):  # 40 minutes: the quiet stratum's only traffic is in the first minute
            side.state.clock = _frozen(started + 60.0 * (step + 1))
            volumes = {busy: 10_000.0 * (step + 1), quiet: 50_000.0}
            r = requests.post(side.url + "/v1/metrics", data=population_request(volumes), headers=pb, timeout=10)
            assert r.status_code == 200, r.text
            side.state.tick()
        answer = requests.get(side.url + "/v1/review/rates", params={"model": "fraud", "version": "v3"}).json()
        got = {(x["segment_key"], x["segment"], x["stratum"]): x["pi"] for x in answer["rates"]}
        assert got[busy] < 0.01  # 10,000 a minute: a small pi
        assert got.get(quiet, answer["default"]) <= max(answer["default"], got[busy]), (got, answer["default"])
    finally:
        side.stop()


def test_a_pi_too_small_to_select_anything_is_refused(sidecar: Sidecar) -> None:
    """_review_input.py _pi accepts any pi in (0, 1], 1e-310 included; _review_queue.py as_json
    computes ``weight = 1.0 / pi`` = inf and _review_http.py dumps with ``allow_nan=False``: every
    GET /v1/review/queue page holding that item is a 500 from then on, so reviewers cannot page
    past it (the items after it are unreachable until it expires, 30 days), and the webhook, which
    dumps the same objects, retries the same failing batch forever. Expected: the POST is a 400
    (pi too small for a finite weight) or the page is a 200; the next item stays readable."""
    body = {"items": [{**_item("tiny"), "pi": 1e-310}, _item("after")]}
    r = requests.post(sidecar.url + "/v1/review/items", json=body, timeout=10)
    page = requests.get(sidecar.url + "/v1/review/queue", params={"cursor": 0, "limit": 10}, timeout=10)
    if r.status_code == 200:
        assert page.status_code == 200, (page.status_code, page.text)
        assert "after" in {item["request_id"] for item in page.json()["items"]}
    else:
        assert r.status_code == 400


_ALLOCATION_TEST = """
rule_files:
- {rules}
evaluation_interval: 1m
tests:
- interval: 1m
  input_series:
  - series: ml_predictions_total{{job="app", instance="a", namespace="ml", pod="app-0", ml_model_name="steady", ml_model_version="v1", ml_segment_key="__all__", ml_segment="__all__", ml_decision="true"}}
    values: 0+10x200
  - series: ml_predictions_total{{job="app", instance="a", namespace="ml", pod="app-0", ml_model_name="bursty", ml_model_version="v1", ml_segment_key="__all__", ml_segment="__all__", ml_decision="true"}}
    values: 0+10x130 1300x70
  - series: container_cpu_allocation{{job="opencost", instance="oc-0", namespace="ml", pod="app-0", container="app", node="n1"}}
    values: 1x200
  - series: node_cpu_hourly_cost{{job="opencost", instance="oc-0", node="n1"}}
    values: 3.6x200
  promql_expr_test:
  - expr: ml:cost_per_1k_predictions:1h{{ml_model_name="bursty", ml_cost_source="compute", ml_cost_basis="allocation"}}
    eval_time: 160m
    exp_samples:
    - labels: 'ml:cost_per_1k_predictions:1h{{ml_model_name="bursty", ml_model_version="v1", ml_cost_source="compute", ml_cost_basis="allocation"}}'
      value: -1
"""


def test_allocation_cost_per_1k_of_a_model_idle_part_of_the_window(tmp_path: Path) -> None:
    """_cost_rules.py allocation_rules: ``ml:allocation_cost_usd_per_second`` is recorded at every
    evaluation (0 while the model has no traffic but its pod has: share 0), while
    ``ml:allocation_predictions_per_second`` carries ``> 0`` and is absent then; the per-1K rule
    divides their ``avg_over_time``, which no longer average the same instants (the docstring's
    premise), so a model idle for part of the window in a shared pod gets its cost per 1K scaled by
    the share of the window it was busy. Here: one pod at $0.001/s, two models at 10/min each until
    bursty stops at 130m; over [100m, 160m] bursty is allocated half the pod for 30-36 minutes
    ($0.90-1.08) and made 300 predictions: $2.9-3.7 per 1K. The rule says about half."""
    import re
    import shutil
    import subprocess

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed")
    rules = Path(__file__).resolve().parents[1] / "alert_rules" / "otel-ml-recording.yaml"
    test = tmp_path / "alloc_test.yaml"
    test.write_text(_ALLOCATION_TEST.format(rules=rules))
    out = subprocess.run([promtool, "test", "rules", str(test)], capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    got = re.search(r"got: \{[^}]*\} ([-0-9.Ee+]+)", text)
    assert got is not None, text[-2000:]
    value = float(got.group(1))
    assert 2.9 <= value <= 3.7, f"cost per 1K of the bursty model: {value:.3f} (expected 2.9-3.7)"


@pytest.mark.parametrize("share", [float("nan"), -1.0])
def test_a_bad_gpu_share_is_refused_not_a_broken_scrape_or_a_falling_counter(share: float) -> None:
    """_monitor.py / _counters.py take ``gpu_share=`` unchecked: NaN makes _usage.py usage_of's
    ``round(cpu x rate + wall x NaN)`` raise ValueError on every collect, so the registry's whole
    exposition fails (every model's series lost, not just the cost); a negative share makes
    ``ml_cost_usd_total`` negative and falling with every call (a counter Prometheus reads as
    resets). Expected: ValueError at construction (as ``Review(rate=)`` does), or a sane counter."""
    from otel_ml import Prices

    prices = Prices.from_dict({"updated": "2026-11-20", "compute": {"cpu_hour": 1.0, "gpu_hour": 3600.0}})
    registry = CollectorRegistry()
    try:
        mon = ModelMonitor("m", "v1", registry=registry, prices=prices, gpu_share=share)
    except ValueError:
        return  # refused: fine
    predict = mon(_half)
    values = []
    try:
        for _ in range(3):
            predict({"x": 1.0})
            values.append(_value(registry, n.COST.series, ml_cost_source=n.COST_COMPUTE))
    finally:
        mon.close()
    assert values == sorted(values) and values[0] >= 0, values


def test_a_body_refused_as_full_spends_no_stratum_budget(baseline: Baseline, tmp_path: Path) -> None:
    """_review_state.py Reviews.add folds each item's (segment key, segment, stratum) into the
    model's combination budget *before* the queue refuses the body (507, nothing stored), so
    refused bodies, retried by any client, use up ``max_segment_combinations``: later items of new
    strata are stored and counted as ``__other__`` although the budget only ever held one stored
    combination. "Nothing held changes on a bad body" (the module docstrings). Expected: after the
    507, a new stratum still gets its own combination."""
    from otel_ml.sidecar._review_config import ReviewSettings
    from otel_ml.sidecar._series import LimitSettings

    path = baseline.save(tmp_path / "fraud-v3.baseline.json")
    config = SidecarConfig(
        baselines=(path,),
        listen=("127.0.0.1", 0),
        windows=("10m",),
        state_file=tmp_path / "state.npz",
        state=StateSettings(review=ReviewSettings(max_items=1), limits=LimitSettings(max_segment_combinations=2)),
    )
    side = Sidecar(config).start()

    def post(rid: str, stratum: str) -> int:
        body = {"items": [{**_item(rid), "segment_key": "country", "segment": "US", "stratum": stratum}]}
        return requests.post(side.url + "/v1/review/items", json=body, timeout=10).status_code

    try:
        assert post("a", "(0.1,0.2]") == 200  # the queue is now full (max_items=1)
        assert post("b", "(0.2,0.3]") == 507  # refused: nothing stored
        assert post("c", "(0.3,0.4]") == 507
        r = requests.post(
            side.url + "/v1/labels", json={"request_id": "a", "label": "true", "source": "review"}, timeout=10
        )
        assert r.status_code == 200  # "a" labelled: its row may make room
        assert post("d", "(0.4,0.5]") == 200
        held = {item["request_id"]: item for item in _queued(side.url)}
        assert held["d"]["stratum"] == "(0.4,0.5]", held["d"]
    finally:
        side.stop()


def test_exit_flush_shares_one_deadline_across_clients() -> None:
    """_review_client.py _close_all (atexit, and a multiprocessing child's finalizer) closes each
    client in turn with its own 2 s deadline: an app with several reviewed monitors and a sidecar
    that accepts connections but does not answer (overloaded, half-dead) waits about 2 s per
    monitor at exit, past a pod's termination grace for a dozen models. The module promises "a
    short deadline". Expected: all clients flushed within one deadline (~2 s in all)."""
    import socket

    from otel_ml.instrument._review_client import _close_all

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # accepts into the backlog, never answers
    url = f"http://127.0.0.1:{silent.getsockname()[1]}"
    clients = [ReviewClient(url, model="m", version=f"v{i}", interval=30.0, timeout=5.0) for i in range(4)]
    try:
        for c in clients:
            c.submit({"request_id": "a"})
        started = time.monotonic()
        _close_all()
        took = time.monotonic() - started
    finally:
        silent.close()
    assert took < 3.0, f"exit flush of 4 review clients took {took:.1f} s"


def _forked_worker(mon: Any, calls: int) -> None:
    predict = mon(_half)
    for i in range(calls):
        predict(_row(i, "unused"))
    assert mon.review.client.flush(10)


def test_forked_workers_generate_their_own_request_ids(sidecar: Sidecar, baseline: Baseline) -> None:
    """_context.py: generated request ids are ``<_ID_PREFIX>-<counter>`` with the prefix drawn once
    at import ("unique across processes and restarts") and no re-draw after fork. Workers forked
    from a preloaded app (gunicorn --preload, multiprocessing fork) generate identical ids, review
    selection picks them alike, and the sidecar's queue, unique on (model, version, request id),
    answers the second worker's items as duplicates: their reviews are lost while both workers
    count them in ml_review_population_total / ml_review_sampled_total. Expected: 2 workers x 5
    selected calls give 10 queued items."""
    import multiprocessing

    mon = ModelMonitor(baseline=baseline, review=Review(sidecar=sidecar.url, rate=1.0), registry=None)
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_forked_worker, args=(mon, 5)) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    queued = _queued(sidecar.url)
    mon.close()
    assert len(queued) == 10, sorted(item["request_id"] for item in queued)


def _labelled(url: str) -> dict[str, float]:
    text = requests.get(url + "/metrics", timeout=10).text
    return {
        s.labels[n.LABEL_OUTCOME]: s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == n.REVIEW_LABELLED.series
    }


def test_a_strata_error_series_starts_at_0_so_increase_sees_its_first_error(sidecar: Sidecar) -> None:
    """_collector.py _review_families emits ``ml_review_labelled_total`` only for (stratum, outcome)
    pairs already counted, so a stratum's ``ml_outcome="error"`` series first appears at 1:
    ``increase()`` (the ``ml:review_errors`` rule) never sees that first error, and every stratum's
    e_h is one short for its first window, biasing the weighted error rate low where reviews are
    few (the floors' rare segments). The same collector starts its other counters at 0 "so rate()
    and increase() see the first one happen". Expected: once a stratum has a review, both of its
    outcome series are exposed (the one not seen yet at 0)."""
    body = {"items": [{**_item("r1"), "decision": "true"}, {**_item("r2"), "decision": "true"}]}
    assert requests.post(sidecar.url + "/v1/review/items", json=body, timeout=10).status_code == 200
    r = requests.post(
        sidecar.url + "/v1/labels", json={"request_id": "r1", "label": "true", "source": "review"}, timeout=10
    )
    assert r.status_code == 200
    first = _labelled(sidecar.url)
    assert first.get(n.REVIEW_CORRECT) == 1.0
    assert first.get(n.REVIEW_ERROR) == 0.0, f"before the first error: {first}"


def test_a_review_label_naming_its_model_labels_only_that_models_item(
    baseline: Baseline, training_frame: pd.DataFrame, tmp_path: Path
) -> None:
    """_state.py label_events passes review labels on as ``(request_id, outcome)`` only, and
    _review_queue.py label() marks every pending item with that id, whatever model: two models
    that use the same business id (the README's ``request_id=lambda row: row["order_id"]``) share
    a reviewer's verdict, the second judged against its own decision with the first's label, even
    when the label names its model and version (``/v1/labels`` accepts them). Expected: the churn
    model's item stays pending when the label says fraud v3."""
    from otel_ml import fit_baseline

    fraud = baseline.save(tmp_path / "fraud-v3.baseline.json")
    churn = fit_baseline(
        training_frame, model="churn", version="v1", score_column="score", segments=["country"], decision=0.5
    ).save(tmp_path / "churn-v1.baseline.json")
    config = SidecarConfig(
        baselines=(fraud, churn),
        listen=("127.0.0.1", 0),
        windows=("10m",),
        state_file=tmp_path / "state.npz",
        state=StateSettings(),
    )
    side = Sidecar(config).start()
    try:
        items = [
            {**_item("order-1"), "decision": "true"},
            {**_item("order-1"), "model": "churn", "version": "v1", "decision": "false"},
        ]
        assert requests.post(side.url + "/v1/review/items", json={"items": items}, timeout=10).status_code == 200
        label = {"request_id": "order-1", "label": "true", "source": "review", "model": "fraud", "version": "v3"}
        r = requests.post(side.url + "/v1/labels", json=label, timeout=10)
        assert r.status_code == 200, r.text
        pending = {(i["model"], i["request_id"]) for i in _queued(side.url)}
        assert ("churn", "order-1") in pending, f"still pending: {pending}"
    finally:
        side.stop()


def test_batch_rows_carry_their_features_with_features_true(sidecar: Sidecar, baseline: Baseline) -> None:
    """Low severity. README "Human review" 4.: selected ids go with "feature values only with
    ``Review(features=True)``"; _review.py batch() always passes ``features=None`` to _send, so a
    batch-scoring app that opts in gets no feature values for any of its items (single rows do).
    Expected: with features=True, a batch row's item carries its row's features."""
    frame = pd.DataFrame([_row(i, "b") for i in range(5)])
    mon = ModelMonitor(
        baseline=baseline,
        request_id=lambda df: "batch-f",
        review=Review(sidecar=sidecar.url, rate=1.0, features=True),
        registry=CollectorRegistry(),
    )
    mon(_halves)(frame)
    assert mon.review is not None and mon.review.client is not None
    mon.review.client.flush(10)
    queued = _queued(sidecar.url)
    mon.close()
    assert len(queued) == 5
    assert all("features" in item for item in queued), queued[0]
