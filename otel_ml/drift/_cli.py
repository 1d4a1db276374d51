"""``otel-ml drift``: compare a data file with a baseline, per feature, for people and for CI."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

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
--reference-data with the training file to get them for numeric columns.
"""

EPILOG = """\
exit status: 0 when the check passes, 1 when --fail-on is triggered, 2 on bad input.

examples:
  otel-ml drift fraud-v3.baseline.json last-week.parquet
  otel-ml drift fraud-v3.baseline.json last-week.parquet --score-column score --fail-on drift
  otel-ml drift fraud-v3.baseline.json today.csv --reference-data train.parquet --json drift.json
"""

_STYLES = {"drift": "bold red", "warn": "yellow", "ok": "green", "insufficient_data": "dim"}


def register(sub: Any) -> None:
    cmd = sub.add_parser(
        "drift",
        help="per-feature drift of a data file against a baseline (table, JSON, CI exit code)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.add_argument("baseline", help="baseline JSON file (from 'otel-ml baseline fit')")
    cmd.add_argument("data", help="current data file (.csv, .csv.gz, .parquet, .json, .jsonl) with the feature columns")
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
    cmd.add_argument("--no-progress", action="store_true", help="no progress bar while reading files")
    cmd.set_defaults(func=_drift)


def _fail(message: str) -> int:
    print(f"otel-ml drift: {message}", file=sys.stderr)
    return 2


def _drift(args: argparse.Namespace) -> int:
    from ..baseline import Baseline, BaselineError, read_table
    from ._report import drift_report

    if not 0.0 < args.alpha < 1.0:
        return _fail(f"--alpha must be between 0 and 1, got {args.alpha}")
    if not 0.0 <= args.warn <= args.drift:
        return _fail(f"thresholds must satisfy 0 <= --warn <= --drift, got {args.warn} and {args.drift}")
    if args.min_count is not None and args.min_count < 1:
        return _fail("--min-count must be >= 1")
    progress = not args.no_progress and sys.stderr.isatty()
    try:
        baseline = Baseline.load(args.baseline)
        text = [f.name for f in baseline.categorical]  # CSV: categories read as text, never re-typed
        table = read_table(args.data, progress=progress, strings=text)
        reference = (
            None if args.reference_data is None else read_table(args.reference_data, progress=progress, strings=text)
        )
        report = drift_report(
            baseline,
            table,
            score_column=args.score_column,
            reference_data=reference,
            alpha=args.alpha,
            warn=args.warn,
            drift=args.drift,
            min_count=args.min_count,
            multiplicity=args.multiplicity,
        )
    except (BaselineError, FileNotFoundError, ValueError, TypeError, ImportError) as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot read input: {exc}")

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
