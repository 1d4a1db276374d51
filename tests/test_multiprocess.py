"""Multiprocess mode: per-process counter files summed at scrape, forks, and real multi-worker servers.

Expected totals are computed here from the values sent (bucket ``le`` counts by plain comparison
with the baseline's edges), never read back from otel-ml's own counters.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from conftest import free_port
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from otel_ml import Baseline, ModelMonitor, fit_baseline
from otel_ml import _names as n
from otel_ml.instrument import MULTIPROC_DIR_ENV, ModelCounters, counts_families, start_http_server
from otel_ml.instrument._counters import flush_all
from otel_ml.instrument._dirsum import DirSummer
from otel_ml.instrument._multiproc import MAGIC, counter_files

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
REGIONS = ("north", "south", "east")


def _parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def _value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``; none matching is a failure."""
    want = set(labels.items())
    matching = [v for (k, lab), v in samples.items() if k == name and want <= lab]
    assert matching, f"no sample {name}{labels}"
    return sum(matching)


def _scrape(registry: CollectorRegistry) -> Samples:
    return _parse(generate_latest(registry).decode())


@pytest.fixture(scope="module")
def small_baseline() -> Baseline:
    rng = np.random.default_rng(3)
    return fit_baseline(
        {"x": rng.uniform(0, 10, 2000), "region": rng.choice(REGIONS, 2000)},
        model="mp",
        version="v1",
        scores=rng.uniform(size=2000),
        segments=["region"],
    )


@pytest.fixture
def mpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "mp"
    path.mkdir()
    monkeypatch.setenv(MULTIPROC_DIR_ENV, str(path))
    return path


def _expected_buckets(edges: Sequence[float], values: Sequence[float]) -> list[int]:
    return [sum(v <= e for v in values) for e in edges] + [len(values)]


def _buckets(samples: Samples, feature: str, edges: Sequence[float]) -> list[float]:
    name = n.FEATURE_VALUE.prometheus + "_bucket"
    les = {lab for (k, lab) in samples if k == name and (n.LABEL_FEATURE, feature) in lab}
    by_le = {dict(lab)["le"]: samples[(name, lab)] for lab in les}
    return [by_le[le] for le in sorted(by_le, key=lambda s: float(s.replace("+Inf", "inf")))]


def _predictions(samples: Samples, **labels: str) -> float:
    return _value(samples, n.PREDICTIONS.prometheus + "_total", **labels)


def _monitor(baseline: Baseline, registry: CollectorRegistry | None) -> tuple[ModelMonitor, Callable[..., Any]]:
    mon = ModelMonitor(baseline=baseline, segments=["region"], decision=0.5, registry=registry)
    return mon, mon(lambda row: row["x"] / 10)


# -- the file format --------------------------------------------------------------------------------
def test_each_counter_file_is_self_describing(mpdir: Path, small_baseline: Baseline) -> None:
    mon, predict = _monitor(small_baseline, CollectorRegistry())
    predict({"x": 1.0, "region": "north"})
    (path,) = counter_files(mpdir)
    model, version, pid, _nonce = path.name.removesuffix(".counts").split("@")
    assert (model, version, int(pid)) == ("mp", "v1", os.getpid())
    data = path.read_bytes()
    assert data[:8] == MAGIC and int.from_bytes(data[8:12], "little") == 2
    meta = json.loads(data[16 : 16 + int.from_bytes(data[12:16], "little")])
    assert meta["layout"]["numeric_edges"] == [list(small_baseline.numeric[0].edges)]
    assert len(meta["digest"]) == 64 and meta["pid"] == os.getpid()
    assert json.loads(path.with_name(path.name.replace(".counts", ".labels.json")).read_text())["segments"][1] == [
        "north"
    ]


def test_files_of_one_layout_are_summed_and_labels_joined_by_string(mpdir: Path, small_baseline: Baseline) -> None:
    registry = CollectorRegistry()
    _, predict = _monitor(small_baseline, registry)
    other = ModelCounters("mp", "v1", small_baseline, ["region"])  # stands for a second process's file
    mine = [("north", 1.0), ("south", 7.5), ("north", 2.0)]
    theirs = [("east", 9.0), ("south", 3.0), ("east", 4.0), ("north", 0.5)]
    for region, x in mine:
        predict({"x": x, "region": region})
    for region, x in theirs:  # indices assigned in a different order: east=0 here, north=0 there
        other.add_row({"x": x, "region": region}, x / 10, "true" if x > 5 else "false", [region], 0.001)
    other.add_error("TimeoutError")
    assert len(counter_files(mpdir)) == 2
    samples = _scrape(registry)
    values = [x for _, x in mine + theirs]
    assert _buckets(samples, "x", small_baseline.numeric[0].edges) == _expected_buckets(
        small_baseline.numeric[0].edges, values
    )
    assert _value(samples, n.FEATURE_VALUE.prometheus + "_sum", ml_feature="x") == pytest.approx(sum(values))
    for region in REGIONS:
        want = sum(r == region for r, _ in mine + theirs)
        assert _predictions(samples, ml_segment_key="region", ml_segment=region) == want
    assert _predictions(samples, ml_segment_key="__all__", ml_decision="true") == 2
    assert _value(samples, n.PREDICTION_ERRORS.prometheus + "_total", error_type="TimeoutError") == 1


def test_incompatible_layout_is_skipped_and_counted_once(
    mpdir: Path, small_baseline: Baseline, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    _, predict = _monitor(small_baseline, registry)
    predict({"x": 1.0, "region": "north"})
    rng = np.random.default_rng(9)
    changed = fit_baseline({"x": rng.normal(size=500)}, model="mp", version="v1")  # same model, other edges
    stale = ModelCounters("mp", "v1", changed)
    stale.add_row({"x": 0.0}, 0.9, "true", [], None)
    with caplog.at_level(logging.WARNING, logger="otel_ml"):
        for _ in range(3):
            samples = _scrape(registry)
    assert _predictions(samples, ml_segment_key="__all__") == 1  # the local layout wins; the other is not summed
    errors = n.INSTRUMENTATION_ERRORS.prometheus + "_total"
    assert _value(samples, errors, error_type="multiproc_incompatible_layout") == 1
    assert sum("incompatible_layout" in r.getMessage() for r in caplog.records) == 1


def test_truncated_and_foreign_files_are_skipped(
    mpdir: Path, small_baseline: Baseline, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    _, predict = _monitor(small_baseline, registry)
    for x in (1.0, 2.0, 3.0):
        predict({"x": x, "region": "east"})
    (path,) = counter_files(mpdir)
    cut = mpdir / "mp@v1@999999@00000000.counts"  # a copy cut short, e.g. a full disk
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    shutil.copy(
        path.with_name(path.name.replace(".counts", ".labels.json")), mpdir / "mp@v1@999999@00000000.labels.json"
    )
    (mpdir / "mp@v1@999998@00000000.counts").write_bytes(b"not a counter file at all")
    (mpdir / "mp@v1@999997@00000000.counts").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="otel_ml"):
        samples = _scrape(registry)
    assert _predictions(samples, ml_segment_key="__all__") == 3
    errors = n.INSTRUMENTATION_ERRORS.prometheus + "_total"
    assert _value(samples, errors, error_type="multiproc_truncated") == 2
    assert _value(samples, errors, error_type="multiproc_incompatible_format") == 1
    assert len([r for r in caplog.records if "skipped" in r.getMessage()]) == 3


def test_an_unusable_directory_falls_back_to_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_baseline: Baseline, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(MULTIPROC_DIR_ENV, str(blocker / "mp"))  # cannot be created under a file
    registry = CollectorRegistry()
    with caplog.at_level(logging.ERROR, logger="otel_ml"):
        mon, predict = _monitor(small_baseline, registry)
    assert mon.counters.file is None and "cannot create a counter file" in caplog.text
    predict({"x": 3.0, "region": "north"})
    assert _predictions(_scrape(registry), ml_segment_key="__all__") == 1


def _dead_worker(predict: Callable[..., Any], rows: list[dict[str, Any]]) -> None:
    for row in rows:
        predict(row)


def _text(directory: Path) -> str:
    """The directory's exposition, without the live process's CPU time (it grows between reads)."""
    text = generate_latest(_Families(DirSummer(fold_interval=None).snapshots(directory, {}))).decode()
    return "\n".join(line for line in text.splitlines() if not line.startswith(n.PROCESS_CPU.series))


class _Families(CollectorRegistry):
    def __init__(self, snapshots: list[Any]) -> None:
        super().__init__()
        self._snapshots = snapshots

    def collect(self) -> Iterator[Any]:
        yield from counts_families(self._snapshots)


def test_dead_workers_fold_into_one_archive_and_the_totals_stay_bit_for_bit(
    mpdir: Path, small_baseline: Baseline
) -> None:
    registry = CollectorRegistry()
    _, predict = _monitor(small_baseline, registry)
    ctx = multiprocessing.get_context("fork")
    rng = np.random.default_rng(4)
    sent: list[dict[str, Any]] = []
    for k in range(3):  # three workers that counted and died
        rows = [{"x": float(x), "region": f"r{k}-{i % 2}"} for i, x in enumerate(rng.uniform(0, 10, 7))]
        child = ctx.Process(target=_dead_worker, args=(predict, rows))
        child.start()
        child.join(30)
        assert child.exitcode == 0
        sent += rows
    mine = [{"x": 0.1 * i, "region": "north"} for i in range(5)]
    for row in mine:
        predict(row)
    sent += mine
    flush_all()  # the files are read directly below: this process's buffered rows first
    before = _text(mpdir)
    assert len(counter_files(mpdir)) == 4
    assert DirSummer().fold(mpdir) == 3
    assert len(counter_files(mpdir)) == 1 and len(list(mpdir.glob("*.archive.json"))) == 1
    assert _text(mpdir) == before  # identical exposition, float sums included
    samples = _scrape(registry)
    edges = small_baseline.numeric[0].edges
    assert _buckets(samples, "x", edges) == _expected_buckets(edges, [r["x"] for r in sent])
    assert _value(samples, n.FEATURE_VALUE.prometheus + "_sum", ml_feature="x") == math.fsum(r["x"] for r in sent)
    assert _predictions(samples, ml_segment_key="region", ml_segment="r1-0") == 4
    # a crash after the archive was written but before a folded file was deleted: never counted twice
    archive = json.loads(next(mpdir.glob("*.archive.json")).read_text())
    ghost = mpdir / archive["absorbed"][0]
    (live,) = counter_files(mpdir)  # listed once: the ghost may sort first (its pid as text is smaller)
    shutil.copy(live, ghost)
    shutil.copy(
        live.with_name(live.name.replace(".counts", ".labels.json")),
        ghost.with_name(ghost.name.replace(".counts", ".labels.json")),
    )
    assert _text(mpdir) == before
    DirSummer().fold(mpdir)
    assert not ghost.exists() and _text(mpdir) == before


# -- fork -------------------------------------------------------------------------------------------
def _child_predicts(
    predict: Callable[..., Any], rows: list[dict[str, Any]], registry: CollectorRegistry, done: Any
) -> None:
    for row in rows:
        predict(row)
    generate_latest(registry)  # a scrape in the child, while the parent's scrape lock was held at fork
    done.send("ok")


def _hold_locks(mon: ModelMonitor, registry: Any, held: threading.Event, release: threading.Event) -> None:
    counters = mon.counters
    with counters._lock, counters.segment_labels[1]._lock, counters.decision_labels._lock, registry._lock:
        held.set()
        release.wait(30)


def test_fork_while_another_thread_holds_the_locks(mpdir: Path, small_baseline: Baseline) -> None:
    registry = CollectorRegistry()
    mon, predict = _monitor(small_baseline, registry)
    before = [{"x": 0.5 * i, "region": REGIONS[i % 3]} for i in range(12)]
    child_rows = [{"x": 9.5, "region": "child-only"}] * 5 + [{"x": 0.1, "region": "north"}] * 4
    after = [{"x": 6.0, "region": "south"}] * 3
    for row in before:
        predict(row)
    held, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_locks, args=(mon, registry, held, release))
    holder.start()
    assert held.wait(10)
    ctx = multiprocessing.get_context("fork")
    parent_end, child_end = ctx.Pipe()
    child = ctx.Process(target=_child_predicts, args=(predict, child_rows, registry, child_end))
    child.start()
    child.join(30)
    alive = child.is_alive()
    if alive:
        child.kill()
    release.set()
    holder.join(10)
    assert not alive and child.exitcode == 0, "the forked child deadlocked on an inherited lock"
    assert parent_end.poll(5) and parent_end.recv() == "ok"
    for row in after:
        predict(row)
    assert len(counter_files(mpdir)) == 2  # the child counted into a file of its own
    samples = _scrape(registry)
    rows = before + child_rows + after
    edges = small_baseline.numeric[0].edges
    assert _buckets(samples, "x", edges) == _expected_buckets(edges, [r["x"] for r in rows])
    assert _predictions(samples, ml_segment_key="__all__") == len(rows)
    for region in (*REGIONS, "child-only"):
        want = sum(r["region"] == region for r in rows)
        assert _predictions(samples, ml_segment_key="region", ml_segment=region) == want


def _child_reports(mon: ModelMonitor, predict: Callable[..., Any], out: Any) -> None:
    from otel_ml.instrument import _counters

    predict({"x": 1.0, "region": "north"})
    total = sum(row[3] for row in mon.counters.snapshot().predictions if row[0] == "__all__")
    out.send((total, _counters._warned_unshared))


_SPAWN_SCRIPT = """
import logging, multiprocessing, sys
from otel_ml import Baseline, ModelMonitor

logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(process)d %(message)s")
mon = ModelMonitor(baseline=Baseline.load(sys.argv[1]))  # at import: the spawned child re-imports this

def work(_):
    return 0

if __name__ == "__main__":
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        pool.map(work, [0])
"""


def test_a_spawned_worker_without_a_directory_warns_too(small_baseline: Baseline, tmp_path: Path) -> None:
    (tmp_path / "spawned.py").write_text(_SPAWN_SCRIPT)
    small_baseline.save(tmp_path / "b.json")
    env = {k: v for k, v in os.environ.items() if k != MULTIPROC_DIR_ENV}
    done = subprocess.run(
        [sys.executable, "spawned.py", "b.json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("is one of several worker processes") == 1, done.stderr  # the child, not the parent


_POOL_SCRIPT = """
import multiprocessing, sys
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from otel_ml import Baseline, ModelMonitor

mon = ModelMonitor(baseline=Baseline.load(sys.argv[1]), decision=0.5, registry=CollectorRegistry())
predict = mon(lambda row: 0.3)

def work(i):
    predict({"x": float(i % 10)})
    return i

if __name__ == "__main__":
    with multiprocessing.get_context("fork").Pool(2) as pool:  # __exit__ terminates: SIGTERM
        pool.map(work, range(200))
    text = generate_latest(mon.registry).decode()
    print(sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
              if s.name == "ml_predictions_total" and s.labels.get("ml_segment_key") == "__all__"))
"""


def test_rows_of_pool_workers_ended_by_sigterm_are_all_counted(
    mpdir: Path, small_baseline: Baseline, tmp_path: Path
) -> None:
    """``with Pool() as p`` ends its workers with SIGTERM (no atexit, no finalizers): multiprocess
    mode counts every row into the file before the call returns, so none is lost."""
    (tmp_path / "pool.py").write_text(_POOL_SCRIPT)
    small_baseline.save(tmp_path / "b.json")
    env = {**os.environ, MULTIPROC_DIR_ENV: str(mpdir)}
    for _ in range(3):  # the loss it guards against depended on timing: three runs
        for f in mpdir.iterdir():
            f.unlink()
        done = subprocess.run(
            [sys.executable, "pool.py", "b.json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert float(done.stdout.strip().splitlines()[-1]) == 200.0, done.stdout


def test_fork_without_a_directory_starts_the_child_at_zero_and_warns(small_baseline: Baseline) -> None:
    mon, predict = _monitor(small_baseline, CollectorRegistry())
    for _ in range(4):
        predict({"x": 2.0, "region": "south"})
    ctx = multiprocessing.get_context("fork")
    parent_end, child_end = ctx.Pipe()
    child = ctx.Process(target=_child_reports, args=(mon, predict, child_end))
    child.start()
    child.join(30)
    assert child.exitcode == 0 and parent_end.poll(5)
    assert parent_end.recv() == (1, True)  # its own call only, and the warning was logged
    assert sum(row[3] for row in mon.counters.snapshot().predictions if row[0] == "__all__") == 4


# -- the /metrics server in several workers -----------------------------------------------------------
def _get(url: str, deadline: float) -> requests.Response:
    while True:
        try:
            return requests.get(url, timeout=5)
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_a_taken_port_never_crashes_and_a_standby_takes_over(mpdir: Path, small_baseline: Baseline) -> None:
    registry = CollectorRegistry()
    _, predict = _monitor(small_baseline, registry)
    predict({"x": 4.0, "region": "north"})
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    assert start_http_server(port, registry=registry, standby_interval=0.1) is None
    holder.close()  # the serving worker dies: the standby binds within a few intervals
    body = _get(f"http://127.0.0.1:{port}/metrics", time.monotonic() + 10).text
    assert _predictions(_parse(body), ml_segment_key="__all__") == 1


# -- real servers with 4 workers -------------------------------------------------------------------
_WSGI_APP = """
import json, os, time
from otel_ml import Baseline, ModelMonitor
from otel_ml.instrument import make_wsgi_app

mon = ModelMonitor(baseline=Baseline.load(os.environ["MP_BASELINE"]), segments=["region"], decision=0.5)

@mon
def predict(row):
    time.sleep(0.01)  # long enough that concurrent requests spread over the workers
    return row["x"] / 10

metrics = make_wsgi_app()

def app(environ, start_response):
    if environ["PATH_INFO"] == "/metrics":
        return metrics(environ, start_response)
    row = json.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)))
    predict(row)
    body = json.dumps({"pid": os.getpid()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
"""

_GUNICORN_CONF = """
import os
from otel_ml import start_http_server

control_socket = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gunicorn.ctl")  # gunicorn >= 25.1

def when_ready(server):  # the master serves the sums of every worker's file on its own port
    start_http_server(int(os.environ["MP_METRICS_PORT"]))
"""

_ASGI_APP = """
import os, time
from fastapi import FastAPI
from otel_ml import Baseline, ModelMonitor, start_http_server

mon = ModelMonitor(baseline=Baseline.load(os.environ["MP_BASELINE"]), segments=["region"], decision=0.5)
start_http_server(int(os.environ["MP_METRICS_PORT"]), standby_interval=0.5)  # one worker binds, the others wait

@mon
def predict(row):
    time.sleep(0.01)  # blocks this worker's loop, so concurrent requests go to the others
    return row["x"] / 10

app = FastAPI()

@app.post("/predict")
async def serve(row: dict):
    predict(row)
    return {"pid": os.getpid()}
"""


class Server:
    """A real server process group on loopback; stopped (by its own pid) at the end of the test."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.log = cwd / "server.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


@pytest.fixture
def serve(tmp_path: Path, small_baseline: Baseline) -> Iterator[Callable[..., tuple[Server, dict[str, Any]]]]:
    servers: list[Server] = []
    small_baseline.save(tmp_path / "baseline.json")
    for name, source in (("wsgi_app.py", _WSGI_APP), ("asgi_app.py", _ASGI_APP), ("gunicorn_conf.py", _GUNICORN_CONF)):
        (tmp_path / name).write_text(textwrap.dedent(source))

    def start(kind: str, *extra: str, shared: bool = True) -> tuple[Server, dict[str, Any]]:
        port, metrics_port, mp = free_port(), free_port(), tmp_path / f"mp-{len(servers)}"
        mp.mkdir()
        env = {**os.environ, "MP_BASELINE": str(tmp_path / "baseline.json"), "MP_METRICS_PORT": str(metrics_port)}
        env.pop(MULTIPROC_DIR_ENV, None)
        if shared:
            env[MULTIPROC_DIR_ENV] = str(mp)
        bind = f"127.0.0.1:{port}"
        if kind == "gunicorn":
            args = [sys.executable, "-m", "gunicorn", "-w", "4", "-b", bind, "-c", "gunicorn_conf.py", *extra]
            args.append("wsgi_app:app")
        else:
            args = [sys.executable, "-m", "uvicorn", "asgi_app:app", "--workers", "4", "--port", str(port)]
            args.append("--no-access-log")
        server = Server(args, tmp_path, env)
        servers.append(server)
        info = {"url": f"http://{bind}", "metrics": f"http://127.0.0.1:{metrics_port}/metrics", "dir": mp}
        return server, info

    yield start
    for s in servers:
        s.stop()


def _rows(count: int, offset: int = 0) -> list[dict[str, Any]]:
    return [{"x": 0.25 * ((i + offset) % 41), "region": REGIONS[(i + offset) % 3]} for i in range(count)]


def _send(url: str, rows: list[dict[str, Any]]) -> list[int]:
    """POST every row (8 at a time, a new connection each) and return the pid that answered each."""
    deadline = time.monotonic() + 40

    def one(row: dict[str, Any]) -> int:
        while True:
            try:
                response = requests.post(url, json=row, timeout=10)
                response.raise_for_status()
                return int(response.json()["pid"])
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    with ThreadPoolExecutor(8) as pool:
        pids = list(pool.map(one, rows))
    return pids  # multiprocess mode writes each row through: the totals must be exact at once


def _assert_totals(body: str, rows: list[dict[str, Any]], edges: Sequence[float]) -> None:
    samples = _parse(body)
    assert _predictions(samples, ml_segment_key="__all__") == len(rows)
    assert _buckets(samples, "x", edges) == _expected_buckets(edges, [r["x"] for r in rows])
    for region in REGIONS:
        want = sum(r["region"] == region for r in rows)
        assert _predictions(samples, ml_segment_key="region", ml_segment=region) == want


def _wait_files(directory: Path, minimum: int, deadline: float) -> None:
    while len(counter_files(directory)) < minimum and time.monotonic() < deadline:
        time.sleep(0.1)


@pytest.mark.timeout(120)
def test_gunicorn_four_workers_exact_totals_and_a_killed_worker_keeps_its_counts(
    serve: Any, small_baseline: Baseline
) -> None:
    server, info = serve("gunicorn")
    edges = small_baseline.numeric[0].edges
    _get(info["url"] + "/metrics", time.monotonic() + 40)
    _wait_files(info["dir"], 4, time.monotonic() + 20)
    rows = _rows(120)
    pids = _send(info["url"] + "/predict", rows)
    assert len(set(pids)) >= 2, "requests did not spread over the workers"
    for url in (info["url"] + "/metrics", info["metrics"]):  # any worker, and the master's port
        _assert_totals(requests.get(url, timeout=10).text, rows, edges)
    victim = max(set(pids), key=pids.count)
    os.kill(victim, signal.SIGKILL)
    more = _rows(40, offset=7)
    _send(info["url"] + "/predict", more)
    _assert_totals(requests.get(info["metrics"], timeout=10).text, rows + more, edges)
    assert server.proc.poll() is None


@pytest.mark.timeout(120)
def test_gunicorn_preload_four_workers_exact_totals(serve: Any, small_baseline: Baseline) -> None:
    _, info = serve("gunicorn", "--preload")
    _get(info["metrics"], time.monotonic() + 40)
    _wait_files(info["dir"], 5, time.monotonic() + 20)  # the master's (imported the app) and 4 workers'
    rows = _rows(100, offset=3)
    pids = _send(info["url"] + "/predict", rows)
    assert len(set(pids)) >= 2
    for url in (info["url"] + "/metrics", info["metrics"]):
        _assert_totals(requests.get(url, timeout=10).text, rows, small_baseline.numeric[0].edges)


@pytest.mark.timeout(120)
def test_uvicorn_four_workers_exact_totals_on_one_metrics_port(serve: Any, small_baseline: Baseline) -> None:
    server, info = serve("uvicorn")
    _get(info["metrics"], time.monotonic() + 40)
    _wait_files(info["dir"], 4, time.monotonic() + 30)
    rows = _rows(100, offset=5)
    pids = _send(info["url"] + "/predict", rows)
    assert len(set(pids)) >= 2
    _assert_totals(requests.get(info["metrics"], timeout=10).text, rows, small_baseline.numeric[0].edges)
    assert server.proc.poll() is None  # three workers found the port taken and carried on
    assert "Traceback" not in server.log.read_text()


@pytest.mark.timeout(120)
def test_workers_without_a_directory_are_never_silent(serve: Any) -> None:
    server, info = serve("uvicorn", shared=False)
    _get(info["metrics"], time.monotonic() + 40)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        log = server.log.read_text()
        if log.count("is one of several worker processes") >= 4 and log.count("is taken (another worker?)") >= 3:
            break
        time.sleep(0.2)
    assert log.count("is one of several worker processes") == 4  # once per worker
    assert log.count("is taken (another worker?)") == 3  # the three that could not bind carry on
    assert server.proc.poll() is None and "Traceback" not in log
