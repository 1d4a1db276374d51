"""The numpy counters behind one model's metrics, and the vectorised step that feeds them.

Every metric otel-ml exposes for a model is a set of mergeable counts: feature bins, category
bins, missing values, score bins, predictions per segment and decision, latency buckets. They
live in a few preallocated numpy arrays laid out by the baseline. A batch costs one binning
step per feature column and one locked in-place add; a single row is buffered and counted with
the next few hundred rows in one such step (``_row_batch``), before anything reads the
counts; cumulative buckets, label strings and metric
families are built at scrape/export time, never on the request path. The arrays are views into
one block laid out by :class:`~._snapshot.CounterLayout`: process memory, or this process's
memory-mapped file in multiprocess mode, where ``_snapshot`` lets a scrape rebuild and sum the
counts of every worker.
It is about 450 lines because both hot paths (one row, one batch) and the storage
they write into must be read together: splitting them would hide which array a count lands in.
"""

from __future__ import annotations

import functools
import logging
import math
import multiprocessing
import os
import struct
import sys
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .._binning import DEFAULT_SCORE_EDGES, MISSING_CODE, CategoryEncoder, finite_bin_counts
from .._cardinality import BoundedLabels
from .._frame import Columns, as_labels
from .._names import (
    ALL,
    CAPTURE_DROP_REASONS,
    DURATION_BUCKETS,
    REVIEW_DROP_REASONS,
)
from .._prices import Prices
from ..baseline import Baseline, CategoricalProfile, NumericProfile
from . import _multiproc
from ._exit_hooks import at_exit
from ._label_slots import PublishedLabels, SlotCounts, segment_grids
from ._multiproc import CounterFile
from ._pairs import NO_DECISION, PairCounts
from ._row_batch import Row, RowCounts, RowPlan, RowWriter, count_rows, row_floats
from ._snapshot import CounterLayout, CountsSnapshot, offsets, snapshot_of
from ._usage import CAPTURE_ARRAYS, NANO, REVIEW_ARRAYS, USAGE_ARRAYS, CallUsage

__all__ = ["NO_DECISION", "ROW_BATCH", "ModelCounters", "flush_all"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
_log = logging.getLogger("otel_ml")
_DEFAULT: Any = object()  # multiproc_dir= not given: follow OTEL_ML_MULTIPROC_DIR


ROW_BATCH = 512  # buffered single rows per flush: amortises numpy's per-call cost, bounds the buffer

_live: weakref.WeakSet[ModelCounters] = weakref.WeakSet()
_warned_unshared = False


class ModelCounters:
    """All counts for one model version. ``add_*`` methods are thread-safe and never allocate per value.

    With a multiprocess directory (``OTEL_ML_MULTIPROC_DIR``) the arrays are views into this
    process's memory-mapped counter file; otherwise they are plain arrays. The code that counts
    is the same either way.
    """

    def __init__(
        self,
        model_name: str,
        model_version: str,
        baseline: Baseline | None,
        segments: Sequence[str] = (),
        *,
        segment_budget: int = 50,
        decision_budget: int = 16,
        error_budget: int = 32,
        shadow_of: str | None = None,
        flip_budget: int = 32,
        cost_segment: str | None = None,
        review_edges: Sequence[float] | None = None,
        review_segment: str | None = None,
        prices: Prices | None = None,
        gpu_share: float = 0.0,
        capture: bool = False,
        multiproc_dir: str | os.PathLike[str] | None | Any = _DEFAULT,
    ) -> None:
        """``cost_segment`` (one of ``segments``) splits costs by its values; ``review_edges``
        (with ``review_segment``, one of ``segments`` or None) lays out the review strata;
        ``prices`` and ``gpu_share`` (of one GPU, held for a call's wall time) price compute;
        ``capture`` adds the skew capture spool's counters.
        Over 60 lines because the order is the point: the layout (and every option folded into
        it) before the labels, the labels before the arrays, the arrays before the row buffer."""
        self.model_name = model_name
        self.model_version = model_version
        self._lock = threading.Lock()
        numeric: tuple[NumericProfile, ...] = baseline.numeric if baseline else ()
        categorical: tuple[CategoricalProfile, ...] = baseline.categorical if baseline else ()

        # numeric features: one flat array of bins, feature j owning [offsets[j], offsets[j+1])
        self.numeric_names = tuple(f.name for f in numeric)
        self.numeric_edges = tuple(f.edges for f in numeric)
        self._edges = [f.edges_array() for f in numeric]
        self._num_offsets = offsets([f.bin_count for f in numeric])
        self._row_getter = itemgetter(*self.numeric_names) if len(self.numeric_names) > 1 else None

        self.categorical_names = tuple(f.name for f in categorical)
        self._encoders = [CategoryEncoder(f.vocabulary, f.rare_values) for f in categorical]
        self._cat_offsets = offsets([e.size for e in self._encoders])
        self.feature_names = self.numeric_names + self.categorical_names

        score = baseline.score if baseline else None
        self.score_edges = score.edges if score else DEFAULT_SCORE_EDGES
        self._score_edges = np.asarray(self.score_edges, dtype=np.float64)
        self.segment_keys = (ALL, *segments)
        rare = tuple(tuple(f.rare_values) for f in categorical)
        self.layout = self._layout(rare, segment_budget, decision_budget, error_budget)
        if shadow_of is not None:  # a shadow version: its block also holds the comparison with its primary
            self.layout = replace(self.layout, shadow_of=shadow_of, flip_budget=flip_budget)
        for key in (cost_segment, review_segment):
            if key is not None and key not in segments:
                raise ValueError(f"segment key {key!r} is not one of segments= {tuple(segments)!r}")
        self.layout = replace(
            self.layout,
            cost_segment=cost_segment,
            review_edges=None if review_edges is None else tuple(float(e) for e in review_edges),
            review_segment=review_segment if review_edges is not None else None,
            capture=True if capture else None,
        )
        self.prices = prices
        self._rates = (
            (prices.cpu_second * NANO / 1e9, prices.gpu_second * gpu_share * NANO / 1e9) if prices else (0.0, 0.0)
        )
        self.cost_key = self.layout.segment_keys.index(cost_segment) if cost_segment is not None else 0
        self.review_key = self.layout.segment_keys.index(review_segment) if review_segment is not None else 0
        self._calls = 0  # calls written through since the process CPU was last noted (multiprocess)
        directory = _multiproc.multiproc_dir() if multiproc_dir is _DEFAULT else multiproc_dir
        self._directory = None if directory is None else Path(directory)
        self.file: CounterFile | None = None
        self._make_labels()
        self._bind(self._allocate())
        self._init_row_buffer()
        _live.add(self)
        if self._directory is None:
            _warn_if_unshared()

    # -- storage ------------------------------------------------------------------------------
    def _layout(self, rare: tuple[tuple[str, ...], ...], segments: int, decisions: int, errors: int) -> CounterLayout:
        return CounterLayout(
            self.model_name,
            self.model_version,
            self.numeric_names,
            self.numeric_edges,
            self.categorical_names,
            tuple(e.labels for e in self._encoders),
            tuple(e.other_code for e in self._encoders),
            rare,
            tuple(self.score_edges),
            tuple(DURATION_BUCKETS),
            self.segment_keys,
            segments,
            decisions,
            errors,
        )

    def _init_row_buffer(self) -> None:
        """The single-row buffer (see :meth:`add_row`) and the plan its flush counts with."""
        self._pending: list[Row] = []
        self._pack = struct.Struct(f"={len(self.numeric_names)}d").pack
        self._flush_lock = threading.Lock()
        self._segment_slots = self.segment_labels[1:]
        self._no_segments = (0,) * len(self._segment_slots)  # a row without a prediction: not read
        self._plan = RowPlan(
            tuple(self._edges),
            *RowPlan.padded_edges(self._edges),
            tuple(int(o) for o in self._num_offsets),
            tuple(int(o) for o in self._cat_offsets),
            self._score_edges,
            tuple(DURATION_BUCKETS),
            self.predictions.shape,
            self.bins.size,
            self.categories.size,
            self.cost_key,
            self.cpu_ns.size,
        )

    def _make_labels(self) -> None:
        lay = self.layout
        make: Callable[[int], BoundedLabels]
        if self._directory is None:
            make = BoundedLabels
        else:
            make = functools.partial(PublishedLabels, publish=self._publish_labels)
        self.segment_labels = [BoundedLabels(1)] + [make(lay.segment_budget) for _ in lay.segment_keys[1:]]
        self.segment_labels[0].index(ALL)
        self.decision_labels = make(lay.decision_budget)
        self._error_labels = [make(lay.error_budget) for _ in range(3)]
        self.flip_labels = make(lay.flip_budget) if lay.shadow_of is not None else None

    def _growing_labels(self) -> list[BoundedLabels]:
        """Every label set that grows at runtime (the published vocabulary), ``__all__`` excluded."""
        flips = [] if self.flip_labels is None else [self.flip_labels]
        return [*self.segment_labels[1:], self.decision_labels, *self._error_labels, *flips]

    def _allocate(self) -> dict[str, npt.NDArray[Any]]:
        specs = self.layout.specs()
        if self._directory is not None:
            try:
                self.file = CounterFile.create(self._directory, self.layout.to_json(), specs, self._vocab())
            except (OSError, ValueError) as exc:  # never hurt: count in memory, and say why
                _log.error(
                    "otel-ml: cannot create a counter file in %s (%s); %s counts in this process's memory only",
                    self._directory,
                    exc,
                    self.model_name,
                )
                self._directory = None
        if self.file is None:
            return {
                name: np.zeros(shape, dtype=np.int64 if code == "i8" else np.float64) for name, code, shape in specs
            }
        for lab in self._growing_labels():
            if isinstance(lab, PublishedLabels):
                lab.published = len(lab.labels)
        return self.file.arrays

    def _bind(self, arrays: Mapping[str, npt.NDArray[Any]]) -> None:
        self.bins: IntArray = arrays["bins"]
        self.sums: FloatArray = arrays["sums"]
        self.categories: IntArray = arrays["categories"]
        self.missing: IntArray = arrays["missing"]
        self.score_bins: IntArray = arrays["score_bins"]
        self._scalars: FloatArray = arrays["scalars"]
        self.predictions: IntArray = arrays["predictions"]
        self.duration_bins: IntArray = arrays["duration_bins"]
        self.errors = SlotCounts(self._error_labels[0], arrays["errors"])
        self.fallbacks = SlotCounts(self._error_labels[1], arrays["fallbacks"])
        self.instrumentation_errors = SlotCounts(self._error_labels[2], arrays["instrumentation"])
        self.cpu_ns: IntArray = arrays["cpu_ns"]  # per cost slot: thread CPU time of sync calls
        self.wall_ns: IntArray = arrays["wall_ns"]  # per cost slot: wall time (priced with the GPU share)
        self.process_cpu_ns: IntArray = arrays["process_cpu_ns"]  # this process's CPU time, as last noted
        self.reported_nano: IntArray = arrays["reported_nano"]  # slot x (api, tokens) x (configured, billed)
        self.tokens: IntArray = arrays["tokens"]
        arrays["rates"][:] = self._rates  # a reader prices this file's times with its process's rates
        self._review = tuple(arrays[name] for name in REVIEW_ARRAYS) if self.layout.review_edges is not None else None
        self._capture = (arrays["capture"], arrays["capture_dropped"]) if self.layout.capture else None
        self._writer: RowWriter | None = None  # built on first use, over these arrays
        self.pairs: PairCounts | None = None  # a shadow's comparison with its primary
        if self.flip_labels is not None:
            self.pairs = PairCounts(self.segment_labels, self.flip_labels, arrays, self._lock)

    def _vocab(self) -> dict[str, Any]:
        return {
            "segments": [list(lab.labels) for lab in self.segment_labels],
            "decisions": list(self.decision_labels.labels),
            "errors": list(self._error_labels[0].labels),
            "fallbacks": list(self._error_labels[1].labels),
            "instrumentation": list(self._error_labels[2].labels),
            **({} if self.flip_labels is None else {"flips": list(self.flip_labels.labels)}),
            **({} if self.prices is None else {"prices": _price_vocab(self.prices)}),
        }

    def _publish_labels(self) -> None:
        """Write the label sidecar (a new label appeared); marks what readers can now resolve."""
        if self.file is None:
            return
        labels = self._growing_labels()
        sizes = [len(lab.labels) for lab in labels]
        self.file.write_labels(self._vocab())
        for lab, size in zip(labels, sizes):
            if isinstance(lab, PublishedLabels):
                lab.published = max(lab.published, size)

    def _after_fork_in_child(self) -> None:
        """In a forked child: fresh locks, and counts of its own (the parent's stay the parent's)."""
        self._lock = threading.Lock()
        for lab in [self.segment_labels[0], *self._growing_labels()]:
            lab._lock = threading.Lock()
            lab._index = {label: i for i, label in enumerate(lab.labels)}
        self.file = None
        self._bind(self._allocate())
        self._init_row_buffer()  # the parent flushed its rows before forking: none are the child's

    # -- features ---------------------------------------------------------------------------
    def row_values(self, row: Mapping[str, Any]) -> FloatArray:
        """The numeric features of one mapping as a float array (NaN where absent or invalid)."""
        return row_floats(self._row_tuple(row))

    def _row_tuple(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        if self._row_getter is not None:
            try:
                return self._row_getter(row)  # type: ignore[no-any-return]
            except (KeyError, TypeError):
                pass
        return tuple(row.get(n) for n in self.numeric_names)

    def add_row(
        self,
        row: Mapping[str, Any],
        score: float | None,
        decision: str | None,
        segments: Sequence[str | None],
        duration: float | None,
        cpu_ns: int = 0,
    ) -> int:
        """Count one prediction made from one mapping of features: the single-row hot path.
        Returns the row's cost slot (its value of the cost segment; 0 without one).

        ``decision=None`` counts the features only (the call raised: no prediction was made).

        In process memory the row is buffered (its values, category codes, score, decision and
        segment indices, latency) and counted with the batch kernels when :data:`ROW_BATCH`
        rows have accumulated, and before every read of these counters (:meth:`snapshot`, a
        scrape, an OTLP export), a fork and interpreter exit: nothing outside the process can
        see the buffer, and a killed process loses its in-memory counts anyway. In
        multiprocess mode the file is what other processes read and what outlives a killed or
        terminated worker (``multiprocessing.Pool`` ends its workers with SIGTERM), so each
        row is counted into it before the call returns. Label indices (segments, decisions,
        their budgets) are assigned now, in call order, as before.
        """
        getter = self._row_getter
        values: bytes | tuple[Any, ...]
        if getter is None:
            values = self._row_tuple(row) if self.numeric_names else ()
        else:
            try:
                values = getter(row)
            except KeyError:  # a missing key is a missing value (JSON's way to spell one)
                values = self._row_tuple(row)
        try:  # numbers as doubles now (as numpy converts them); anything else stays for the flush
            values = self._pack(*values)
        except Exception:
            pass
        codes = (
            tuple(enc.code(_row_label(row.get(name))) for enc, name in zip(self._encoders, self.categorical_names))
            if self._encoders
            else ()
        )
        dec = -1 if decision is None else self.decision_labels.index(decision)
        if (dec >= 0 or self.cost_key) and self._segment_slots:  # a failed call's cost has its segment too
            seg = tuple([labels.index(value) for labels, value in zip(self._segment_slots, segments)])
        else:
            seg = self._no_segments
        entry = (values, codes, math.nan if score is None else score, dec, seg, duration, cpu_ns)
        if self.file is not None:  # multiprocess mode writes through: the file is what others read
            self._write_through(entry)
        else:
            pending = self._pending
            pending.append(entry)  # atomic; the list is never swapped, only its head cut (see flush)
            if len(pending) >= ROW_BATCH:
                self.flush(wait=False)
        return seg[self.cost_key - 1] if self.cost_key else 0

    def _write_through(self, entry: Row) -> None:
        writer = self._writer
        if writer is None:
            arrays = {
                "bins": self.bins,
                "sums": self.sums,
                "missing": self.missing,
                "categories": self.categories,
                "score_bins": self.score_bins,
                "scalars": self._scalars,
                "predictions": self.predictions,
                "duration_bins": self.duration_bins,
                "cpu_ns": self.cpu_ns,
                "wall_ns": self.wall_ns,
            }
            writer = self._writer = RowWriter(self._plan, arrays)
        with self._lock:
            writer.add(entry)
        self._calls += 1
        if not self._calls & 63:  # readers in other processes see this process's CPU at most 64 calls late
            self.note_process_cpu()

    def note_process_cpu(self) -> None:
        """Write this process's CPU time (all threads) where readers find it: the attribution
        ratio's denominator. Noted before every read in this process and, in multiprocess mode,
        every 64 calls (reading the clock costs ~0.3 us, too much for every call)."""
        self.process_cpu_ns[0] = time.process_time_ns()

    def flush(self, wait: bool = True) -> None:
        """Count the buffered rows into the arrays (a no-op when none are buffered).

        Flushes take turns; ``wait=False`` (a full buffer on the request path) leaves the rows
        to a flush already running rather than waiting for it. The rows counted are cut from
        the head of the buffer in one step, so rows appended meanwhile by other threads stay
        for the next flush: none is lost or counted twice, and appending needs no lock.
        """
        if not self._flush_lock.acquire(blocking=wait):
            return
        try:
            self._flush_pending()
        finally:
            self._flush_lock.release()
        if wait:
            self.note_process_cpu()

    def _flush_pending(self) -> None:
        pending = self._pending
        if pending:
            rows = pending[:]  # one step: rows appended from now on stay in the buffer
            del pending[: len(rows)]
            try:
                counts = count_rows(rows, self._plan)
            except Exception:  # one row numpy cannot take must not cost the others: count them one by one
                self._count_one_by_one(rows)
                return
            self._add_counts(counts)

    def _count_one_by_one(self, rows: list[Row]) -> None:
        """Count each row alone; a row that still fails is lost alone, counted and logged (as a
        row whose counting raised was before rows were buffered)."""
        for row in rows:
            try:
                counts = count_rows([row], self._plan)
            except Exception as exc:  # never hurt the caller or a scrape
                _log.error("otel-ml: counting a buffered row of %s failed: %r", self.model_name, exc)
                self.instrumentation_errors.add(type(exc).__qualname__)
                continue
            self._add_counts(counts)

    def _add_counts(self, counts: RowCounts) -> None:
        with self._lock:
            self.bins += counts.bins
            self.sums += counts.sums
            self.missing += counts.missing
            self.categories += counts.categories
            self.score_bins += counts.score_bins
            self.predictions += counts.predictions
            self.duration_bins += counts.duration_bins
            self._scalars[0] += counts.score_sum
            self._scalars[1] += counts.duration_sum
            self.cpu_ns += counts.cpu_ns
            self.wall_ns += counts.wall_ns

    def add_columns(self, columns: Columns) -> None:
        """Count a batch: the batch kernels per feature column, then one locked add."""
        n = columns.n_rows
        if n == 0:
            return
        bins = np.zeros_like(self.bins)
        sums = np.zeros_like(self.sums)
        missing = np.zeros_like(self.missing)
        for j, (name, edges) in enumerate(zip(self.numeric_names, self._edges)):
            x = columns.floats(name)
            if x is None:
                missing[j] = n
                continue
            lo, hi = self._num_offsets[j], self._num_offsets[j + 1]
            bins[lo:hi], sums[j], n_finite = finite_bin_counts(edges, x)
            missing[j] = x.size - n_finite
        cats = np.zeros_like(self.categories)
        base = len(self.numeric_names)
        for j, (name, enc) in enumerate(zip(self.categorical_names, self._encoders)):
            raw = columns.raw(name)
            if raw is None:
                missing[base + j] = n
                continue
            codes = enc.encode(raw)
            present = codes[codes != MISSING_CODE]
            lo, hi = self._cat_offsets[j], self._cat_offsets[j + 1]
            cats[lo:hi] = np.bincount(present, minlength=hi - lo)
            missing[base + j] = codes.size - present.size
        with self._lock:
            self.bins += bins
            self.sums += sums
            self.missing += missing
            self.categories += cats

    # -- predictions --------------------------------------------------------------------------
    def add_predictions(
        self,
        scores: FloatArray | None,
        decisions: Any,
        segment_values: Sequence[Any],
        n: int,
    ) -> npt.NDArray[np.int64] | None:
        """Count scores and decisions; ``segment_values[k]`` is the column of segment key k (or None).
        Returns the batch's rows per cost slot when costs are split by a segment (else ``None``)."""
        if scores is not None and scores.size:
            score_counts, score_sum, _ = finite_bin_counts(self._score_edges, scores)
        else:
            score_counts, score_sum = None, 0.0
        if n == 0:
            return None
        dec = (
            np.full(n, self.decision_labels.index(NO_DECISION, n), dtype=np.intp)
            if decisions is None
            else self.decision_labels.encode(decisions)
        )
        grids = segment_grids(self.segment_labels, segment_values, dec, self.predictions.shape[1:])
        with self._lock:
            if score_counts is not None:
                self.score_bins += score_counts
                self._scalars[0] += score_sum
            for k, grid in enumerate(grids):
                self.predictions[k] += grid
        return grids[self.cost_key].sum(axis=1) if self.cost_key else None

    def add_call_usage(self, cpu_ns: int, seconds: float | None, slot_rows: npt.NDArray[np.int64] | None) -> None:
        """A call counted outside the row path (a batch, a call without readable input): its CPU
        and wall time, split over cost slots by rows (a batch's cost divides by rows)."""
        wall = 0 if seconds is None or not math.isfinite(seconds) or seconds < 0 else round(seconds * 1e9)
        if slot_rows is not None and slot_rows.sum():  # exact integer shares, the remainder to the largest
            cpu, wall_ns = _shares(cpu_ns, slot_rows), _shares(wall, slot_rows)
            with self._lock:
                self.cpu_ns += cpu
                self.wall_ns += wall_ns
            return
        whole = self._no_segment_slot()
        with self._lock:
            self.cpu_ns[whole] += cpu_ns
            self.wall_ns[whole] += wall

    def add_reported(self, usage: CallUsage, slot: int | npt.NDArray[np.int64] | None) -> list[str]:
        """Costs and tokens the app reported inside one call, on its cost slot (a batch's by rows);
        returns the LLM names whose tokens the price table does not price."""
        reported, unpriced = usage.reported(self.prices)
        split = isinstance(slot, np.ndarray) and bool(slot.sum())
        i = slot if isinstance(slot, int) else (0 if split else self._no_segment_slot())
        with self._lock:
            if split:
                for (j, b), nano in reported:
                    self.reported_nano[:, j, b] += _shares(nano, slot)  # type: ignore[arg-type]
            else:
                for (j, b), nano in reported:
                    self.reported_nano[i, j, b] += nano
            self.tokens[0] += usage.input_tokens
            self.tokens[1] += usage.output_tokens
        return unpriced

    def _no_segment_slot(self) -> int:
        """Where a cost with no segment value goes: the model's one slot, or the cost segment's
        ``__missing__`` (a call whose input could not be read, a cost added outside a call)."""
        return self.segment_labels[self.cost_key].index(None) if self.cost_key else 0

    def add_review(self, slot: int, stratum: int, sampled: bool) -> None:
        """One prediction in a review stratum, and whether it was selected for review."""
        review = self._review
        if review is None:
            return
        with self._lock:
            review[0][slot, stratum] += 1
            if sampled:
                review[1][slot, stratum] += 1

    def add_review_batch(
        self, slots: npt.NDArray[np.intp], strata: npt.NDArray[np.intp], sampled: npt.NDArray[np.bool_]
    ) -> None:
        """A batch's predictions per stratum, and those selected (one bincount each)."""
        review = self._review
        if review is None:
            return
        shape = review[0].shape
        flat = slots * shape[1] + strata
        population = np.bincount(flat, minlength=shape[0] * shape[1]).reshape(shape)
        chosen = np.bincount(flat[sampled], minlength=shape[0] * shape[1]).reshape(shape)
        counted, selected = review[0], review[1]
        with self._lock:
            counted += population
            selected += chosen

    def add_review_dropped(self, reason: str, count: int) -> None:
        """Selected predictions that never reached the sidecar's queue (the review client says why)."""
        review = self._review
        if review is None or reason not in _DROP_REASONS:
            return
        with self._lock:
            review[2][_DROP_REASONS[reason]] += count

    def add_captured(self, records: int, written_bytes: int) -> None:
        """Rows and bytes the capture spool's writer put on disk."""
        capture = self._capture
        if capture is None:
            return
        with self._lock:
            capture[0][0] += records
            capture[0][1] += written_bytes

    def add_capture_dropped(self, reason: str, count: int) -> None:
        """Sampled rows the capture spool did not write, or deleted to stay under its size cap."""
        capture = self._capture
        if capture is None or reason not in _CAPTURE_DROP_REASONS:
            return
        with self._lock:
            capture[1][_CAPTURE_DROP_REASONS[reason]] += count

    def add_duration(self, seconds: float) -> None:
        i = bisect_left(DURATION_BUCKETS, seconds)
        with self._lock:
            self.duration_bins[i] += 1
            self._scalars[1] += seconds

    def add_error(self, error_type: str) -> None:
        self.errors.add(error_type)

    def add_fallback(self, reason: str) -> None:
        self.fallbacks.add(reason)

    # -- read side ----------------------------------------------------------------------------
    def snapshot(self) -> CountsSnapshot:
        self.flush()
        with self._lock:
            arrays = {name: getattr(self, attr).copy() for name, attr in _ARRAY_ATTRS.items()}
            arrays["rates"] = np.asarray(self._rates, dtype=np.float64)
            if self._review is not None:
                arrays.update({name: a.copy() for name, a in zip(REVIEW_ARRAYS, self._review)})
            if self._capture is not None:
                arrays.update({name: a.copy() for name, a in zip(CAPTURE_ARRAYS, self._capture)})
            if self.pairs is not None:
                for name, attr in _PAIR_ATTRS.items():
                    arrays[name] = getattr(self.pairs, attr).copy()
        for name, counter in (("errors", self.errors), ("fallbacks", self.fallbacks)):
            with counter._lock:
                arrays[name] = counter.slots.copy()
        with self.instrumentation_errors._lock:
            arrays["instrumentation"] = self.instrumentation_errors.slots.copy()
        return snapshot_of(self.layout, arrays, self._vocab())


_ARRAY_ATTRS = {
    "bins": "bins",
    "sums": "sums",
    "categories": "categories",
    "missing": "missing",
    "score_bins": "score_bins",
    "scalars": "_scalars",
    "predictions": "predictions",
    "duration_bins": "duration_bins",
    **{name: name for name in USAGE_ARRAYS if name != "rates"},
}

_PAIR_ATTRS = {
    "shadow_pairs": "pairs",
    "shadow_difference": "difference",
    "shadow_scalars": "scalars",
    "shadow_dropped": "dropped",
}


_DROP_REASONS = {reason: i for i, reason in enumerate(REVIEW_DROP_REASONS)}
_CAPTURE_DROP_REASONS = {reason: i for i, reason in enumerate(CAPTURE_DROP_REASONS)}


def _shares(total: int, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """``total`` split over slots in proportion to their rows, in integers that add up to it."""
    out = (total * rows) // int(rows.sum())
    out[int(np.argmax(rows))] += total - int(out.sum())
    return out.astype(np.int64, copy=False)


def _price_vocab(prices: Prices) -> dict[str, Any]:
    """What a reader needs of this process's price table: its hash and date."""
    return {"hash": prices.hash, "updated": prices.updated_text, "updated_ts": prices.updated_timestamp}


def _warn_if_unshared(forked: bool = False) -> None:
    """Never silent partial counts: say once when this process is one of several without a shared dir."""
    global _warned_unshared
    if _warned_unshared:
        return
    # a spawned child imports the app before parent_process() is set, but already has its name
    child = multiprocessing.parent_process() is not None or multiprocessing.current_process().name != "MainProcess"
    if not forked and not child and "gunicorn.arbiter" not in sys.modules:
        return
    _warned_unshared = True
    _log.warning(
        "otel-ml: this process is one of several worker processes (pid %d) and %s is not set: "
        "its /metrics shows only its own counts. Set %s to a shared directory (README, 'Multiple workers'), "
        "or push over OTLP, where each process is its own instance.",
        os.getpid(),
        _multiproc.MULTIPROC_DIR_ENV,
        _multiproc.MULTIPROC_DIR_ENV,
    )


def _reinit_after_fork() -> None:
    global _warned_unshared
    counters = list(_live)
    _warned_unshared = False
    for c in counters:
        try:
            c._after_fork_in_child()
        except Exception:  # at-fork hooks must not raise; never keep writing into the parent's file
            _log.exception("otel-ml: resetting %s counters after fork failed", c.model_name)
            c.file, c._directory = None, None
            c._bind(c._allocate())
            c._init_row_buffer()
    if any(c._directory is None for c in counters):
        _warn_if_unshared(forked=True)


def flush_all() -> None:
    """Flush every live counters' row buffer (before a fork, at exit, before reading the files)."""
    for c in list(_live):
        try:
            c.flush()
        except Exception:  # at-fork and atexit hooks must not raise
            _log.exception("otel-ml: flushing %s counters failed", c.model_name)


os.register_at_fork(before=flush_all, after_in_child=_reinit_after_fork)
at_exit(flush_all)


def _row_label(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return as_labels([value])[0]  # type: ignore[no-any-return]
