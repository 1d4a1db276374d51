"""Scheduled mode: a replay's series on a real Pushgateway, read back with prometheus_client's
parser. Every series and value is checked against the report; a rerun replaces the group (PUT),
two model versions are two groups; what is pushed passes ``promtool check metrics``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _skew_fixture as fx
import pytest
import requests
from conftest import free_port
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from otel_ml import _names as n
from otel_ml.skew import SkewReport, VersionSkew, push, registry_for, replay

HERE = Path(__file__).resolve().parent
PUSHGATEWAY = "/usr/bin/prometheus-pushgateway"


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    if not os.access(PUSHGATEWAY, os.X_OK):
        pytest.skip(f"{PUSHGATEWAY} missing (apt-get install prometheus-pushgateway; scripts/test installs it)")
    port = free_port()
    proc = subprocess.Popen(
        [PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{port}", f"--persistence.file={tmp_path / 'pg.state'}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(url + "/-/ready", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the Pushgateway did not become ready")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The skew job's samples on the gateway's /metrics, by name and labels (job/instance dropped)."""
    text = requests.get(url + "/metrics", timeout=5).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("job") != n.SKEW_JOB or s.name.startswith("push_"):
                continue
            labels = frozenset(
                (k, n.normalize_le(v) if k == n.LABEL_LE else v)
                for k, v in s.labels.items()
                if k not in ("job", "instance")
            )
            out[(s.name, labels)] = s.value
    return out


def _expected(v: VersionSkew, finished: float) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The series the contract lists, built from the report by hand."""
    model = {n.LABEL_MODEL_NAME: v.model, n.LABEL_MODEL_VERSION: v.version}
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}

    def put(name: str, value: float, **labels: str) -> None:
        out[(name, frozenset({**model, **labels}.items()))] = value

    flips = ("false_to_true", "true_to_false")
    for f in v.flips:
        seg = {n.LABEL_SEGMENT_KEY: f.key, n.LABEL_SEGMENT: f.segment}
        put(n.SKEW_ROWS.series, f.rows, **seg)
        for flip in flips:
            put(n.SKEW_DECISION_FLIPS.series, f.flips.get(flip, 0), **seg, **{n.LABEL_FLIP: flip})
    for feat in v.features:
        for result in n.SKEW_RESULTS:
            put(n.SKEW_FEATURE.series, feat.counts[result], **{n.LABEL_FEATURE: feat.name, n.LABEL_SKEW_RESULT: result})
    for stage in n.SKEW_STAGES:
        put(n.SKEW_ROW_ERRORS.series, v.errors[stage], **{n.LABEL_SKEW_STAGE: stage})
    d = v.score_difference
    for bound, count in zip([*d.bucket_bounds, float("inf")], d.bucket_counts):
        put(n.SKEW_SCORE_DIFFERENCE.bucket_series, count, le=n.normalize_le(str(bound)))
    put(n.SKEW_SCORE_DIFFERENCE.count_series, d.count)
    put(n.SKEW_SCORE_DIFFERENCE.sum_series, d.total)
    put(n.SKEW_LAST_RUN.series, finished)
    return out


def _report(capture: Path, pipeline: Any = fx.build_features_buggy) -> SkewReport:
    return replay(capture, pipeline, fx.predict, skip_features=["request_hour"])


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    d = tmp_path / "capture"
    fx.write_capture(d, fx.served_rows(fx.raw_rows(600)), per_file=250)
    return d


def test_pushed_exposition_passes_promtool_check_metrics(capture: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (apt-get install prometheus)")
    report = _report(capture)
    text = generate_latest(registry_for(report.versions[0], report.finished))
    assert b"ml_skew_feature_total{" in text and b"ml_skew_score_difference_bucket{" in text
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, check=False)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), result


@pytest.mark.slow
def test_the_cli_pushes_every_series_of_the_run(pushgateway: str, capture: Path) -> None:
    started = time.time()
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    args = ["--capture", str(capture), "--pipeline", "_skew_fixture:build_features_buggy"]
    args += ["--model", "_skew_fixture:predict", "--skip-feature", "request_hour", "--pushgateway", pushgateway]
    out = subprocess.run(
        [sys.executable, "-m", "otel_ml.cli", "skew", "replay", *args],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    got = _samples(pushgateway)
    (last,) = [v for (name, _), v in got.items() if name == n.SKEW_LAST_RUN.series]
    assert started <= last <= time.time()
    (v,) = _report(capture).versions
    assert v.flips_total and v.feature("amount_eur").counts[n.SKEW_MISMATCH]  # non-zero values are checked
    assert got == pytest.approx(_expected(v, last))


@pytest.mark.slow
def test_a_second_run_replaces_the_first(pushgateway: str, capture: Path, tmp_path: Path) -> None:
    first = _report(capture)
    push(first, pushgateway)
    smaller = tmp_path / "smaller"
    fx.write_capture(smaller, fx.served_rows(fx.raw_rows(100)))
    second = _report(smaller, fx.build_features)
    push(second, pushgateway)
    got = _samples(pushgateway)
    assert got == pytest.approx(_expected(second.versions[0], second.finished))
    rows = {k: val for k, val in got.items() if k[0] == n.SKEW_ROWS.series and (n.LABEL_SEGMENT, n.ALL) in k[1]}
    assert list(rows.values()) == [100]  # not 700: a PUT replaces the group


@pytest.mark.slow
def test_two_model_versions_push_two_groups(pushgateway: str, tmp_path: Path) -> None:
    raws = fx.raw_rows(300)
    fx.write_capture(tmp_path, fx.served_rows(raws[:200], prefix="a"), version="v3", seq=1)
    fx.write_capture(tmp_path, fx.served_rows(raws[200:], prefix="b"), version="v4", seq=2)
    report = _report(tmp_path)
    assert push(report, pushgateway) == 2
    got = _samples(pushgateway)
    expected: dict[Any, float] = {}
    for v in report.versions:
        expected.update(_expected(v, report.finished))
    assert got == pytest.approx(expected)
    groups = requests.get(pushgateway + "/api/v1/metrics", timeout=5).json()["data"]
    assert sorted(g["labels"][n.LABEL_MODEL_VERSION] for g in groups) == ["v3", "v4"]
    assert {g["labels"]["job"] for g in groups} == {n.SKEW_JOB}


def test_an_unreachable_pushgateway_fails_the_run_with_exit_2(capture: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    args = ["--capture", str(capture), "--pipeline", "_skew_fixture:build_features", "--model", "_skew_fixture:predict"]
    out = subprocess.run(
        [sys.executable, "-m", "otel_ml.cli", "skew", "replay", *args, "--pushgateway", url, "--json", "-"],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 2 and f"push to {url} failed" in out.stderr
    assert json.loads(out.stdout)["versions"][0]["rows"] == 600  # the report is still written
