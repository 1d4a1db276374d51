"""``otel-ml baseline``: fit a reference profile from a training file, or show one."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._fit import DEFAULT_BINS, DEFAULT_SCORE_BINS, DEFAULT_TOP_K
from ._sample import DEFAULT_SAMPLE_ROWS

__all__ = ["register"]


def register(sub: Any) -> None:
    """The ``baseline`` command's arguments, one declaration per option in ``--help`` order (long for
    that reason only: split, the help text would no longer read top to bottom in the source)."""
    group = sub.add_parser(
        "baseline",
        help="fit or inspect a reference profile (baseline file)",
        description="Fit a reference profile from training data, or show one.",
    )
    cmds = group.add_subparsers(dest="baseline_command", metavar="ACTION", required=True)

    fit = cmds.add_parser(
        "fit",
        help="fit a baseline from CSV, Parquet or JSON data (Parquet/CSV: a file, a directory or a glob)",
        description=(
            "Fit bin edges, reference fractions and category vocabularies from training data "
            "(CSV, CSV.gz, Parquet or JSON Lines) and write the versioned baseline JSON the app and "
            "the sidecar load. Integer and float columns are numeric, others categorical; --categorical "
            "columns are read from CSV as text, and booleans, 1/1.0/'1' and 'True'/'true' are one category. "
            "Parquet and CSV data (a file, a directory of files with hive partitions, or a quoted glob) are "
            "streamed in two passes of record batches: numeric edges from a uniform sample of --sample-rows "
            "rows (rank error <= 0.5 %, exact when the data is smaller), then exact reference counts."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    fit.add_argument(
        "data", help="training data: a .parquet/.csv(.gz) file, a directory of them, a quoted glob, or .json/.jsonl"
    )
    fit.add_argument("--model", required=True, help="model name (label ml_model_name)")
    fit.add_argument("--version", required=True, help="model version (label ml_model_version)")
    fit.add_argument("-o", "--output", required=True, help="baseline JSON file to write")
    fit.add_argument("--score-column", help="column with the model's score on the training data")
    fit.add_argument("--features", nargs="+", metavar="COL", help="feature columns (default: all others)")
    fit.add_argument(
        "--categorical", nargs="+", default=[], metavar="COL", help="treat these numeric-looking columns as categorical"
    )
    fit.add_argument("--exclude", nargs="+", default=[], metavar="COL", help="columns that are not features")
    fit.add_argument("--bins", type=int, default=DEFAULT_BINS, help="quantile bins per numeric feature")
    fit.add_argument(
        "--score-bins",
        type=int,
        default=DEFAULT_SCORE_BINS,
        help="quantile bins for the score (30: binned AUC within ~2e-3 of the exact AUC)",
    )
    fit.add_argument(
        "--score-edges-from",
        metavar="BASELINE",
        help="use this baseline's score edges instead of quantiles (a new version fitted with its stable"
        " version's edges shares every score bucket with it: the canary's score PSI uses them all)",
    )
    fit.add_argument("--top-k", type=int, default=DEFAULT_TOP_K, help="vocabulary size per categorical feature")
    _add_outcome_arguments(fit)
    fit.add_argument(
        "--sample-rows",
        type=int,
        default=DEFAULT_SAMPLE_ROWS,
        help="rows sampled for the quantile edges of Parquet/CSV data (rank error ~ sqrt(0.25 / N) per edge)",
    )
    fit.add_argument("--no-progress", "--quiet", action="store_true", help="no progress bar")
    fit.set_defaults(func=_fit)

    show = cmds.add_parser("show", help="validate a baseline file and print a summary")
    show.add_argument("baseline", help="baseline JSON file")
    show.set_defaults(func=_show)


def _add_outcome_arguments(fit: argparse.ArgumentParser) -> None:
    """The decision rule and the labels: reference decision rates, calibration, performance."""
    fit.add_argument(
        "--segments", nargs="+", default=[], metavar="COL", help="columns to store reference decision rates for"
    )
    decision = fit.add_mutually_exclusive_group()
    decision.add_argument("--decision-column", help="column with the decision made on each training row")
    decision.add_argument("--decision-threshold", type=float, help="decision is score > THRESHOLD")
    fit.add_argument(
        "--label-column",
        help="column with the true outcome: stores the per-score-bin calibration and the reference performance",
    )
    fit.add_argument(
        "--positive-label", default="true", help="label value of the positive class (a 0/1 column's 1 is 'true')"
    )
    fit.add_argument(
        "--chunk-size",
        type=int,
        help="labelled rows per reference chunk for the performance stddev (default: 500, or a tenth of the rows)",
    )


def _score_edges_of(path: str) -> tuple[float, ...]:
    from ._profile import Baseline, BaselineError

    score = Baseline.load(path).score
    if score is None:
        raise BaselineError(f"{path}: has no score profile to take the score edges from")
    return score.edges


def _fit(args: argparse.Namespace) -> int:
    from ._dataset import is_streamable
    from ._files import read_table
    from ._fit import fit_baseline
    from ._profile import BaselineError
    from ._stream_fit import fit_baseline_stream

    try:
        edges = None if args.score_edges_from is None else _score_edges_of(args.score_edges_from)
        text_columns = [
            *args.categorical,
            *args.segments,
            *([args.decision_column] if args.decision_column else []),
            *([args.label_column] if args.label_column else []),
        ]
        progress = not args.no_progress and sys.stderr.isatty()
        options: dict[str, Any] = dict(
            model=args.model,
            version=args.version,
            score_column=args.score_column,
            features=args.features,
            categorical=args.categorical,
            exclude=args.exclude,
            bins=args.bins,
            score_bins=args.score_bins,
            top_k=args.top_k,
            segments=args.segments,
            decision_column=args.decision_column,
            decision=args.decision_threshold,
            label_column=args.label_column,
            positive_label=args.positive_label,
            score_edges=edges,
            chunk_size=args.chunk_size,
        )
        if is_streamable(args.data):
            baseline = fit_baseline_stream(args.data, sample_rows=args.sample_rows, progress=progress, **options)
        else:
            baseline = fit_baseline(read_table(args.data, progress=progress, strings=text_columns), **options)
    except (BaselineError, FileNotFoundError, ValueError, ImportError) as exc:
        print(f"otel-ml baseline fit: {exc}", file=sys.stderr)
        return 2
    baseline.save(args.output)
    print(
        f"wrote {args.output}: {len(baseline.numeric)} numeric and {len(baseline.categorical)} categorical "
        f"features from {baseline.row_count:,} rows" + (", with score bins" if baseline.score else "")
    )
    score = baseline.score
    if score is not None and score.calibration is not None:
        left_out = baseline.row_count - score.labelled_count
        print(
            f"labels: {score.labelled_count:,} rows calibrated (positive label {score.positive_label!r})"
            + (f"; {left_out:,} rows without a label or a finite score left out" if left_out else "")
        )
        print(_performance_line(baseline))
    return 0


def _performance_line(baseline: Any) -> str:
    """The reference performance the alerts' bands are built on, in one line."""
    p = baseline.score.performance
    if p is None:
        return "reference performance: too few labelled rows for 10 chunks of 50; no band for the alerts"
    figures = ", ".join(f"{m} {p.value[m]:.4f} +- {p.stddev[m]:.4f}" for m in p.value)
    return f"reference performance ({p.chunks} chunks of {p.chunk_size}): {figures}"


def _show(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ._profile import Baseline, BaselineError, NumericProfile

    try:
        b = Baseline.load(args.baseline)
    except BaselineError as exc:
        print(f"otel-ml baseline show: {exc}", file=sys.stderr)
        return 2
    table = Table(title=f"{b.model_name} {b.model_version} ({b.row_count:,} rows, created {b.created})")
    for col in ("feature", "type", "bins", "missing", "detail"):
        table.add_column(col)
    for f in b.features:
        if isinstance(f, NumericProfile):
            detail = f"mean {f.mean:.4g}, std {f.std:.4g}" if f.mean is not None and f.std is not None else ""
        else:
            detail = ", ".join(f.vocabulary[:5]) + (" ..." if len(f.vocabulary) > 5 else "")
        table.add_row(f.name, f.kind, str(f.bin_count), f"{f.missing_fraction:.2%}", detail)
    if b.score:
        table.add_row("(score)", "numeric", str(b.score.bin_count), "", f"{len(b.score.decision_rates)} segment keys")
    console = Console()
    console.print(table)
    if b.score is not None and b.score.calibration is not None:
        threshold = (
            "" if b.score.decision_threshold is None else f", served rule score > {b.score.decision_threshold:g}"
        )
        console.print(
            f"calibration: {b.score.labelled_count:,} labelled rows, positive label {b.score.positive_label!r}"
            f"{threshold}; positive rate per score bin {b.score.calibration[0]:.3f} .. {b.score.calibration[-1]:.3f}"
        )
        console.print(_performance_line(b))
    return 0
