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

from .._frame import Columns, to_columns
from .._names import DRIFT_STATUS_DRIFT, DRIFT_STATUS_INSUFFICIENT, DRIFT_STATUS_OK, DRIFT_STATUS_WARN
from ..baseline._profile import Baseline
from ._compare import Critical, DriftResult, compare
from ._counts import BinCounts, bin_counts
from ._multiplicity import Multiplicity, family_alpha
from ._stats import ks_wasserstein, pad_bins
from ._verdict import DEFAULT_ALPHA, DEFAULT_DRIFT_THRESHOLD, DEFAULT_WARN_THRESHOLD, status_name

__all__ = ["DriftReport", "FeatureDrift", "REPORT_SCHEMA", "drift_report", "report_from_counts"]

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


def _reference_of(baseline: Baseline, name: str, kind: Kind) -> tuple[FloatArray, int]:
    """The baseline's fractions and reference count for one entry of the counts."""
    if kind == "score":
        assert baseline.score is not None
        return baseline.score.fractions_array(), baseline.score.count
    profile = baseline.feature(name)
    return profile.fractions_array(), profile.count


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
    options are those of :func:`compare`. This is :func:`bin_counts` then
    :func:`report_from_counts`, the same two steps a streaming or distributed run takes.
    """
    names = feature_names if feature_names is not None else list(baseline.feature_names)
    counts = bin_counts(baseline, data, score_column=score_column, feature_names=names)
    samples = None
    if reference_data is not None:
        current = _finite_samples(to_columns(data, names), counts)
        reference = _finite_samples(to_columns(reference_data, names), counts)
        samples = {n: (reference[n], current[n]) for n in current if n in reference}
    return report_from_counts(
        baseline,
        counts,
        alpha=alpha,
        warn=warn,
        drift=drift,
        min_count=min_count,
        critical=critical,
        multiplicity=multiplicity,
        samples=samples,
    )


def report_from_counts(
    baseline: Baseline,
    counts: BinCounts,
    *,
    alpha: float = DEFAULT_ALPHA,
    warn: float = DEFAULT_WARN_THRESHOLD,
    drift: float = DEFAULT_DRIFT_THRESHOLD,
    min_count: int | None = None,
    critical: Critical = "auto",
    multiplicity: Multiplicity = "holm",
    samples: Mapping[str, tuple[FloatArray, FloatArray]] | None = None,
) -> DriftReport:
    """The drift report of (merged) :class:`BinCounts`: one vectorised :func:`compare` over all features.

    ``samples`` maps a numeric feature (or the score column) to finite (reference, current) raw
    values for KS and Wasserstein; features without one get ``None`` there. Raises
    :class:`~otel_ml.drift.CountsError` when the counts were made against another baseline.
    """
    counts.check_baseline(baseline)
    refs = [_reference_of(baseline, n, k) for n, k in zip(counts.names, counts.kinds)]
    level = family_alpha(alpha, len(refs), multiplicity)
    result = compare(
        pad_bins([r for r, _ in refs]),
        pad_bins([c.astype(np.float64) for c in counts.counts]),
        np.array([n for _, n in refs], dtype=np.float64),
        alpha=level,
        warn=warn,
        drift=drift,
        min_count=min_count,
        critical=critical,
    )
    features = tuple(
        _feature_drift(i, counts, refs[i][0].size, result, (samples or {}).get(counts.names[i]), level)
        for i in range(len(refs))
    )
    return DriftReport(
        model_name=baseline.model_name,
        model_version=baseline.model_version,
        row_count=counts.rows,
        reference_row_count=baseline.row_count,
        features=features,
        alpha=alpha,
        warn_threshold=warn,
        drift_threshold=drift,
        multiplicity=multiplicity,
    )


def _feature_drift(
    i: int,
    counts: BinCounts,
    bins: int,
    result: DriftResult,
    sample: tuple[FloatArray, FloatArray] | None,
    alpha: float,
) -> FeatureDrift:
    """One feature's row of the report; KS and Wasserstein when raw samples of both sides are given."""
    ks: tuple[float | None, float | None] = (None, None)
    w: float | None = None
    kind = counts.kinds[i]
    if sample is not None and kind != "categorical":
        d, p, w = ks_wasserstein(sample[0], sample[1])  # one sort per sample for both
        ks = (d, p)
    unknown: float | None = None
    if kind == "categorical":
        c = counts.counts[i]
        unknown = float(c[-1] / c.sum()) if c.sum() else math.nan  # __unknown__ is the last bin
    count = int(result.count[i])
    return FeatureDrift(
        name=counts.names[i],
        kind=kind,
        count=count,
        missing_ratio=1.0 - count / counts.rows if counts.rows else math.nan,
        psi=float(result.psi[i]),
        psi_critical=float(result.psi_critical[i]),
        js_distance=float(result.js_distance[i]),
        hellinger=float(result.hellinger[i]),
        pvalue=float(result.pvalue[i]),
        status=int(result.status[i]),
        bins=bins,
        unknown_ratio=unknown,
        alpha=alpha,
        ks_statistic=ks[0],
        ks_pvalue=ks[1],
        wasserstein=w,
    )


def _finite_samples(columns: Columns, counts: BinCounts) -> dict[str, FloatArray]:
    """Finite raw values per numeric column (and the score) that ``columns`` has."""
    out: dict[str, FloatArray] = {}
    for name, kind in zip(counts.names, counts.kinds):
        if kind == "categorical":
            continue
        values = columns.floats(name)
        if values is not None:
            out[name] = values[np.isfinite(values)]
    return out
