"""Serving capture for skew replays: which rows, what is written, and how the spool behaves.

Sampling is checked against hashlib and a pure-Python splitmix64 (not the module's own helpers);
the spool against its files on disk; kill -9, fork and a full disk in real subprocesses.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry

import otel_ml
from otel_ml import Capture, ModelMonitor, raw_request
from otel_ml import _names as n
from otel_ml._capture_format import capture_files, read_capture

MASK = (1 << 64) - 1


def oracle_hash(salt: bytes, request_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(request_id.encode(), key=salt, digest_size=8).digest(), "little")


def oracle_row_hash(salt: bytes, request_id: str, i: int) -> int:
    """splitmix64(hash + (i + 1) * gamma) in Python integers, the rule the README states."""
    z = (oracle_hash(salt, request_id) + (i + 1) * 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def rows_of(directory: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return list(read_capture(capture_files(directory)))


def capture_counts(mon: ModelMonitor) -> Any:
    capture = mon.counters.snapshot().capture
    assert capture is not None
    return capture


def scored(row: dict[str, Any]) -> float:
    return 0.9 if row["country"] == "DE" else 0.1


def test_single_rows_are_sampled_by_the_keyed_hash_of_their_request_id(tmp_path: Path) -> None:
    salt = "s3cret"
    mon = ModelMonitor(
        "fraud",
        "v3",
        segments=["country"],
        decision=0.5,
        request_id=lambda row: row["id"],
        capture=Capture(tmp_path, rate=0.2, salt=salt, tags={"pipeline": "git:abc123"}),
        registry=CollectorRegistry(),
    )
    predict = mon(scored)
    ids = [f"req-{i}" for i in range(2000)]
    for i, rid in enumerate(ids):
        body = {"amount_cents": 100 * i, "country": "DE" if i % 2 else "US"}
        with raw_request(body):
            predict({"id": rid, "amount": float(i), "country": body["country"]})
    mon.close()
    expected = {rid for rid in ids if oracle_hash(salt.encode(), rid) < 0.2 * 2**64}
    rows = rows_of(tmp_path)
    assert {row["request_id"] for _, row in rows} == expected
    assert 300 < len(expected) < 500  # about 20 %
    head, row = rows[0]
    i = int(row["request_id"].split("-")[1])
    assert row["raw"] == {"amount_cents": 100 * i, "country": "DE" if i % 2 else "US"}
    assert row["features"] == {"id": row["request_id"], "amount": float(i), "country": row["raw"]["country"]}
    assert row["score"] == (0.9 if i % 2 else 0.1) and row["decision"] == ("true" if i % 2 else "false")
    assert row["segments"] == {"country": row["raw"]["country"]}
    assert head["model"] == "fraud" and head["version"] == "v3" and head["threshold"] == 0.5
    assert head["segments"] == ["country"] and head["tags"] == {"pipeline": "git:abc123"}
    assert head["pid"] == os.getpid()
    counts = capture_counts(mon)
    assert counts.records == len(expected)
    assert counts.written_bytes == sum(f.path.stat().st_size for f in capture_files(tmp_path))
    assert set(counts.dropped.values()) == {0}


def test_a_batch_captures_its_sampled_rows_with_their_own_raw_element(tmp_path: Path) -> None:
    mon = ModelMonitor(
        "fraud",
        "v3",
        segments=["country"],
        decision=0.5,
        feature_names=["amount", "country"],
        capture=Capture(tmp_path, rate=0.3, salt="k", raw=lambda args, kwargs: kwargs["raw"]),
        registry=CollectorRegistry(),
    )

    @mon
    def predict(frame: pd.DataFrame, *, raw: list[dict[str, Any]]) -> Any:
        return np.where(frame["country"] == "DE", 0.8, 0.2)

    frame = pd.DataFrame({"amount": np.arange(500) / 4, "country": np.where(np.arange(500) % 5, "DE", "FR")})
    raws = [{"cents": 25 * i} for i in range(500)]
    with otel_ml.capture_prediction() as seen:
        predict(frame, raw=raws)
    mon.close()
    call_id = seen.request_id
    assert call_id is not None
    expected = {i for i in range(500) if oracle_row_hash(b"k", call_id, i) < 0.3 * 2**64}
    rows = {row["request_id"]: row for _, row in rows_of(tmp_path)}
    assert set(rows) == {f"{call_id}#{i}" for i in expected}
    for i in expected:
        row = rows[f"{call_id}#{i}"]
        assert row["raw"] == {"cents": 25 * i}
        assert row["features"] == {"amount": i / 4, "country": "DE" if i % 5 else "FR"}
        assert row["score"] == (0.8 if i % 5 else 0.2) and row["decision"] == ("true" if i % 5 else "false")
        assert row["segments"] == {"country": "DE" if i % 5 else "FR"}


def test_rotation_keeps_every_row_in_whole_finished_files(tmp_path: Path) -> None:
    mon = ModelMonitor(
        "m",
        "v1",
        capture=Capture(tmp_path, rate=1.0, file_bytes=8192, max_bytes=1 << 20),
        registry=CollectorRegistry(),
    )
    predict = mon(lambda row: 0.5)
    for i in range(600):
        predict({"x": float(i), "pad": "p" * 50})
    mon.close()
    files = capture_files(tmp_path)
    assert len(files) >= 5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # nothing left open
    xs = []
    for f in files:
        lines = f.path.read_bytes().splitlines()
        assert len(lines) - 1 == f.records  # the name's count is the file's rows
        assert f.path.stat().st_size <= 8192 + 4096  # rotated once past file_bytes
        xs += [json.loads(line)["features"]["x"] for line in lines[1:]]
    assert sorted(xs) == [float(i) for i in range(600)]
    assert oct(files[0].path.stat().st_mode & 0o777) == "0o600"  # a copy of user input: owner only


def test_the_size_cap_evicts_the_oldest_files_and_counts_their_rows(tmp_path: Path) -> None:
    mon = ModelMonitor(
        "m",
        "v1",
        capture=Capture(tmp_path, rate=1.0, file_bytes=4096, max_bytes=16384),
        registry=CollectorRegistry(),
    )
    predict = mon(lambda row: 0.5)
    for i in range(2000):
        predict({"x": float(i)})
    mon.close()
    files = capture_files(tmp_path)
    on_disk = sum(f.records for f in files)
    assert sum(f.path.stat().st_size for f in files) <= 16384
    counts = capture_counts(mon)
    assert counts.records == 2000
    assert counts.dropped[n.CAPTURE_DROP_EVICTED] == 2000 - on_disk > 0
    kept = sorted(row["features"]["x"] for _, row in rows_of(tmp_path))
    assert kept == [float(i) for i in range(2000 - on_disk, 2000)]  # the newest survive


def test_what_cannot_be_written_is_counted_and_the_call_is_untouched(tmp_path: Path) -> None:
    mon = ModelMonitor(
        "m",
        "v1",
        capture=Capture(tmp_path, rate=1.0, max_record_bytes=1024),
        registry=CollectorRegistry(),
    )
    predict = mon(lambda row: 0.25)
    with raw_request({"blob": "x" * 5000}):
        assert predict({"x": 1.0}) == 0.25
    with raw_request({"handle": object()}):
        assert predict({"x": 2.0}) == 0.25
    with raw_request({"fine": True}):
        assert predict({"x": 3.0}) == 0.25
    mon.close()
    counts = capture_counts(mon)
    assert counts.dropped[n.CAPTURE_DROP_TOO_LARGE] == 1
    assert counts.dropped[n.CAPTURE_DROP_UNSERIALIZABLE] == 1
    assert [row["raw"] for _, row in rows_of(tmp_path)] == [{"fine": True}]


def test_a_raising_raw_callback_is_an_instrumentation_error_not_the_callers(tmp_path: Path) -> None:
    def broken(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        raise KeyError("raw")

    mon = ModelMonitor("m", "v1", capture=Capture(tmp_path, rate=1.0, raw=broken), registry=CollectorRegistry())
    assert mon(lambda row: 0.5)({"x": 1.0}) == 0.5
    mon.close()
    assert mon.counters.snapshot().instrumentation_errors == {"KeyError": 1}


def test_every_sampled_row_is_written_or_counted_dropped_under_a_flood(tmp_path: Path) -> None:
    mon = ModelMonitor("m", "v1", capture=Capture(tmp_path, rate=1.0, queue_size=4), registry=CollectorRegistry())
    predict = mon(lambda row: 0.5)
    for i in range(20000):
        predict({"x": float(i)})
    mon.close()
    counts = capture_counts(mon)
    assert counts.records + counts.dropped[n.CAPTURE_DROP_QUEUE_FULL] == 20000
    assert counts.records == len(rows_of(tmp_path))


def test_capture_settings_are_checked_at_start(tmp_path: Path) -> None:
    for bad in ({"rate": 0.0}, {"rate": 1.5}, {"file_bytes": 100}, {"max_bytes": 8192}, {"queue_size": 0}):
        with pytest.raises(ValueError):
            Capture(tmp_path, **bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tags"):
        Capture(tmp_path, tags={"pipeline": 3})  # type: ignore[dict-item]


def test_capture_is_off_by_default(tmp_path: Path) -> None:
    mon = ModelMonitor("m", "v1", registry=CollectorRegistry())
    mon(lambda row: 0.5)({"x": 1.0})
    assert mon.counters.snapshot().capture is None
    assert mon.capture is None


_WRITER = """
import os, sys, time
from prometheus_client import CollectorRegistry
from otel_ml import Capture, ModelMonitor
mon = ModelMonitor("m", "v1", capture=Capture(sys.argv[1], rate=1.0), registry=CollectorRegistry())
predict = mon(lambda row: 0.5)
for i in range(int(sys.argv[2])):
    predict({"x": float(i)})
deadline = time.time() + 10
while mon.counters.snapshot().capture.records < int(sys.argv[2]) and time.time() < deadline:
    time.sleep(0.01)
print(mon.counters.snapshot().capture.records, flush=True)
time.sleep(60)
"""


def _run(code: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(otel_ml.__file__).parents[1])}
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True, env=env)


def test_rows_written_before_kill_9_are_recovered_by_the_next_process(tmp_path: Path) -> None:
    proc = _run(_WRITER, str(tmp_path), "300")
    assert proc.stdout is not None
    written = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    proc.stdout.close()
    assert written == 300
    assert capture_files(tmp_path) == []  # the dead process's file is still open
    mon = ModelMonitor("m", "v1", capture=Capture(tmp_path, rate=1.0), registry=CollectorRegistry())
    mon(lambda row: 0.5)({"x": -1.0})  # the next writer's first write recovers the orphan
    mon.close()
    xs = sorted(row["features"]["x"] for _, row in rows_of(tmp_path))
    assert xs == [-1.0, *(float(i) for i in range(300))]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


_FORKER = """
import os, sys
from prometheus_client import CollectorRegistry
from otel_ml import Capture, ModelMonitor
mon = ModelMonitor("m", "v1", capture=Capture(sys.argv[1], rate=1.0), registry=CollectorRegistry())
predict = mon(lambda row: 0.5)
for i in range(100):
    predict({"x": float(i), "who": "parent"})
pid = os.fork()
who = "child" if pid == 0 else "parent"
for i in range(100, 400):
    predict({"x": float(i), "who": who})
mon.close()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
"""


def test_a_forked_worker_writes_its_own_files(tmp_path: Path) -> None:
    proc = _run(_FORKER, str(tmp_path))
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    rows = rows_of(tmp_path)
    parent = [r for h, r in rows if r["features"]["who"] == "parent"]
    child = [(h, r) for h, r in rows if r["features"]["who"] == "child"]
    assert sorted(r["features"]["x"] for r in parent) == [float(i) for i in range(400)]
    assert sorted(r["features"]["x"] for _, r in child) == [float(i) for i in range(100, 400)]
    assert {h["pid"] for h, _ in child} != {h["pid"] for h, r in rows if r["features"]["who"] == "parent"}


_FULL_DISK = """
import resource, signal, sys, json
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the limit, write() fails with EFBIG like a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
from prometheus_client import CollectorRegistry
from otel_ml import Capture, ModelMonitor
mon = ModelMonitor("m", "v1", capture=Capture(sys.argv[1], rate=1.0, file_bytes=1 << 20, max_bytes=4 << 20),
                   registry=CollectorRegistry())
predict = mon(lambda row: 0.5)
results = [predict({"x": float(i), "pad": "p" * 60}) for i in range(2000)]
mon.close()
c = mon.counters.snapshot().capture
print(json.dumps({"ok": results == [0.5] * 2000, "records": c.records, "dropped": c.dropped}))
"""


def test_a_full_disk_counts_write_errors_and_keeps_what_was_written(tmp_path: Path) -> None:
    proc = _run(_FULL_DISK, str(tmp_path))
    assert proc.stdout is not None
    out = json.loads(proc.stdout.read())
    proc.stdout.close()
    assert proc.wait(60) == 0
    assert out["ok"]
    assert out["dropped"][n.CAPTURE_DROP_WRITE_ERROR] > 0
    assert out["records"] + out["dropped"][n.CAPTURE_DROP_WRITE_ERROR] == 2000
    rows = rows_of(tmp_path)
    assert len(rows) == out["records"]  # every counted row is on disk, whole
    assert all(f.path.stat().st_size <= 20000 for f in capture_files(tmp_path))


def test_files_finish_after_file_seconds_even_when_traffic_stops(tmp_path: Path) -> None:
    mon = ModelMonitor("m", "v1", capture=Capture(tmp_path, rate=1.0, file_seconds=1.0), registry=CollectorRegistry())
    mon(lambda row: 0.5)({"x": 1.0})
    deadline = time.time() + 10
    while not capture_files(tmp_path) and time.time() < deadline:
        time.sleep(0.05)
    assert [f.records for f in capture_files(tmp_path)] == [1]
    mon.close()


def _worker_predicts(predict: Any, start: int) -> None:
    for i in range(start, start + 150):
        predict({"x": float(i)})


def test_workers_capture_into_one_spool_and_their_counts_sum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import multiprocessing

    from prometheus_client import generate_latest

    monkeypatch.setenv(otel_ml.instrument.MULTIPROC_DIR_ENV, str(tmp_path / "mp"))
    (tmp_path / "mp").mkdir()
    registry = CollectorRegistry()
    mon = ModelMonitor("m", "v1", capture=Capture(tmp_path / "spool", rate=1.0), registry=registry)
    predict = mon(lambda row: 0.5)
    ctx = multiprocessing.get_context("fork")
    for k in range(3):  # multiprocessing children leave with os._exit: their spools close in its finalizers
        child = ctx.Process(target=_worker_predicts, args=(predict, 1000 * k))
        child.start()
        child.join(30)
        assert child.exitcode == 0
    _worker_predicts(predict, 5000)
    assert mon.capture is not None
    mon.capture.close()  # this process's spool: its last rows written and counted, the model still exposed
    text = generate_latest(registry).decode()
    mon.close()
    xs = sorted(row["features"]["x"] for _, row in rows_of(tmp_path / "spool"))
    assert xs == sorted(float(i) for k in (0, 1, 2, 5) for i in range(1000 * k, 1000 * k + 150))
    assert f'{n.CAPTURE_RECORDS.series}{{ml_model_name="m",ml_model_version="v1"}} 600.0' in text


def test_async_calls_and_observe_blocks_are_captured_with_their_raw_request(tmp_path: Path) -> None:
    import asyncio

    mon = ModelMonitor("m", "v1", decision=0.5, capture=Capture(tmp_path, rate=1.0), registry=CollectorRegistry())

    @mon
    async def predict(row: dict[str, Any]) -> float:
        await asyncio.sleep(0)
        return 0.75

    async def serve(i: int) -> None:
        with raw_request({"body": i}):
            await predict({"x": float(i)})

    async def main() -> None:
        await asyncio.gather(*(serve(i) for i in range(50)))  # each task's raw request is its own

    asyncio.run(main())
    with raw_request({"body": "observed"}), mon.observe({"x": -1.0}) as obs:
        obs.result = 0.25
    mon.close()
    rows = {row["features"]["x"]: row for _, row in rows_of(tmp_path)}
    assert {x: r["raw"]["body"] for x, r in rows.items() if x >= 0} == {float(i): i for i in range(50)}
    assert rows[-1.0]["raw"] == {"body": "observed"} and rows[-1.0]["decision"] == "false"
    assert all(r["decision"] == "true" and r["score"] == 0.75 for x, r in rows.items() if x >= 0)
