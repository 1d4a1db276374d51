"""The series of one model: their place in the totals vector, and how a raw series finds it.

Every series of a model (a Prometheus sample name plus labels) gets an index in one float
vector of totals, allocated in order and within the series budget. A raw series (as a source
sends it) is normalised once (label values made safe, ``le`` spelled canonically, categories
and bounded labels folded into the vocabulary) and the result is cached, so a source that
sends the same series every time pays for normalisation once. Histogram series are grouped
(one family and labels without ``le``) so a histogram can be applied whole or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from .. import _names as n
from .._cardinality import BoundedLabels
from .._label_hygiene import label_value
from .._names import UNKNOWN, normalize_le
from ._series import (
    ACCEPTED,
    BUCKET_SERIES,
    SUM_SERIES,
    ApplyResult,
    Labels,
    LimitSettings,
    Prediction,
    SeriesKey,
    bins_from_cumulative,
)

__all__ = ["SeriesIndex", "SCORE_SCOPE", "DURATION_SCOPE", "DELAY_SCOPE", "SHADOW_SCOPE"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
SCORE_SCOPE = "__score__"  # the allowed-``le`` scope of the score histogram (features use their name)
DURATION_SCOPE = "__duration__"
DELAY_SCOPE = "__label_delay__"
SHADOW_SCOPE = "__shadow_difference__"
_RESOLVE_KEY_CHARS = 4096  # raw series with more label text than this are resolved, not remembered
_RESOLVE_CACHE_CHARS = 8_000_000  # label text the resolve cache may hold before it starts over
_SCOPES = {  # histograms whose buckets are not a feature's: the scope of their allowed ``le`` values
    n.PREDICTION_SCORE: SCORE_SCOPE,
    n.PREDICTION_DURATION: DURATION_SCOPE,
    n.LABELLED_SCORE: SCORE_SCOPE,  # labelled scores use the score's own edges
    n.LABEL_DELAY: DELAY_SCOPE,
    n.SHADOW_SCORE_DIFFERENCE: SHADOW_SCOPE,
}
_SCOPED_BUCKETS = {i.bucket_series: scope for i, scope in _SCOPES.items()}
_SCOPE_OF_FAMILY = {i.prometheus: scope for i, scope in _SCOPES.items()}
_SEGMENT_KEYS = "__segment_key__"  # the budget of distinct segment keys a model's stored predictions may name
_BOUNDED_LABELS = {
    n.LABEL_SEGMENT,
    n.LABEL_DECISION,
    n.LABEL_ERROR_TYPE,
    n.LABEL_FALLBACK_REASON,
    n.LABEL_ATTRIBUTE,
    n.LABEL_OUTCOME,
    n.LABEL_SHADOW_VERSION,
    n.LABEL_FLIP,
    n.LABEL_PAIR_OUTCOME,
    n.LABEL_REASON,
}


class SeriesIndex:
    """The series list, the totals vector and the caches that map raw series onto them."""

    def __init__(self, limits: LimitSettings) -> None:
        self.max_series = limits.max_series_per_model
        self.segment_budget = limits.segment_budget
        self.label_budget = limits.label_budget
        self.index: dict[SeriesKey, int] = {}
        self.keys: list[SeriesKey] = []
        self.totals = np.zeros(256)
        self.non_monotonic: set[int] = set()
        self.bounded: dict[tuple[str, str], BoundedLabels] = {}
        self.allowed_le: dict[str, frozenset[str]] = {}  # per feature name, SCORE_SCOPE, DURATION_SCOPE
        self.categories: dict[str, frozenset[str]] = {}  # per categorical feature
        # (decision, segments) combinations of stored predictions: each is one interned id in the join
        # store, so their number is bounded too, not only each key's values (16 keys x 2 values = 65,536)
        self.combinations: set[tuple[str | None, Labels]] = set()
        self.max_combinations = limits.max_segment_combinations
        self._combination_overflow = 0
        self._series_cache: dict[str, tuple[int, list[tuple[int, Labels]]]] = {}
        self._resolved: dict[tuple[str, Labels], int | str] = {}
        self._resolved_chars = 0
        self._group_ids: dict[tuple[str, Labels], int] = {}
        self._group_expected: list[int] = []  # bucket series a complete histogram of the group has
        self._group_of: list[int] = []  # per series: its group, -1 if not a histogram series
        self._is_bucket: list[bool] = []
        self._group_arrays: tuple[IntArray, npt.NDArray[np.bool_], IntArray] | None = None

    @property
    def size(self) -> int:
        return len(self.keys)

    def current_totals(self) -> FloatArray:
        return self.totals[: self.size]

    def add(self, key: SeriesKey) -> int:
        """Register a new series; returns its index (the totals vector grows as needed)."""
        i = len(self.keys)
        self.index[key] = i
        self.keys.append(key)
        if i >= self.totals.size:
            grown = np.zeros(self.totals.size * 2)
            grown[: self.totals.size] = self.totals
            self.totals = grown
        if key.name in SUM_SERIES:
            self.non_monotonic.add(i)
        self._group_of.append(self._group(key))
        self._is_bucket.append(key.name in BUCKET_SERIES)
        self._group_arrays = None
        return i

    def series_of(self, name: str) -> list[tuple[int, Labels]]:
        """(index, labels) of every series of one sample name; cached until a series is added."""
        cached = self._series_cache.get(name)
        if cached is not None and cached[0] == len(self.keys):
            return cached[1]
        found = [(i, k.labels) for i, k in enumerate(self.keys) if k.name == name]
        self._series_cache[name] = (len(self.keys), found)
        return found

    def bins_from_cumulative(self, values: FloatArray) -> None:
        """Cumulative bucket values (state files of format 1) as per-bin ones, in place, by the
        scrape's own conversion; a bin a non-monotonic history left negative is 0, as the window
        statistics always clipped it."""
        keys = self.keys[: values.size]
        converted = bins_from_cumulative([(k.name, k.labels, v) for k, v in zip(keys, values.tolist())])
        values[:] = [value for _, _, value in converted]
        buckets = np.fromiter((k.name in BUCKET_SERIES for k in keys), bool, len(keys))
        np.clip(values, 0.0, None, out=values, where=buckets)

    def restore_series(self, keys: Iterable[SeriesKey]) -> None:
        """Add series read back from a saved state, in order, with label values made safe again.

        A crafted state file may hold values no exposition can encode, or names no input would
        produce: such a file is refused as a whole (``ValueError``) rather than half restored."""
        for key in keys:
            try:
                safe = SeriesKey(str(key.name), tuple((str(k), label_value(str(v))) for k, v in key.labels))
            except (TypeError, ValueError):
                raise ValueError("a saved series is not a name and label pairs") from None
            if key.name not in ACCEPTED or safe in self.index or len(dict(safe.labels)) != len(safe.labels):
                raise ValueError("saved series are not a valid series set")
            if len(self.keys) >= self.max_series:
                raise ValueError("saved series exceed the series budget")
            self.add(safe)

    # -- histogram groups -------------------------------------------------------------------------
    def _group(self, key: SeriesKey) -> int:
        """The histogram group of a series (registered on first sight), or -1."""
        inst = n.instrument_of_sample(key.name)
        if inst is None or inst.kind != "histogram":
            return -1
        family = inst.prometheus
        labels = dict(key.labels)
        labels.pop("le", None)
        group = (family, tuple(sorted(labels.items())))
        found = self._group_ids.get(group)
        if found is None:
            found = self._group_ids[group] = len(self._group_expected)
            self._group_expected.append(len(self.allowed_le.get(_le_scope(group[0], labels), ())))
        return found

    def group_ids(self) -> IntArray:
        """Per series, the histogram group it belongs to (bucket, _count and _sum alike), else -1."""
        return self._groups()[0]

    def _groups(self) -> tuple[IntArray, npt.NDArray[np.bool_], IntArray]:
        if self._group_arrays is None or self._group_arrays[0].size != len(self.keys):
            self._group_arrays = (
                np.asarray(self._group_of, dtype=np.intp),
                np.asarray(self._is_bucket, dtype=np.bool_),
                np.asarray(self._group_expected, dtype=np.intp),
            )
        return self._group_arrays

    def _mismatched_group(self, name: str, labels: Labels) -> int:
        """The group of a bucket series rejected for its ``le`` (-1 if the group was never seen)."""
        found = {k: label_value(v) for k, v in labels if k != "le"}
        scope = found.get(n.LABEL_SEGMENT_KEY, "")
        for label in _BOUNDED_LABELS.intersection(found):
            found[label] = self._bound(label, scope, found[label])
        inst = n.instrument_of_sample(name)
        return -1 if inst is None else self._group_ids.get((inst.prometheus, tuple(sorted(found.items()))), -1)

    def _incomplete(self, uniq: IntArray, mismatched: list[tuple[str, Labels]]) -> IntArray:
        """Histogram groups of this payload that are not exactly the baseline's buckets."""
        group_of, is_bucket, expected = self._groups()
        groups = group_of[uniq]
        hist = groups >= 0
        bad = np.empty(0, dtype=np.intp)
        if hist.any():
            present = np.bincount(groups[hist & is_bucket[uniq]], minlength=expected.size)
            touched = np.bincount(groups[hist], minlength=expected.size) > 0
            bad = np.flatnonzero(touched & (present != expected))
        if mismatched:
            extra = [g for g in (self._mismatched_group(*m) for m in mismatched) if g >= 0]
            bad = np.union1d(bad, np.asarray(extra, dtype=np.intp))
        return bad

    def whole_histograms(
        self, positions: IntArray, uniq: IntArray, incoming: FloatArray, mismatched: list[tuple[str, Labels]]
    ) -> tuple[IntArray, FloatArray, int]:
        """Drop every series of a histogram that is not exactly the baseline's: applied whole or not at all."""
        bad = self._incomplete(uniq, mismatched)
        if not bad.size:
            return uniq, incoming, 0
        group_of = self._groups()[0]
        keep = ~np.isin(group_of[uniq], bad)
        return uniq[keep], incoming[keep], int(np.isin(group_of[positions], bad).sum())

    # -- normalisation of incoming series -------------------------------------------------------
    def _bound(self, label: str, scope: str, value: str) -> str:
        key = (label, scope)
        labels = self.bounded.get(key)
        if labels is None:
            labels = self.bounded[key] = BoundedLabels(
                self.segment_budget if label == n.LABEL_SEGMENT else self.label_budget
            )
        return labels.label(labels.index(value))

    def bound_segment(self, key: str, value: str) -> str:
        """A segment value folded into this model's budget for its key, as its series are."""
        return self._bound(n.LABEL_SEGMENT, key, value)

    def bounded_prediction(self, p: Prediction) -> Prediction:
        """The prediction with its decision and segments folded into this model's label budgets,
        as its counters will be: ids interned by the join store stay as bounded as the series."""
        decision = None if p.decision is None else self._bound(n.LABEL_DECISION, "", label_value(p.decision))
        segments = tuple(
            sorted(
                {
                    self._bound(_SEGMENT_KEYS, "", label_value(k)): self._bound(
                        n.LABEL_SEGMENT, label_value(k), label_value(v)
                    )
                    for k, v in p.segments
                }.items()
            )
        )
        combination = (decision, segments)
        if combination not in self.combinations:
            if segments and len(self.combinations) >= self.max_combinations:
                self._combination_overflow += 1
                segments = ()  # still counted overall (__all__), never as a new combination
            else:
                self.combinations.add(combination)
        if decision == p.decision and segments == p.segments:
            return p
        return replace(p, decision=decision, segments=segments)

    def overflow(self) -> dict[str, int]:
        """Observations folded into ``__other__`` per attribute (``ml.segment.<key>``, ``ml.decision`` ...)."""
        out: dict[str, int] = {}
        if self._combination_overflow:
            out["ml.segment.combinations"] = self._combination_overflow
        for (label, scope), labels in self.bounded.items():
            if labels.overflow:
                name = f"ml.segment.{scope}" if label == n.LABEL_SEGMENT else label.replace("_", ".")
                out[name] = out.get(name, 0) + labels.overflow
        return out

    def _feature_ok(self, name: str, feature: str, labels: dict[str, str], result: ApplyResult) -> bool:
        """Feature series must name a baseline feature and its buckets; unknown categories fold."""
        if name.startswith(n.FEATURE_VALUE.prometheus):
            allowed = self.allowed_le.get(feature)
            if allowed is None:
                result.reject("unknown_feature")
                return False
            if "le" in labels and labels["le"] not in allowed:
                result.reject("bucket_mismatch")
                return False
        elif name == n.FEATURE_CATEGORY.series:
            cats = self.categories.get(feature)
            if cats is None:
                result.reject("unknown_feature")
                return False
            if labels.get(n.LABEL_CATEGORY) not in cats:
                labels[n.LABEL_CATEGORY] = UNKNOWN
        return True

    def normalize(self, name: str, labels: dict[str, str], result: ApplyResult) -> SeriesKey | None:
        """The key a raw series maps to, or None (counted in ``result``) when it must be dropped."""
        if name not in ACCEPTED:
            return None  # process_*, python_gc_*, other apps' metrics: not ours, not an error
        for label, value in labels.items():
            labels[label] = label_value(value)
        if "le" in labels:
            labels["le"] = normalize_le(labels["le"])
        feature = labels.get(n.LABEL_FEATURE)
        if feature is not None:
            if not self._feature_ok(name, feature, labels, result):
                return None
        elif name in _SCOPED_BUCKETS and labels.get("le") not in self.allowed_le[_SCOPED_BUCKETS[name]]:
            result.reject("bucket_mismatch")
            return None
        scope = labels.get(n.LABEL_SEGMENT_KEY, "")
        for label in _BOUNDED_LABELS.intersection(labels):
            labels[label] = self._bound(label, scope, labels[label])
        key = SeriesKey(name, tuple(sorted(labels.items())))
        if key not in self.index and len(self.keys) >= self.max_series:
            result.reject("series_budget")
            return None
        return key

    def resolve(self, name: str, labels: Labels) -> int | str:
        """Series index of a raw series (-1: not ours, str: rejection reason), cached per raw series.

        The cache is what makes ingest cheap: a source sends the same raw series every time, so
        normalisation (le spelling, vocabulary and budget checks) runs once per series, not per push.
        """
        rejected = ApplyResult()
        unique = dict(labels)
        key = self.normalize(name, unique, rejected) if len(unique) == len(labels) else None
        outcome: int | str
        if len(unique) != len(labels):
            outcome = "duplicate_label"  # two attributes that became one label name
        elif key is None:
            outcome = next(iter(rejected.rejected), "") or -1
        else:
            known = self.index.get(key)
            outcome = known if known is not None else self.add(key)
        chars = sum(len(k) + len(v) for k, v in labels) + len(name)
        if chars <= _RESOLVE_KEY_CHARS:
            if len(self._resolved) >= self.max_series * 4 or self._resolved_chars + chars > _RESOLVE_CACHE_CHARS:
                self._resolved.clear()  # a cache, bounded whatever arrives; series indices stay
                self._resolved_chars = 0
            self._resolved[(name, labels)] = outcome
            self._resolved_chars += chars
        return outcome


def _le_scope(family: str, labels: dict[str, str]) -> str:
    return _SCOPE_OF_FAMILY.get(family) or labels.get(n.LABEL_FEATURE, "")
