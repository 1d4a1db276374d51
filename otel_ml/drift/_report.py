"""Drift of a table of current data against a :class:`~otel_ml.baseline.Baseline`, per feature.

The current data is binned exactly as the app bins live traffic (right-closed numeric bins from
the baseline's edges; categorical bins are the vocabulary, ``__other__`` and ``__unknown__``),
then every feature goes through one vectorised :func:`compare` call, so the offline report and
the sidecar's gauges are the same numbers. A baseline keeps bin fractions, not raw values, so
the two-sample KS test and the Wasserstein distance (numeric features and the score) need
``reference_data``, the raw training table; without it they are ``None``.

``alpha`` is family-wise: the probability that a drift-free table gets *any* drift verdict
over all its features (and the score). Each feature's critical value is taken at
``alpha / features`` (Bonferroni, which flags a table exactly when Holm would; see
:mod:`otel_ml.drift._multiplicity`); ``multiplicity="per_series"`` tests each at ``alpha``.
The level used is in each :class:`FeatureDrift` (``alpha``) and on the CLI's table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from .._binning import CategoryEncoder, finite_bin_counts
from .._frame import Columns, to_columns
from .._names import DRIFT_STATUS_DRIFT, DRIFT_STATUS_INSUFFICIENT, DRIFT_STATUS_OK, DRIFT_STATUS_WARN
from ..baseline._profile import Baseline, CategoricalProfile, NumericProfile
from ._compare import Critical, DriftResult, compare
from ._multiplicity import Multiplicity, family_alpha
from ._stats import ks_wasserstein, pad_bins
from ._verdict import DEFAULT_ALPHA, DEFAULT_DRIFT_THRESHOLD, DEFAULT_WARN_THRESHOLD, status_name

__all__ = ["DriftReport", "FeatureDrift", "REPORT_SCHEMA", "drift_report"]

REPORT_SCHEMA = "otel-ml/drift-report"
REPORT_SCHEMA_VERSION = 1

FloatArray = npt.NDArray[np.float64]
Kind = Literal["numeric", "categorical", "score"]


@dataclass(frozen=True)
class FeatureDrift:
    """Drift numbers for one feature (or the score); NaN where there was no current data."""

    name: str
    kind: Kind
    count: int
    missing_ratio: float
    psi: float
    psi_critical: float
    js_distance: float
    hellinger: float
    pvalue: float
    status: int
    bins: int
    unknown_ratio: float | None = None
    alpha: float | None = None  # the level of psi_critical after the multiplicity correction
    ks_statistic: float | None = None
    ks_pvalue: float | None = None
    wasserstein: float | None = None

    @property
    def verdict(self) -> str:
        return status_name(self.status)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN becomes ``None`` (JSON has no NaN)."""
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "verdict": self.verdict,
            "status": self.status,
            "count": self.count,
            "bins": self.bins,
        }
        for key in (
            "missing_ratio",
            "unknown_ratio",
            "psi",
            "psi_critical",
            "alpha",
            "js_distance",
            "hellinger",
            "pvalue",
            "ks_statistic",
            "ks_pvalue",
            "wasserstein",
        ):
            out[key] = _json_float(getattr(self, key))
        return out


def _json_float(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass(frozen=True)
class DriftReport:
    """Per-feature drift of one data set against a baseline, with the settings that produced it."""

    model_name: str
    model_version: str
    row_count: int
    reference_row_count: int
    features: tuple[FeatureDrift, ...]
    alpha: float
    warn_threshold: float
    drift_threshold: float
    multiplicity: Multiplicity = "holm"

    @property
    def status(self) -> int:
        """The worst verdict over all features (drift > warn > ok > insufficient data)."""
        order = (DRIFT_STATUS_DRIFT, DRIFT_STATUS_WARN, DRIFT_STATUS_OK, DRIFT_STATUS_INSUFFICIENT)
        present = {f.status for f in self.features}
        return next((s for s in order if s in present), DRIFT_STATUS_INSUFFICIENT)

    @property
    def verdict(self) -> str:
        return status_name(self.status)

    def names_with(self, verdict: str) -> tuple[str, ...]:
        """Feature names with this verdict (``"drift"``, ``"warn"``, ...), in baseline order."""
        return tuple(f.name for f in self.features if f.verdict == verdict)

    def feature(self, name: str) -> FeatureDrift:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": REPORT_SCHEMA,
            "schema_version": REPORT_SCHEMA_VERSION,
            "model": {"name": self.model_name, "version": self.model_version},
            "row_count": self.row_count,
            "reference_row_count": self.reference_row_count,
            "alpha": self.alpha,
            "multiplicity": self.multiplicity,
            "thresholds": {"warn": self.warn_threshold, "drift": self.drift_threshold},
            "verdict": self.verdict,
            "features": [f.to_dict() for f in self.features],
        }


@dataclass(frozen=True)
class _Binned:
    name: str
    kind: Kind
    reference: FloatArray
    reference_count: int
    counts: FloatArray
    rows: int
    unknown_ratio: float | None
    sample: FloatArray | None  # current values (non-finite ones included), for KS and Wasserstein


def _column(columns: Columns, name: str, what: str) -> Any:
    raw = columns.raw(name)
    if raw is None:
        raise ValueError(f"{what} has no column {name!r}")
    return raw


def _bin_numeric(
    name: str, kind: Kind, edges: FloatArray, fractions: FloatArray, count: int, columns: Columns
) -> _Binned:
    values = columns.floats(name)
    assert values is not None  # checked by the caller
    counts, _, _ = finite_bin_counts(edges, values)  # the baseline counted finite values only
    return _Binned(name, kind, fractions, count, counts.astype(np.float64), columns.n_rows, None, values)


def _bin_categorical(profile: CategoricalProfile, columns: Columns) -> _Binned:
    encoder = CategoryEncoder(profile.vocabulary, profile.rare_values)
    codes = encoder.encode(columns.raw(profile.name))
    present = codes[codes >= 0]
    counts = np.bincount(present, minlength=encoder.size).astype(np.float64)
    unknown = float(counts[encoder.unknown_code] / present.size) if present.size else math.nan
    return _Binned(
        profile.name, "categorical", profile.fractions_array(), profile.count, counts, columns.n_rows, unknown, None
    )


def drift_report(
    baseline: Baseline,
    data: Any,
    *,
    score_column: str | None = None,
    reference_data: Any = None,
    alpha: float = DEFAULT_ALPHA,
    warn: float = DEFAULT_WARN_THRESHOLD,
    drift: float = DEFAULT_DRIFT_THRESHOLD,
    min_count: int | None = None,
    critical: Critical = "auto",
    feature_names: Any = None,
    multiplicity: Multiplicity = "holm",
) -> DriftReport:
    """Compare ``data`` (DataFrame, pyarrow table, dict of columns, ...) with ``baseline``.

    Every baseline feature must be a column of ``data``; the score is included when
    ``score_column`` names it (the baseline must then have a score profile). Missing values
    (None, NaN, inf) are not counted in the bins; their share is ``missing_ratio``. With
    ``reference_data`` (the raw training data), numeric features and the score also get the
    two-sample KS test and the Wasserstein distance; columns it lacks get ``None``.
    ``alpha`` is family-wise over the features and the score (module docstring). The other
    options are those of :func:`compare`.
    """
    names = feature_names if feature_names is not None else list(baseline.feature_names)
    columns = to_columns(data, names)
    binned = _bin_all(baseline, columns, score_column)
    level = family_alpha(alpha, len(binned), multiplicity)
    result = compare(
        pad_bins([b.reference for b in binned]),
        pad_bins([b.counts for b in binned]),
        np.array([b.reference_count for b in binned], dtype=np.float64),
        alpha=level,
        warn=warn,
        drift=drift,
        min_count=min_count,
        critical=critical,
    )
    raw_reference = _raw_reference(reference_data, names, binned)
    return DriftReport(
        model_name=baseline.model_name,
        model_version=baseline.model_version,
        row_count=columns.n_rows,
        reference_row_count=baseline.row_count,
        features=tuple(_feature_drift(i, b, result, raw_reference.get(b.name), level) for i, b in enumerate(binned)),
        alpha=alpha,
        warn_threshold=warn,
        drift_threshold=drift,
        multiplicity=multiplicity,
    )


def _bin_all(baseline: Baseline, columns: Columns, score_column: str | None) -> list[_Binned]:
    """The current counts of every baseline feature (and the score), in the baseline's bins."""
    missing = [f.name for f in baseline.features if columns.raw(f.name) is None]
    if missing:
        raise ValueError(f"the data has no column for baseline feature(s) {', '.join(map(repr, missing))}")
    binned: list[_Binned] = []
    for f in baseline.features:
        if isinstance(f, NumericProfile):
            binned.append(_bin_numeric(f.name, "numeric", f.edges_array(), f.fractions_array(), f.count, columns))
        else:
            binned.append(_bin_categorical(f, columns))
    if score_column is not None:
        if score_column in baseline.feature_names:
            raise ValueError(f"score column {score_column!r} is also a baseline feature")
        if baseline.score is None:
            raise ValueError("the baseline has no score profile (fit it with --score-column to compare scores)")
        _column(columns, score_column, "the data")
        s = baseline.score
        binned.append(_bin_numeric(score_column, "score", s.edges_array(), s.fractions_array(), s.count, columns))
    return binned


def _feature_drift(
    i: int, b: _Binned, result: DriftResult, ref_sample: FloatArray | None, alpha: float
) -> FeatureDrift:
    """One feature's row of the report; KS and Wasserstein when the raw reference sample is there."""
    ks: tuple[float | None, float | None] = (None, None)
    w: float | None = None
    if ref_sample is not None and b.sample is not None:
        d, p, w = ks_wasserstein(ref_sample, b.sample)  # one sort per sample for both
        ks = (d, p)
    count = int(result.count[i])
    return FeatureDrift(
        name=b.name,
        kind=b.kind,
        count=count,
        missing_ratio=1.0 - count / b.rows if b.rows else math.nan,
        psi=float(result.psi[i]),
        psi_critical=float(result.psi_critical[i]),
        js_distance=float(result.js_distance[i]),
        hellinger=float(result.hellinger[i]),
        pvalue=float(result.pvalue[i]),
        status=int(result.status[i]),
        bins=int(b.reference.size),
        unknown_ratio=b.unknown_ratio,
        alpha=alpha,
        ks_statistic=ks[0],
        ks_pvalue=ks[1],
        wasserstein=w,
    )


def _raw_reference(reference_data: Any, names: Any, binned: list[_Binned]) -> Mapping[str, FloatArray]:
    """Raw reference values per numeric column that ``reference_data`` has (KS drops non-finite ones)."""
    if reference_data is None:
        return {}
    columns = to_columns(reference_data, names)
    out: dict[str, FloatArray] = {}
    for b in binned:
        if b.sample is None:
            continue
        values = columns.floats(b.name)
        if values is not None:
            out[b.name] = values
    return out
