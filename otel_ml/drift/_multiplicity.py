"""Family-wise error control: one page budget per model and window, not per series.

With 40 segment tests at alpha = 0.01 each, some test fails on a third of clean windows. Holm's
step-down method keeps the probability of *any* false rejection in a family at or below alpha
for any dependence between the tests: sort the m p-values, multiply the k-th smallest by
``m - k + 1`` and make the result non-decreasing. Holm pages on exactly the windows Bonferroni
(``alpha / m`` for each test) pages on; it only adds further series once one has paged. So the
drift verdict, which compares PSI with a critical value rather than a p-value, uses the
Bonferroni level per feature (:func:`family_alpha`) and gives the same "page or not" as Holm.
``per_series`` turns the correction off (each series at alpha, the behaviour before 0.x).
"""

from __future__ import annotations

from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

__all__ = ["MULTIPLICITY", "Multiplicity", "family_alpha", "holm"]

FloatArray = npt.NDArray[np.float64]
Multiplicity = Literal["holm", "bonferroni", "per_series"]
MULTIPLICITY: Final = ("holm", "bonferroni", "per_series")


def check_multiplicity(value: str) -> Multiplicity:
    if value not in MULTIPLICITY:
        raise ValueError(f"multiplicity must be one of {', '.join(MULTIPLICITY)}, got {value!r}")
    return value  # type: ignore[return-value]


def family_alpha(alpha: float, size: int, multiplicity: Multiplicity = "holm") -> float:
    """The per-series level that keeps a family of ``size`` tests at ``alpha`` (Bonferroni)."""
    check_multiplicity(multiplicity)
    if multiplicity == "per_series" or size <= 1:
        return alpha
    return alpha / size


def holm(pvalues: Any, multiplicity: Multiplicity = "holm", axis: int = -1) -> FloatArray:
    """Holm-adjusted p-values along ``axis`` (each row a family); NaN entries are not tested.

    Reject where the adjusted p-value is below alpha. ``bonferroni`` multiplies by the family
    size, ``per_series`` returns the p-values unchanged. Vectorised: one sort per call.
    """
    check_multiplicity(multiplicity)
    p = np.moveaxis(np.asarray(pvalues, dtype=np.float64), axis, -1)
    if multiplicity == "per_series":
        return np.moveaxis(p.copy(), -1, axis)
    tested = ~np.isnan(p)
    m = tested.sum(axis=-1, keepdims=True).astype(np.float64)
    if multiplicity == "bonferroni":
        out = np.where(tested, np.minimum(p * m, 1.0), np.nan)
        return np.moveaxis(out, -1, axis)
    order = np.argsort(np.where(tested, p, np.inf), axis=-1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=-1)
    k = np.arange(p.shape[-1], dtype=np.float64)
    scaled = np.minimum(np.nan_to_num(ranked, nan=1.0) * np.maximum(m - k, 1.0), 1.0)
    adjusted_sorted = np.maximum.accumulate(scaled, axis=-1)
    out = np.empty_like(p)
    np.put_along_axis(out, order, adjusted_sorted, axis=-1)
    return np.moveaxis(np.where(tested, out, np.nan), -1, axis)
