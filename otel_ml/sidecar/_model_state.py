"""Per-model state: the app's counters summed over sources, reset-aware, bounded, windowed.

Every series of a model (a Prometheus sample name plus labels) gets an index in one float
vector of totals. The series the baseline implies (feature buckets, categories, missing,
score buckets) are allocated up front in a known order, so a window's feature bins are a
fancy index of a vector difference; series that appear later (segments, decisions, error
types) are appended, within budgets. Each source (a scrape target, an OTLP resource) keeps
its last cumulative values, so a counter that goes down is a restart, handled the way
Prometheus' ``increase()`` handles it: the new value is the increase.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from .. import _names as n
from .._cardinality import BoundedLabels
from .._names import DURATION_BUCKETS, UNKNOWN, label_value, le_labels, normalize_le
from ..baseline import Baseline
from ._series import ACCEPTED, BUCKET_SERIES, SUM_SERIES, Labels, RawSample, SeriesKey
from ._windows import SnapshotRing, WindowSpec

__all__ = ["ModelState", "ApplyResult", "SourceState", "detached"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
_INF = float("inf")
_RESOLVE_KEY_CHARS = 4096  # raw series with more label text than this are resolved, not remembered
_RESOLVE_CACHE_CHARS = 8_000_000  # label text the resolve cache may hold before it starts over
_SCOPED_BUCKETS = {
    n.PREDICTION_SCORE.bucket_series: "__score__",
    n.PREDICTION_DURATION.bucket_series: "__duration__",
}
_BOUNDED_LABELS = {
    n.LABEL_SEGMENT,
    n.LABEL_DECISION,
    n.LABEL_ERROR_TYPE,
    n.LABEL_FALLBACK_REASON,
    n.LABEL_ATTRIBUTE,
    n.LABEL_OUTCOME,
}


@dataclass
class SourceState:
    """What one source reported last, to turn its cumulative values into increases."""

    last: FloatArray
    start_ns: int = 0
    seen_at: float = 0.0


@dataclass
class ApplyResult:
    applied: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str, count: int = 1) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + count


@dataclass(frozen=True)
class NumericLayout:
    name: str
    buckets: IntArray  # indices of the cumulative _bucket series in le order, +Inf last
    missing: int
    reference: FloatArray
    reference_count: int


@dataclass(frozen=True)
class CategoricalLayout:
    name: str
    labels: tuple[str, ...]
    bins: IntArray
    missing: int
    reference: FloatArray
    reference_count: int


def _labels(**pairs: str) -> Labels:
    return tuple(sorted(pairs.items()))


def _exposition_safe(baseline: Baseline) -> Baseline:
    """The baseline with feature names made label-safe: they become ``ml_feature`` values here,
    and the app sends them made safe the same way (a lone surrogate would fail every /metrics)."""
    if all(label_value(f.name) == f.name for f in baseline.features):
        return baseline
    features = tuple(replace(f, name=label_value(f.name)) for f in baseline.features)
    return replace(baseline, features=features)


class ModelState:
    """All counts of one model version, with their windows."""

    def __init__(
        self,
        baseline: Baseline,
        windows: Sequence[WindowSpec],
        *,
        now: float,
        segment_budget: int = 100,
        label_budget: int = 32,
        max_series: int = 20_000,
        max_sources: int = 1000,
    ) -> None:
        baseline = _exposition_safe(baseline)
        self.baseline = baseline
        self.model = baseline.model_name
        self.version = baseline.model_version
        self.max_series = max_series
        self.max_sources = max_sources  # each source holds a vector of last values: bounded memory
        self.index: dict[SeriesKey, int] = {}
        self.keys: list[SeriesKey] = []
        self.totals = np.zeros(256)
        self.sources: dict[str, SourceState] = {}
        self.last_ingest = 0.0
        self.segment_budget = segment_budget
        self.label_budget = label_budget
        self.bounded: dict[tuple[str, str], BoundedLabels] = {}
        self.non_monotonic: set[int] = set()
        self._series_cache: dict[str, tuple[int, list[tuple[int, Labels]]]] = {}
        self._resolved: dict[tuple[str, Labels], int | str] = {}
        self._resolved_chars = 0
        # Histogram groups (one family and labels without le): a histogram is applied whole or not at all.
        self._group_ids: dict[tuple[str, Labels], int] = {}
        self._group_expected: list[int] = []  # bucket series a complete histogram of the group has
        self._group_of: list[int] = []  # per series: its group, -1 if not a histogram series
        self._is_bucket: list[bool] = []
        self._group_arrays: tuple[IntArray, npt.NDArray[np.bool_], IntArray] | None = None
        self.reference_gauges: list[tuple[object, dict[str, str], float]] | None = None  # filled by outputs
        self._allowed_le: dict[str, frozenset[str]] = {}
        self._categories: dict[str, frozenset[str]] = {}
        self.numeric: list[NumericLayout] = []
        self.categorical: list[CategoricalLayout] = []
        self._build_layout()
        self.rings = {w.name: SnapshotRing(w, now, self.size) for w in windows}

    # -- layout ---------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return len(self.keys)

    def _add(self, key: SeriesKey) -> int:
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
            self._group_expected.append(len(self._allowed_le.get(self._le_scope(group[0], labels), ())))
        return found

    @staticmethod
    def _le_scope(family: str, labels: dict[str, str]) -> str:
        if family == n.PREDICTION_SCORE.prometheus:
            return "__score__"
        if family == n.PREDICTION_DURATION.prometheus:
            return "__duration__"
        return labels.get(n.LABEL_FEATURE, "")

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

    def _whole_histograms(
        self, positions: IntArray, uniq: IntArray, incoming: FloatArray, mismatched: list[tuple[str, Labels]]
    ) -> tuple[IntArray, FloatArray, int]:
        """Drop every series of a histogram that is not exactly the baseline's: applied whole or not at all."""
        bad = self._incomplete(uniq, mismatched)
        if not bad.size:
            return uniq, incoming, 0
        group_of = self._groups()[0]
        keep = ~np.isin(group_of[uniq], bad)
        return uniq[keep], incoming[keep], int(np.isin(group_of[positions], bad).sum())

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
            self._add(safe)

    def _build_layout(self) -> None:
        value = n.FEATURE_VALUE.bucket_series
        for f in self.baseline.numeric:
            les = le_labels(f.edges)
            self._allowed_le[f.name] = frozenset(les)
            buckets = [self._add(SeriesKey(value, _labels(le=le, ml_feature=f.name))) for le in les]
            missing = self._add(SeriesKey(n.FEATURE_MISSING.series, _labels(ml_feature=f.name)))
            self.numeric.append(
                NumericLayout(f.name, np.asarray(buckets, dtype=np.intp), missing, f.fractions_array(), f.count)
            )
        for c in self.baseline.categorical:
            self._categories[c.name] = frozenset(c.bin_labels)
            bins = [
                self._add(SeriesKey(n.FEATURE_CATEGORY.series, _labels(ml_category=lab, ml_feature=c.name)))
                for lab in c.bin_labels
            ]
            missing = self._add(SeriesKey(n.FEATURE_MISSING.series, _labels(ml_feature=c.name)))
            self.categorical.append(
                CategoricalLayout(
                    c.name, c.bin_labels, np.asarray(bins, dtype=np.intp), missing, c.fractions_array(), c.count
                )
            )
        score = self.baseline.score
        self.score_edges = score.edges if score else ()
        les = le_labels(self.score_edges)
        self._allowed_le["__score__"] = frozenset(les)
        self.score_buckets = (
            np.asarray(
                [self._add(SeriesKey(n.PREDICTION_SCORE.bucket_series, _labels(le=le))) for le in les],
                dtype=np.intp,
            )
            if score
            else np.empty(0, dtype=np.intp)
        )
        self._allowed_le["__duration__"] = frozenset(le_labels(DURATION_BUCKETS))
        self._build_matrices()

    def _build_matrices(self) -> None:
        """Index matrices so one fancy index gives every feature's window counts at once.

        Numeric rows repeat their ``+Inf`` bucket as padding (its difference is 0); categorical
        rows pad with -1, which points at a zero appended to the delta vector.
        """
        rows = [f.buckets for f in self.numeric] + [c.bins for c in self.categorical]
        width = max((r.size for r in rows), default=1)
        self.feature_names = tuple(f.name for f in self.numeric) + tuple(c.name for c in self.categorical)
        self.n_numeric = len(self.numeric)
        index = np.full((len(rows), width), -1, dtype=np.intp)
        reference = np.zeros((len(rows), width))
        layouts: list[NumericLayout | CategoricalLayout] = [*self.numeric, *self.categorical]
        for i, (r, layout) in enumerate(zip(rows, layouts)):
            index[i, : r.size] = r
            if i < self.n_numeric:
                index[i, r.size :] = r[-1]
            reference[i, : layout.reference.size] = layout.reference
        self.feature_index = index
        self.reference_matrix = reference
        self.reference_counts = np.asarray([f.reference_count for f in layouts], dtype=np.float64)
        self.missing_index = np.asarray([f.missing for f in layouts], dtype=np.intp)
        self.unknown_column = np.asarray([c.bins.size - 1 for c in self.categorical], dtype=np.intp)

    # -- normalisation of incoming series -------------------------------------------------------
    def _bound(self, label: str, scope: str, value: str) -> str:
        key = (label, scope)
        labels = self.bounded.get(key)
        if labels is None:
            labels = self.bounded[key] = BoundedLabels(
                self.segment_budget if label == n.LABEL_SEGMENT else self.label_budget
            )
        return labels.label(labels.index(value))

    def overflow(self) -> dict[str, int]:
        """Observations folded into ``__other__`` per attribute (``ml.segment.<key>``, ``ml.decision`` ...)."""
        out: dict[str, int] = {}
        for (label, scope), labels in self.bounded.items():
            if labels.overflow:
                name = f"ml.segment.{scope}" if label == n.LABEL_SEGMENT else label.replace("_", ".")
                out[name] = out.get(name, 0) + labels.overflow
        return out

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
            if name.startswith(n.FEATURE_VALUE.prometheus):
                allowed = self._allowed_le.get(feature)
                if allowed is None:
                    result.reject("unknown_feature")
                    return None
                if "le" in labels and labels["le"] not in allowed:
                    result.reject("bucket_mismatch")
                    return None
            elif name == n.FEATURE_CATEGORY.series:
                cats = self._categories.get(feature)
                if cats is None:
                    result.reject("unknown_feature")
                    return None
                if labels.get(n.LABEL_CATEGORY) not in cats:
                    labels[n.LABEL_CATEGORY] = UNKNOWN
        elif name in _SCOPED_BUCKETS and labels.get("le") not in self._allowed_le[_SCOPED_BUCKETS[name]]:
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

    def _resolve(self, name: str, labels: Labels, result: ApplyResult) -> int | str:
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
            found = self.index.get(key)
            outcome = found if found is not None else self._add(key)
        chars = sum(len(k) + len(v) for k, v in labels) + len(name)
        if chars <= _RESOLVE_KEY_CHARS:
            if len(self._resolved) >= self.max_series * 4 or self._resolved_chars + chars > _RESOLVE_CACHE_CHARS:
                self._resolved.clear()  # a cache, bounded whatever arrives; series indices stay
                self._resolved_chars = 0
            self._resolved[(name, labels)] = outcome
            self._resolved_chars += chars
        return outcome

    # -- ingest ------------------------------------------------------------------------------------
    def apply(
        self,
        source: str,
        samples: Iterable[RawSample],
        *,
        now: float,
        cumulative: bool = True,
        start_ns: int = 0,
    ) -> ApplyResult:
        """Add one payload's samples. Cumulative values become increases against the source's last
        report (a decrease is a restart); delta values are added as they are."""
        result = ApplyResult()
        idx: list[int] = []
        values: list[float] = []
        mismatched: list[tuple[str, Labels]] = []
        resolved = self._resolved
        for name, labels, value in samples:
            if value != value or value in (_INF, -_INF):
                result.reject("non_finite_value")
                continue
            i = resolved.get((name, labels))
            if i is None:
                i = self._resolve(name, labels, result)
            if isinstance(i, str):
                result.reject(i)
                if i == "bucket_mismatch":
                    mismatched.append((name, labels))
                continue
            if i < 0:
                continue
            idx.append(i)
            values.append(value)
        if not idx:
            return result
        positions = np.asarray(idx, dtype=np.intp)
        uniq, inverse = np.unique(positions, return_inverse=True)
        incoming = np.bincount(inverse, weights=np.asarray(values, dtype=np.float64)).astype(np.float64)  # folded
        uniq, incoming, dropped = self._whole_histograms(positions, uniq, incoming, mismatched)
        applied = len(idx) - dropped
        if dropped:
            result.reject("bucket_mismatch", dropped)
            if not uniq.size:
                return result
        if cumulative:
            source_state = self._source(source, start_ns, now)
            if source_state is None:
                result.reject("source_budget", applied)  # counted, never evicting a live source's baseline
                return result
            increase = self._increase(source_state, uniq, incoming)
        else:
            increase = incoming
        with np.errstate(over="ignore"):  # a float sum may overflow to +Inf: a value, not an error
            self.totals[uniq] += increase
        self.last_ingest = now
        result.applied = applied
        return result

    def _source(self, source: str, start_ns: int, now: float) -> SourceState | None:
        """The source's last values, sized to the series; None when the source budget is spent."""
        state = self.sources.get(source)
        if state is None:
            if len(self.sources) >= self.max_sources:
                return None
            state = self.sources[source] = SourceState(np.zeros(self.size), start_ns)
        if state.last.size < self.size:
            state.last = np.concatenate([state.last, np.zeros(self.size - state.last.size)])
        if start_ns and state.start_ns and start_ns != state.start_ns:
            state.last[:] = 0.0  # the source restarted (new process start time): everything is new
        state.start_ns = start_ns or state.start_ns
        state.seen_at = now
        return state

    def _increase(self, state: SourceState, uniq: IntArray, incoming: FloatArray) -> FloatArray:
        """Cumulative values as increases since the source's last report; a decrease is a reset."""
        increase: FloatArray = incoming - state.last[uniq]
        reset = increase < 0
        if self.non_monotonic:
            reset &= ~np.isin(uniq, np.fromiter(self.non_monotonic, dtype=np.intp))
        increase[reset] = incoming[reset]
        state.last[uniq] = incoming
        return increase

    def take_snapshots(self, now: float) -> None:
        current = self.totals[: self.size]
        for ring in self.rings.values():
            ring.maybe_take(now, current)

    def expire_sources(self, now: float, ttl: float) -> int:
        """Forget sources silent for ``ttl`` seconds (their counts stay in the totals)."""
        stale = [s for s, state in self.sources.items() if now - state.seen_at > ttl]
        for s in stale:
            del self.sources[s]
        return len(stale)

    def current_totals(self) -> FloatArray:
        return self.totals[: self.size]

    def feature_counts(self, delta: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Window counts as a features x bins matrix (numeric rows first) and missing per feature."""
        extended = np.append(delta, 0.0)
        counts = extended[self.feature_index]
        if self.n_numeric:
            counts[: self.n_numeric] = np.diff(counts[: self.n_numeric], axis=1, prepend=0.0)
        return np.clip(counts, 0.0, None), np.clip(extended[self.missing_index], 0.0, None)

    def series_of(self, name: str) -> list[tuple[int, Labels]]:
        """(index, labels) of every series of one sample name; cached until a series is added."""
        cached = self._series_cache.get(name)
        if cached is not None and cached[0] == len(self.keys):
            return cached[1]
        found = [(i, k.labels) for i, k in enumerate(self.keys) if k.name == name]
        self._series_cache[name] = (len(self.keys), found)
        return found


def detached(model: ModelState) -> ModelState:
    """A copy to compute outputs from off the ingest lock: it shares the fixed layout and owns
    its totals, series keys and snapshot lists, which ingest and ticks go on changing."""
    view = copy.copy(model)
    view.totals = model.current_totals().copy()
    view.keys = list(model.keys)
    view._series_cache = {}
    view.rings = {name: ring.copy() for name, ring in model.rings.items()}
    return view
