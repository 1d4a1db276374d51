"""Mergeable bin counts of current data against one baseline: the map step of offline drift.

Every drift statistic (PSI, its critical value, JS, Hellinger, chi-square) is a function of the
current bin counts and the baseline's fractions, so counts from any split of the data (files,
partitions of a Spark/Dask/Ray job, days) add up to exactly the counts of the whole: map each
part to :func:`bin_counts`, reduce with ``+`` (:meth:`BinCounts.merge`), finish with
:func:`otel_ml.drift.report_from_counts` or ``otel-ml drift --counts``. Counts carry the
baseline's fingerprint (content hash) so parts binned against different baselines can never be
added, and they round-trip through JSON (``to_json``/``from_json``) between processes.
"""

from __future__ import annotations

import json
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from .._binning import MISSING_CODE, CategoryEncoder, finite_bin_counts
from .._frame import Columns, canonical_label, to_columns
from ..baseline._profile import Baseline, CategoricalProfile, NumericProfile

__all__ = ["BinCounts", "CountsError", "bin_counts", "COUNTS_SCHEMA"]

COUNTS_SCHEMA = "otel-ml/bin-counts"
COUNTS_SCHEMA_VERSION = 1
Kind = Literal["numeric", "categorical", "score"]
IntArray = npt.NDArray[np.int64]


class CountsError(ValueError):
    """Counts that cannot be merged or read: another baseline, another score column, a bad file."""


def _whole_numbers(values: Any, what: str) -> IntArray:
    """Non-negative integers that fit int64 (JSON ints, not floats or bools), else :class:`CountsError`."""
    if not isinstance(values, list) or not all(type(v) is int and 0 <= v < 2**63 for v in values):
        raise CountsError(f"{what}: must be non-negative whole numbers below 2**63")
    return np.asarray(values, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class BinCounts:
    """Current bin counts per feature (and the score) against one baseline, plus missing counts and rows.

    ``names``/``kinds``/``counts``/``missing`` are parallel, in baseline order with the score last
    (``kind == "score"``, named after its column). Numeric bins are the baseline's right-closed bins;
    categorical bins are the vocabulary, ``__other__`` and ``__unknown__``. ``missing`` counts rows
    whose value was None, NaN or infinite (not binned). Add with ``+``; equality compares values.
    """

    baseline: str  # hex SHA-256 fingerprint of the baseline content
    model_name: str
    model_version: str
    names: tuple[str, ...]
    kinds: tuple[Kind, ...]
    counts: tuple[IntArray, ...]
    missing: tuple[int, ...]
    rows: int
    score_column: str | None = None

    def merge(self, other: BinCounts) -> BinCounts:
        """The counts of both parts together; refuses counts of another baseline or score column."""
        if not isinstance(other, BinCounts):
            raise TypeError(f"cannot merge BinCounts with {type(other).__name__}")
        if other.baseline != self.baseline:
            raise CountsError(
                f"counts of different baselines cannot be merged: {self.model_name} {self.model_version} "
                f"({self.baseline[:12]}) and {other.model_name} {other.model_version} ({other.baseline[:12]})"
            )
        if (other.score_column, other.names) != (self.score_column, self.names):
            raise CountsError(
                "counts with different score columns cannot be merged: "
                f"{self.score_column!r} and {other.score_column!r}"
            )
        if [c.shape for c in other.counts] != [c.shape for c in self.counts] or other.kinds != self.kinds:
            raise CountsError("counts with different bins cannot be merged (a file not written by otel-ml?)")
        return BinCounts(
            self.baseline,
            self.model_name,
            self.model_version,
            self.names,
            self.kinds,
            tuple(a + b for a, b in zip(self.counts, other.counts)),
            tuple(a + b for a, b in zip(self.missing, other.missing)),
            self.rows + other.rows,
            self.score_column,
        )

    __add__ = merge

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BinCounts):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def feature(self, name: str) -> IntArray:
        return self.counts[self.names.index(name)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": COUNTS_SCHEMA,
            "schema_version": COUNTS_SCHEMA_VERSION,
            "baseline": {"fingerprint": self.baseline, "model": self.model_name, "version": self.model_version},
            "rows": self.rows,
            "score_column": self.score_column,
            "features": [
                {"name": n, "kind": k, "counts": c.tolist(), "missing": m}
                for n, k, c, m in zip(self.names, self.kinds, self.counts, self.missing)
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"

    @classmethod
    def from_dict(cls, data: Any) -> BinCounts:
        """Validate and build; raises :class:`CountsError` naming what is wrong."""
        try:
            if data.get("schema") != COUNTS_SCHEMA or data.get("schema_version") != COUNTS_SCHEMA_VERSION:
                raise CountsError(f"not an {COUNTS_SCHEMA} document (version {COUNTS_SCHEMA_VERSION})")
            b, feats = data["baseline"], data["features"]
            counts = tuple(_whole_numbers(f["counts"], f"counts of {f['name']!r}") for f in feats)
            missing = tuple(int(_whole_numbers([f["missing"]], f"missing of {f['name']!r}")[0]) for f in feats)
            rows = int(_whole_numbers([data["rows"]], "rows")[0])
            if any(c.ndim != 1 for c in counts):
                raise CountsError("counts must be flat lists")
            if any(int(c.sum()) + m != rows for c, m in zip(counts, missing)):
                raise CountsError("every feature's counts and missing must add up to rows")
            if any(f["kind"] not in ("numeric", "categorical", "score") for f in feats):
                raise CountsError("a feature's kind must be numeric, categorical or score")
            return cls(
                baseline=str(b["fingerprint"]),
                model_name=str(b["model"]),
                model_version=str(b["version"]),
                names=tuple(str(f["name"]) for f in feats),
                kinds=tuple(f["kind"] for f in feats),
                counts=counts,
                missing=missing,
                rows=rows,
                score_column=data.get("score_column"),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, CountsError):
                raise
            raise CountsError(f"malformed counts document: {exc!r}") from None

    @classmethod
    def from_json(cls, text: str) -> BinCounts:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise CountsError(f"not valid JSON: {exc.msg} at line {exc.lineno}") from None

    def check_baseline(self, baseline: Baseline) -> None:
        """Raise :class:`CountsError` unless these counts were made against ``baseline`` (its
        fingerprint) and have its features and bins (a hand-edited file fails here, not in numpy)."""
        if self.baseline != baseline.fingerprint().hex():
            raise CountsError(
                f"counts were made against another baseline ({self.model_name} {self.model_version}, "
                f"{self.baseline[:12]}) than {baseline.model_name} {baseline.model_version} "
                f"({baseline.fingerprint().hex()[:12]})"
            )
        expected: list[tuple[str, str, int]] = [(f.name, f.kind, f.bin_count) for f in baseline.features]
        if baseline.score is not None and self.score_column is not None:
            expected.append((self.score_column, "score", baseline.score.bin_count))
        got = [(n, k, int(c.size)) for n, k, c in zip(self.names, self.kinds, self.counts)]
        if got != expected or len(self.missing) != len(got):
            raise CountsError("the counts do not have the baseline's features and bins")


def _numeric(columns: Columns, name: str, edges: npt.NDArray[np.float64]) -> tuple[IntArray, int]:
    """Counts of the finite values (the baseline counted finite values only) and the number of
    missing ones (None, NaN, +-inf)."""
    values = columns.floats(name)
    assert values is not None  # checked by the caller
    counts, _, finite = finite_bin_counts(edges, values)
    return counts.astype(np.int64), int(columns.n_rows - finite)


def _arrow_codes(encoder: CategoryEncoder, array: Any) -> npt.NDArray[np.intp] | None:
    """Codes of a pyarrow array via its dictionary: one encoder lookup per distinct value, the
    rest vectorised in Arrow (no Python object per row); None for non-Arrow input."""
    if not hasattr(array, "dictionary_encode") and not hasattr(array, "combine_chunks"):
        return None
    import pyarrow as pa

    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    try:
        encoded = array if pa.types.is_dictionary(array.type) else array.dictionary_encode()
    except pa.ArrowNotImplementedError:  # a type Arrow cannot dictionary-encode: the generic path
        return None
    table = np.fromiter((encoder.code(canonical_label(v)) for v in encoded.dictionary.to_pylist()), dtype=np.intp)
    table = np.append(table, MISSING_CODE)  # index -1 (nulls) maps to missing
    indices = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.intp, copy=False)
    codes: npt.NDArray[np.intp] = table[indices]
    return codes


def _categorical(columns: Columns, profile: CategoricalProfile, arrow: Any) -> tuple[IntArray, int]:
    encoder = CategoryEncoder(profile.vocabulary, profile.rare_values)
    codes = None if arrow is None else _arrow_codes(encoder, arrow)
    if codes is None:
        codes = encoder.encode(columns.raw(profile.name))
    present = codes[codes >= 0]
    return np.bincount(present, minlength=encoder.size).astype(np.int64), int(codes.size - present.size)


def bin_counts(
    baseline: Baseline, data: Any, *, score_column: str | None = None, feature_names: Any = None
) -> BinCounts:
    """Count ``data`` (a pyarrow table or record batch, DataFrame, dict of columns ...) in ``baseline``'s bins.

    Every baseline feature must be a column of ``data``; ``score_column`` adds the score (the
    baseline must have a score profile). ``feature_names`` names the columns of a numpy array
    (default: the baseline's features). Counts of several parts of a data set merge with ``+``
    into the counts of the whole (module docstring).
    """
    names = list(feature_names if feature_names is not None else baseline.feature_names)
    return count_columns(baseline, data, score_column, names, baseline.fingerprint().hex())


def count_columns(
    baseline: Baseline,
    data: Any,
    score_column: str | None,
    feature_names: list[str],
    fingerprint: str,
    pool: Executor | None = None,
) -> BinCounts:
    """:func:`bin_counts` with the baseline's fingerprint computed once by the caller (a stream
    of batches hashes the baseline once, not once per batch). With ``pool`` the columns are
    counted on its threads: numpy's sorts and compares release the GIL, so a 2-core machine
    counts two columns at once while pyarrow decodes the next batch."""
    columns = to_columns(data, feature_names)
    if columns.declared:  # a table's schema answers without converting any column
        have = set(columns.names)
        missing_cols = [f.name for f in baseline.features if f.name not in have]
    else:
        missing_cols = [f.name for f in baseline.features if columns.raw(f.name) is None]
    if missing_cols:
        raise ValueError(f"the data has no column for baseline feature(s) {', '.join(map(repr, missing_cols))}")
    jobs: list[tuple[str, Kind, Any]] = [
        (f.name, "numeric", f.edges_array()) if isinstance(f, NumericProfile) else (f.name, "categorical", f)
        for f in baseline.features
    ]
    if score_column is not None:
        _check_score(baseline, columns, score_column)
        assert baseline.score is not None
        jobs.append((score_column, "score", baseline.score.edges_array()))
    arrow = hasattr(data, "column_names")

    def count(job: tuple[str, Kind, Any]) -> tuple[IntArray, int]:
        name, kind, spec = job
        if kind == "categorical":
            return _categorical(columns, spec, data.column(name) if arrow else None)
        return _numeric(columns, name, spec)

    results = list(pool.map(count, jobs) if pool is not None else map(count, jobs))
    return BinCounts(
        fingerprint,
        baseline.model_name,
        baseline.model_version,
        tuple(j[0] for j in jobs),
        tuple(j[1] for j in jobs),
        tuple(r[0] for r in results),
        tuple(r[1] for r in results),
        int(columns.n_rows),
        score_column,
    )


def _check_score(baseline: Baseline, columns: Columns, score_column: str) -> None:
    if score_column in baseline.feature_names:
        raise ValueError(f"score column {score_column!r} is also a baseline feature")
    if baseline.score is None:
        raise ValueError("the baseline has no score profile (fit it with --score-column to compare scores)")
    if columns.raw(score_column) is None:
        raise ValueError(f"the data has no column {score_column!r}")
