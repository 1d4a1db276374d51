"""Adversarial review of the training/serving skew feature (issue 17): each test is a defect found.

Capture (the app side), the spool, the replay's comparison, its CI gates and its pushed series.
Expected values are written by hand from the contract (``/tmp/i17/design.md``) and the README.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import _skew_fixture as fx
import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from otel_ml import Capture, ModelMonitor, raw_request
from otel_ml import _capture_format as cf
from otel_ml import _names as n
from otel_ml.instrument._spool import HOST, Spool, SpoolLimits
from otel_ml.skew import FailOn, registry_for, replay
from otel_ml.skew._compare import MATCH, MISSING_TRAINING, column, compare_feature


def _rows(directory: Path) -> list[dict[str, Any]]:
    return [row for _, row in cf.read_capture(cf.capture_files(directory))]


def _dropped(mon: ModelMonitor) -> dict[str, int]:
    capture = mon.counters.snapshot().capture
    assert capture is not None
    return dict(capture.dropped)


def _half(row: dict[str, Any]) -> float:
    return 0.5


# -- capture: what a served row becomes on disk ------------------------------------------------------


def test_a_batch_row_with_a_pandas_na_feature_is_captured_with_null_not_dropped(tmp_path: Path) -> None:
    """A nullable pandas column (``Int64``, ``string``: what ``convert_dtypes`` and Arrow/Parquet give)
    holds ``pd.NA`` for a missing value. The capture must write it as ``null`` (a missing value, like
    NaN and None); dropping the row as ``unserializable`` leaves exactly the rows with missing values
    (where default-value skew lives) out of every replay."""
    mon = ModelMonitor(
        "m", "v1", feature_names=["age", "country"], capture=Capture(tmp_path, rate=1.0), registry=CollectorRegistry()
    )

    @mon
    def predict(frame: pd.DataFrame) -> Any:
        return np.full(len(frame), 0.25)

    frame = pd.DataFrame(
        {"age": pd.array([30, None, 40], dtype="Int64"), "country": pd.array(["DE", "FR", None], dtype="string")}
    )
    predict(frame)
    mon.close()
    rows = sorted(_rows(tmp_path), key=lambda r: r["request_id"])
    assert _dropped(mon)[n.CAPTURE_DROP_UNSERIALIZABLE] == 0
    assert [r["features"]["country"] for r in rows] == ["DE", "FR", None]
    ages = [r["features"]["age"] for r in rows]  # the monitor reads an Int64 column as floats: NaN is missing
    assert ages[0] == 30 and ages[2] == 40 and (ages[1] is None or math.isnan(ages[1]))


def test_a_dict_of_columns_batch_of_one_row_is_captured_as_a_batch_row(tmp_path: Path) -> None:
    """A dict of columns is a batch (``is_single_row`` says so, and the monitor counts it as one); a
    service that batches requests sends one of a single row whenever traffic is low. The capture
    takes any Mapping with one row for a single row: its features are written as the columns (lists),
    its score as null (the scores are an array), its decision as ``[true]`` and its segment as the
    label of a list, under the call id instead of ``<id>#0``."""
    mon = ModelMonitor(
        "m",
        "v1",
        feature_names=["amount", "country"],
        segments=["country"],
        decision=0.5,
        capture=Capture(tmp_path, rate=1.0),
        registry=CollectorRegistry(),
    )

    @mon
    def predict(columns: dict[str, Any]) -> Any:
        return np.full(len(columns["amount"]), 0.8)

    predict({"amount": [2.0], "country": ["DE"]})
    mon.close()
    rows = _rows(tmp_path)
    assert len(rows) == 1
    row = rows[0]
    assert row["request_id"].endswith("#0")
    assert row["features"] == {"amount": 2.0, "country": "DE"}
    assert (row["score"], row["decision"], row["segments"]) == (0.8, "true", {"country": "DE"})


def test_a_single_row_holding_pandas_na_is_captured(tmp_path: Path) -> None:
    """The single-row path: a row dict made from a nullable frame (``df.iloc[i].to_dict()``)."""
    mon = ModelMonitor("m", "v1", capture=Capture(tmp_path, rate=1.0), registry=CollectorRegistry())
    predict = mon(_half)
    predict({"age": 31, "income": pd.NA})
    mon.close()
    assert _dropped(mon)[n.CAPTURE_DROP_UNSERIALIZABLE] == 0
    assert [r["features"] for r in _rows(tmp_path)] == [{"age": 31, "income": None}]


def test_a_dataframe_raw_request_keeps_each_columns_type(tmp_path: Path) -> None:
    """``Capture(raw=...)`` returning the batch's raw DataFrame: row ``i``'s raw request must be that
    row as sent. ``raw.iloc[i]`` makes one Series of the row, so an int column next to a float column
    is upcast to float64: ``customer_id`` 2**53 + 1 is captured as 9007199254740992.0 and 7 as 7.0,
    and a training pipeline looking the id up (or ``str()``-ing it) then reports skew that serving
    never had."""
    mon = ModelMonitor(
        "m",
        "v1",
        feature_names=["amount"],
        capture=Capture(tmp_path, rate=1.0, raw=lambda args, kwargs: kwargs["raw"]),
        registry=CollectorRegistry(),
    )

    @mon
    def predict(frame: pd.DataFrame, *, raw: pd.DataFrame) -> Any:
        return np.full(len(frame), 0.5)

    raw = pd.DataFrame({"customer_id": np.array([2**53 + 1, 7], dtype=np.int64), "amount": [1.5, 2.5]})
    predict(pd.DataFrame({"amount": [1.5, 2.5]}), raw=raw)
    mon.close()
    got = [r["raw"] for r in sorted(_rows(tmp_path), key=lambda r: r["request_id"])]
    assert got == [{"customer_id": 2**53 + 1, "amount": 1.5}, {"customer_id": 7, "amount": 2.5}]
    assert all(type(g["customer_id"]) is int for g in got)


def test_a_lone_surrogate_in_the_raw_request_does_not_hide_the_row(tmp_path: Path) -> None:
    """``json.loads`` of a request body accepts ``"\\ud800"`` (a lone surrogate), so any client can
    send one. Such a row must still be captured (JSON can say it: ``\\ud800`` escaped), not dropped
    as ``unserializable``: otherwise a client picks which of its requests a replay never sees."""
    body = json.loads('{"name": "\\ud800x", "amount": 3}')
    mon = ModelMonitor(
        "m", "v1", capture=Capture(tmp_path, rate=1.0, raw=lambda args, kwargs: body), registry=CollectorRegistry()
    )
    predict = mon(_half)
    predict({"amount": 3.0})
    mon.close()
    assert _dropped(mon)[n.CAPTURE_DROP_UNSERIALIZABLE] == 0
    assert [r["raw"] for r in _rows(tmp_path)] == [body]


# -- the spool ------------------------------------------------------------------------------------------


class _Written:
    def __init__(self) -> None:
        self.rows = 0
        self.lock = threading.Lock()

    def __call__(self, rows: int, nbytes: int) -> None:
        with self.lock:
            self.rows += rows


def _header() -> dict[str, Any]:
    return cf.header(
        model="m",
        version="v1",
        threshold=None,
        segments=(),
        feature_names=(),
        tags={},
        pid=os.getpid(),
        host=HOST,
        started=time.time(),
        library="0",
    )


def _directory_bytes(directory: Path) -> int:
    total = 0
    for entry in os.scandir(directory):
        try:
            total += entry.stat().st_size
        except FileNotFoundError:  # renamed or evicted while listing
            pass
    return total


def _wait_for(written: _Written, rows: int) -> None:
    deadline = time.monotonic() + 10
    while written.rows < rows:
        assert time.monotonic() < deadline, "the writer did not write the rows"
        time.sleep(0.0005)


def test_the_spool_directory_stays_under_max_bytes_while_a_file_is_open(tmp_path: Path) -> None:
    """README: "the oldest files are deleted to keep the directory under max_bytes". Eviction runs
    right after a rename and counts only finished files (the writer's own file is closed by then),
    so the next file then grows to ``file_bytes`` on top of a full directory: up to max_bytes +
    file_bytes (+50 %, as file_bytes may be half the cap). The directory, open file included, is
    measured after every row. (Each further process writing the directory adds its own open file
    on top: the cap holds for one process at most.)"""
    limits = SpoolLimits(max_bytes=16384, file_bytes=4096, file_seconds=3600, max_record_bytes=1024, queue_size=100)
    written = _Written()
    spool = Spool(tmp_path, _header, limits, written, lambda reason, count: None)
    peak = 0
    try:
        for i in range(300):
            spool.put(cf.encode_line({"request_id": f"r{i}", "features": {"pad": "p" * 150}}))
            _wait_for(written, i + 1)
            peak = max(peak, _directory_bytes(tmp_path))
    finally:
        spool.close()
    assert peak <= 16384, f"the spool held {peak} bytes, over its max_bytes of 16384"


def test_recovery_leaves_alone_a_fresh_open_file_written_on_another_host(tmp_path: Path) -> None:
    """A capture directory on a shared volume (an NFS or ReadWriteMany claim mounted by every replica:
    "the same rows on every replica"). A pid of another host (or PID namespace) is dead *here* even
    while its process writes the file, so recovery must not claim a file whose header names another
    host and which was written a moment ago: claiming it renames the file under the live writer,
    whose later rows then land in a "finished" file (readers see half lines, its name's row count
    is wrong) and whose own rename fails."""
    other = cf.header(
        model="m",
        version="v1",
        threshold=None,
        segments=(),
        feature_names=(),
        tags={},
        pid=999_999_999,  # no such pid on this host
        host=HOST + "-other-replica",
        started=time.time(),
        library="0",
    )
    name = cf.open_name("20261202T000000000Z", 999_999_999, "0badcafe", 1)
    live = tmp_path / name
    live.write_bytes(cf.encode_line(other) + cf.encode_line({"request_id": "theirs", "features": {}}))
    written = _Written()
    spool = Spool(
        tmp_path,
        _header,
        SpoolLimits(max_bytes=1 << 20, file_bytes=1 << 16, file_seconds=3600, max_record_bytes=1024, queue_size=100),
        written,
        lambda reason, count: None,
    )
    spool.put(cf.encode_line({"request_id": "ours", "features": {}}))
    _wait_for(written, 1)
    spool.close()
    assert live.exists(), "a live writer's open file on another host was claimed"
    assert [r["request_id"] for r in _rows(tmp_path)] == ["ours"]


# -- the replay's comparison and gates -------------------------------------------------------------------


def test_pandas_na_from_the_training_pipeline_is_a_missing_value() -> None:
    """A training pipeline built on pandas returns ``pd.NA``/``pd.NaT`` for a missing value
    (``Series.to_dict()`` of a nullable frame). Served null vs training ``pd.NA`` is both missing:
    ``match`` (the contract: "both missing (absent, null, NaN) -> match"); served "DE" vs training
    ``pd.NA`` is ``missing_training``, not ``mismatch``."""
    served = column([None, None, "DE", 3.0])
    trained = column([pd.NA, pd.NaT, pd.NA, pd.NA])
    codes = compare_feature(served, trained, rtol=1e-6, atol=1e-9)
    assert codes.tolist() == [MATCH, MATCH, MISSING_TRAINING, MISSING_TRAINING]


def _always_raises(raw: Any) -> dict[str, Any]:
    raise KeyError("amount_cents")  # the training pipeline no longer reads this capture's requests


def test_ci_gates_do_not_pass_when_no_row_could_be_replayed(tmp_path: Path) -> None:
    """``--fail-on flips=0.01 --fail-on mismatch=0`` is the CI gate the README shows before a
    deploy. When the training pipeline raises on every row, nothing was compared: the flip ratio is
    ``None`` and the mismatch ratio 0 of 0, and both gates pass (exit 0). A gate that could not be
    evaluated must not pass silently."""
    fx.write_capture(tmp_path, fx.served_rows(fx.raw_rows(50)))
    report = replay(tmp_path, _always_raises, fx.predict, fail_on=[FailOn("flips", 0.01), FailOn("mismatch", 0.0)])
    v = report.versions[0]
    assert v.errors["pipeline"] == 50 and v.rows == 0  # the premise: nothing replayed
    assert report.failed(), report.gate_results()


# -- the pushed series -----------------------------------------------------------------------------------


def test_a_replay_that_replayed_no_row_does_not_push_a_fresh_last_run(tmp_path: Path) -> None:
    """The training pipeline raises on every row (it no longer reads what serving sends): the
    scheduled replay pushes rows 0 and a fresh ``ml_skew_last_run_timestamp_seconds``. The flips
    alert needs 500 rows and MLSkewReplayStale sees a replay that "finished", so nothing ever pages
    while the gate has stopped measuring anything. A run that replayed no row did not finish a
    replay: it must leave the last-run timestamp out (the stale alert then says so)."""
    fx.write_capture(tmp_path, fx.served_rows(fx.raw_rows(50)))
    report = replay(tmp_path, _always_raises, fx.predict)
    assert report.versions[0].rows == 0  # the premise
    names = {name for name, _ in _pushed(report)}
    assert n.SKEW_ROWS.series in names  # what was tried is still pushed
    assert n.SKEW_LAST_RUN.series not in names


def _pushed(report: Any) -> list[tuple[str, frozenset[tuple[str, str]]]]:
    text = generate_latest(registry_for(report.versions[0], report.finished)).decode()
    return [
        (s.name, frozenset(s.labels.items())) for family in text_string_to_metric_families(text) for s in family.samples
    ]


def _one_hot(raw: Any) -> dict[str, Any]:
    """A DictVectorizer-style pipeline: one key per category value the request holds."""
    f = fx.build_features(raw)
    return {**f, f"merchant={raw['customer_id']}": 1}


def test_the_number_of_ml_feature_values_pushed_is_bounded(tmp_path: Path) -> None:
    """``ml_feature`` comes from the user's pipeline keys. A pipeline keyed by values of the
    request (one-hot encodings, ``{"merchant=" + m: 1}``) makes one feature per distinct value,
    and every one is pushed as 5 series: the Pushgateway and Prometheus get series without bound,
    chosen by whoever sends requests. The budget the rest of otel-ml keeps (segments, flips) must
    hold here too: the pushed values may not grow with the rows."""
    fx.write_capture(tmp_path, fx.served_rows(fx.raw_rows(2000)))
    report = replay(tmp_path, _one_hot, fx.predict, skip_features=["request_hour"])
    features = {dict(labels)[n.LABEL_FEATURE] for name, labels in _pushed(report) if name == n.SKEW_FEATURE.series}
    assert len(features) <= len(fx.FEATURES) + 100, f"{len(features)} ml_feature values pushed"


def _hostile_names(raw: Any) -> dict[str, Any]:
    f = fx.build_features(raw)
    return {**f, "note\x00": 1.0, "note\x01": 1.0, "x" * 300 + "a": 1.0, "x" * 300 + "b": 1.0}


def test_feature_names_equal_after_label_hygiene_push_no_duplicate_series(tmp_path: Path) -> None:
    """Feature names go through ``label_value`` (control characters to U+FFFD, 256 characters at most),
    so ``"note\\x00"`` and ``"note\\x01"`` (or two long names with one prefix) become one label value
    and the push holds the same series twice: the Pushgateway refuses the whole push (HTTP 400,
    "collected metric ... was collected before with the same name and label values")."""
    fx.write_capture(tmp_path, fx.served_rows(fx.raw_rows(30)))
    report = replay(tmp_path, _hostile_names, fx.predict, skip_features=["request_hour"])
    samples = _pushed(report)
    repeated = {s for s in samples if samples.count(s) > 1}
    assert not repeated, f"{len(repeated)} series pushed twice, e.g. {sorted(repeated, key=str)[:2]}"


def test_a_file_evicted_by_the_app_during_a_replay_does_not_abort_it(tmp_path: Path) -> None:
    """A spool at its size cap (its steady state) evicts its oldest file each time a new one is
    finished, and a replay reads oldest first, streaming the rows through the pipeline for minutes.
    The replay lists the files and reads them one after the other, so a file evicted in between
    raises ``FileNotFoundError`` and the whole replay fails (the CLI: exit 2, no push, and the stale
    alert later) instead of replaying the rows it could read. Here the pipeline, running on the first
    file's rows, stands in for the app evicting the second file."""
    rows = fx.served_rows(fx.raw_rows(40))
    paths = fx.write_capture(tmp_path, rows, per_file=20)
    assert len(paths) == 2

    def evicting_pipeline(raw: Any) -> dict[str, Any]:
        if paths[1].exists():
            paths[1].unlink()  # the app's spool: over max_bytes, the oldest finished file goes
        return fx.build_features(raw)

    report = replay(tmp_path, evicting_pipeline, fx.predict, skip_features=["request_hour"])
    assert report.versions[0].rows >= 20


def _nan_for_young(frame: Any) -> Any:
    """The model, except that it cannot score ages under 25 (NaN, no raise)."""
    scores = np.asarray(fx.predict(frame), dtype=float)
    return np.where(np.asarray(frame["age"]) < 25, np.nan, scores)


def test_a_nan_replayed_score_is_no_decision_and_no_flip(tmp_path: Path) -> None:
    """The decorator gives a single row whose score is not finite no decision (its threshold rule
    applies to finite scores only), and a flip needs both decisions. The replay labels a NaN score
    ``"false"`` (``NaN > t`` is False), so every served ``"true"`` row the model now cannot score
    counts as a ``true_to_false`` flip, and it pages as decision skew though no score was compared
    (the score difference leaves these rows out)."""
    rows = fx.served_rows(fx.raw_rows(400))
    fx.write_capture(tmp_path, rows)
    report = replay(tmp_path, fx.build_features, _nan_for_young, skip_features=["request_hour"])
    v = report.versions[0]
    assert v.score_difference.count == sum(1 for r in rows if r["raw"]["age"] >= 25)  # the premise
    assert v.flips_total == 0, v.flips[0]


def test_after_the_clock_steps_back_the_spool_keeps_capturing_new_rows(tmp_path: Path) -> None:
    """File names carry the wall-clock start time and eviction deletes the smallest names first. After
    the clock steps back (a VM whose clock ran a day ahead until NTP fixed it; a replica with a wrong
    clock on a shared volume), the files written before the step have the largest names: eviction
    then deletes every new file right after it is finished, and the capture keeps only stale rows
    until the wall clock catches up. The newest rows must survive the size cap."""
    head = cf.encode_line(_header())
    pad = cf.encode_line({"request_id": "old", "features": {"pad": "o" * 4500}})
    for k in range(3):  # written while the clock read 2099: 3 x ~4.6 KB, under the cap
        name = cf.finished_name("20990101T000000000Z", 4242, "0000beef", k + 1, 1)
        (tmp_path / name).write_bytes(head + pad)
    limits = SpoolLimits(max_bytes=16384, file_bytes=4096, file_seconds=3600, max_record_bytes=1024, queue_size=1000)
    written = _Written()
    spool = Spool(tmp_path, _header, limits, written, lambda reason, count: None)
    for i in range(200):
        spool.put(cf.encode_line({"request_id": f"new{i}", "features": {"pad": "n" * 150}}))
    _wait_for(written, 200)
    spool.close()
    kept = [r["request_id"] for r in _rows(tmp_path) if r["request_id"].startswith("new")]
    assert "new199" in kept, f"{len(kept)} of the 200 new rows kept"


# -- the capture directory misbehaving -------------------------------------------------------------------


def test_a_capture_directory_that_is_a_file_does_not_stop_the_service(tmp_path: Path) -> None:
    """``@monitor(capture=Capture(path))`` runs when the service's module is imported. A path that
    cannot be a directory (a file there, a volume not mounted yet, no permission for its parent)
    raises from ``mkdir`` in the monitor's constructor, so an optional copy of the traffic keeps the
    service from starting. The disk refusing must be counted (``write_error``), like a full disk."""
    spot = tmp_path / "capture"
    spot.write_text("not a directory")
    mon = ModelMonitor("m", "v1", capture=Capture(spot, rate=1.0), registry=CollectorRegistry())
    predict = mon(_half)
    assert predict({"x": 1.0}) == 0.5
    mon.close()
    assert _dropped(mon)[n.CAPTURE_DROP_WRITE_ERROR] == 1


def test_a_capture_directory_deleted_while_running_is_made_again(tmp_path: Path) -> None:
    """A cleaner (tmpfiles.d, an operator's ``rm -r``) deletes the spool while the app runs. The
    directory is made only when the monitor starts, so every later file fails to open and the
    capture is lost (``write_error``) until the process restarts."""
    spool_dir = tmp_path / "spool"
    limits = SpoolLimits(max_bytes=1 << 20, file_bytes=4096, file_seconds=3600, max_record_bytes=1024, queue_size=1000)
    written = _Written()
    spool = Spool(spool_dir, _header, limits, written, lambda reason, count: None)
    line = cf.encode_line({"request_id": "before", "features": {"pad": "p" * 150}})
    for _ in range(10):
        spool.put(line)
    _wait_for(written, 10)
    shutil.rmtree(spool_dir)
    for i in range(100):  # several files' worth: the open file (now unlinked) is finished, new ones open
        spool.put(cf.encode_line({"request_id": f"after{i}", "features": {"pad": "p" * 150}}))
    deadline = time.monotonic() + 10
    while written.rows < 60 and time.monotonic() < deadline:
        time.sleep(0.01)
    spool.close()
    assert spool_dir.is_dir()
    kept = [r["request_id"] for r in _rows(spool_dir)]
    assert "after99" in kept, f"{len(kept)} rows in the spool after it was deleted"


_FORK_WHILE_STARTING = """
import os, sys, threading, time
from otel_ml import _capture_format as cf
from otel_ml.instrument._spool import Spool, SpoolLimits

written = []
limits = SpoolLimits(max_bytes=1 << 20, file_bytes=1 << 16, file_seconds=3600, max_record_bytes=1024, queue_size=100)
header = lambda: cf.header(model="m", version="v1", threshold=None, segments=(), feature_names=(), tags={},
                           pid=os.getpid(), host="h", started=time.time(), library="0")
spool = Spool(sys.argv[1], header, limits, lambda rows, nbytes: written.append(rows), lambda reason, count: None)
holding = threading.Event()

def starting():  # another request thread inside Spool._start (its first put) when the fork happens
    with spool._lock:
        holding.set()
        time.sleep(2)

threading.Thread(target=starting, daemon=True).start()
holding.wait()
pid = os.fork()
if pid == 0:
    spool.put(cf.encode_line({"request_id": "child", "features": {}}))  # the child's first sampled row
    spool.close()
    os._exit(0 if sum(written) == 1 else 3)
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        sys.exit(os.waitstatus_to_exitcode(status))
    time.sleep(0.05)
os.kill(pid, 9)
sys.exit(4)  # the child hung
"""


def test_a_child_forked_while_a_thread_starts_the_writer_does_not_hang(tmp_path: Path) -> None:
    """The fork handler resets the spool's queue, file and thread in the child, but not its lock:
    a fork while another thread holds it (inside ``_start``, a request's first sampled row) leaves
    the child a lock nobody will release, and the child's first sampled request blocks forever."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run(
        [sys.executable, "-c", _FORK_WHILE_STARTING, str(tmp_path)], env=env, timeout=60, capture_output=True, text=True
    )
    assert out.returncode == 0, ("the child hung" if out.returncode == 4 else out.returncode, out.stderr[-2000:])


def test_a_huge_integer_feature_does_not_abort_the_replay(tmp_path: Path) -> None:
    """JSON numbers have no size limit: a client sending ``"age": 1e400`` written as digits is an
    int of 401 digits after ``json.loads``, the online code passes it through and the capture writes
    it. The all-plain-numbers fast path of ``column`` converts with ``np.fromiter(..., float64)``,
    which raises ``OverflowError`` (the object path handles it), so one hostile request aborts the
    whole replay (the CLI: a traceback and exit 1, read as a failed gate) until its file is evicted."""
    rows = fx.served_rows(fx.raw_rows(20))
    rows[0]["raw"]["age"] = 10**400
    rows[0]["features"]["age"] = 10**400
    fx.write_capture(tmp_path, rows)
    report = replay(tmp_path, fx.build_features, fx.predict, skip_features=["request_hour"])
    v = report.versions[0]
    assert v.rows_compared == 20
    assert v.feature("age").counts[n.SKEW_MATCH] == 20  # the same number on both sides


def test_one_request_captured_by_two_model_versions_is_no_duplicate(tmp_path: Path) -> None:
    """``Capture(salt=...)`` shared by two versions makes them capture the same requests ("a request
    captured by one monitor is the one a replay of another can be joined with"): mirrored traffic
    to a canary, both writing the model's spool. The replay reports each version apart, but looks
    for duplicate keys across versions, so the two rows of one request exit 2 as duplicates."""
    rows = fx.served_rows(fx.raw_rows(30))
    fx.write_capture(tmp_path, rows, version="v3", seq=1)
    fx.write_capture(tmp_path, rows, version="v4", seq=2)
    report = replay(tmp_path, fx.build_features, fx.predict, skip_features=["request_hour"])
    assert sorted((v.version, v.rows) for v in report.versions) == [("v3", 30), ("v4", 30)]
    assert report.duplicates == 0


def test_features_the_model_changes_in_place_are_captured_as_they_were_served(tmp_path: Path) -> None:
    """``df.fillna(0, inplace=True)`` inside the model function is common. The capture reads the
    features after the call, so it writes the model's own fill (0) as the served value, and a
    replay of a pipeline that leaves the value missing reports ``missing_training`` on every such
    row: skew that serving did not have. The capture must be of the features as passed in."""
    mon = ModelMonitor(
        "m", "v1", feature_names=["income"], capture=Capture(tmp_path, rate=1.0), registry=CollectorRegistry()
    )

    @mon
    def predict(frame: pd.DataFrame) -> Any:
        frame.fillna(0.0, inplace=True)  # the model's own preprocessing
        return np.full(len(frame), 0.5)

    predict(pd.DataFrame({"income": [np.nan, 1.0]}))
    mon.close()
    got = [r["features"]["income"] for r in sorted(_rows(tmp_path), key=lambda r: r["request_id"])]
    assert got[1] == 1.0 and (got[0] is None or math.isnan(got[0])), got


def test_a_raw_request_changed_inside_the_block_is_captured_as_it_arrived(tmp_path: Path) -> None:
    """README: ``with raw_request(body): return predict(online_features(body))``, "the raw request,
    before the online feature code". The capture keeps a reference and encodes it after the call,
    so online code that normalises the body in place (``body["amount"] = float(...)``) is captured
    already normalised, and the replay cannot see the very transformation it is meant to check."""
    mon = ModelMonitor("m", "v1", capture=Capture(tmp_path, rate=1.0), registry=CollectorRegistry())
    predict = mon(_half)
    body: dict[str, Any] = {"amount": "12.50"}
    with raw_request(body):
        body["amount"] = float(body["amount"])  # the online feature code, in place
        predict({"amount": body["amount"]})
    mon.close()
    assert [r["raw"] for r in _rows(tmp_path)] == [{"amount": "12.50"}]
