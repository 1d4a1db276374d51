"""What a replay found, as frozen values: per model version, per feature, and the JSON document.

One :class:`SkewReport` per replay holds a :class:`VersionSkew` per model version in the capture
(a push is per version too). ``to_dict`` is the ``--json`` document: stable keys, sorted where
order carries no meaning, no NaN (``null`` instead). ``--fail-on`` checks are evaluated per
version: a gate fails when any version exceeds a threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from .. import _names as n

__all__ = [
    "DEFAULT_ATOL",
    "DEFAULT_RTOL",
    "FAIL_ON_CHECKS",
    "REPORT_SCHEMA",
    "FailOn",
    "FeatureSkew",
    "FlipCount",
    "ScoreDifference",
    "SkewReport",
    "VersionSkew",
    "WorstRow",
    "parse_fail_on",
]

DEFAULT_RTOL: Final = 1e-6
DEFAULT_ATOL: Final = 1e-9
REPORT_SCHEMA: Final = "otel-ml/skew-report"
FAIL_ON_CHECKS: Final = ("flips", "mismatch", "rows_with_mismatch", "errors")


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


@dataclass(frozen=True)
class FeatureSkew:
    """One feature's comparison: values compared and the count of each result."""

    name: str
    counts: Mapping[str, int]  # every name of n.SKEW_RESULTS

    @property
    def compared(self) -> int:
        return sum(self.counts.values())

    @property
    def not_matching(self) -> int:
        return self.compared - self.counts[n.SKEW_MATCH]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "compared": self.compared, **{r: self.counts[r] for r in n.SKEW_RESULTS}}


@dataclass(frozen=True)
class FlipCount:
    """Rows and decision flips of one segment value (``__all__``/``__all__``: every row)."""

    key: str
    segment: str
    rows: int
    flips: Mapping[str, int]  # "<served>_to_<replayed>" -> rows

    @property
    def total(self) -> int:
        return sum(self.flips.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "segment": self.segment,
            "rows": self.rows,
            "flips": self.total,
            "by_flip": dict(sorted(self.flips.items())),
        }


@dataclass(frozen=True)
class ScoreDifference:
    """Replayed minus served score over the rows where both are finite."""

    count: int
    mean: float | None
    p50_abs: float | None
    p90_abs: float | None
    p99_abs: float | None
    max_abs: float | None
    bucket_bounds: tuple[float, ...]
    bucket_counts: tuple[int, ...]  # cumulative, per bound, then +Inf (== count)
    total: float  # the sum of the differences (the histogram's _sum)

    def to_dict(self) -> dict[str, Any]:
        les = [*(format(b, "g") for b in self.bucket_bounds), "+Inf"]
        return {
            "count": self.count,
            "mean": _finite(self.mean),
            "p50_abs": _finite(self.p50_abs),
            "p90_abs": _finite(self.p90_abs),
            "p99_abs": _finite(self.p99_abs),
            "max_abs": _finite(self.max_abs),
            "sum": _finite(self.total),
            "buckets": [{"le": le, "count": c} for le, c in zip(les, self.bucket_counts)],
        }


@dataclass(frozen=True)
class WorstRow:
    """A row with one of the largest score differences, and its non-matching features."""

    request_id: str
    served_score: float | None
    replayed_score: float | None
    features: tuple[tuple[str, str, Any, Any], ...]  # name, result, served, replayed

    @property
    def delta(self) -> float | None:
        if self.served_score is None or self.replayed_score is None:
            return None
        return _finite(self.replayed_score - self.served_score)

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "served_score": _finite(self.served_score),
            "replayed_score": _finite(self.replayed_score),
            "delta": self.delta,
            "features": [
                {"name": f, "result": r, "served": _json_value(s), "replayed": _json_value(t)}
                for f, r, s, t in self.features
            ],
        }


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


@dataclass(frozen=True)
class VersionSkew:
    """The replay of one model version."""

    model: str
    version: str
    tags: Mapping[str, str]
    decision_rule: str | None  # how replayed decisions were made; None: flips not computed
    rows_read: int  # usable rows of this version (after duplicates)
    rows: int  # rows the pipeline and the model both ran on
    rows_compared: int  # rows whose features were compared (the pipeline ran)
    rows_with_mismatch: int  # compared rows with any non-matching feature
    features: tuple[FeatureSkew, ...]
    skipped_features: tuple[str, ...]
    flips: tuple[FlipCount, ...]  # __all__ first, then each header segment key's values
    score_difference: ScoreDifference
    errors: Mapping[str, int]  # every stage of n.SKEW_STAGES
    error_examples: tuple[tuple[str, str, str], ...]
    worst: tuple[WorstRow, ...]
    declared_features: tuple[str, ...] = ()  # the capture header's feature names: always pushed by name

    @property
    def flips_total(self) -> int | None:
        return None if self.decision_rule is None else self.flips[0].total

    @property
    def flip_ratio(self) -> float | None:
        total = self.flips_total
        return None if total is None or self.rows == 0 else total / self.rows

    @property
    def values_compared(self) -> int:
        return sum(f.compared for f in self.features)

    @property
    def mismatch_ratio(self) -> float:
        compared = self.values_compared
        return 0.0 if compared == 0 else sum(f.not_matching for f in self.features) / compared

    @property
    def rows_with_mismatch_ratio(self) -> float:
        return 0.0 if self.rows_compared == 0 else self.rows_with_mismatch / self.rows_compared

    def feature(self, name: str) -> FeatureSkew:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def check(self, name: str) -> float | None:
        """The value a ``--fail-on`` check compares with its threshold; ``None`` when it cannot be
        computed (no decision rule, or no row compared: a pipeline raising on every row)."""
        if name == "flips":
            return self.flip_ratio
        if name in ("mismatch", "rows_with_mismatch") and self.rows_compared == 0:
            return None
        if name == "mismatch":
            return self.mismatch_ratio
        if name == "rows_with_mismatch":
            return self.rows_with_mismatch_ratio
        return float(sum(self.errors.values()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "tags": dict(sorted(self.tags.items())),
            "decision_rule": self.decision_rule,
            "rows_read": self.rows_read,
            "rows": self.rows,
            "rows_compared": self.rows_compared,
            "rows_with_mismatch": self.rows_with_mismatch,
            "values_compared": self.values_compared,
            "mismatch_ratio": self.mismatch_ratio,
            "flips": self.flips_total,
            "flip_ratio": self.flip_ratio,
            "features": [f.to_dict() for f in self.features],
            "skipped_features": list(self.skipped_features),
            "flips_by_segment": [f.to_dict() for f in self.flips] if self.decision_rule is not None else [],
            "score_difference": self.score_difference.to_dict(),
            "errors": {s: self.errors[s] for s in n.SKEW_STAGES},
            "error_examples": [{"stage": s, "request_id": r, "error": e} for s, r, e in self.error_examples],
            "worst": [w.to_dict() for w in self.worst],
        }


@dataclass(frozen=True)
class FailOn:
    """One ``--fail-on NAME=THRESHOLD`` gate: fails when a version's value exceeds the threshold."""

    name: str
    threshold: float


def parse_fail_on(specs: Sequence[str]) -> tuple[FailOn, ...]:
    """``["flips=0.01", "errors=0"]`` as gates; ``ValueError`` naming the bad one."""
    out = []
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or name not in FAIL_ON_CHECKS:
            raise ValueError(
                f"--fail-on {spec!r}: expected NAME=THRESHOLD with NAME one of {', '.join(FAIL_ON_CHECKS)}"
            )
        try:
            threshold = float(value)
        except ValueError:
            raise ValueError(f"--fail-on {spec!r}: {value!r} is not a number") from None
        if not threshold >= 0.0:
            raise ValueError(f"--fail-on {spec!r}: the threshold must be >= 0")
        out.append(FailOn(name, threshold))
    return tuple(out)


@dataclass(frozen=True)
class SkewReport:
    """A replay of a capture directory: one :class:`VersionSkew` per model version in it."""

    capture: str
    files: int
    rtol: float
    atol: float
    baseline: str | None
    versions: tuple[VersionSkew, ...]
    duplicates: int = 0
    duplicate_ids: tuple[str, ...] = ()
    unreadable: tuple[tuple[str, int, str], ...] = ()
    notes: tuple[str, ...] = ()
    finished: float = 0.0  # unix time the replay finished
    gates: tuple[FailOn, ...] = field(default=())

    def version(self, model: str, version: str) -> VersionSkew:
        for v in self.versions:
            if (v.model, v.version) == (model, version):
                return v
        raise KeyError((model, version))

    def gate_results(self, gates: Sequence[FailOn] | None = None) -> list[dict[str, Any]]:
        """Each gate on each version: its value, and whether it fails (a ``None`` value, not
        computable because nothing was replayed, fails: a CI gate must not pass on no evidence)."""
        out = []
        for gate in self.gates if gates is None else gates:
            for v in self.versions:
                value = v.check(gate.name)
                out.append(
                    {
                        "check": gate.name,
                        "threshold": gate.threshold,
                        "model": v.model,
                        "version": v.version,
                        "value": value,
                        "failed": value is None or value > gate.threshold,  # not computable: a gate fails closed
                    }
                )
        return out

    def failed(self, gates: Sequence[FailOn] | None = None) -> bool:
        return any(r["failed"] for r in self.gate_results(gates))

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": REPORT_SCHEMA,
            "schema_version": 1,
            "capture": self.capture,
            "files": self.files,
            "rtol": self.rtol,
            "atol": self.atol,
            "baseline": self.baseline,
            "duplicates": {"count": self.duplicates, "ids": list(self.duplicate_ids)},
            "unreadable": [{"file": f, "line": line, "why": why} for f, line, why in self.unreadable],
            "notes": list(self.notes),
            "finished": self.finished,
            "versions": [v.to_dict() for v in self.versions],
            "fail_on": self.gate_results(),
            "failed": self.failed(),
        }
