"""The app's review client against a real HTTP server on 127.0.0.1 (starlette + uvicorn in a
thread): batching, retries with backoff, drops on 4xx, a full buffer, fork, exit flush, rates."""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from conftest import free_port
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from otel_ml._names import REVIEW_DROP_REASONS
from otel_ml.instrument._review_client import Rates, ReviewClient, parse_rates

ROOT = Path(__file__).resolve().parents[1]
RATES = {
    "default": 0.05,
    "rates": [
        {"segment_key": "__all__", "segment": "__all__", "stratum": "(0.49,0.5]", "pi": 0.5},
        {"segment_key": "region", "segment": "eu", "stratum": "none", "pi": 1},
    ],
}


class FakeSidecar:
    """A real server with a script: the statuses the next POSTs answer, and the rates answer."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.script: list[int] = []
        self.posts: list[tuple[int, float, list[dict[str, Any]], dict[str, str]]] = []
        self.rates: tuple[int, bytes] = (200, json.dumps(RATES).encode())
        self.rate_queries: list[dict[str, str]] = []
        app = Starlette(
            routes=[Route("/v1/review/items", self.items, methods=["POST"]), Route("/v1/review/rates", self.get_rates)]
        )
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def items(self, request: Request) -> Response:
        body = json.loads(await request.body())
        status = self.script.pop(0) if self.script else 200
        self.posts.append((status, time.monotonic(), body["items"], dict(request.headers)))
        return JSONResponse({"accepted": len(body["items"]), "duplicates": 0}, status_code=status)

    async def get_rates(self, request: Request) -> Response:
        self.rate_queries.append(dict(request.query_params))
        status, body = self.rates
        return Response(body, status_code=status, media_type="application/json")

    def accepted(self) -> list[str]:
        return [item["request_id"] for status, _, items, _ in self.posts if status == 200 for item in items]

    def start(self) -> FakeSidecar:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the test server did not start"
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def sidecar() -> Iterator[FakeSidecar]:
    server = FakeSidecar(free_port()).start()
    yield server
    server.stop()


def _item(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "request_id": f"req-{i}",
        "model": "m",
        "version": "1",
        "segment_key": "__all__",
        "segment": "__all__",
        "stratum": "(0.49,0.5]",
        "pi": 0.5,
        "score": 0.495,
        "decision": "1",
        "time": 1.7e9 + i,
        "salt_id": "0badc0de",
        **extra,
    }


def _wait(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def drops() -> list[tuple[str, int]]:
    return []


def _client(sidecar: FakeSidecar, drops: list[tuple[str, int]], **kw: Any) -> ReviewClient:
    options: dict[str, Any] = {"interval": 0.2, "refresh": 300.0, "timeout": 2.0, **kw}
    return ReviewClient(sidecar.url, model="m", version="1", on_drop=lambda r, n: drops.append((r, n)), **options)


def test_items_are_posted_in_batches_in_order(sidecar: FakeSidecar, drops: list[tuple[str, int]]) -> None:
    client = _client(sidecar, drops, batch=10, token="s3cret")
    for i in range(25):
        features = {"x": np.float32(1.5), "v": np.arange(2)}
        assert client.submit(_item(i, score=math.nan if i == 3 else 0.495, features=features))
    _wait(lambda: client.sent == 25)  # the server records a POST before the client reads its answer
    assert sidecar.accepted() == [f"req-{i}" for i in range(25)]
    sizes = [len(items) for _, _, items, _ in sidecar.posts]
    assert max(sizes) == 10 and sum(sizes) == 25
    _, _, items, headers = sidecar.posts[0]
    assert headers["authorization"] == "Bearer s3cret" and headers["content-type"] == "application/json"
    by_id = {i["request_id"]: i for _, _, batch, _ in sidecar.posts for i in batch}
    assert by_id["req-3"]["score"] is None and by_id["req-4"]["score"] == 0.495  # NaN is not JSON: null
    assert by_id["req-4"]["features"] == {"x": 1.5, "v": [0, 1]}
    assert drops == [] and client.sent == 25 and client.pending() == 0
    client.close()


def test_a_503_is_retried_with_growing_backoff_and_the_batch_kept(
    sidecar: FakeSidecar, drops: list[tuple[str, int]]
) -> None:
    sidecar.script = [503, 503]
    client = _client(sidecar, drops)
    for i in range(5):
        client.submit(_item(i))
    _wait(lambda: len(sidecar.accepted()) == 5)
    statuses = [s for s, *_ in sidecar.posts]
    times = [t for _, t, _, _ in sidecar.posts]
    ids = [[i["request_id"] for i in items] for _, _, items, _ in sidecar.posts]
    assert statuses[:3] == [503, 503, 200] and ids[0] == ids[1] == ids[2]  # the same batch, kept
    # backoff 0.5 s * 2^(attempt - 1), jittered into [d/2, d]
    assert times[1] - times[0] >= 0.25 and times[2] - times[1] >= 0.5
    assert sorted(sidecar.accepted()) == sorted(f"req-{i}" for i in range(5))
    assert drops == [] and client.failures == 2
    client.close()


def test_items_wait_for_a_sidecar_that_is_not_up_yet(drops: list[tuple[str, int]]) -> None:
    port = free_port()
    client = ReviewClient(f"http://127.0.0.1:{port}", model="m", version="1", interval=0.05, timeout=1.0, refresh=0.5)
    client.on_drop = lambda r, n: drops.append((r, n))
    for i in range(3):
        client.submit(_item(i))
    _wait(lambda: client.failures >= 1)  # connection refused: kept for a retry
    assert client.pending() == 3
    server = FakeSidecar(port).start()
    try:
        _wait(lambda: len(server.accepted()) == 3, timeout=40)  # the backoff may have grown to 30 s... rarely
        assert drops == []
        _wait(lambda: client.rates() is not None)  # and the rates, although the first fetch failed
    finally:
        client.close()
        server.stop()


def test_a_400_drops_the_batch_as_rejected_and_sending_goes_on(
    sidecar: FakeSidecar, drops: list[tuple[str, int]]
) -> None:
    sidecar.script = [400]
    client = _client(sidecar, drops, batch=100)
    for i in range(4):
        client.submit(_item(i))
    _wait(lambda: drops != [])
    assert drops == [("rejected", 4)] and "rejected" in REVIEW_DROP_REASONS
    client.submit(_item(99))
    _wait(lambda: sidecar.accepted() == ["req-99"])
    assert [s for s, *_ in sidecar.posts] == [400, 200]
    client.close()


def test_a_413_halves_the_batch(sidecar: FakeSidecar, drops: list[tuple[str, int]]) -> None:
    sidecar.script = [413]
    client = _client(sidecar, drops, batch=10)
    for i in range(10):
        client.submit(_item(i))
    _wait(lambda: len(sidecar.accepted()) == 10)
    assert [len(items) for _, _, items, _ in sidecar.posts] == [10, 5, 5] and drops == []
    client.close()


def test_a_full_buffer_refuses_without_blocking(sidecar: FakeSidecar, drops: list[tuple[str, int]]) -> None:
    """Queued items and a batch held for its retry count against the buffer alike."""
    sidecar.script = [503] * 100
    client = _client(sidecar, drops, buffer=5, batch=3)
    assert all(client.submit(_item(i)) for i in range(5))
    start = time.perf_counter()
    refused = [client.submit(_item(i)) for i in range(5, 1005)]
    per_call = (time.perf_counter() - start) / 1000
    assert refused == [False] * 1000 and client.pending() == 5
    assert per_call < 50e-6  # no I/O on the request path (typically ~0.3 us)
    client.close(timeout=0.3)
    assert drops == [("send_failed", 5)]  # what an exit could not deliver is reported


def test_an_unserialisable_item_is_dropped_alone(sidecar: FakeSidecar, drops: list[tuple[str, int]]) -> None:
    client = _client(sidecar, drops)
    client.on_drop = lambda r, n: (drops.append((r, n)), 1 / 0)  # a callback that raises is swallowed
    client.submit(_item(0, features={"x": object()}))
    client.submit(_item(1, features={(1, 2): 3}))  # a tuple key: json refuses it
    client.submit(_item(2))
    _wait(lambda: "req-2" in sidecar.accepted())
    assert sidecar.accepted() == ["req-0", "req-2"]  # an unknown object is sent as its str()
    assert drops == [("rejected", 1)]
    _wait(lambda: client.sent == 2)  # what reached the sidecar, the dropped item not among it
    client.close()


def test_a_forked_child_starts_empty_and_sends_its_own(sidecar: FakeSidecar, drops: list[tuple[str, int]]) -> None:
    sidecar.script = [503] * 3  # the parent's item is still held when the fork happens
    client = _client(sidecar, drops)
    client.submit(_item(1))
    _wait(lambda: client.failures >= 1)
    pid = os.fork()
    if pid == 0:  # the child: nothing inherited, its own thread on first use
        ok = client.pending() == 0 and client.submit(_item(2)) and client.flush(timeout=10)
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    _wait(lambda: len(sidecar.accepted()) == 2, timeout=20)
    assert sorted(sidecar.accepted()) == ["req-1", "req-2"]
    client.close()


def _child_submits(client: ReviewClient) -> None:
    client.submit(_item(10))  # the child's thread would send them in an hour: only its exit can
    client.submit(_item(11))


def test_a_multiprocessing_child_flushes_when_it_ends(sidecar: FakeSidecar, drops: list[tuple[str, int]]) -> None:
    """multiprocessing ends a forked child with os._exit: no atexit; its finalizers flush instead."""
    client = _client(sidecar, drops, interval=3600.0)
    child = multiprocessing.get_context("fork").Process(target=_child_submits, args=(client,))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert sorted(sidecar.accepted()) == ["req-10", "req-11"]
    client.close()


EXIT_SCRIPT = """
import sys
from otel_ml.instrument._review_client import ReviewClient
client = ReviewClient(sys.argv[1], model="m", version="1", interval=3600.0)
for i in range(7):  # the thread would send them in an hour: only the exit can
    client.submit({"request_id": f"exit-{i}", "pi": 1.0})
print("submitted", client.pending(), flush=True)
"""


def test_the_buffer_is_flushed_when_the_process_exits(sidecar: FakeSidecar) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, sidecar.url], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "submitted 7" in out.stdout, out.stderr
    assert sorted(sidecar.accepted()) == [f"exit-{i}" for i in range(7)]
    assert time.monotonic() - start < 30


def test_rates_are_fetched_refreshed_and_a_bad_answer_keeps_the_last(
    sidecar: FakeSidecar, drops: list[tuple[str, int]], caplog: pytest.LogCaptureFixture
) -> None:
    client = _client(sidecar, drops, refresh=0.1)
    client.rates()  # None until the first answer; the first call starts the thread
    _wait(lambda: client.rates() is not None)
    rates = client.rates()
    assert rates is not None and sidecar.rate_queries[0] == {"model": "m", "version": "1"}
    assert rates.pi("(0.49,0.5]") == 0.5 and rates.pi("none", "eu", "region") == 1.0 and rates.pi("other") == 0.05
    changed = {**RATES, "default": 0.2}
    sidecar.rates = (200, json.dumps(changed).encode())
    _wait(lambda: client.rates() is not None and client.rates().default == 0.2)  # type: ignore[union-attr]
    good = client.rates()
    with caplog.at_level(logging.WARNING, logger="otel_ml.review"):
        sidecar.rates = (200, json.dumps({"default": 0.2, "rates": [{"stratum": "x", "pi": 1.5}]}).encode())
        seen = len(sidecar.rate_queries)
        _wait(lambda: len(sidecar.rate_queries) >= seen + 3)
        sidecar.rates = (200, b"<html>not json</html>")
        seen = len(sidecar.rate_queries)
        _wait(lambda: len(sidecar.rate_queries) >= seen + 3)
    assert client.rates() is good
    bad = [r for r in caplog.records if "bad review rates" in r.getMessage()]
    assert len(bad) == 1  # logged once, not on every refresh
    client.close()


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'{"rates": {}}',
        b'{"rates": [{"stratum": 3, "pi": 0.5}]}',
        b'{"rates": [{"stratum": "x", "pi": "0.5"}]}',
        b'{"rates": [{"stratum": "x", "pi": true}]}',
        b'{"rates": [{"stratum": "x", "pi": NaN}]}',
        b'{"rates": [{"stratum": "x", "pi": -0.1}]}',
        b'{"rates": [], "default": 2}',
        b'{"rates": ["x"]}',
        b"\xff",
    ],
)
def test_parse_rates_refuses_what_is_off_contract(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_rates(body)


def test_parse_rates_reads_the_contract() -> None:
    rates = parse_rates(json.dumps(RATES).encode())
    assert rates == Rates({("__all__", "__all__", "(0.49,0.5]"): 0.5, ("region", "eu", "none"): 1.0}, 0.05)
    assert parse_rates(b'{"rates": []}').default == 1.0


def test_the_client_module_adds_nothing_heavy_to_the_app() -> None:
    code = (
        "import json, sys\nimport otel_ml\nbefore = set(sys.modules)\n"
        "import otel_ml.instrument._review_client\nprint(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == ["otel_ml.instrument._review_client"]
