"""Offline drift over data sets larger than memory: one pass of record batches into mergeable counts.

Each batch (only the baseline's columns, decoded by pyarrow's threads) is counted with
:func:`~otel_ml.drift.bin_counts` and added to the running :class:`BinCounts`; the report is one
:func:`report_from_counts` at the end, so the streamed report equals the in-memory one count for
count and memory is bounded by the batch size, not the row count.

KS and Wasserstein compare raw samples and cannot be computed from counts. With a reference
data set they are computed on bounded uniform row samples of both sides (:class:`RowSample`,
2**18 rows each by default): exact while both sides fit in the sample, otherwise an estimate
whose statistic is off by about ``1/sqrt(k)`` (0.002); the caller is told (``sampled``) so the
CLI can say so instead of silently loading everything.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..baseline._dataset import DEFAULT_BATCH_ROWS, batches, check_columns, open_dataset
from ..baseline._profile import Baseline, NumericProfile
from ..baseline._sample import DEFAULT_SAMPLE_ROWS, RowSample
from ._counts import BinCounts, count_columns

__all__ = ["StreamedCounts", "stream_counts", "stream_sample"]


@dataclass(frozen=True)
class StreamedCounts:
    """The counts of a data set, and its numeric columns' row sample when one was asked for."""

    counts: BinCounts
    sample: RowSample | None


def _numeric_columns(baseline: Baseline, score_column: str | None) -> list[str]:
    names = [f.name for f in baseline.features if isinstance(f, NumericProfile)]
    return names + ([score_column] if score_column is not None else [])


def stream_counts(
    baseline: Baseline,
    source: str | os.PathLike[str],
    *,
    score_column: str | None = None,
    batch_size: int = DEFAULT_BATCH_ROWS,
    progress: bool = False,
    sample_rows: int | None = None,
) -> StreamedCounts:
    """Bin counts of a Parquet/CSV file, directory or glob against ``baseline``, batch by batch.

    With ``sample_rows`` the numeric columns (and the score) are also sampled, for KS and
    Wasserstein. Raises ``ValueError`` when a file lacks a baseline column (or the score column).
    """
    text = [f.name for f in baseline.categorical]
    floats = _numeric_columns(baseline, score_column)  # as float64 in every file, whatever each one says
    dataset = open_dataset(source, strings=text, floats=floats, dictionary=True)  # categories: codes per value
    needed = [*baseline.feature_names, *([score_column] if score_column is not None else [])]
    check_columns(dataset, list(baseline.feature_names))
    if score_column is not None:
        check_columns(dataset, [score_column])
    fingerprint = baseline.fingerprint().hex()
    names = list(baseline.feature_names)
    numeric = _numeric_columns(baseline, score_column)
    sample = RowSample(numeric, sample_rows) if sample_rows else None
    total: BinCounts | None = None
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for batch in batches(dataset, needed, batch_size=batch_size, progress=progress, description="counting"):
            part = count_columns(baseline, batch, score_column, names, fingerprint, pool)
            total = part if total is None else total + part
            if sample is not None:
                sample.add({n: _floats(batch, n) for n in numeric})
    if total is None:  # no rows at all: counts of an empty table
        import pyarrow as pa

        empty = pa.table({n: pa.array([], type=dataset.schema.field(n).type) for n in needed})
        total = count_columns(baseline, empty, score_column, names, fingerprint)
    return StreamedCounts(total, sample)


def _floats(batch: Any, name: str) -> Any:
    from .._frame import as_float

    return as_float(batch.column(name).to_numpy(zero_copy_only=False))


def stream_sample(
    source: str | os.PathLike[str],
    names: Sequence[str],
    *,
    strings: Sequence[str] = (),
    sample_rows: int = DEFAULT_SAMPLE_ROWS,
    progress: bool = False,
) -> RowSample:
    """A uniform row sample of the numeric columns ``names`` that the data set has (others are skipped)."""
    dataset = open_dataset(source, strings=strings, floats=names)
    have = [n for n in names if n in dataset.schema.names]
    sample = RowSample(have, sample_rows, seed=1)
    if have:
        for batch in batches(dataset, have, progress=progress, description="sampling reference"):
            sample.add({n: _floats(batch, n) for n in have})
    return sample


def finite_pairs(reference: RowSample, current: RowSample) -> dict[str, tuple[Any, Any]]:
    """(reference, current) finite sampled values per column both samples have, for KS and Wasserstein."""
    out = {}
    for name in current.names:
        if name in reference.names:
            r, c = reference.values(name), current.values(name)
            out[name] = (r[np.isfinite(r)], c[np.isfinite(c)])
    return out
