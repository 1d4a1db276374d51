"""``otel-ml skew replay``: captured serving inputs through the training pipeline, for people and CI."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from ._report import DEFAULT_ATOL, DEFAULT_RTOL, FAIL_ON_CHECKS

__all__ = ["register"]

DESCRIPTION = """\
Replay a capture spool (written by @monitor(capture=Capture(...))) through the training-time
feature pipeline and the model, and report the training/serving skew: per feature, how many
served values match what the training code computes from the same raw request, and what the
differences do to scores and decisions.

per (row, feature) result:
  match             equal; numbers within |served - training| <= atol + rtol x |training|
                    (numpy.isclose); both missing (absent, null, NaN) is a match
  mismatch          different values (in the same baseline bin, or no --baseline)
  bin_change        different values in different --baseline bins: drift dashboards move
  missing_serving   the training pipeline has a value, serving had none
  missing_training  serving had a value, the training pipeline gives none

--pipeline MOD:FN is called once per captured row with its raw request and returns a mapping
feature -> value (a pipeline with an as_of parameter also gets the row's capture time, Unix
seconds: look features up as of when the row was served, not as of now); --model MOD:FN is
called on chunks of rows as a pandas DataFrame (columns: the capture header's feature names,
else the pipeline's keys) and returns scores (1-D, or a binary predict_proba). Modules are
imported with the current directory first, like python -m. A row the pipeline or the model
raises on is counted (stage pipeline/model) and the replay goes on. Decisions: --decision,
else --threshold, else the capture header's threshold ("true" when
score > t); a flip is a row whose served and replayed decisions differ.

--json document (schema otel-ml/skew-report, version 1): capture, files, rtol, atol, baseline,
duplicates {count, ids}, unreadable [{file, line, why}], notes, finished, failed, fail_on
[{check, threshold, model, version, value, failed}], and versions [{model, version, tags,
decision_rule, rows_read, rows, rows_compared, rows_with_mismatch, values_compared,
mismatch_ratio, flips, flip_ratio, features [{name, compared, match, mismatch, missing_serving,
missing_training, bin_change}], skipped_features, flips_by_segment [{key, segment, rows, flips,
by_flip}], score_difference {count, mean, p50_abs, p90_abs, p99_abs, max_abs, sum, buckets
[{le, count}]}, errors {pipeline, model, record}, error_examples, worst [{request_id,
served_score, replayed_score, delta, features [{name, result, served, replayed}]}]}].

--fail-on NAME=THRESHOLD (repeatable; fails when any model version exceeds it):
  flips=R               decision flips / replayed rows
  mismatch=R            share of compared feature values that do not match
  rows_with_mismatch=R  share of compared rows with any non-matching feature
  errors=N              rows that failed (pipeline, model, unreadable record)
"""

EPILOG = """\
exit status: 0 when the replay passes, 1 when a --fail-on threshold is exceeded, 2 on bad input
(unreadable capture directory or file header, a bad import, duplicate keys, no rows).

examples:
  otel-ml skew replay --capture /var/spool/fraud --pipeline train.features:build_features \\
      --model serve.model:predict
  otel-ml skew replay --capture spool/ --pipeline train.features:build --model serve.model:predict \\
      --baseline fraud-v3.baseline.json --skip-feature request_time --json skew.json
  otel-ml skew replay --capture spool/ --pipeline train.features:build --model serve.model:predict \\
      --fail-on flips=0.01 --fail-on mismatch=0 --no-progress
  otel-ml skew replay --capture spool/ --pipeline train.features:build --model serve.model:predict \\
      --pushgateway http://pushgateway:9091      # scheduled mode: a CronJob or systemd timer
"""


def register(sub: Any) -> None:
    """The ``skew`` group and its ``replay`` command."""
    group = sub.add_parser(
        "skew",
        help="training/serving skew: replay captured requests through the training pipeline",
        description="Training/serving skew checks on a capture spool.",
    )
    commands = group.add_subparsers(dest="skew_command", metavar="COMMAND")
    group.set_defaults(func=lambda args: (group.print_help(), 2)[1])
    cmd = commands.add_parser(
        "replay",
        help="replay a capture through the training pipeline and the model; report features, scores, flips",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_inputs(cmd)
    _add_outputs(cmd)
    cmd.set_defaults(func=_replay)


def _add_inputs(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--capture", required=True, metavar="DIR", help="the capture spool directory")
    cmd.add_argument(
        "--pipeline", required=True, metavar="MOD:FN", help="training-time feature code: raw request -> features"
    )
    cmd.add_argument("--model", required=True, metavar="MOD:FN", help="scores a DataFrame of features")
    cmd.add_argument(
        "--key", default="request_id", help="the row key (top level, else a field of raw); default: request_id"
    )
    cmd.add_argument("--rtol", type=float, default=DEFAULT_RTOL, help=f"relative tolerance (default: {DEFAULT_RTOL:g})")
    cmd.add_argument("--atol", type=float, default=DEFAULT_ATOL, help=f"absolute tolerance (default: {DEFAULT_ATOL:g})")
    cmd.add_argument("--baseline", metavar="FILE", help="baseline JSON: differences that cross a bin are bin_change")
    rule = cmd.add_mutually_exclusive_group()
    rule.add_argument("--threshold", type=float, metavar="T", help="replayed decision: 'true' when score > T")
    rule.add_argument("--decision", metavar="MOD:FN", help="replayed decision: this callable of the scores")
    cmd.add_argument(
        "--skip-feature",
        action="append",
        default=[],
        metavar="NAME",
        help="a declared nondeterministic feature: not compared (repeatable)",
    )
    cmd.add_argument(
        "--allow-duplicates", action="store_true", help="keep the first row of a repeated key instead of exit 2"
    )
    cmd.add_argument("--model-name", metavar="M", help="only rows of this model")
    cmd.add_argument("--version", metavar="V", help="only rows of this model version")
    cmd.add_argument("--chunk-rows", type=int, default=1024, metavar="N", help="rows per model call (default: 1024)")


def _add_outputs(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--json", metavar="OUT", help="also write the report as JSON to OUT ('-': stdout, no table)")
    cmd.add_argument(
        "--fail-on",
        action="append",
        default=[],
        metavar="NAME=R",
        help=f"exit 1 when a check exceeds R (repeatable; {', '.join(FAIL_ON_CHECKS)})",
    )
    cmd.add_argument("--pushgateway", metavar="URL", help="push the run's series to this Pushgateway (PUT per version)")
    cmd.add_argument("--worst", type=int, default=10, metavar="N", help="request ids with the largest |delta| shown")
    cmd.add_argument("--no-progress", "--quiet", action="store_true", help="no progress bar")


def _fail(message: str) -> int:
    print(f"otel-ml skew replay: {message}", file=sys.stderr)
    return 2


def _run(args: argparse.Namespace) -> Any:
    """The report, or raises the bad-input errors the caller turns into exit 2."""
    from ._imports import import_object
    from ._replay import replay
    from ._report import parse_fail_on

    gates = parse_fail_on(args.fail_on)
    pipeline = import_object(args.pipeline)
    model = import_object(args.model)
    decision = import_object(args.decision) if args.decision else None
    report = replay(
        args.capture,
        pipeline,
        model,
        key=args.key,
        rtol=args.rtol,
        atol=args.atol,
        baseline=args.baseline,
        threshold=args.threshold,
        decision=decision,
        skip_features=args.skip_feature,
        allow_duplicates=args.allow_duplicates,
        model_name=args.model_name,
        version=args.version,
        chunk_rows=args.chunk_rows,
        worst=args.worst,
        fail_on=gates,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    for gate in gates:
        if gate.name == "flips" and any(v.decision_rule is None for v in report.versions):
            raise ValueError("--fail-on flips: no decision rule (give --threshold or --decision)")
    return report


def _replay(args: argparse.Namespace) -> int:
    from .._capture_format import CaptureFormatError

    try:
        report = _run(args)
    except (CaptureFormatError, FileNotFoundError, NotADirectoryError, ValueError, TypeError) as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot read input: {exc}")
    for note in report.notes:
        print(f"otel-ml skew replay: note: {note}", file=sys.stderr)
    document = json.dumps(report.to_dict(), indent=2, allow_nan=False, sort_keys=False) + "\n"
    if args.json == "-":
        sys.stdout.write(document)
    else:
        _print_tables(report)
        if args.json:
            try:
                with open(args.json, "w", encoding="utf-8") as fh:
                    fh.write(document)
            except OSError as exc:
                return _fail(f"cannot write {args.json}: {exc.strerror}")
    if args.pushgateway:
        from ._push import push

        try:
            push(report, args.pushgateway)
        except OSError as exc:  # urllib's URLError/HTTPError: the run is not recorded, the job must fail
            return _fail(f"push to {args.pushgateway} failed: {exc}")
    return 1 if report.failed() else 0


def _num(value: float | None, spec: str) -> str:
    if value is None:
        return "-"
    return format(value, spec) if math.isfinite(value) else "-"


def _print_tables(report: Any) -> None:
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 160)
    for v in report.versions:
        _print_version(console, v)
    for gate in report.gate_results():
        verdict = "FAIL" if gate["failed"] else "pass"
        console.print(
            f"--fail-on {gate['check']}={gate['threshold']:g} ({gate['model']} {gate['version']}): "
            f"{_num(gate['value'], '.4g')} -> {verdict}",
            highlight=False,
        )


def _print_version(console: Any, v: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    from .. import _names as n

    table = Table(title=f"{escape(v.model)} {escape(v.version)}: features of {v.rows_compared:,} replayed rows")
    table.add_column("feature")
    for col in ("compared", *n.SKEW_RESULTS):
        table.add_column(col, justify="right")
    for f in v.features:
        cells = [
            f"{f.counts[r]:,}" if r == n.SKEW_MATCH or not f.counts[r] else f"[red]{f.counts[r]:,}[/]"
            for r in n.SKEW_RESULTS
        ]
        table.add_row(escape(f.name), f"{f.compared:,}", *cells)
    console.print(table)
    if v.skipped_features:
        console.print(f"skipped (declared nondeterministic): {escape(', '.join(v.skipped_features))}", highlight=False)
    d = v.score_difference
    flips = (
        "not computed (no decision rule)"
        if v.flips_total is None
        else f"{v.flips_total:,} ({_num(v.flip_ratio, '.2%')})"
    )
    console.print(
        f"rows {v.rows_read:,} read, {v.rows:,} replayed, {v.rows_with_mismatch:,} with a non-matching feature; "
        f"flips {flips}; errors " + ", ".join(f"{s} {c:,}" for s, c in v.errors.items()),
        highlight=False,
    )
    console.print(
        f"score difference (replayed - served) over {d.count:,} rows: mean {_num(d.mean, '.3g')}, |delta| "
        f"p50 {_num(d.p50_abs, '.3g')}, p90 {_num(d.p90_abs, '.3g')}, p99 {_num(d.p99_abs, '.3g')}, "
        f"max {_num(d.max_abs, '.3g')}",
        highlight=False,
    )
    _print_flips(console, v)
    _print_worst(console, v)


def _print_flips(console: Any, v: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    if v.decision_rule is None or v.flips_total == 0:
        return
    table = Table(title=f"decision flips by segment ({escape(v.decision_rule)})")
    for col in ("segment key", "segment", "rows", "flips", "ratio", "by flip"):
        table.add_column(col, justify="right" if col in ("rows", "flips", "ratio") else "left")
    for f in v.flips:
        by = ", ".join(f"{k} {c:,}" for k, c in sorted(f.flips.items()))
        table.add_row(
            escape(f.key),
            escape(f.segment),
            f"{f.rows:,}",
            f"{f.total:,}",
            _num(f.total / f.rows if f.rows else None, ".2%"),
            escape(by),
        )
    console.print(table)


def _print_worst(console: Any, v: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    if not v.worst:
        return
    table = Table(title="worst rows (largest |replayed - served|)")
    for col in ("request id", "served", "replayed", "delta", "non-matching features"):
        table.add_column(col, justify="right" if col in ("served", "replayed", "delta") else "left")
    for w in v.worst:
        feats = "; ".join(f"{f} {r}: {s!r} -> {t!r}" for f, r, s, t in w.features[:5])
        table.add_row(
            escape(w.request_id),
            _num(w.served_score, ".4g"),
            _num(w.replayed_score, ".4g"),
            _num(w.delta, "+.4g"),
            escape(feats),
        )
    console.print(table)
