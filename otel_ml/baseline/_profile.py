"""The reference profile: frozen value types and their one JSON file format.

A baseline is what production traffic is compared with: per numeric feature the bin edges and
the training fraction in each bin, per categorical feature the vocabulary and its fractions,
the score's bins, and optionally the decision rate per segment. The app bins live traffic with
these edges and the sidecar compares the live counts with these fractions, so both load the
same file. The format is versioned (``schema_version``) and validated on load; every error
names the offending field, e.g. ``features[2].edges: must be strictly increasing``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from .._atomic import atomic_write
from .._label_hygiene import label_value
from .._names import ALL, OTHER, UNKNOWN

__all__ = [
    "Baseline",
    "BaselineError",
    "CategoricalProfile",
    "NumericProfile",
    "ReferencePerformance",
    "ScoreProfile",
    "SCHEMA",
    "SCHEMA_VERSION",
]

SCHEMA = "otel-ml/baseline"
SCHEMA_VERSION = 1
FRACTION_TOLERANCE = 1e-6


class BaselineError(ValueError):
    """A baseline file or dict that does not follow the schema; the message names the field."""


class _EdgeBins:
    """Bins between sorted ``edges``: ``len(edges) + 1`` right-closed bins, open at both ends."""

    edges: tuple[float, ...]
    fractions: tuple[float, ...]

    @property
    def bin_count(self) -> int:
        return len(self.edges) + 1

    def edges_array(self) -> npt.NDArray[np.float64]:
        return np.asarray(self.edges, dtype=np.float64)

    def fractions_array(self) -> npt.NDArray[np.float64]:
        return np.asarray(self.fractions, dtype=np.float64)


@dataclass(frozen=True)
class NumericProfile(_EdgeBins):
    """A numeric feature: ``len(edges) + 1`` right-closed bins, open at both ends."""

    name: str
    edges: tuple[float, ...]
    fractions: tuple[float, ...]
    count: int
    missing_fraction: float = 0.0
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    kind: Literal["numeric"] = field(default="numeric", init=False)


@dataclass(frozen=True)
class CategoricalProfile:
    """A categorical feature: bins are the vocabulary, ``__other__`` and ``__unknown__``.

    ``fractions`` has one entry per vocabulary value plus ``__other__`` (the rare values seen
    in training, listed in ``rare_values`` up to a cap); ``__unknown__`` has reference zero.
    """

    name: str
    vocabulary: tuple[str, ...]
    fractions: tuple[float, ...]
    count: int
    missing_fraction: float = 0.0
    rare_values: tuple[str, ...] = ()
    kind: Literal["categorical"] = field(default="categorical", init=False)

    @property
    def bin_labels(self) -> tuple[str, ...]:
        return (*self.vocabulary, OTHER, UNKNOWN)

    @property
    def bin_count(self) -> int:
        return len(self.vocabulary) + 2

    def fractions_array(self) -> npt.NDArray[np.float64]:
        """Reference fraction per bin, including a zero for ``__unknown__``."""
        return np.asarray((*self.fractions, 0.0), dtype=np.float64)


@dataclass(frozen=True)
class ReferencePerformance:
    """Reference performance on the binned, labelled reference, and its spread over chunks.

    ``value[metric]`` is the metric on the whole reference, computed as the sidecar computes it
    from counts (ROC AUC on the score bins; precision, recall, F1 and accuracy at the served
    rule); ``stddev[metric]`` its standard deviation over disjoint chunks of ``chunk_size``
    labelled rows, the spread the reference band scales to a window
    (:func:`otel_ml.evaluation.reference_band`).
    """

    value: Mapping[str, float]
    stddev: Mapping[str, float]
    chunk_size: int
    chunks: int


@dataclass(frozen=True)
class ScoreProfile(_EdgeBins):
    """The model score's bins, its reference decision rates and, when fitted with labels, its performance.

    ``decision_rates[segment_key][segment_value][decision]`` is the training-time share of
    each decision; the key and value ``__all__`` hold the overall rates. ``decision_threshold``
    is ``t`` when the decision is ``score > t`` (``t`` is then one of the edges, so ``le=t``
    splits the decisions exactly). ``calibration`` is the positive rate per score bin
    (``len(edges) + 1`` values, monotone, see :func:`otel_ml.evaluation.bin_calibration`) of the
    ``labelled_count`` rows whose label was known; ``positive_label`` names the positive class.
    """

    edges: tuple[float, ...]
    fractions: tuple[float, ...]
    count: int
    decision_rates: Mapping[str, Mapping[str, Mapping[str, float]]] = field(default_factory=dict)
    decision_threshold: float | None = None
    calibration: tuple[float, ...] | None = None
    positive_label: str | None = None
    labelled_count: int = 0
    performance: ReferencePerformance | None = None

    @property
    def first_positive_bin(self) -> int | None:
        """The first bin the served rule ``score > decision_threshold`` predicts positive, if known."""
        if self.decision_threshold is None:
            return None
        return self.edges.index(self.decision_threshold) + 1

    def calibration_array(self) -> npt.NDArray[np.float64] | None:
        return None if self.calibration is None else np.asarray(self.calibration, dtype=np.float64)


FeatureProfile = NumericProfile | CategoricalProfile


@dataclass(frozen=True)
class Baseline:
    """A fitted reference profile for one model version. Load it with :meth:`Baseline.load`."""

    model_name: str
    model_version: str
    features: tuple[FeatureProfile, ...]
    row_count: int
    score: ScoreProfile | None = None
    created: str = ""
    library_version: str = ""
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise BaselineError(f"features: duplicate feature names {dup}")

    # -- lookups -----------------------------------------------------------------------------
    @property
    def numeric(self) -> tuple[NumericProfile, ...]:
        return tuple(f for f in self.features if isinstance(f, NumericProfile))

    @property
    def categorical(self) -> tuple[CategoricalProfile, ...]:
        return tuple(f for f in self.features if isinstance(f, CategoricalProfile))

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def feature(self, name: str) -> FeatureProfile:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    # -- file format ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "schema_version": self.schema_version,
            "model": {"name": self.model_name, "version": self.model_version},
            "created": self.created,
            "library_version": self.library_version,
            "row_count": self.row_count,
            "features": [_feature_to_dict(f) for f in self.features],
            "score": None if self.score is None else _score_to_dict(self.score),
        }

    @classmethod
    def from_dict(cls, data: Any) -> Baseline:
        """Build and validate; raises :class:`BaselineError` naming the first bad field."""
        return _parse_baseline(data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, allow_nan=False) + "\n"

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the JSON atomically (temporary file in the same directory, then rename)."""
        data = self.to_json().encode("utf-8")
        return atomic_write(path, lambda fh: fh.write(data))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Baseline:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise BaselineError(f"{path}: cannot read baseline file: {exc.strerror}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BaselineError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}") from exc
        try:
            return cls.from_dict(data)
        except BaselineError as exc:
            raise BaselineError(f"{path}: {exc}") from None


def _feature_to_dict(f: FeatureProfile) -> dict[str, Any]:
    common: dict[str, Any] = {"name": f.name, "type": f.kind, "count": f.count, "missing_fraction": f.missing_fraction}
    if isinstance(f, NumericProfile):
        common.update(
            edges=list(f.edges),
            fractions=list(f.fractions),
            summary={"mean": f.mean, "std": f.std, "min": f.min, "max": f.max},
        )
    else:
        common.update(vocabulary=list(f.vocabulary), fractions=list(f.fractions), rare_values=list(f.rare_values))
    return common


def _score_to_dict(s: ScoreProfile) -> dict[str, Any]:
    out: dict[str, Any] = {
        "edges": list(s.edges),
        "fractions": list(s.fractions),
        "count": s.count,
        "decision_rates": {k: {v: dict(d) for v, d in vals.items()} for k, vals in s.decision_rates.items()},
    }
    # Fields added with labelled baselines: written only when set, so an unlabelled fit's file is unchanged.
    if s.decision_threshold is not None:
        out["decision_threshold"] = s.decision_threshold
    if s.calibration is not None:
        out.update(calibration=list(s.calibration), positive_label=s.positive_label, labelled_count=s.labelled_count)
    if s.performance is not None:
        p = s.performance
        out["performance"] = {
            "chunk_size": p.chunk_size,
            "chunks": p.chunks,
            "metrics": {m: {"value": p.value[m], "stddev": p.stddev[m]} for m in p.value},
        }
    return out


class _Field:
    """Reads one JSON object and says which field is wrong, with its path."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, Mapping):
            raise BaselineError(f"{path or 'baseline'}: expected an object, got {type(data).__name__}")
        self.data = data
        self.path = path

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, kinds: type | tuple[type, ...], *, default: Any = ..., nullable: bool = False) -> Any:
        if key not in self.data:
            if default is ...:
                raise BaselineError(f"{self.where(key)}: missing")
            return default
        value = self.data[key]
        if value is None and nullable:
            return None
        if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
            raise BaselineError(f"{self.where(key)}: expected {_kind_name(kinds)}, got a boolean")
        if not isinstance(value, kinds):
            raise BaselineError(f"{self.where(key)}: expected {_kind_name(kinds)}, got {type(value).__name__}")
        return value

    def string(self, key: str, *, default: Any = ...) -> str:
        value = self.get(key, str, default=default)
        if key in self.data and not value:
            raise BaselineError(f"{self.where(key)}: must not be empty")
        return str(value)

    def count(self, key: str) -> int:
        value = self.get(key, int)
        if value < 0:
            raise BaselineError(f"{self.where(key)}: must be >= 0, got {value}")
        return int(value)

    def fraction(self, key: str, *, default: Any = ...) -> float:
        value = float(self.get(key, (int, float), default=default))
        if not 0.0 <= value <= 1.0:
            raise BaselineError(f"{self.where(key)}: must be a fraction in [0, 1], got {value}")
        return value

    def floats(self, key: str) -> tuple[float, ...]:
        values = self.get(key, list)
        for i, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise BaselineError(f"{self.where(key)}[{i}]: expected a finite number, got {v!r}")
        return tuple(float(v) for v in values)

    def strings(self, key: str, *, default: Any = ...) -> tuple[str, ...]:
        values = self.get(key, list, default=default)
        for i, v in enumerate(values):
            if not isinstance(v, str):
                raise BaselineError(f"{self.where(key)}[{i}]: expected a string, got {v!r}")
        return tuple(label_value(v) for v in values)  # labels: exposition-safe, as fit makes them


def _kind_name(kinds: type | tuple[type, ...]) -> str:
    names = {
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
        bool: "a boolean",
    }
    if isinstance(kinds, tuple):
        return " or ".join(names.get(k, k.__name__) for k in kinds)
    return names.get(kinds, kinds.__name__)


def _check_edges(edges: tuple[float, ...], where: str) -> None:
    if any(b <= a for a, b in zip(edges, edges[1:])):
        raise BaselineError(f"{where}: must be strictly increasing")


def _check_fractions(fractions: tuple[float, ...], expected: int, where: str, count: int) -> None:
    total = 1.0 if count else sum(fractions)  # a profile of no rows has no fractions to sum to 1
    if len(fractions) != expected:
        raise BaselineError(f"{where}: expected {expected} values (one per bin), got {len(fractions)}")
    if any(not 0.0 <= f <= 1.0 for f in fractions):
        raise BaselineError(f"{where}: every fraction must be in [0, 1]")
    if fractions and abs(sum(fractions) - total) > FRACTION_TOLERANCE * max(1, len(fractions)):
        raise BaselineError(f"{where}: fractions must sum to 1, got {sum(fractions):.8f}")


def _parse_feature(data: Any, path: str) -> FeatureProfile:
    f = _Field(data, path)
    kind = f.get("type", str)
    name = f.string("name")
    count = f.count("count")
    missing = f.fraction("missing_fraction", default=0.0)
    if kind == "numeric":
        edges = f.floats("edges")
        _check_edges(edges, f.where("edges"))
        fractions = f.floats("fractions")
        _check_fractions(fractions, len(edges) + 1, f.where("fractions"), count)
        summary = _Field(f.get("summary", dict, default={}), f.where("summary"))
        stats = {k: summary.get(k, (int, float), default=None, nullable=True) for k in ("mean", "std", "min", "max")}
        return NumericProfile(name, edges, fractions, count, missing, **stats)
    if kind == "categorical":
        vocabulary = f.strings("vocabulary")
        if len(set(vocabulary)) != len(vocabulary):
            raise BaselineError(f"{f.where('vocabulary')}: values must be unique")
        reserved = {OTHER, UNKNOWN} & set(vocabulary)
        if reserved:
            raise BaselineError(f"{f.where('vocabulary')}: {sorted(reserved)} are reserved labels")
        fractions = f.floats("fractions")
        _check_fractions(fractions, len(vocabulary) + 1, f.where("fractions"), count)
        rare = f.strings("rare_values", default=[])
        return CategoricalProfile(name, vocabulary, fractions, count, missing, rare)
    raise BaselineError(f"{f.where('type')}: must be 'numeric' or 'categorical', got {kind!r}")


def _parse_score(data: Any, path: str) -> ScoreProfile:
    f = _Field(data, path)
    edges = f.floats("edges")
    _check_edges(edges, f.where("edges"))
    count = f.count("count")
    fractions = f.floats("fractions")
    _check_fractions(fractions, len(edges) + 1, f.where("fractions"), count)
    rates_raw = _Field(f.get("decision_rates", dict, default={}), f.where("decision_rates"))
    rates: dict[str, dict[str, dict[str, float]]] = {}
    for key, values in rates_raw.data.items():
        per_key = _Field(values, rates_raw.where(key))
        rates[key] = {}
        for value, decisions in per_key.data.items():
            per_value = _Field(decisions, per_key.where(value))
            shares = {d: per_value.fraction(d) for d in per_value.data}
            if shares and abs(sum(shares.values()) - 1.0) > FRACTION_TOLERANCE * len(shares):
                raise BaselineError(f"{per_value.path}: decision rates must sum to 1")
            rates[key][value] = shares
    if rates and ALL not in rates:
        raise BaselineError(f"{f.where('decision_rates')}: must include the overall rates under {ALL!r}")
    threshold = f.get("decision_threshold", (int, float), default=None, nullable=True)
    if threshold is not None:
        threshold = float(threshold)
        if threshold not in edges:
            raise BaselineError(f"{f.where('decision_threshold')}: {threshold!r} must be one of the score edges")
    calibration = None
    if f.get("calibration", list, default=None, nullable=True) is not None:
        calibration = f.floats("calibration")
        if len(calibration) != len(edges) + 1:
            raise BaselineError(
                f"{f.where('calibration')}: expected {len(edges) + 1} values (one per bin), got {len(calibration)}"
            )
        if any(not 0.0 <= q <= 1.0 for q in calibration):
            raise BaselineError(f"{f.where('calibration')}: every value must be a positive rate in [0, 1]")
    positive = f.get("positive_label", str, default=None, nullable=True)
    if calibration is not None and not positive:
        raise BaselineError(f"{f.where('positive_label')}: a calibration needs the positive label it counts")
    labelled = f.count("labelled_count") if "labelled_count" in f.data else 0
    if labelled > count:
        raise BaselineError(f"{f.where('labelled_count')}: {labelled} labelled rows of {count} scored")
    perf_raw = f.get("performance", dict, default=None, nullable=True)
    performance = None if perf_raw is None else _parse_performance(perf_raw, f.where("performance"))
    if performance is not None and calibration is None:
        raise BaselineError(f"{f.where('performance')}: reference performance needs the calibration it was fitted with")
    return ScoreProfile(
        edges,
        fractions,
        count,
        rates,
        decision_threshold=threshold,
        calibration=calibration,
        positive_label=None if positive is None else label_value(positive),
        labelled_count=labelled,
        performance=performance,
    )


PERFORMANCE_METRICS = ("roc_auc", "precision", "recall", "f1", "accuracy")  # as otel_ml.evaluation, unimported


def _parse_performance(data: Any, path: str) -> ReferencePerformance:
    f = _Field(data, path)
    chunk_size = f.count("chunk_size")
    chunks = f.count("chunks")
    if chunk_size < 1 or chunks < 2:
        raise BaselineError(f"{path}: needs chunk_size >= 1 and chunks >= 2, got {chunk_size} and {chunks}")
    metrics = _Field(f.get("metrics", dict), f.where("metrics"))
    value: dict[str, float] = {}
    stddev: dict[str, float] = {}
    for name, entry in metrics.data.items():
        if name not in PERFORMANCE_METRICS:
            raise BaselineError(f"{metrics.where(name)}: unknown metric, expected one of {list(PERFORMANCE_METRICS)}")
        m = _Field(entry, metrics.where(name))
        value[name] = m.fraction("value")
        spread = float(m.get("stddev", (int, float)))
        if not 0.0 <= spread <= 1.0:
            raise BaselineError(f"{m.where('stddev')}: must be in [0, 1], got {spread}")
        stddev[name] = spread
    return ReferencePerformance(value, stddev, chunk_size, chunks)


def _parse_baseline(data: Any) -> Baseline:
    top = _Field(data, "")
    schema = top.get("schema", str)
    if schema != SCHEMA:
        raise BaselineError(f"schema: expected {SCHEMA!r}, got {schema!r}")
    version = top.get("schema_version", int)
    if version != SCHEMA_VERSION:
        raise BaselineError(
            f"schema_version: this otel-ml reads version {SCHEMA_VERSION}, the file has {version}; "
            "refit the baseline or upgrade otel-ml"
        )
    model = _Field(top.get("model", dict), "model")
    features_raw: Sequence[Any] = top.get("features", list)
    features = tuple(_parse_feature(item, f"features[{i}]") for i, item in enumerate(features_raw))
    names = [f.name for f in features]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise BaselineError(f"features[{i}].name: duplicate feature name {n!r}")
    score_raw = top.get("score", dict, default=None, nullable=True)
    return Baseline(
        model_name=label_value(model.string("name")),  # a label on /metrics: exposition-safe
        model_version=label_value(model.string("version")),
        features=features,
        row_count=top.count("row_count"),
        score=None if score_raw is None else _parse_score(score_raw, "score"),
        created=top.get("created", str, default=""),
        library_version=top.get("library_version", str, default=""),
        schema_version=version,
    )
