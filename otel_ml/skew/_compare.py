"""Served vs training-pipeline feature values, one feature at a time, vectorized over rows.

A column is classified once (numbers, missing, anything else); numbers are compared with
``numpy.isclose`` over the whole column, and only pairs where a side is not a number (categories,
booleans) go through the canonical label identity of ``otel_ml._frame`` (one call per value of
those columns only). A differing pair is a ``bin_change`` when it crosses a baseline bin: the
numeric edges with the app's searchsorted side, or the categorical vocabulary bucket.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from .. import _names as n
from .._binning import CategoryEncoder, bin_index
from .._frame import canonical_label

__all__ = ["Column", "RESULT_CODE", "column", "compare_feature"]

RESULT_CODE: Final = {name: code for code, name in enumerate(n.SKEW_RESULTS)}
MATCH: Final = RESULT_CODE[n.SKEW_MATCH]
MISMATCH: Final = RESULT_CODE[n.SKEW_MISMATCH]
MISSING_SERVING: Final = RESULT_CODE[n.SKEW_MISSING_SERVING]
MISSING_TRAINING: Final = RESULT_CODE[n.SKEW_MISSING_TRAINING]
BIN_CHANGE: Final = RESULT_CODE[n.SKEW_BIN_CHANGE]

BoolArray = npt.NDArray[np.bool_]
_NUMBER_TYPES: Final = (float, int, np.float64, np.float32, np.int64, np.int32, np.int16, np.int8, np.uint8)


def _boxed(value: Any) -> npt.NDArray[Any]:
    """A 0-d object array holding ``value``: ``array == np.float64`` (the type) would be read as a dtype."""
    box = np.empty((), dtype=object)
    box[()] = value
    return box


_NUMBER_BOXES: Final = tuple(_boxed(t) for t in _NUMBER_TYPES)
_NONE_TYPE: Final = _boxed(type(None))
_PLAIN: Final = frozenset({float, int, np.float64, type(None)})
_type_of = np.frompyfunc(type, 1, 1)
_canonical = np.frompyfunc(canonical_label, 1, 1)
_pandas_missing = np.frompyfunc(lambda t: t.__name__ in ("NAType", "NaTType"), 1, 1)  # one call per type


@dataclass(frozen=True)
class Column:
    """One side of a feature: floats (NaN where not a number), which values are numbers, which
    are missing (absent, null, NaN), and the values themselves when not all are numbers."""

    floats: npt.NDArray[np.float64]
    numeric: BoolArray
    missing: BoolArray
    objects: npt.NDArray[Any] | None  # None: every value is a number or missing NaN

    def labels(self, at: npt.NDArray[np.intp]) -> npt.NDArray[Any]:
        """Canonical labels of the values at ``at`` (``None`` for a missing one)."""
        values = self.floats[at].astype(object) if self.objects is None else self.objects[at]
        return np.asarray(_canonical(values), dtype=object).reshape(-1)


def column(values: Sequence[Any]) -> Column:
    """Classify a feature's values. When every value is a plain number or None (one pass over the
    value types, in C) the floats are read with ``np.fromiter`` and nothing else is done per value;
    otherwise (strings, booleans, numpy scalars mixed in) each value's type is looked at."""
    if set(map(type, values)) <= _PLAIN:
        try:
            floats = np.fromiter(values, dtype=np.float64, count=len(values))  # None -> NaN: missing either way
        except OverflowError:  # an int beyond float range (JSON numbers have no limit): the object path
            return _object_column(values)
        missing = np.isnan(floats)
        return Column(floats, ~missing, missing, None)
    return _object_column(values)


def _float_or_inf(value: Any) -> float:
    """``float(value)``, or the infinity of its sign for an int beyond float range."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _object_column(values: Sequence[Any]) -> Column:
    objects = np.fromiter(values, dtype=object, count=len(values))
    types = _type_of(objects)
    numeric = np.zeros(objects.size, dtype=bool)
    for kind in _NUMBER_BOXES:  # a loop per type, each a vectorized compare
        numeric |= np.asarray(types == kind, dtype=bool)
    floats = np.full(objects.size, np.nan)
    if numeric.any():
        try:
            floats[numeric] = objects[numeric].astype(np.float64)
        except OverflowError:  # an int beyond float range: a number that no float equals
            floats[numeric] = [_float_or_inf(v) for v in objects[numeric]]  # rare: this column only
    nan = np.isnan(floats) & numeric
    missing = np.asarray(types == _NONE_TYPE, dtype=bool) | nan
    other = np.flatnonzero(~numeric & ~missing)
    if other.size:  # pandas' missing values (pd.NA, pd.NaT) from a pipeline built on pandas
        missing[other[np.asarray(_pandas_missing(types[other]), dtype=bool)]] = True
    return Column(floats, numeric & ~nan, missing, objects)


def compare_feature(
    served: Column, trained: Column, *, rtol: float, atol: float, profile: Any = None
) -> npt.NDArray[np.int8]:
    """The result code (index into ``n.SKEW_RESULTS``) of every row of one feature."""
    codes = np.zeros(served.floats.size, dtype=np.int8)
    codes[served.missing & ~trained.missing] = MISSING_SERVING
    codes[~served.missing & trained.missing] = MISSING_TRAINING
    present = ~served.missing & ~trained.missing
    both_numbers = present & served.numeric & trained.numeric
    with np.errstate(invalid="ignore", over="ignore"):
        differ = both_numbers & ~np.isclose(served.floats, trained.floats, rtol=rtol, atol=atol)
    other = np.flatnonzero(present & ~both_numbers)
    if other.size:
        differ[other[served.labels(other) != trained.labels(other)]] = True
    at = np.flatnonzero(differ)
    codes[at] = MISMATCH
    if profile is not None and at.size:
        codes[at[_crosses_bin(served, trained, at, profile)]] = BIN_CHANGE
    return codes


def _crosses_bin(served: Column, trained: Column, at: npt.NDArray[np.intp], profile: Any) -> BoolArray:
    """Which differing pairs at ``at`` fall in different baseline bins."""
    if getattr(profile, "kind", None) == "numeric":
        numbers = served.numeric[at] & trained.numeric[at]
        edges = profile.edges_array()
        crossed = bin_index(edges, served.floats[at]) != bin_index(edges, trained.floats[at])
        return np.asarray(numbers & crossed, dtype=bool)
    encoder = CategoryEncoder(profile.vocabulary, profile.rare_values)
    a = _bucket(encoder, served.labels(at))
    b = _bucket(encoder, trained.labels(at))
    return np.asarray(a != b, dtype=bool)


def _bucket(encoder: CategoryEncoder, labels: npt.NDArray[Any]) -> npt.NDArray[np.intp]:
    """Vocabulary index, or ``__other__`` for every value outside the vocabulary."""
    codes = encoder.encode(labels)
    codes[codes == encoder.unknown_code] = encoder.other_code
    return codes
