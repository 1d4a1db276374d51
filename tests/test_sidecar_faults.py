"""Faults around the sidecar's state file, with real processes: a state directory that cannot be
written (a regular file where the directory should be; a full filesystem), corrupt and crafted
state files, temp files an interrupted write left behind, and data for no loaded baseline."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from conftest import free_port, make_training_frame
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from prometheus_client import CollectorRegistry

from otel_ml import Baseline, ModelMonitor, fit_baseline
from otel_ml.instrument import counts_metrics_data
from otel_ml.sidecar import Sidecar, SidecarConfig, SidecarState, StateSettings, WindowSpec, load_state, save_state

PB = {"Content-Type": "application/x-protobuf"}


def payload(baseline: Baseline, rows: int = 400) -> bytes:
    mon = ModelMonitor(baseline=baseline, decision=0.7, registry=CollectorRegistry())
    mon(lambda f: np.full(len(f), 0.4))(make_training_frame(rows, seed=4).drop(columns="score"))
    return encode_metrics(counts_metrics_data([mon.counters.snapshot()], start_time_ns=3)).SerializeToString()


class Proc:
    """``otel-ml sidecar`` as a child process, its stderr in a file."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = tmp_path / f"stderr-{port}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "otel_ml.cli", "sidecar", "--listen", f"127.0.0.1:{port}", *args],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(self.url + "/healthz", timeout=1)
                return
            except requests.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sidecar did not start: {self.stderr()}") from None
                time.sleep(0.1)

    def stderr(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=20)
        self._log.close()
        return code


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait(timeout=10)


def wait_for(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_a_burst_of_signals_still_saves_and_exits(baseline: Baseline, tmp_path: Path, procs: list[Proc]) -> None:
    """SIGTERM twice (a wrapper forwarding it plus a direct kill, Ctrl-C twice): a handler that
    set a threading.Event could run nested in itself or in Event.wait and deadlock on its lock."""
    path = baseline.save(tmp_path / "b.json")
    for trial in range(4):  # the old handler hung about one burst in six
        state = tmp_path / f"s{trial}.npz"
        side = Proc(tmp_path, "--baseline", str(path), "--state-file", str(state), "--persist-interval", "1h")
        procs.append(side)
        time.sleep(0.9 + 0.03 * trial)  # bursts land at different points of the main loop's one-second wait
        end = time.monotonic() + 0.3
        while time.monotonic() < end and side.proc.poll() is None:
            side.proc.send_signal(signal.SIGTERM)
            time.sleep(0.0002)
        try:
            code = side.proc.wait(timeout=25)
        except subprocess.TimeoutExpired:
            pytest.fail(f"burst {trial}: the sidecar hung after SIGTERM")
        finally:
            side._log.close()
        assert code in (0, -signal.SIGTERM), side.stderr()  # late signals may meet the default action at exit
        assert state.exists(), f"burst {trial}: state not saved"


def test_unwritable_state_dir(baseline: Baseline, tmp_path: Path, procs: list[Proc]) -> None:
    """A regular file where the state directory should be: not even root can write below it."""
    blocker = tmp_path / "state"
    blocker.write_text("not a directory")
    path = baseline.save(tmp_path / "b.json")
    side = Proc(tmp_path, "--baseline", str(path), "--state-file", str(blocker / "s.npz"), "--persist-interval", "0.2s")
    procs.append(side)
    assert requests.post(side.url + "/v1/metrics", data=payload(baseline), headers=PB, timeout=5).status_code == 200
    wait_for(lambda: "cannot write the state file" in requests.get(side.url + "/readyz", timeout=2).text)
    r = requests.get(side.url + "/readyz", timeout=2)
    assert r.status_code == 503 and str(blocker / "s.npz") in r.text
    assert "cannot open the join store" in r.text  # beside the state file: labels wait (503), nothing is acked
    label = requests.post(side.url + "/v1/labels", json={"request_id": "r1", "label": True}, timeout=5)
    assert label.status_code == 503 and "send the labels again later" in label.text
    time.sleep(2.0)  # ten failed saves
    assert side.stderr().count("cannot write the state file") == 1  # one line a minute, not one a save
    assert requests.get(side.url + "/healthz", timeout=2).status_code == 200  # alive, serving from memory
    # the operator fixes the volume: the next save succeeds and readiness comes back
    blocker.unlink()
    blocker.mkdir()
    wait_for(lambda: requests.get(side.url + "/readyz", timeout=2).status_code == 200)
    assert (blocker / "s.npz").exists() and (blocker / "s.joins.sqlite").exists()
    assert requests.post(side.url + "/v1/labels", json={"request_id": "r1", "label": True}, timeout=5).ok
    shutil.rmtree(blocker)
    blocker.write_text("broken again")
    assert side.terminate() == 0  # SIGTERM: a clean exit even though the last save fails
    assert "exiting without saving the state" in side.stderr()
    assert "Traceback" not in side.stderr()


def test_full_disk(baseline: Baseline, tmp_path: Path, procs: list[Proc]) -> None:
    """ENOSPC from a real 64 KiB tmpfs (needs mount privileges, as root in a container usually has)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        (mnt / "filler").write_bytes(b"\0" * 60_000)
        path = baseline.save(tmp_path / "b.json")
        side = Proc(tmp_path, "--baseline", str(path), "--state-file", str(mnt / "s.npz"), "--persist-interval", "0.2s")
        procs.append(side)
        requests.post(side.url + "/v1/metrics", data=payload(baseline), headers=PB, timeout=5)
        wait_for(lambda: "No space left on device" in requests.get(side.url + "/readyz", timeout=2).text)
        assert requests.get(side.url + "/readyz", timeout=2).status_code == 503
        assert sorted(p.name for p in mnt.iterdir()) == ["filler"]  # no half-written temp file left
        assert side.terminate() == 0
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def crafted_files(state_path: Path, baseline: Baseline) -> dict[str, bytes]:
    """A valid snapshot, then the same with its metadata or arrays replaced by hostile ones."""
    state = SidecarState([baseline], StateSettings())
    save_state(state, state_path, state.clock())
    good = state_path.read_bytes()

    def with_meta(change: object) -> bytes:
        with np.load(io.BytesIO(good)) as data:
            arrays = {k: data[k] for k in data.files}
        meta = json.loads(bytes(arrays["meta"]).decode())
        change(meta)  # type: ignore[operator]
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        out = io.BytesIO()
        np.savez(out, **arrays)
        return out.getvalue()

    def rings(meta: dict) -> dict:
        return next(iter(meta["models"][0]["rings"].values()))

    def with_array(suffix: str, index: int, value: float) -> bytes:
        with np.load(io.BytesIO(good)) as data:
            arrays = {k: np.array(data[k]) for k in data.files}
        target = next(k for k in arrays if k.endswith(suffix))
        arrays[target].flat[index] = value  # index 0 is a count (buckets come first), never a sum
        out = io.BytesIO()
        np.savez(out, **arrays)
        return out.getvalue()

    return {
        "garbage": b"PK\x03\x04 this is not a zip at all",
        "truncated": good[: len(good) // 2],
        "meta_not_json": good.replace(b'{"format"', b'{"formax', 1),
        "models_is_a_string": with_meta(lambda m: m.update(models="x")),
        "times_nan": with_meta(lambda m: rings(m).update(times=[float("nan")] * len(rings(m)["times"]))),
        "sizes_too_long": with_meta(lambda m: rings(m).update(sizes=[10**9] * len(rings(m)["sizes"]))),
        "keys_wrong": with_meta(lambda m: m["models"][0].update(keys=[["x", []]])),
        "join_wrong_arity": with_meta(lambda m: m.update(join=[[1, 2]])),
        "totals_nan": with_array("_totals", 0, float("nan")),
        "totals_negative": with_array("_totals", 0, -1e300),
        "snapshot_inf": with_array("_r0", 0, float("inf")),
    }


@pytest.mark.parametrize(
    "kind",
    [
        "garbage",
        "truncated",
        "meta_not_json",
        "models_is_a_string",
        "times_nan",
        "sizes_too_long",
        "keys_wrong",
        "join_wrong_arity",
        "totals_nan",
        "totals_negative",
        "snapshot_inf",
    ],
)
def test_corrupt_or_crafted_state_is_moved_aside(
    baseline: Baseline, tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.npz"
    data = crafted_files(path, baseline)[kind]
    path.write_bytes(data)
    state = SidecarState([baseline], StateSettings())
    with caplog.at_level(logging.ERROR, logger="otel_ml.sidecar"):
        assert load_state(state, path) is False
    aside = list(tmp_path.glob("state.npz.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == data and not path.exists()
    assert "unreadable" in caplog.text and str(aside[0]) in caplog.text
    assert state.outputs()  # and the fresh state works


def test_corrupt_state_and_orphans_at_start(baseline: Baseline, tmp_path: Path, procs: list[Proc]) -> None:
    path = baseline.save(tmp_path / "b.json")
    state_file = tmp_path / "s.npz"
    state_file.write_bytes(b"\x93NUMPY garbage")
    orphans = [tmp_path / ".s.npz.k2j3h4.tmp", tmp_path / ".s.npz.zz.tmp"]
    for o in orphans:
        o.write_bytes(b"half a snapshot")
    unrelated = tmp_path / ".other.npz.x.tmp"
    unrelated.write_bytes(b"not ours")
    side = Proc(tmp_path, "--baseline", str(path), "--state-file", str(state_file), "--persist-interval", "0.2s")
    procs.append(side)
    wait_for(lambda: requests.get(side.url + "/readyz", timeout=2).status_code == 200)
    assert not any(o.exists() for o in orphans) and unrelated.exists()
    assert len(list(tmp_path.glob("s.npz.corrupt-*"))) == 1
    assert "is unreadable" in side.stderr() and "moved it to" in side.stderr()
    wait_for(state_file.exists)  # the next snapshot is a good one
    assert side.terminate() == 0


def test_baseline_matching_no_incoming_model(
    baseline: Baseline, training_frame: object, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = fit_baseline(training_frame, model="churn", version="7", score_column="score")  # type: ignore[arg-type]
    config = SidecarConfig(baselines=(baseline.save(tmp_path / "b.json"),), listen=("127.0.0.1", 0))
    side = Sidecar(config).start()
    try:
        with caplog.at_level(logging.WARNING, logger="otel_ml.sidecar"):
            for _ in range(3):
                requests.post(side.url + "/v1/metrics", data=payload(other), headers=PB, timeout=5)
        warnings = [r.getMessage() for r in caplog.records if "no baseline matches" in r.getMessage()]
        assert len(warnings) == 1, warnings  # rate-limited
        assert "'churn' version '7'" in warnings[0] and "'fraud' version 'v3'" in warnings[0]
        r = requests.get(side.url + "/readyz", timeout=5)
        # a misconfigured sidecar must not take its pod out of service: ready, with the reason
        assert r.status_code == 200
        assert "no baseline matches incoming 'churn' version '7' (3 batches)" in r.text
        assert "baselines loaded: 'fraud' version 'v3'" in r.text
    finally:
        side.stop()


def test_metrics_listen_flag(baseline: Baseline, tmp_path: Path, procs: list[Proc]) -> None:
    """``--metrics-listen``: the second port serves reads only; ingest stays on ``--listen``."""
    port = free_port()
    path = baseline.save(tmp_path / "b.json")
    side = Proc(tmp_path, "--baseline", str(path), "--metrics-listen", f"127.0.0.1:{port}")
    procs.append(side)
    read_only = f"http://127.0.0.1:{port}"
    assert requests.post(read_only + "/v1/metrics", data=payload(baseline), headers=PB, timeout=5).status_code == 404
    assert requests.post(side.url + "/v1/metrics", data=payload(baseline), headers=PB, timeout=5).status_code == 200
    assert "ml_feature_value_bucket" in requests.get(read_only + "/metrics", timeout=5).text
    assert requests.get(read_only + "/readyz", timeout=5).status_code == 200
    assert side.terminate() == 0


def test_a_snapshot_from_the_future_is_re_anchored(baseline: Baseline, tmp_path: Path) -> None:
    """Saved by a process whose clock read later than this one's (the wall clock went back across
    the restart): restored snapshots are moved to end now, so the next ones are taken on time."""
    later = [50_000.0]
    settings = StateSettings(windows=(WindowSpec("1h", 3600.0, 60),), compute_ttl=0)
    first = SidecarState([baseline], settings, clock=lambda: later[0])
    for _ in range(10):
        later[0] += 60
        first.tick()
    save_state(first, tmp_path / "s.npz", first.clock())
    now = [1_000.0]
    second = SidecarState([baseline], settings, clock=lambda: now[0])
    assert load_state(second, tmp_path / "s.npz")
    ring = next(iter(second.models.values())).rings["1h"]
    assert ring.times[-1] <= now[0] and len(ring.times) == 11
    assert ring.times[-1] - ring.times[0] == pytest.approx(600)  # spacing kept
    now[0] += 61
    second.tick()
    assert len(ring.times) == 12  # a snapshot on time, not 13 hours later


def test_one_model_whose_outputs_fail_leaves_the_others_served(baseline: Baseline, caplog: Any) -> None:
    """A model whose held arrays are broken (here: totals of the wrong length) is left out and
    counted as output_error; the other model's gauges and every later scrape still work."""
    other = dataclasses.replace(baseline, model_version="v-other")
    state = SidecarState([baseline, other], StateSettings(windows=(WindowSpec("10m", 600.0, resolution=10),)))
    broken = state.models[(baseline.model_name, baseline.model_version)]
    broken.totals = np.zeros(3)
    with caplog.at_level(logging.ERROR, logger="otel_ml.sidecar"):
        gauges = state.outputs()
        state.outputs(state.clock() + 5)
    versions = {labels.get("ml_model_version") for _, labels, _ in gauges}
    assert "v-other" in versions and baseline.model_version not in versions
    assert state.ingest_errors["output_error"] == 2
    assert sum("gauges are left out" in r.getMessage() for r in caplog.records) == 1  # logged once a minute
