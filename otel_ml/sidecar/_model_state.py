"""Per-model state: the app's counters summed over sources, reset-aware, bounded, windowed.

A model's series and totals are a :class:`SeriesIndex`; the baseline's own series come first,
in the order of its :class:`FeatureLayout`. Each source (a scrape target, an OTLP resource)
keeps its last cumulative values, so a counter that goes down is a restart, handled the way
Prometheus' ``increase()`` handles it: the new value is the increase.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .. import _names as n
from .._cardinality import BoundedLabels
from ..baseline import Baseline
from ._feature_layout import FeatureLayout, exposition_safe
from ._series import SUM_SERIES, ApplyResult, Gauge, Labels, LimitSettings, RawSample, SeriesKey
from ._series_index import SeriesIndex
from ._windows import SnapshotRing, WindowSpec

__all__ = ["ModelState", "SourceState"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
_INF = float("inf")


@dataclass
class SourceState:
    """What one source reported last, to turn its cumulative values into increases."""

    last: FloatArray
    start_ns: int = 0
    seen_at: float = 0.0


_STAMPS = itertools.count(1)
"""Change stamps unique in the process: a model state restored into a new object can never
present the key of an output computed for another (``itertools.count`` is atomic under the GIL)."""


class ModelState(SeriesIndex):
    """All counts of one model version, with their windows."""

    def __init__(self, baseline: Baseline, windows: Sequence[WindowSpec], limits: LimitSettings, *, now: float) -> None:
        super().__init__(limits)
        baseline = exposition_safe(baseline)
        self.baseline = baseline
        self.model = baseline.model_name
        self.version = baseline.model_version
        self.max_sources = limits.max_sources_per_model  # each source holds a vector of last values: bounded memory
        self.sources: dict[str, SourceState] = {}
        self.last_ingest = 0.0
        self.changes = next(_STAMPS)  # new at every change of counts or snapshots: the outputs' cache key
        self.reference_gauges: list[Gauge] | None = None  # filled by the outputs, once
        self.layout = FeatureLayout(baseline, self)
        self.rings = {w.name: SnapshotRing(w, now, self.size) for w in windows}

    # -- ingest ------------------------------------------------------------------------------------
    def _indices(
        self, samples: Iterable[RawSample], result: ApplyResult
    ) -> tuple[list[int], list[float], list[tuple[str, Labels]]]:
        """Series index and value of every sample that is ours, and the raw series rejected for ``le``."""
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
                i = self.resolve(name, labels)
            if isinstance(i, str):
                result.reject(i)
                if i == "bucket_mismatch":
                    mismatched.append((name, labels))
                continue
            if i < 0:
                continue
            idx.append(i)
            values.append(value)
        return idx, values, mismatched

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
        self.changes = next(_STAMPS)  # even a rejected payload may have added series keys
        idx, values, mismatched = self._indices(samples, result)
        if not idx:
            return result
        positions = np.asarray(idx, dtype=np.intp)
        uniq, inverse = np.unique(positions, return_inverse=True)
        incoming = np.bincount(inverse, weights=np.asarray(values, dtype=np.float64)).astype(np.float64)  # folded
        uniq, incoming, dropped = self.whole_histograms(positions, uniq, incoming, mismatched)
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
        # A histogram restarts as a whole: a bin can hold more after a restart than before (so it
        # does not go down) while its neighbours or its _count do. Reset every series of the group.
        group_of = self.group_ids()[uniq]
        restarted = group_of[reset & (group_of >= 0)]
        if restarted.size:
            reset |= np.isin(group_of, restarted)
        increase[reset] = incoming[reset]
        state.last[uniq] = incoming
        return increase

    # -- time --------------------------------------------------------------------------------------
    def take_snapshots(self, now: float) -> bool:
        """Take the snapshots that are due; whether any was."""
        current = self.totals[: self.size]
        taken = any([ring.maybe_take(now, current) for ring in self.rings.values()])
        if taken:
            self.changes = next(_STAMPS)
        return taken

    def output_key(self, now: float) -> tuple[Any, ...]:
        """Equal keys, equal outputs: the changes so far and which snapshots the windows start from."""
        return (self.changes, tuple(ring.selection(now) for ring in self.rings.values()))

    def expire_sources(self, now: float, ttl: float) -> int:
        """Forget sources silent for ``ttl`` seconds (their counts stay in the totals)."""
        stale = [s for s, state in self.sources.items() if now - state.seen_at > ttl]
        for s in stale:
            del self.sources[s]
        return len(stale)

    def detached(self) -> ModelState:
        """A copy to compute outputs from off the ingest lock: it shares the fixed layout and owns
        its totals, series keys and snapshot lists, which ingest and ticks go on changing."""
        view = copy.copy(self)
        view.totals = self.current_totals().copy()
        view.keys = list(self.keys)
        view._series_cache = {}
        view.rings = {name: ring.copy() for name, ring in self.rings.items()}
        return view

    # -- persistence -------------------------------------------------------------------------------
    def snapshot(self, prefix: str) -> tuple[dict[str, Any], dict[str, FloatArray]]:
        """The counts as JSON metadata and arrays named ``<prefix>_...``, for :meth:`restore`."""
        arrays = {f"{prefix}_totals": self.current_totals().copy()}
        sources = {}
        for j, (name, src) in enumerate(self.sources.items()):
            arrays[f"{prefix}_s{j}"] = src.last.copy()
            sources[name] = {"array": f"{prefix}_s{j}", "start_ns": src.start_ns, "seen_at": src.seen_at}
        rings = {}
        for w, (window, ring) in enumerate(self.rings.items()):
            width = max(v.size for v in ring.vectors)
            stacked = np.zeros((len(ring.vectors), width))
            for r, v in enumerate(ring.vectors):
                stacked[r, : v.size] = v
            arrays[f"{prefix}_r{w}"] = stacked
            rings[window] = {"array": f"{prefix}_r{w}", "times": ring.times, "sizes": [v.size for v in ring.vectors]}
        meta = {
            "keys": [[k.name, [list(p) for p in k.labels]] for k in self.keys],
            "sources": sources,
            "rings": rings,
            "last_ingest": self.last_ingest,
            "bounded": [[label, scope, b.labels, b.overflow] for (label, scope), b in self.bounded.items()],
        }
        return meta, arrays

    def restore(self, meta: Mapping[str, Any], arrays: Any, prefix: str, *, cumulative_buckets: bool = False) -> None:
        """Load what :meth:`snapshot` wrote into this fresh model; ``ValueError`` if it does not fit.

        Window times are taken as given (the caller re-anchors them). Every count is checked as
        ingest would keep it, so a crafted file cannot make later outputs fail. With
        ``cumulative_buckets`` (files written before buckets were stored per bin) the totals,
        source values and snapshots are converted, so an upgrade keeps its windows."""
        keys = [SeriesKey(name, tuple(tuple(p) for p in labels)) for name, labels in meta["keys"]]
        if keys[: self.size] != self.keys:
            raise ValueError("series layout differs from the baseline's")
        self.restore_series(keys[self.size :])  # label values made exposition-safe again
        saved = np.asarray(arrays[f"{prefix}_totals"], dtype=np.float64)
        if saved.shape != (self.size,):
            raise ValueError("totals do not match the series list")
        self._check_counts(saved, "totals")
        self.totals[: saved.size] = saved
        for name, src in meta["sources"].items():
            last = np.asarray(arrays[src["array"]], dtype=np.float64)
            if last.ndim != 1 or last.size > self.size:
                raise ValueError(f"source {name}: more values than series")
            self._check_counts(last, f"source {name}")
            self.sources[str(name)] = SourceState(last.copy(), int(src["start_ns"]), float(src["seen_at"]))
        for window, ring_meta in meta["rings"].items():
            ring = self.rings.get(window)
            if ring is not None:  # else a window that is no longer configured
                self._restore_ring(ring, ring_meta, np.asarray(arrays[ring_meta["array"]], dtype=np.float64))
        if cumulative_buckets:
            for values in [self.totals[: self.size], *(src.last for src in self.sources.values())]:
                self.bins_from_cumulative(values)
            for ring in self.rings.values():
                for vector in ring.vectors:
                    self.bins_from_cumulative(vector)
        self.last_ingest = float(meta["last_ingest"])
        self.changes = next(_STAMPS)
        for label, scope, labels, overflow in meta["bounded"]:
            bounded = BoundedLabels(self.segment_budget if label == n.LABEL_SEGMENT else self.label_budget)
            for value in labels:
                bounded.index(value)
            bounded.overflow = int(overflow)
            self.bounded[(label, scope)] = bounded

    def _restore_ring(self, ring: SnapshotRing, meta: Mapping[str, Any], stacked: FloatArray) -> None:
        window = ring.spec.name
        sizes = [int(size) for size in meta["sizes"]]
        if len(sizes) != len(meta["times"]) or stacked.ndim != 2 or stacked.shape[0] != len(sizes):
            raise ValueError(f"window {window}: snapshots and their times differ")
        if any(not 0 <= size <= min(self.size, stacked.shape[1]) for size in sizes):
            raise ValueError(f"window {window}: a snapshot is longer than the series list")
        self._check_counts(stacked[:, : min(self.size, stacked.shape[1])], f"window {window}")
        ring.times = [float(t) for t in meta["times"]]
        ring.vectors = [np.array(stacked[r, :size]) for r, size in enumerate(sizes)]

    def _check_counts(self, values: FloatArray, what: str) -> None:
        """Saved counts are finite and >= 0, as ingest keeps them: a crafted NaN or negative count
        would otherwise be restored and fail every later ``/metrics``. Sums are values (negative, or
        infinite once finite sums of several sources overflow), only ever re-exposed."""
        if values.ndim == 2:
            values = np.where(np.isfinite(values), values, np.nan).min(axis=0, initial=0.0)
        counts = np.fromiter((k.name not in SUM_SERIES for k in self.keys[: values.size]), bool, values.size)
        checked = values[counts]
        if not (np.isfinite(checked) & (checked >= 0)).all():
            raise ValueError(f"{what}: counts must be finite and >= 0")
