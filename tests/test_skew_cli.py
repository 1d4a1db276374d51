"""``otel-ml skew replay`` as a user and a CI job run it: table, --json, --fail-on exit codes,
bad input (exit 2 with the reason), --help, and output that stays clean without a terminal."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import _skew_fixture as fx
import pytest

from otel_ml import _names as n
from otel_ml.cli import build_parser
from otel_ml.skew import replay

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ARGS = ["--pipeline", "_skew_fixture:build_features_buggy", "--model", "_skew_fixture:predict"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The command in a child process, from this directory (the fixture module imports from the cwd)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "otel_ml.cli", "skew", "replay", *args],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("capture")
    fx.write_capture(d, fx.served_rows(fx.raw_rows(1000)), per_file=400)
    return d


@pytest.fixture(scope="module")
def expected(capture: Path) -> Any:
    (v,) = replay(capture, fx.build_features_buggy, fx.predict, skip_features=["request_hour"]).versions
    return v


def test_the_table_names_features_results_flips_and_the_worst_rows(capture: Path, expected: Any) -> None:
    out = _cli("--capture", str(capture), *ARGS, "--skip-feature", "request_hour")
    assert out.returncode == 0, out.stderr
    for text in ("amount_eur", "log_amount", "country", n.SKEW_MISMATCH, n.SKEW_BIN_CHANGE, "worst rows"):
        assert text in out.stdout
    assert f"flips {expected.flips_total:,}" in out.stdout
    assert expected.worst[0].request_id in out.stdout
    assert "skipped (declared nondeterministic): request_hour" in out.stdout


def test_json_to_stdout_is_the_report(capture: Path, expected: Any) -> None:
    out = _cli("--capture", str(capture), *ARGS, "--skip-feature", "request_hour", "--json", "-")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["schema"] == "otel-ml/skew-report" and doc["failed"] is False
    (v,) = doc["versions"]
    assert v["features"] == [f.to_dict() for f in expected.features]
    assert v["flips"] == expected.flips_total and v["rows"] == 1000
    assert v["errors"] == {"pipeline": 0, "model": 0, "record": 0}
    assert {(s["key"], s["segment"]) for s in v["flips_by_segment"]} == {
        (n.ALL, n.ALL),
        ("region", "north"),
        ("region", "south"),
    }
    assert [w["request_id"] for w in v["worst"]] == [w.request_id for w in expected.worst]


def test_json_file_and_table_together(capture: Path, tmp_path: Path) -> None:
    target = tmp_path / "skew.json"
    out = _cli("--capture", str(capture), *ARGS, "--json", str(target), "--no-progress")
    assert out.returncode == 0 and "amount_eur" in out.stdout
    assert json.loads(target.read_text())["versions"][0]["rows"] == 1000


@pytest.mark.parametrize("check", ["flips", "mismatch", "rows_with_mismatch"])
def test_fail_on_exits_1_above_the_threshold_and_0_below(capture: Path, expected: Any, check: str) -> None:
    value = expected.check(check)
    assert 0 < value < 1
    above = _cli(
        "--capture", str(capture), *ARGS, "--skip-feature", "request_hour", "--fail-on", f"{check}={value * 0.99}"
    )
    assert above.returncode == 1, above.stdout + above.stderr
    assert "FAIL" in above.stdout
    below = _cli(
        "--capture", str(capture), *ARGS, "--skip-feature", "request_hour", "--fail-on", f"{check}={value * 1.01}"
    )
    assert below.returncode == 0, below.stdout + below.stderr
    assert "pass" in below.stdout


def test_fail_on_errors_and_several_gates(tmp_path: Path) -> None:
    fx.write_capture(tmp_path, fx.served_rows(fx.raw_rows(200)))
    args = [
        "--capture",
        str(tmp_path),
        "--pipeline",
        "_skew_fixture:build_features_fragile",
        "--model",
        "_skew_fixture:predict",
    ]
    assert _cli(*args, "--fail-on", "errors=4").returncode == 0  # 4 rows raise (customer id % 50 == 7)
    assert _cli(*args, "--fail-on", "errors=3").returncode == 1
    assert _cli(*args, "--fail-on", "errors=4", "--fail-on", "mismatch=0").returncode == 0
    out = _cli(*args, "--fail-on", "errors=4", "--fail-on", "flips=0", "--json", "-")
    assert out.returncode == 0
    assert [g["check"] for g in json.loads(out.stdout)["fail_on"]] == ["errors", "flips"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pipeline", "_skew_fixture:nope", "--model", "_skew_fixture:predict"], "has no attribute 'nope'"),
        (["--pipeline", "no_such_module:f", "--model", "_skew_fixture:predict"], "cannot import 'no_such_module'"),
        (["--pipeline", "_skew_fixture", "--model", "_skew_fixture:predict"], "expected 'package.module:attribute'"),
        ([*ARGS, "--fail-on", "flipz=0.1"], "--fail-on 'flipz=0.1'"),
    ],
)
def test_bad_input_exits_2_with_the_reason(capture: Path, args: list[str], message: str) -> None:
    out = _cli("--capture", str(capture), *args)
    assert out.returncode == 2 and message in out.stderr, out.stderr


def test_bad_capture_input_exits_2(tmp_path: Path) -> None:
    assert "no finished capture files" in _cli("--capture", str(tmp_path), *ARGS).stderr
    missing = _cli("--capture", str(tmp_path / "nope"), *ARGS)
    assert missing.returncode == 2 and "no such capture directory" in missing.stderr
    rows = fx.served_rows(fx.raw_rows(20))
    fx.write_capture(tmp_path, rows, seq=1)
    fx.write_capture(tmp_path, rows[:3], seq=2)
    dup = _cli("--capture", str(tmp_path), *ARGS)
    assert dup.returncode == 2 and "'r0', 'r1', 'r2'" in dup.stderr and "--allow-duplicates" in dup.stderr
    assert _cli("--capture", str(tmp_path), *ARGS, "--allow-duplicates").returncode == 0
    (bad,) = fx.write_capture(tmp_path / "b", rows, seq=3)
    bad.write_text("garbage\n")
    out = _cli("--capture", str(tmp_path / "b"), *ARGS)
    assert out.returncode == 2 and bad.name in out.stderr


def test_no_rule_fail_on_flips_is_bad_input(tmp_path: Path) -> None:
    fx.write_capture(tmp_path, fx.served_rows(fx.raw_rows(20)), threshold=None)
    out = _cli("--capture", str(tmp_path), *ARGS, "--fail-on", "flips=0.1")
    assert out.returncode == 2 and "no decision rule" in out.stderr
    ruled = _cli("--capture", str(tmp_path), *ARGS, "--threshold", "0.5", "--fail-on", "flips=1")
    assert ruled.returncode == 0, ruled.stderr
    by_fn = _cli("--capture", str(tmp_path), *ARGS, "--decision", "_skew_fixture:decide", "--json", "-")
    assert by_fn.returncode == 0, by_fn.stderr
    assert json.loads(by_fn.stdout)["versions"][0]["decision_rule"] == "_skew_fixture:decide"
    raising = _cli("--capture", str(tmp_path), *ARGS, "--decision", "_skew_fixture:region")
    assert raising.returncode == 2 and "the decision rule _skew_fixture:region raised" in raising.stderr


def test_help_explains_arguments_exit_status_and_examples() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    skew = sub.choices["skew"]
    replay_cmd = next(a for a in skew._actions if isinstance(a, argparse._SubParsersAction)).choices["replay"]
    for action in replay_cmd._actions:
        assert action.help, action.dest
    text = replay_cmd.format_help()
    for needle in ("exit status", "examples:", "--pushgateway", "numpy.isclose", "bin_change", "flips=R", "schema"):
        assert needle in text, needle
    top = subprocess.run(
        [sys.executable, "-m", "otel_ml.cli", "--help"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "skew" in top.stdout


def test_a_long_capture_without_a_terminal_prints_no_progress_bar(tmp_path: Path) -> None:
    fx.write_capture(tmp_path, fx.served_rows(fx.raw_rows(6000)), per_file=2000)
    out = _cli("--capture", str(tmp_path), *ARGS, "--json", "-")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["versions"][0]["rows"] == 6000
    assert "\x1b" not in out.stderr and "replaying" not in out.stderr
    report = replay(tmp_path, fx.build_features_buggy, fx.predict, progress=True)  # the bar itself runs
    assert report.versions[0].rows == 6000


def test_the_progress_bar_goes_to_a_terminal_stderr_and_leaves_stdout_clean(tmp_path: Path) -> None:
    import pty

    fx.write_capture(tmp_path, fx.served_rows(fx.raw_rows(6000)), per_file=3000)
    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120", "TERM": "xterm"}
    proc = subprocess.run(
        [sys.executable, "-m", "otel_ml.cli", "skew", "replay", "--capture", str(tmp_path), *ARGS, "--json", "-"],
        cwd=HERE,
        env=env,
        stdout=subprocess.PIPE,
        stderr=slave,
        timeout=300,
        check=False,
    )
    os.close(slave)
    terminal = b""
    try:
        while chunk := os.read(master, 65536):
            terminal += chunk
    except OSError:  # the pty is drained
        pass
    os.close(master)
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["versions"][0]["rows"] == 6000
    assert b"replaying" in terminal  # the bar was drawn, on stderr only
