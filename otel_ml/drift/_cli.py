"""``otel-ml drift``: compare a data file with a baseline, per feature, for people and for CI."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from ..baseline._sample import DEFAULT_SAMPLE_ROWS
from ._multiplicity import MULTIPLICITY
from ._verdict import DEFAULT_ALPHA, DEFAULT_DRIFT_THRESHOLD, DEFAULT_WARN_THRESHOLD

__all__ = ["register"]

DESCRIPTION = """\
Compare a data file (CSV, CSV.gz, Parquet or JSON Lines; e.g. last week's production
features) with a baseline, feature by feature: PSI, its sample-size-aware critical value,
Jensen-Shannon distance, chi-square p-value and a verdict.

verdicts:
  drift              PSI >= --drift (0.25) and PSI > critical value
  warn               PSI >= --warn (0.1) and PSI > critical value
  ok                 otherwise
  insufficient_data  fewer than max(30, 5 x bins) values in the data (or --min-count)

The critical value is the PSI a drift-free sample of the same size exceeds with probability
"level": small samples have a large PSI by chance (about (bins - 1) / n), so a fixed threshold
alone pages for noise. --alpha is for the whole table: the chance that a drift-free table gets
any drift or warn verdict. With --multiplicity holm (default) each feature's level is
alpha / (features + score), shown per feature; per_series tests each feature at --alpha.
KS and Wasserstein need raw training values, which a baseline does not keep: pass
--reference-data with the training data to get them for numeric columns.

data at scale: DATA is a Parquet or CSV file, a directory of them (hive partitions are fine)
or a quoted glob ('events/*.parquet'); it is streamed in record batches of the baseline's
columns only, so memory does not grow with the rows. Every statistic above comes from bin
counts, which add up: --write-counts saves a part's counts as JSON, and --counts merges such
files into the report of all parts together (a Spark/Dask/Ray job maps partitions to counts
with otel_ml.drift.bin_counts and finishes here). KS and Wasserstein on data larger than
--sample-rows use uniform row samples of both sides, and say so.
"""

EPILOG = """\
exit status: 0 when the check passes, 1 when --fail-on is triggered, 2 on bad input.

examples:
  otel-ml drift fraud-v3.baseline.json last-week.parquet
  otel-ml drift fraud-v3.baseline.json last-week.parquet --score-column score --fail-on drift
  otel-ml drift fraud-v3.baseline.json today.csv --reference-data train.parquet --json drift.json
  otel-ml drift fraud-v3.baseline.json 'lake/events/date=2026-11-*/*.parquet' --write-counts nov.counts.json
  otel-ml drift fraud-v3.baseline.json --counts part-0.counts.json part-1.counts.json --fail-on drift
"""

_STYLES = {"drift": "bold red", "warn": "yellow", "ok": "green", "insufficient_data": "dim"}


def register(sub: Any) -> None:
    """The ``drift`` command's arguments, one declaration per option in ``--help`` order (long for
    that reason only: split, the help text would no longer read top to bottom in the source)."""
    cmd = sub.add_parser(
        "drift",
        help="per-feature drift of a data file against a baseline (table, JSON, CI exit code)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.add_argument("baseline", help="baseline JSON file (from 'otel-ml baseline fit')")
    cmd.add_argument(
        "data",
        nargs="?",
        help="current data with the feature columns: a .parquet/.csv(.gz) file, a directory of them, a quoted "
        "glob, or a .json/.jsonl file",
    )
    cmd.add_argument(
        "--score-column", metavar="COL", help="also compare this score column with the baseline's score bins"
    )
    cmd.add_argument(
        "--reference-data",
        metavar="FILE",
        help="raw training data, for the two-sample KS test and Wasserstein distance",
    )
    cmd.add_argument("--json", metavar="OUT", help="also write the report as JSON to OUT ('-': stdout, no table)")
    cmd.add_argument(
        "--fail-on",
        choices=("warn", "drift", "never"),
        default="never",
        help="exit 1 when any feature has this verdict or worse (default: never)",
    )
    cmd.add_argument(
        "--alpha",
        type=float,
        default=DEFAULT_ALPHA,
        help=f"false-alarm probability over all features of the table (default: {DEFAULT_ALPHA})",
    )
    cmd.add_argument(
        "--multiplicity",
        choices=MULTIPLICITY,
        default="holm",
        help="holm/bonferroni: each feature at alpha / features; per_series: each at alpha (default: holm)",
    )
    cmd.add_argument(
        "--warn",
        type=float,
        default=DEFAULT_WARN_THRESHOLD,
        help=f"PSI from which a significant shift is a warning (default: {DEFAULT_WARN_THRESHOLD})",
    )
    cmd.add_argument(
        "--drift",
        type=float,
        default=DEFAULT_DRIFT_THRESHOLD,
        help=f"PSI from which a significant shift is drift (default: {DEFAULT_DRIFT_THRESHOLD})",
    )
    cmd.add_argument(
        "--min-count",
        type=int,
        metavar="N",
        help="fewest values for a verdict (default: max(30, 5 x bins) per feature)",
    )
    _add_scale_arguments(cmd)
    cmd.add_argument("--no-progress", "--quiet", action="store_true", help="no progress bar while reading files")
    cmd.set_defaults(func=_drift)


def _add_scale_arguments(cmd: argparse.ArgumentParser) -> None:
    """Counts files in and out, and the KS/Wasserstein sample size for streamed data."""
    cmd.add_argument(
        "--counts",
        nargs="+",
        metavar="FILE",
        help="instead of DATA: merge these counts files (from --write-counts or otel_ml.drift.bin_counts) "
        "and report on all of them together",
    )
    cmd.add_argument("--write-counts", metavar="OUT", help="also write the data's mergeable bin counts as JSON to OUT")
    cmd.add_argument(
        "--sample-rows",
        type=int,
        default=DEFAULT_SAMPLE_ROWS,
        metavar="N",
        help=f"rows per side kept for KS/Wasserstein with --reference-data (default: {DEFAULT_SAMPLE_ROWS:,})",
    )


def _fail(message: str) -> int:
    print(f"otel-ml drift: {message}", file=sys.stderr)
    return 2


def _check_options(args: argparse.Namespace) -> str | None:
    if not 0.0 < args.alpha < 1.0:
        return f"--alpha must be between 0 and 1, got {args.alpha}"
    if not 0.0 <= args.warn <= args.drift:
        return f"thresholds must satisfy 0 <= --warn <= --drift, got {args.warn} and {args.drift}"
    if args.min_count is not None and args.min_count < 1:
        return "--min-count must be >= 1"
    if (args.data is None) == (args.counts is None):
        return "give either DATA or --counts FILE..., not both" if args.data else "give DATA or --counts FILE..."
    if args.counts and (args.reference_data or args.score_column):
        return "--counts carry their own score column and no raw values: drop --reference-data/--score-column"
    if args.sample_rows < 1:
        return "--sample-rows must be >= 1"
    return None


def _counts_and_samples(args: argparse.Namespace, baseline: Any, progress: bool) -> tuple[Any, Any, str | None]:
    """The data's merged counts, KS/Wasserstein samples (or None), and a note when those are sampled."""
    from ..baseline import read_table
    from ..baseline._dataset import is_streamable
    from ._counts import BinCounts, bin_counts
    from ._report import _finite_samples
    from ._stream import finite_pairs, stream_counts, stream_sample

    if args.counts:
        parts = [BinCounts.from_json(_read_text(path)) for path in args.counts]
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        return total, None, None
    text = [f.name for f in baseline.categorical]  # CSV: categories read as text, never re-typed
    if not is_streamable(args.data):  # JSON: no streaming reader; read whole as before
        table = read_table(args.data, progress=progress, strings=text)
        counts = bin_counts(baseline, table, score_column=args.score_column)
        if args.reference_data is None:
            return counts, None, None
        reference = read_table(args.reference_data, progress=progress, strings=text)
        ref, cur = _finite_samples(_cols(reference), counts), _finite_samples(_cols(table), counts)
        return counts, {n: (ref[n], cur[n]) for n in cur if n in ref}, None
    sample_rows = args.sample_rows if args.reference_data else None
    streamed = stream_counts(
        baseline, args.data, score_column=args.score_column, progress=progress, sample_rows=sample_rows
    )
    if streamed.sample is None:
        return streamed.counts, None, None
    ref_sample = stream_sample(args.reference_data, streamed.sample.names, strings=text, sample_rows=args.sample_rows)
    note = None
    if not (streamed.sample.complete and ref_sample.complete):
        note = (
            f"KS and Wasserstein on uniform samples of at most {args.sample_rows:,} rows per side "
            f"(data {streamed.sample.seen:,} rows, reference {ref_sample.seen:,}); PSI and the verdicts use every row"
        )
    return streamed.counts, finite_pairs(ref_sample, streamed.sample), note


def _cols(table: Any) -> Any:
    from .._frame import to_columns

    return to_columns(table)


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read counts file: {exc.strerror}") from None


def _drift(args: argparse.Namespace) -> int:
    from .._atomic import atomic_write
    from ..baseline import Baseline, BaselineError
    from ._report import report_from_counts

    problem = _check_options(args)
    if problem is not None:
        return _fail(problem)
    progress = not args.no_progress and sys.stderr.isatty()
    try:
        baseline = Baseline.load(args.baseline)
        counts, samples, note = _counts_and_samples(args, baseline, progress)
        report = report_from_counts(
            baseline,
            counts,
            alpha=args.alpha,
            warn=args.warn,
            drift=args.drift,
            min_count=args.min_count,
            multiplicity=args.multiplicity,
            samples=samples,
        )
        if args.write_counts:
            payload = counts.to_json().encode("utf-8")
            atomic_write(args.write_counts, lambda fh: fh.write(payload))
    except (BaselineError, FileNotFoundError, ValueError, TypeError, ImportError) as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot read input: {exc}")
    if note:
        print(f"otel-ml drift: note: {note}", file=sys.stderr)

    document = json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n"
    if args.json == "-":
        sys.stdout.write(document)
    else:
        _print_table(report, args)
        if args.json:
            try:
                with open(args.json, "w", encoding="utf-8") as fh:
                    fh.write(document)
            except OSError as exc:
                return _fail(f"cannot write {args.json}: {exc.strerror}")
    return 1 if _fails(report.verdict, args.fail_on) else 0


def _num(value: float | None, spec: str) -> str:
    if value is None:
        return ""
    if not math.isfinite(value):
        return "-"
    return format(value, spec)


def _print_table(report: Any, args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    has_ks = any(f.ks_pvalue is not None for f in report.features)
    table = Table(
        title=(
            f"{report.model_name} {report.model_version}: {report.row_count:,} rows vs baseline of "
            f"{report.reference_row_count:,} (alpha {report.alpha:g} for the table, {report.multiplicity}; "
            f"warn {report.warn_threshold:g}, drift {report.drift_threshold:g})"
        )
    )
    for col in ("feature", "type", "n", "missing", "PSI", "critical", "level", "JS", "p-value"):
        table.add_column(col, justify="left" if col in ("feature", "type") else "right")
    if has_ks:
        table.add_column("KS p", justify="right")
        table.add_column("Wasserstein", justify="right")
    table.add_column("verdict")
    for f in report.features:
        row = [
            escape(f.name),
            f.kind,
            f"{f.count:,}",
            _num(f.missing_ratio, ".1%"),
            _num(f.psi, ".4f"),
            _num(f.psi_critical, ".4f"),
            _num(f.alpha, ".2g"),
            _num(f.js_distance, ".4f"),
            _num(f.pvalue, ".3g"),
        ]
        if has_ks:
            row += [_num(f.ks_pvalue, ".3g"), _num(f.wasserstein, ".4g")]
        row.append(f"[{_STYLES[f.verdict]}]{f.verdict}[/]")
        table.add_row(*row)
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    counts = {v: report.names_with(v) for v in ("drift", "warn", "ok", "insufficient_data")}
    parts = []
    for verdict, names in counts.items():
        if names:
            shown = escape(", ".join(names[:8]) + (" ..." if len(names) > 8 else ""))
            listed = f" ({shown})" if verdict in ("drift", "warn") else ""
            parts.append(f"{len(names)} {verdict.replace('_', ' ')}{listed}")
    console.print(f"verdict: [{_STYLES[report.verdict]}]{report.verdict}[/] - " + ", ".join(parts), highlight=False)
    if args.fail_on != "never":
        console.print(
            f"--fail-on {args.fail_on}: {'FAIL' if _fails(report.verdict, args.fail_on) else 'pass'}", highlight=False
        )


def _fails(verdict: str, fail_on: str) -> bool:
    return verdict in {"never": (), "drift": ("drift",), "warn": ("warn", "drift")}[fail_on]
