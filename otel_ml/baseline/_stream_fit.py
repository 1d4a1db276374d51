"""Fit a :class:`Baseline` from a Parquet/CSV data set larger than memory, in two passes of batches.

Pass 1 keeps a bounded uniform row sample of the numeric columns and the score
(:class:`RowSample`, rank error of the quantile edges <= 0.5 %, exact while the data fits in the
sample) and counts the categorical values (bounded: at most ``distinct_cap`` distinct values per
column are tracked; past it the least frequent half is dropped and their rows are counted as
rare values in ``__other__``, so a value first seen after the cap filled up cannot reach the
vocabulary unless it is frequent). The edges come from :func:`quantile_edges` on the sample.
Pass 2 counts every row exactly into those edges, with exact counts, mean, std, min and max
(mean/std merged per batch, equal to numpy's to floating-point rounding), so the reference
fractions are exact for the chosen edges.

The result is what :func:`fit_baseline` gives on the whole table except the numeric and score
edges (and the last bits of mean/std). Decision rates, segments and labels need per-row joins of
score, decision, segment and label: when asked for, those few columns (not the features) are read
into memory and the in-memory helpers run on them with the streamed score edges.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from .._binning import bin_counts as edge_bin_counts
from .._frame import as_float, canonical_label, to_columns
from .._version import __version__
from ._dataset import DEFAULT_BATCH_ROWS, batches, check_columns, open_dataset
from ._files import _empty_text_is_missing
from ._fit import (
    DEFAULT_BINS,
    DEFAULT_RARE_LIMIT,
    DEFAULT_SCORE_BINS,
    DEFAULT_SEGMENT_BUDGET,
    DEFAULT_TOP_K,
    _decision_rates,
    _decisions,
    _fit_labels,
    _fit_score,
    _fractions,
    _threshold,
    categorical_profile,
    quantile_edges,
)
from ._profile import Baseline, BaselineError, NumericProfile, ScoreProfile
from ._sample import DEFAULT_SAMPLE_ROWS, RowSample

__all__ = ["DEFAULT_DISTINCT_CAP", "fit_baseline_stream"]

DEFAULT_DISTINCT_CAP = 100_000
FloatArray = npt.NDArray[np.float64]


@dataclass
class _Moments:
    """Exact bin counts and mergeable moments of one numeric column (Chan et al.'s pairwise update)."""

    edges: FloatArray
    counts: npt.NDArray[np.int64]
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    lo: float = math.inf
    hi: float = -math.inf

    @classmethod
    def at(cls, edges: FloatArray) -> _Moments:
        return cls(edges, np.zeros(edges.size + 1, dtype=np.int64))

    def add(self, values: FloatArray) -> None:
        finite = values[np.isfinite(values)]
        if not finite.size:
            return
        self.counts += edge_bin_counts(self.edges, finite)
        m = int(finite.size)
        mean = float(finite.mean())
        m2 = float(((finite - mean) ** 2).sum())
        total = self.n + m
        delta = mean - self.mean
        self.mean += delta * m / total
        self.m2 += m2 + delta * delta * self.n * m / total
        self.n = total
        self.lo, self.hi = min(self.lo, float(finite.min())), max(self.hi, float(finite.max()))

    def profile(self, name: str, rows: int) -> NumericProfile:
        n = self.n
        return NumericProfile(
            name=name,
            edges=tuple(self.edges.tolist()),
            fractions=_fractions(self.counts),
            count=n,
            missing_fraction=float(1.0 - n / rows) if rows else 0.0,
            mean=self.mean if n else None,
            std=math.sqrt(self.m2 / n) if n else None,
            min=self.lo if n else None,
            max=self.hi if n else None,
        )


@dataclass
class _LabelCounter:
    """Counts per canonical label, bounded to ``cap`` distinct values (module docstring)."""

    cap: int
    counts: dict[str, int] = field(default_factory=dict)
    missing: int = 0
    pruned: int = 0

    def add(self, array: Any) -> None:
        import pyarrow.compute as pc

        vc = pc.value_counts(array)
        for value, count in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()):
            label = canonical_label(value)
            if label is None:
                self.missing += count
            else:
                self.counts[label] = self.counts.get(label, 0) + count
        if len(self.counts) > self.cap:
            ranked = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
            keep = ranked[: self.cap // 2]
            self.pruned += sum(c for _, c in ranked[self.cap // 2 :])
            self.counts = dict(keep)


def _is_numeric_type(pa_type: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_integer(pa_type) or pa.types.is_floating(pa_type))


def _floats(batch: Any, name: str) -> FloatArray:
    return as_float(batch.column(name).to_numpy(zero_copy_only=False))


def fit_baseline_stream(
    source: str | os.PathLike[str],
    *,
    model: str,
    version: str,
    score_column: str | None = None,
    features: Sequence[str] | None = None,
    categorical: Sequence[str] = (),
    exclude: Sequence[str] = (),
    bins: int = DEFAULT_BINS,
    score_bins: int = DEFAULT_SCORE_BINS,
    top_k: int = DEFAULT_TOP_K,
    rare_limit: int = DEFAULT_RARE_LIMIT,
    segments: Sequence[str] = (),
    decision_column: str | None = None,
    decision: float | None = None,
    label_column: str | None = None,
    positive_label: Any = "true",
    chunk_size: int | None = None,
    score_edges: Sequence[float] | None = None,
    sample_rows: int = DEFAULT_SAMPLE_ROWS,
    distinct_cap: int = DEFAULT_DISTINCT_CAP,
    batch_size: int = DEFAULT_BATCH_ROWS,
    progress: bool = False,
) -> Baseline:
    """:func:`fit_baseline` over a Parquet/CSV file, directory or glob, in bounded memory (module docstring).

    The options are :func:`fit_baseline`'s; ``sample_rows`` sizes the quantile sample (rank error
    about ``sqrt(0.25 / sample_rows)`` per edge, one sigma), ``distinct_cap`` the categorical counters.
    (Long only for :func:`fit_baseline`'s keyword arguments: each pass is a helper below.)
    """
    if not model or not version:
        raise BaselineError("model and version must be non-empty")
    text = [*categorical, *segments, *([decision_column] if decision_column else [])]
    text += [label_column] if label_column else []
    dataset = open_dataset(source, strings=text)
    skip = {score_column, decision_column, label_column, *exclude}
    names = list(features) if features is not None else [n for n in dataset.schema.names if n not in skip]
    if not names:
        raise BaselineError("no feature columns found")
    outcome = [c for c in (decision_column, label_column, *segments) if c]
    if score_column is None and (outcome or decision is not None):
        raise BaselineError("reference decision rates and calibration need the scores (score_column=)")
    check_columns(dataset, [*names, *([score_column] if score_column else []), *outcome])
    schema = dataset.schema
    numeric = [n for n in names if n not in categorical and _is_numeric_type(schema.field(n).type)]
    # every file's numbers as float64 (the data set's schema is the first file's otherwise)
    dataset = open_dataset(source, strings=text, floats=[*numeric, *([score_column] if score_column else [])])
    sampled = numeric + ([score_column] if score_column and score_edges is None else [])
    rows, sample, labels = _pass_one(dataset, names, numeric, sampled, score_column, sample_rows, distinct_cap,
                                     batch_size, progress)  # fmt: skip
    if rows == 0:
        raise BaselineError("cannot fit a baseline from zero rows")
    moments = {n: _Moments.at(quantile_edges(sample.values(n), bins)) for n in numeric}
    score_moments = None
    if score_column is not None:
        score_moments = _Moments.at(_score_edges(sample, score_column, score_bins, score_edges, decision))
        moments[score_column] = score_moments
    for batch in batches(dataset, list(moments), batch_size=batch_size, progress=progress,
                         description="pass 2/2: counting"):  # fmt: skip
        for n, m in moments.items():
            m.add(_floats(batch, n))
    profiles = [
        moments[n].profile(n, rows)
        if n in numeric
        else categorical_profile(n, labels[n].counts, labels[n].missing, top_k, rare_limit, labels[n].pruned)
        for n in names
    ]
    score = None
    if score_column is not None and score_moments is not None:
        score = _score_profile(dataset, score_column, score_moments, rows, outcome, locals_=_Outcome(
            decision_column, decision, segments, label_column, positive_label, chunk_size, score_bins
        ))  # fmt: skip
    return Baseline(
        model_name=model,
        model_version=version,
        features=tuple(profiles),
        row_count=rows,
        score=score,
        created=_dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        library_version=__version__,
    )


def _pass_one(
    dataset: Any,
    names: list[str],
    numeric: list[str],
    sampled: list[str],
    score_column: str | None,
    sample_rows: int,
    distinct_cap: int,
    batch_size: int,
    progress: bool,
) -> tuple[int, RowSample, dict[str, _LabelCounter]]:
    """Rows, the numeric columns' row sample, and the categorical columns' label counts."""
    sample = RowSample(sampled, sample_rows)
    labels = {n: _LabelCounter(distinct_cap) for n in names if n not in numeric}
    rows = 0
    read = [*names, *([score_column] if score_column else [])]
    for batch in batches(dataset, read, batch_size=batch_size, progress=progress, description="pass 1/2: sampling"):
        rows += batch.num_rows
        sample.add({n: _floats(batch, n) for n in sampled})
        for n, counter in labels.items():
            counter.add(batch.column(n))
    return rows, sample, labels


def _score_edges(
    sample: RowSample, score_column: str, bins: int, given: Sequence[float] | None, decision: float | None
) -> FloatArray:
    """Sampled quantile edges of the score (or the given ones), plus the decision threshold as an edge."""
    if given is not None:
        if not len(given) or not all(math.isfinite(e) for e in given):
            raise BaselineError("score_edges must be a non-empty list of finite numbers")
        edges = np.unique(np.asarray(given, dtype=np.float64))
    else:
        edges = quantile_edges(sample.values(score_column), bins)
    threshold = _threshold(decision)
    return edges if threshold is None else np.union1d(edges, [threshold])


@dataclass(frozen=True)
class _Outcome:
    decision_column: str | None
    decision: float | None
    segments: Sequence[str]
    label_column: str | None
    positive_label: Any
    chunk_size: int | None
    score_bins: int


def _score_profile(
    dataset: Any, score_column: str, moments: _Moments, rows: int, outcome: list[str], locals_: _Outcome
) -> ScoreProfile:
    """The streamed score bins; with decisions, segments or labels, those columns and the score in memory."""
    o = locals_
    threshold = _threshold(o.decision)
    profile = moments.profile("score", rows)
    if not outcome and o.decision is None:
        return ScoreProfile(profile.edges, profile.fractions, profile.count, {}, decision_threshold=threshold)
    table = dataset.to_table(columns=[score_column, *outcome])
    if dataset.format.default_extname == "csv":  # as read_table: an empty text field is missing
        import pyarrow as pa

        table = _empty_text_is_missing(pa, table)
    columns = to_columns(table)
    scores = as_float(columns.raw(score_column))
    decisions = _decisions(columns, scores, o.decision_column, o.decision)
    rates = {} if decisions is None else _decision_rates(columns, decisions, o.segments, DEFAULT_SEGMENT_BUDGET)
    edges = [e for e in profile.edges if e != threshold] or None
    score = _fit_score(scores, o.score_bins, threshold, rates, edges)
    if o.label_column is not None:
        score = _fit_labels(score, scores, columns.raw(o.label_column), decisions, o.positive_label, o.chunk_size)
    return score
