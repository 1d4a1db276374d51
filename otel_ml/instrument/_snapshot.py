"""What a scrape or an export reads: a consistent copy of one model's counts, and its layout.

:class:`CounterLayout` says what each counter array means (written as JSON into every
multiprocess counter file, so a reader in another process can rebuild the counts);
:func:`snapshot_of` turns arrays plus their label vocabulary into a :class:`CountsSnapshot`,
and :func:`merge_snapshots` sums the snapshots of several processes by label string.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from .._names import (
    ATTR_DECISION,
    ATTR_ERROR_TYPE,
    ATTR_FALLBACK_REASON,
    ATTR_FEATURE_PREFIX,
    ATTR_FLIP,
    ATTR_SEGMENT_PREFIX,
    OTHER,
    SHADOW_DIFFERENCE_BUCKETS,
    SHADOW_DROP_REASONS,
)
from ._multiproc import Spec
from ._usage import (
    CaptureCounts,
    ReviewCounts,
    UsageCounts,
    capture_of,
    merge_capture,
    merge_review,
    merge_usage,
    review_of,
    usage_of,
    usage_specs,
)

__all__ = ["CounterLayout", "CountsSnapshot", "by_label", "merge_snapshots", "offsets", "snapshot_of", "specs_of"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class CountsSnapshot:
    """A consistent copy of one model's counters, taken under the lock at scrape/export time."""

    model_name: str
    model_version: str
    numeric_names: tuple[str, ...]
    numeric_edges: tuple[tuple[float, ...], ...]
    numeric_bins: tuple[IntArray, ...]  # per feature, per-bin (not cumulative) counts
    numeric_sums: FloatArray
    categorical_names: tuple[str, ...]
    categorical_labels: tuple[tuple[str, ...], ...]
    categorical_bins: tuple[IntArray, ...]
    missing: Mapping[str, int]
    score_edges: tuple[float, ...]
    score_bins: IntArray
    score_sum: float
    predictions: tuple[tuple[str, str, str, int], ...]  # segment key, segment, decision, count
    duration_edges: tuple[float, ...]
    duration_bins: IntArray
    duration_sum: float
    errors: Mapping[str, int]
    fallbacks: Mapping[str, int]
    instrumentation_errors: Mapping[str, int]
    overflow: Mapping[str, int]
    # a shadow version's comparison with its primary (shadow_of: the primary's version; None: not a shadow)
    shadow_of: str | None = None
    shadow_pairs: tuple[tuple[str, str, str, int], ...] = ()  # segment key, segment, flip, count
    shadow_difference_bins: IntArray | None = None  # per bin of SHADOW_DIFFERENCE_BUCKETS
    shadow_difference_sum: float = 0.0
    shadow_dropped: Mapping[str, int] = field(default_factory=dict)  # every reason, zeros included
    usage: UsageCounts = field(default_factory=UsageCounts)  # CPU time, costs, tokens, prices
    review: ReviewCounts | None = None  # review sampling per stratum (None: the model samples none)
    capture: CaptureCounts | None = None  # the skew capture spool (None: the model captures nothing)


def _split(flat: IntArray, offsets: Sequence[int]) -> tuple[IntArray, ...]:
    return tuple(flat[a:b].copy() for a, b in zip(offsets[:-1], offsets[1:]))


def offsets(sizes: Sequence[int]) -> npt.NDArray[np.intp]:
    return np.concatenate(([0], np.cumsum(sizes, dtype=np.int64))).astype(np.intp)


@dataclass(frozen=True)
class CounterLayout:
    """What the counter arrays of one model mean: everything a reader in another process needs.

    Written as JSON in each multiprocess counter file; its digest decides which files may be summed.
    """

    model_name: str
    model_version: str
    numeric_names: tuple[str, ...]
    numeric_edges: tuple[tuple[float, ...], ...]
    categorical_names: tuple[str, ...]
    categorical_labels: tuple[tuple[str, ...], ...]  # the encoders' labels (vocabulary, other, unknown)
    categorical_other: tuple[int, ...]  # index of ``__other__`` within each feature's labels
    categorical_rare: tuple[tuple[str, ...], ...]  # values the baseline folds into ``__other__``
    score_edges: tuple[float, ...]
    duration_edges: tuple[float, ...]
    segment_keys: tuple[str, ...]  # ``__all__`` first
    segment_budget: int
    decision_budget: int
    error_budget: int
    shadow_of: str | None = None  # a shadow's primary version: the layout has the comparison arrays
    flip_budget: int = 0
    # the segment key whose values split costs (``_usage``); None: costs per model only
    cost_segment: str | None = None
    # human-review sampling: the review bins' edges and the segment key of the strata (None: __all__)
    review_edges: tuple[float, ...] | None = None
    review_segment: str | None = None
    # the skew capture spool's counters (None: the model captures nothing)
    capture: bool | None = None

    def segment_slots(self, key: str | None) -> int:
        """Slots of one segment key's values (its budget and ``__other__``); 1 for no key (``__all__``)."""
        return 1 if key is None else self.segment_budget + 1

    def specs(self) -> list[Spec]:
        """The arrays, in file order: name, dtype code, shape."""
        bins = sum(len(e) + 1 for e in self.numeric_edges)
        cats = sum(len(c) for c in self.categorical_labels)
        slots = (self.error_budget + 1,)
        return [
            ("bins", "i8", (bins,)),
            ("sums", "f8", (len(self.numeric_names),)),
            ("categories", "i8", (cats,)),
            ("missing", "i8", (len(self.numeric_names) + len(self.categorical_names),)),
            ("score_bins", "i8", (len(self.score_edges) + 1,)),
            ("scalars", "f8", (2,)),  # score sum, duration sum
            ("predictions", "i8", (len(self.segment_keys), self.segment_budget + 1, self.decision_budget + 1)),
            ("duration_bins", "i8", (len(self.duration_edges) + 1,)),
            ("errors", "i8", slots),
            ("fallbacks", "i8", slots),
            ("instrumentation", "i8", slots),
            *self._shadow_specs(),
            *usage_specs(self),
        ]

    def _shadow_specs(self) -> list[Spec]:
        """A shadow's comparison arrays; none for an ordinary model, which pays nothing for them."""
        if self.shadow_of is None:
            return []
        pairs = (len(self.segment_keys), self.segment_budget + 1, self.flip_budget + 1)
        return [
            ("shadow_pairs", "i8", pairs),
            ("shadow_difference", "i8", (len(SHADOW_DIFFERENCE_BUCKETS) + 1,)),
            ("shadow_scalars", "f8", (1,)),  # sum of the differences
            ("shadow_dropped", "i8", (len(SHADOW_DROP_REASONS),)),
        ]

    def to_json(self) -> dict[str, Any]:
        """The layout as JSON; the keys of an option not in use (a shadow's, a cost segment, review)
        are left out, so the files and digest of a model without them stay as they were."""
        out = {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}
        for group in _OPTIONAL_KEYS:
            if getattr(self, group[0]) is None:
                for key in group:
                    del out[key]
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CounterLayout:
        """Rebuild a layout written by :meth:`to_json`; ``ValueError`` when it is not one."""
        names = {f.name for f in fields(cls)}
        if not isinstance(data, Mapping) or not (
            set(data) <= names and names - set(data) <= frozenset().union(*_OPTIONAL_KEYS)
        ):
            raise ValueError("not a counter layout of this otel-ml version")
        layout = cls(**{f.name: _frozen(data[f.name]) for f in fields(cls) if f.name in data})
        if layout.to_json() != dict(data):
            raise ValueError("counter layout has values of the wrong type")
        return layout


# options whose keys a layout JSON has only when the option is used (the first key says whether)
_OPTIONAL_KEYS = (
    ("shadow_of", "flip_budget"),
    ("cost_segment",),
    ("review_edges", "review_segment"),
    ("capture",),
)


def _jsonable(value: Any) -> Any:
    return [_jsonable(v) for v in value] if isinstance(value, tuple) else value


def _frozen(value: Any) -> Any:
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


def specs_of(layout: Mapping[str, Any]) -> list[Spec]:
    """Array specs of a JSON layout (the reader's entry point); ``ValueError`` if it is not one."""
    return CounterLayout.from_json(layout).specs()


def by_label(slots: IntArray, labels: Sequence[str], budget: int) -> dict[str, int]:
    """Nonzero slots keyed by label; a slot whose label is not published yet waits for the next read."""
    out: dict[str, int] = {}
    for i in np.flatnonzero(slots).tolist():
        if i == budget:
            out[OTHER] = out.get(OTHER, 0) + int(slots[i])
        elif i < len(labels):
            out[labels[i]] = out.get(labels[i], 0) + int(slots[i])
    return out


def _label_of(labels: Sequence[str], budget: int, i: int) -> str | None:
    if i == budget:
        return OTHER
    return labels[i] if i < len(labels) else None


def _prediction_rows(
    layout: CounterLayout, predictions: IntArray, segments: Sequence[Sequence[str]], decisions: Sequence[str]
) -> tuple[tuple[str, str, str, int], ...]:
    rows = []
    for k, s, d in np.argwhere(predictions > 0).tolist():
        budget = 1 if k == 0 else layout.segment_budget
        segment = _label_of(segments[k] if k < len(segments) else (), budget, s)
        decision = _label_of(decisions, layout.decision_budget, d)
        if segment is not None and decision is not None:  # else: label not published yet, next read
            rows.append((layout.segment_keys[k], segment, decision, int(predictions[k, s, d])))
    return tuple(rows)


def snapshot_of(layout: CounterLayout, arrays: Mapping[str, Any], vocab: Mapping[str, Any]) -> CountsSnapshot:
    """The snapshot of one set of counter arrays (copies) and its label vocabulary."""
    predictions = arrays["predictions"]
    cats = arrays["categories"]
    cat_offsets = offsets([len(c) for c in layout.categorical_labels])
    overflow = {
        ATTR_SEGMENT_PREFIX + key: int(predictions[k, layout.segment_budget, :].sum())
        for k, key in enumerate(layout.segment_keys[1:], start=1)
    }
    overflow[ATTR_DECISION] = int(predictions[0, 0, layout.decision_budget])
    overflow[ATTR_ERROR_TYPE] = int(arrays["errors"][layout.error_budget])
    overflow[ATTR_FALLBACK_REASON] = int(arrays["fallbacks"][layout.error_budget])
    for j, name in enumerate(layout.categorical_names):
        overflow[ATTR_FEATURE_PREFIX + name] = int(cats[cat_offsets[j] + layout.categorical_other[j]])
    shadow = _shadow_fields(layout, arrays, vocab)
    if layout.shadow_of is not None:
        overflow[ATTR_FLIP] = int(arrays["shadow_pairs"][0, 0, layout.flip_budget])
    scalars = arrays["scalars"].tolist()
    feature_names = layout.numeric_names + layout.categorical_names
    return CountsSnapshot(
        model_name=layout.model_name,
        model_version=layout.model_version,
        numeric_names=layout.numeric_names,
        numeric_edges=layout.numeric_edges,
        numeric_bins=_split(arrays["bins"], offsets([len(e) + 1 for e in layout.numeric_edges]).tolist()),
        numeric_sums=arrays["sums"],
        categorical_names=layout.categorical_names,
        categorical_labels=layout.categorical_labels,
        categorical_bins=_split(cats, cat_offsets.tolist()),
        missing=dict(zip(feature_names, arrays["missing"].tolist())),
        score_edges=layout.score_edges,
        score_bins=arrays["score_bins"],
        score_sum=scalars[0],
        predictions=_prediction_rows(layout, predictions, vocab.get("segments", ()), vocab.get("decisions", ())),
        duration_edges=layout.duration_edges,
        duration_bins=arrays["duration_bins"],
        duration_sum=scalars[1],
        errors=by_label(arrays["errors"], vocab.get("errors", ()), layout.error_budget),
        fallbacks=by_label(arrays["fallbacks"], vocab.get("fallbacks", ()), layout.error_budget),
        instrumentation_errors=by_label(
            arrays["instrumentation"], vocab.get("instrumentation", ()), layout.error_budget
        ),
        overflow={k: v for k, v in overflow.items() if v},
        **shadow,
        usage=usage_of(layout, arrays, vocab),
        review=review_of(layout, arrays, vocab),
        capture=capture_of(layout, arrays),
    )


def _shadow_fields(layout: CounterLayout, arrays: Mapping[str, Any], vocab: Mapping[str, Any]) -> dict[str, Any]:
    """The comparison part of a shadow's snapshot (nothing for an ordinary model)."""
    if layout.shadow_of is None:
        return {}
    budgets = replace(layout, decision_budget=layout.flip_budget)  # flips are read like decisions
    dropped = arrays["shadow_dropped"].tolist()
    return {
        "shadow_of": layout.shadow_of,
        "shadow_pairs": _prediction_rows(
            budgets, arrays["shadow_pairs"], vocab.get("segments", ()), vocab.get("flips", ())
        ),
        "shadow_difference_bins": arrays["shadow_difference"],
        "shadow_difference_sum": float(arrays["shadow_scalars"][0]),
        "shadow_dropped": {reason: int(c) for reason, c in zip(SHADOW_DROP_REASONS, dropped)},
    }


def _sum_rows(tables: Sequence[Sequence[tuple[str, str, str, int]]]) -> tuple[tuple[str, str, str, int], ...]:
    """Labelled counts of several processes summed by label strings."""
    rows: dict[tuple[str, str, str], int] = {}
    for table in tables:
        for key, segment, label, count in table:
            rows[(key, segment, label)] = rows.get((key, segment, label), 0) + count
    return tuple((*k, v) for k, v in sorted(rows.items()))


def _sum_maps(maps: Sequence[Mapping[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in maps:
        for k, v in m.items():
            out[k] = out.get(k, 0) + v
    return out


def merge_snapshots(snapshots: Sequence[CountsSnapshot]) -> CountsSnapshot:
    """Sum snapshots of one layout (one per process): arrays add, labelled counts join by label string.

    Float sums use ``math.fsum`` (correctly rounded), so a sum of non-negative values never goes
    down when another process's file joins the sum.
    """
    first = snapshots[0]
    if len(snapshots) == 1:
        return first
    shadow: dict[str, Any] = {}
    if first.shadow_of is not None:
        shadow = {
            "shadow_pairs": _sum_rows([s.shadow_pairs for s in snapshots]),
            "shadow_difference_bins": np.sum(
                [s.shadow_difference_bins for s in snapshots if s.shadow_difference_bins is not None], axis=0
            ),
            "shadow_difference_sum": math.fsum(s.shadow_difference_sum for s in snapshots),
            "shadow_dropped": _sum_maps([s.shadow_dropped for s in snapshots]),
        }
    return replace(
        first,
        numeric_bins=tuple(np.sum(b, axis=0) for b in zip(*(s.numeric_bins for s in snapshots))),
        numeric_sums=np.array([math.fsum(col) for col in zip(*(s.numeric_sums.tolist() for s in snapshots))]),
        categorical_bins=tuple(np.sum(b, axis=0) for b in zip(*(s.categorical_bins for s in snapshots))),
        missing=_sum_maps([s.missing for s in snapshots]),
        score_bins=np.sum([s.score_bins for s in snapshots], axis=0),
        score_sum=math.fsum(s.score_sum for s in snapshots),
        predictions=_sum_rows([s.predictions for s in snapshots]),
        duration_bins=np.sum([s.duration_bins for s in snapshots], axis=0),
        duration_sum=math.fsum(s.duration_sum for s in snapshots),
        errors=_sum_maps([s.errors for s in snapshots]),
        fallbacks=_sum_maps([s.fallbacks for s in snapshots]),
        instrumentation_errors=_sum_maps([s.instrumentation_errors for s in snapshots]),
        overflow=_sum_maps([s.overflow for s in snapshots]),
        **shadow,
        usage=merge_usage([s.usage for s in snapshots]),
        review=merge_review([s.review for s in snapshots]),
        capture=merge_capture([s.capture for s in snapshots]),
    )
