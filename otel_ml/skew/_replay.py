"""The replay: stream the spool through the training pipeline, re-score, compare, summarise.

The per-row loop does only what must be per row (the user's pipeline and keeping its output);
re-scoring is per chunk, and every comparison and count is numpy over a whole column afterwards.
"""

from __future__ import annotations

import itertools
import math
import operator
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from .. import _names as n
from .._frame import as_float
from ._compare import MATCH, RESULT_CODE, column, compare_feature
from ._load import LoadStats, SkewInputError, VersionKey, capture_rows
from ._pipeline import DEFAULT_CHUNK_ROWS, RowErrors, decide, rescore, run_pipeline, takes_as_of
from ._report import DEFAULT_ATOL, DEFAULT_RTOL, FailOn, FeatureSkew, SkewReport, VersionSkew, WorstRow
from ._summary import flip_counts, score_difference

__all__ = ["DEFAULT_ATOL", "DEFAULT_RTOL", "replay"]

PROGRESS_MIN_ROWS = 5000


@dataclass
class _Part:
    """What one model version's rows left after the pipeline ran: the two feature vectors per row."""

    header: Mapping[str, Any]
    ids: list[str] = field(default_factory=list)
    served: list[Mapping[str, Any]] = field(default_factory=list)
    trained: list[Mapping[str, Any]] = field(default_factory=list)
    scores: list[Any] = field(default_factory=list)
    decisions: list[Any] = field(default_factory=list)
    segments: list[Mapping[str, Any]] = field(default_factory=list)
    errors: RowErrors = field(default_factory=RowErrors)
    rows_read: int = 0


@dataclass(frozen=True)
class _Options:
    model: Callable[[Any], Any]
    rtol: float
    atol: float
    baseline: Any
    rule: Callable[[Any], Any] | float | None
    rule_name: str | None
    skip: frozenset[str]
    chunk_rows: int
    worst: int


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _collect(
    rows: Iterator[tuple[VersionKey, str, dict[str, Any]]],
    stats: LoadStats,
    pipeline: Callable[[Any], Any],
    advance: Callable[[], None],
) -> dict[VersionKey, _Part]:
    """Run the pipeline on every row; keep the served and training features of the rows it ran on."""
    parts: dict[VersionKey, _Part] = {}
    as_of = takes_as_of(pipeline)
    for vkey, rid, row in rows:
        part = parts.get(vkey)
        if part is None:
            part = parts[vkey] = _Part(stats.headers[vkey])
        part.rows_read += 1
        served_at = row.get("time") if as_of else None
        when = float(served_at) if isinstance(served_at, (int, float)) and not isinstance(served_at, bool) else None
        trained = run_pipeline(pipeline, row.get("raw"), rid, part.errors, when)
        advance()
        if trained is None:
            continue
        part.ids.append(rid)
        part.served.append(_mapping(row.get("features")))
        part.trained.append(trained)
        part.scores.append(row.get("score"))
        part.decisions.append(row.get("decision"))
        part.segments.append(_mapping(row.get("segments")))
    return parts


def _feature_order(part: _Part) -> tuple[list[str], list[str]]:
    """Features to compare (the header's order, then first seen; only names a side has) and the
    model's columns (the header's feature names, else the pipeline's keys in first-seen order)."""
    trained = list(dict.fromkeys(itertools.chain.from_iterable(part.trained)))
    served = dict.fromkeys(itertools.chain.from_iterable(part.served))
    present = set(trained) | set(served)
    header = [str(f) for f in part.header.get("feature_names") or ()]
    order = [f for f in header if f in present]
    order += [f for f in itertools.chain(trained, served) if f not in set(order)]
    return list(dict.fromkeys(order)), header or trained


def _profile(baseline: Any, name: str) -> Any:
    if baseline is None:
        return None
    try:
        return baseline.feature(name)
    except KeyError:
        return None


def _columns(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> list[Sequence[Any]]:
    """The values of ``names`` in every row, one sequence per name (absent: ``None``). A row holding
    every name is read by one ``itemgetter`` call and the table transposed by ``zip``, both in C; a
    row missing some name is read name by name."""
    if not names:
        return []
    get = operator.itemgetter(*names)
    single = len(names) == 1

    def one(row: Mapping[str, Any]) -> tuple[Any, ...]:
        try:
            got = get(row)
            return (got,) if single else got
        except KeyError:
            return tuple(row.get(f) for f in names)

    table = list(map(one, rows))
    return list(zip(*table)) if table else [() for _ in names]


def _compare_all(part: _Part, order: Sequence[str], opts: _Options) -> tuple[list[str], npt.NDArray[np.int8]]:
    """Result codes, features x rows, of every compared feature."""
    names = [f for f in order if f not in opts.skip]
    codes = np.zeros((len(names), len(part.ids)), dtype=np.int8)
    served, trained = _columns(part.served, names), _columns(part.trained, names)
    for i, name in enumerate(names):  # a loop per feature; each comparison is numpy over the rows
        codes[i] = compare_feature(
            column(served[i]), column(trained[i]), rtol=opts.rtol, atol=opts.atol, profile=_profile(opts.baseline, name)
        )
    return names, codes


def _rule(part: _Part, opts: _Options) -> tuple[Callable[[Any], Any] | float | None, str | None]:
    if opts.rule is not None:
        return opts.rule, opts.rule_name
    t = part.header.get("threshold")
    if isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t):
        return float(t), f"score > {float(t):g} (the capture header's threshold)"
    return None, None


def _worst(
    part: _Part,
    names: Sequence[str],
    codes: npt.NDArray[np.int8],
    served: npt.NDArray[np.float64],
    replayed: npt.NDArray[np.float64],
    limit: int,
) -> tuple[WorstRow, ...]:
    """The rows with the largest |delta| (then any non-match), with their non-matching features."""
    delta = np.abs(replayed - served)
    delta = np.where(np.isfinite(delta), delta, -1.0)
    off = (codes != MATCH).any(axis=0) if codes.size else np.zeros(len(part.ids), dtype=bool)
    candidates = np.flatnonzero((delta > 0) | off)
    ranked = candidates[np.lexsort((candidates, ~off[candidates], -delta[candidates]))][:limit]
    out = []
    results = n.SKEW_RESULTS
    for i in ranked.tolist():  # at most --worst rows
        feats = tuple(
            (f, results[int(codes[j, i])], part.served[i].get(f), part.trained[i].get(f))
            for j, f in enumerate(names)
            if codes[j, i] != MATCH
        )
        s, r = float(served[i]), float(replayed[i])
        out.append(WorstRow(part.ids[i], None if math.isnan(s) else s, None if math.isnan(r) else r, feats))
    return tuple(out)


def _version(vkey: VersionKey, part: _Part, record_errors: int, opts: _Options) -> VersionSkew:
    """Re-score, compare and count one model version's rows."""
    order, columns = _feature_order(part)
    replayed, failed = rescore(opts.model, part.trained, columns, part.ids, part.errors, opts.chunk_rows)
    names, codes = _compare_all(part, order, opts)
    served = as_float(np.asarray(part.scores, dtype=object)) if part.scores else np.zeros(0)
    rule, rule_name = _rule(part, opts)
    try:
        decisions = decide(replayed, rule)
    except Exception as exc:  # the user's decision rule: a bad rule is bad input, not a row error
        raise SkewInputError(f"the decision rule {rule_name} raised {type(exc).__name__}: {exc}") from None
    if decisions is not None:
        decisions[failed] = None
    ok = ~failed
    flips = flip_counts(part.header, part.segments, part.decisions, decisions, ok)
    features = tuple(
        FeatureSkew(
            name, {r: int(c) for r, c in zip(n.SKEW_RESULTS, np.bincount(codes[i], minlength=len(RESULT_CODE)))}
        )
        for i, name in enumerate(names)
    )
    errors = {s: part.errors.counts.get(s, 0) for s in n.SKEW_STAGES}
    errors["record"] += record_errors
    return VersionSkew(
        model=vkey[0],
        version=vkey[1],
        tags={str(k): str(v) for k, v in _mapping(part.header.get("tags")).items()},
        decision_rule=rule_name,
        rows_read=part.rows_read,
        rows=int(np.count_nonzero(ok)),
        rows_compared=len(part.ids),
        rows_with_mismatch=int(np.count_nonzero((codes != MATCH).any(axis=0))) if codes.size else 0,
        features=features,
        skipped_features=tuple(f for f in order if f in opts.skip),
        flips=flips,
        score_difference=score_difference(np.where(ok, replayed, np.nan) - served),
        errors=errors,
        error_examples=tuple(part.errors.examples),
        worst=_worst(part, names, codes, served, np.where(ok, replayed, np.nan), opts.worst),
        declared_features=tuple(str(f) for f in part.header.get("feature_names") or ()),
    )


def _rule_option(
    threshold: float | None, decision: Callable[[Any], Any] | None
) -> tuple[Callable[[Any], Any] | float | None, str | None]:
    if decision is not None and threshold is not None:
        raise SkewInputError("give a decision callable or a threshold, not both")
    if decision is not None:
        return decision, f"{getattr(decision, '__module__', '?')}:{getattr(decision, '__qualname__', repr(decision))}"
    if threshold is not None:
        return float(threshold), f"score > {float(threshold):g}"
    return None, None


def _load_baseline(baseline: Any) -> tuple[Any, str | None]:
    if baseline is None:
        return None, None
    if isinstance(baseline, (str, os.PathLike)):
        from ..baseline import Baseline

        return Baseline.load(baseline), str(baseline)
    return baseline, f"{baseline.model_name} {baseline.model_version}"


def _progress(enabled: bool, total: int) -> tuple[Callable[[], None], Callable[[], None]]:
    """``(advance, close)`` of a rich progress bar on stderr, or no-ops."""
    if not enabled or total < PROGRESS_MIN_ROWS:
        return (lambda: None), (lambda: None)
    from rich.console import Console
    from rich.progress import Progress

    bar = Progress(console=Console(stderr=True), transient=True)
    task = bar.add_task("replaying", total=total)
    bar.start()
    seen = [0]

    def advance() -> None:  # the bar is told every 512 rows: a rich update per row costs microseconds
        seen[0] += 1
        if seen[0] & 511 == 0:
            bar.advance(task, 512)

    return advance, bar.stop


def replay(
    capture_dir: str | os.PathLike[str],
    pipeline: Callable[[Any], Mapping[str, Any]],
    model: Callable[[Any], Any],
    *,
    key: str = "request_id",
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    baseline: Any = None,
    threshold: float | None = None,
    decision: Callable[[Any], Any] | None = None,
    skip_features: Sequence[str] = (),
    allow_duplicates: bool = False,
    model_name: str | None = None,
    version: str | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    worst: int = 10,
    fail_on: Sequence[FailOn] = (),
    progress: bool = False,
) -> SkewReport:
    """Replay a capture directory through the training pipeline and the model; report the skew.

    ``pipeline(raw)`` is the training-time feature code, called once per captured row with its raw
    request; it returns feature -> value (a raise is counted at stage ``pipeline``). A pipeline with an
    ``as_of`` parameter also gets the row's capture time (Unix seconds), for feature-store lookups and
    aggregates over history made as of when the row was served. ``model(frame)``
    re-scores chunks of ``chunk_rows`` rows (a pandas DataFrame of the replayed features; 1-D scores
    or a binary ``predict_proba``); a raising chunk is retried row by row. Decisions use ``decision``,
    else ``threshold``, else the capture header's threshold (``score > t``); without any rule flips
    are not computed. ``baseline`` (a :class:`~otel_ml.baseline.Baseline` or its file) turns
    differences that cross a bin into ``bin_change``. Raises :class:`SkewInputError` (duplicate
    keys, no rows, conflicting options) and ``CaptureFormatError`` (a file that is no capture).
    """
    if rtol < 0 or atol < 0 or chunk_rows < 1 or worst < 0:
        raise SkewInputError("rtol and atol must be >= 0, chunk_rows >= 1 and worst >= 0")
    rule, rule_name = _rule_option(threshold, decision)
    try:
        import pandas  # noqa: F401  (the model is called with DataFrames: say so before any row)
    except ImportError:
        raise SkewInputError(
            "the replay calls the model with pandas DataFrames: pip install 'otel-ml[pandas]'"
        ) from None
    profile, baseline_name = _load_baseline(baseline)
    opts = _Options(model, rtol, atol, profile, rule, rule_name, frozenset(skip_features), chunk_rows, worst)
    stats = LoadStats()
    rows = capture_rows(
        capture_dir, stats, key=key, allow_duplicates=allow_duplicates, model_name=model_name, version=version
    )
    first = next(rows, None)  # reads every header: the progress total is known after it
    advance, close = _progress(progress, stats.rows_total)
    try:
        parts = _collect(itertools.chain([first] if first else [], rows), stats, pipeline, advance)
    finally:
        close()
    versions = _versions(stats, parts, opts, capture_dir, model_name, version)
    return _report(str(capture_dir), stats, versions, opts, baseline_name, fail_on)


def _report(
    capture: str,
    stats: LoadStats,
    versions: tuple[VersionSkew, ...],
    opts: _Options,
    baseline_name: str | None,
    fail_on: Sequence[FailOn],
) -> SkewReport:
    notes = tuple(
        f"{v.model} {v.version}: no decision rule (no --threshold/--decision and no threshold in the capture "
        "header): decision flips not computed"
        for v in versions
        if v.decision_rule is None
    )
    return SkewReport(
        capture=capture,
        files=stats.files,
        rtol=opts.rtol,
        atol=opts.atol,
        baseline=baseline_name,
        versions=versions,
        duplicates=stats.duplicates,
        duplicate_ids=tuple(stats.duplicate_ids),
        unreadable=tuple(stats.unreadable),
        notes=notes,
        finished=time.time(),
        gates=tuple(fail_on),
    )


def _versions(
    stats: LoadStats,
    parts: dict[VersionKey, _Part],
    opts: _Options,
    capture_dir: str | os.PathLike[str],
    model_name: str | None,
    version: str | None,
) -> tuple[VersionSkew, ...]:
    if not stats.headers:
        if stats.files == 0:
            raise SkewInputError(f"{capture_dir}: no finished capture files (capture-*.jsonl)")
        wanted = " ".join(x for x in (model_name, version) if x)
        raise SkewInputError(f"{capture_dir}: no rows{' for ' + wanted if wanted else ''} in {stats.files} files")
    out = []
    for vkey, head in stats.headers.items():
        part = parts.get(vkey) or _Part(head)
        out.append(_version(vkey, part, stats.record_errors.get(vkey, 0), opts))
    return tuple(out)
