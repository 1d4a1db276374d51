"""Turn what a predict function receives into named numpy columns.

A model is called with one row (a mapping), a batch (a pandas DataFrame, a pyarrow table, a
dict of columns, a list of mappings, a numpy array) or anything else a user passes. Both the
baseline fitter and the instrumentation need the same thing from all of them: "give me
feature ``x`` as a float array" and "give me feature ``c`` as strings". Columnar inputs are
converted column by column with numpy; only the error path looks at single values.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from ._label_hygiene import label_value


def _pandas() -> Any:
    """pandas, if installed and already in use by the app: it only makes factorizing object
    columns faster, so it is never imported just for that (the sidecar stays small)."""
    return sys.modules.get("pandas")


__all__ = [
    "Columns",
    "InputMismatch",
    "REASON_FEATURE_COUNT",
    "REASON_MISSING_FEATURE",
    "to_columns",
    "as_float",
    "as_labels",
    "canonical_label",
    "factorize",
    "is_single_row",
    "missing_columns",
]

# Why an input could not be matched to the baseline's features (the ``error_type`` value of
# ``ml_instrumentation_errors_total``, next to exception class names).
REASON_FEATURE_COUNT: Final = "feature_count_mismatch"
REASON_MISSING_FEATURE: Final = "missing_feature"


class InputMismatch(TypeError):
    """The input's columns cannot be matched to the expected features by name.

    ``reason`` is one of the ``REASON_*`` labels; ``n_rows`` is how many rows the input has
    (so predictions can still be counted when features cannot be attributed).
    """

    def __init__(self, reason: str, message: str, n_rows: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.n_rows = n_rows


FloatArray = npt.NDArray[np.float64]
_SEQUENCE_TYPES = (list, tuple, np.ndarray)


def _safe_float(value: Any) -> float:
    try:
        out = float(value)
    except Exception:  # any user object's __float__ may raise anything: not a number
        return math.nan
    return out


_safe_float_u = np.frompyfunc(_safe_float, 1, 1)


def as_float(values: Any) -> FloatArray:
    """Convert a column to float64; anything that is not a number becomes NaN (counted as missing)."""
    arr = np.asarray(values)
    if arr.dtype.kind in "fiub":
        return arr.astype(np.float64, copy=False).reshape(-1)
    try:
        return np.asarray(arr, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError, OverflowError):
        # Mixed garbage (e.g. "n/a" among numbers): the slow path only runs for bad input.
        return np.asarray(_safe_float_u(arr.reshape(-1)), dtype=np.float64)


def factorize(values: Any) -> tuple[npt.NDArray[np.intp], list[str | None]]:
    """Codes into a list of distinct labels; missing values (None, NaN) get their own ``None`` label.

    pandas' hash-based ``factorize`` does this in C when pandas is installed; without it numpy's
    sort-based ``unique`` serves typed arrays and only object arrays fall back to a dict pass.
    """
    arr = np.asarray(values)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    arr = arr.reshape(-1)
    if arr.dtype.kind == "b":
        return arr.astype(np.intp), ["false", "true"]
    pd = _pandas()
    if arr.dtype.kind in "iuUST" or (arr.dtype.kind == "f" and pd is None):
        uniq, codes = np.unique(arr, return_inverse=True)
        return _merged(codes.reshape(-1), [_label_of(u) for u in uniq.tolist()])
    if pd is not None:
        raw_codes, raw_uniq = pd.factorize(arr, use_na_sentinel=False)
        split_codes, split_uniq = _split_bools(arr, np.asarray(raw_codes, dtype=np.intp), list(raw_uniq))
        return _merged(split_codes, [_label_of(u) for u in split_uniq])
    seen: dict[Any, int] = {}
    codes = np.fromiter((seen.setdefault(_key(v), len(seen)) for v in arr), dtype=np.intp, count=arr.size)
    return _merged(codes, [_label_of(u) for u in seen])


def _split_bools(arr: npt.NDArray[Any], codes: npt.NDArray[np.intp], uniq: list[Any]) -> tuple[Any, list[Any]]:
    """Hashing says ``True == 1``: give the booleans of an object column their own codes again."""
    suspicious = [i for i, u in enumerate(uniq) if _is_number(u) and u in (0, 1)]
    if not suspicious:
        return codes, uniq
    at = np.flatnonzero(np.isin(codes, suspicious))
    is_bool = np.frompyfunc(lambda v: isinstance(v, (bool, np.bool_)), 1, 1)(arr[at]).astype(bool)
    if is_bool.all() or not is_bool.any():
        return codes, uniq  # all booleans, or no booleans: nothing was merged
    codes = codes.copy()
    codes[at[is_bool]] = len(uniq) + arr[at[is_bool]].astype(bool).astype(np.intp)
    # what is left under a boolean's code are the numbers 0/1 it swallowed
    uniq = [int(u) if i in suspicious else u for i, u in enumerate(uniq)] + [False, True]
    return codes, uniq


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number, np.bool_))


def _merged(codes: npt.NDArray[np.intp], labels: list[str | None]) -> tuple[npt.NDArray[np.intp], list[str | None]]:
    """One code per distinct *label*: ``True`` and ``"true"``, or ``1`` and ``"1"``, are one category."""
    first: dict[str | None, int] = {}
    table = np.fromiter((first.setdefault(lab, len(first)) for lab in labels), dtype=np.intp, count=len(labels))
    if len(first) == len(labels):
        return codes, labels
    return table[codes], list(first)


def as_labels(values: Any) -> npt.NDArray[np.object_]:
    """Convert a column to label strings; None and NaN become None (counted as missing).

    Booleans become ``"true"``/``"false"`` (the Prometheus/OTel convention), so a decision
    computed as ``score > 0.7`` has the same label in the app, the baseline and the sidecar.
    """
    codes, labels = factorize(values)
    return np.asarray(labels + [None], dtype=object)[codes]


def _key(value: Any) -> Any:
    if isinstance(value, (bool, np.bool_)):  # True == 1 for a dict: key booleans by their label
        return "true" if value else "false"
    try:
        hash(value)
    except TypeError:
        return repr(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


_BOOL_SPELLINGS: Final = {"true": "true", "false": "false"}
_INTEGRAL_DECIMAL = re.compile(r"[+-]?[0-9]+\.0*")


def canonical_label(value: Any) -> str | None:
    """The one category identity of a value, the same at fit, in the app and in the CLI.

    Booleans and their spellings (``True``, ``"TRUE"``, ``"false"``, numpy and pandas
    booleans) are ``"true"``/``"false"``; numbers are their shortest decimal form with integral
    values as integers (``1``, ``1.0``, ``"1.0"`` and ``"1"`` are all ``"1"``); other strings
    are kept as they are (``"01234"`` stays a zip code). None, NaN, inf and pandas NA are
    missing (``None``).
    """
    if isinstance(value, str):
        return _canonical_str(value)
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return None
        return repr(float(value)) if not float(value).is_integer() else str(int(value))
    if isinstance(value, bytes):
        return _canonical_str(value.decode("utf-8", "replace"))
    if type(value).__name__ in ("NAType", "NaTType"):  # pandas.NA / NaT, without importing pandas
        return None
    return label_value(str(value))


def _canonical_str(value: str) -> str:
    lowered = _BOOL_SPELLINGS.get(value.lower()) if len(value) in (4, 5) else None
    if lowered is not None:
        return lowered
    if "." in value and len(value) < 400 and _INTEGRAL_DECIMAL.fullmatch(value):  # "1.0", "-3.00": the integer
        whole = value.split(".", 1)[0]
        digits = whole.lstrip("+-")
        if digits == digits.lstrip("0") or digits.strip("0") == "":  # keep "01.0" as written
            return str(int(whole))
    return label_value(value)  # exposition-safe: a lone surrogate must not break /metrics


_label_of = canonical_label


class Columns:
    """Named columns of one call's input; absent columns return ``None``.

    ``declared`` is true when ``names`` is the input's own schema (a DataFrame's columns, a
    dict of columns, a named array): a feature missing from it is a mismatch, not a missing value.
    """

    __slots__ = ("n_rows", "_get", "names", "declared")

    def __init__(self, n_rows: int, getter: Any, names: Sequence[str] = (), declared: bool = False) -> None:
        self.n_rows = n_rows
        self._get = getter
        self.names = tuple(names)  # column names in input order, when the input has them
        self.declared = declared

    def raw(self, name: str) -> Any:
        """The column as the input holds it, or ``None`` when the input has no such column."""
        return self._get(name)

    def floats(self, name: str) -> FloatArray | None:
        raw = self._get(name)
        return None if raw is None else as_float(raw)


def _is_pandas(data: Any) -> bool:
    return type(data).__module__.startswith("pandas") and hasattr(data, "columns")


def _is_arrow(data: Any) -> bool:
    return type(data).__module__.startswith("pyarrow") and hasattr(data, "column_names")


def to_columns(data: Any, feature_names: Sequence[str] | None = None) -> Columns:
    """Wrap a row or batch as :class:`Columns`.

    ``feature_names`` names the positions of a numpy array or a list of lists (by default the
    baseline's feature order). Raises ``TypeError`` for inputs that carry no named features.
    """
    if _is_pandas(data):
        lookup = {str(c): c for c in data.columns}
        return Columns(
            len(data),
            lambda n: _pandas_column(data[lookup[n]]) if n in lookup else None,
            names=list(lookup),
            declared=True,
        )
    if _is_arrow(data):
        names = set(data.column_names)
        return Columns(
            data.num_rows,
            lambda n: data.column(n).to_numpy(zero_copy_only=False) if n in names else None,
            names=data.column_names,
            declared=True,
        )
    if isinstance(data, Mapping):
        return _from_mapping(data)
    if isinstance(data, np.ndarray):
        return _from_array(data, feature_names)
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        if len(data) == 0:
            return Columns(0, lambda n: None)
        if all(isinstance(r, Mapping) for r in data):
            return _from_rows(data)
        return _from_array(np.asarray(data, dtype=object), feature_names)
    raise TypeError(f"cannot read features from {type(data).__name__}")


def _pandas_column(series: Any) -> Any:
    """A pandas column as numpy; nullable numeric (``Int64``, ``Float64``) columns stay numeric
    with NaN for NA, nullable booleans become True/False/None (not ``pd.NA`` objects)."""
    dtype = series.dtype
    if isinstance(dtype, np.dtype):
        return series.to_numpy()
    kind = getattr(dtype, "kind", "O")
    if kind in "iuf":
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    if kind == "b":
        return series.to_numpy(dtype=object, na_value=None)
    return series.to_numpy()


def missing_columns(columns: Columns, expected: Sequence[str]) -> list[str]:
    """Expected features absent from an input that declares its columns (none for rows)."""
    if not columns.declared or columns.n_rows == 0:
        return []
    have = set(columns.names)
    return [name for name in expected if name not in have]


def is_single_row(data: Any) -> bool:
    """True for one row given as a mapping of scalars; a mapping of sequences is a batch of columns."""
    if not isinstance(data, Mapping):
        return False
    first = next(iter(data.values()), None)
    return not (isinstance(first, _SEQUENCE_TYPES) or hasattr(first, "to_numpy"))


def _from_mapping(data: Mapping[str, Any]) -> Columns:
    if not is_single_row(data):
        lengths = {len(v) for v in data.values() if hasattr(v, "__len__")}
        n = lengths.pop() if len(lengths) == 1 else 0
        if lengths:
            raise TypeError("columns of a dict batch have different lengths")
        return Columns(n, lambda name: data.get(name), names=list(data), declared=True)

    def one(name: str) -> Any:
        return [data[name]] if name in data else None

    return Columns(1, one, names=list(data))


def _from_rows(rows: Sequence[Mapping[str, Any]]) -> Columns:
    keys: dict[str, None] = {}
    for r in rows:
        keys.update(dict.fromkeys(r))

    def column(name: str) -> Any:
        if name not in keys:
            return None
        # A list of dicts is Python objects already; building a column is one pass over them.
        return [r.get(name) for r in rows]

    return Columns(len(rows), column, names=list(keys))


def _from_array(arr: npt.NDArray[Any], feature_names: Sequence[str] | None) -> Columns:
    if arr.dtype.names:  # structured array
        fields = set(arr.dtype.names)
        return Columns(len(arr), lambda n: arr[n] if n in fields else None, names=arr.dtype.names, declared=True)
    if feature_names is None:
        raise TypeError("a numpy array needs feature names (pass feature_names= or a baseline)")
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise TypeError(f"expected a 2-D array of rows x features, got {arr.ndim} dimensions")
    if arr.shape[1] != len(feature_names):
        # Never bin by position into the wrong features: without a name per column nothing is attributable.
        raise InputMismatch(
            REASON_FEATURE_COUNT,
            f"an array of {arr.shape[1]} columns for {len(feature_names)} feature names; "
            "pass feature_names= naming every column",
            arr.shape[0],
        )
    position = {n: i for i, n in enumerate(feature_names)}
    return Columns(
        arr.shape[0], lambda n: arr[:, position[n]] if n in position else None, list(position), declared=True
    )
