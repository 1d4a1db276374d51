"""The sidecar's whole state and the operations on it, behind one lock.

Inputs arrive on HTTP threads and scrape threads; outputs are computed on a Prometheus scrape.
Every mutation goes through :class:`SidecarState` under its lock, after the payload was fully
decoded, so a bad payload can never leave half of itself behind. Outputs are computed again
only when :meth:`SidecarState.page_key` changed (and at most once per ``compute_ttl`` seconds
under steady input), so several scrapers do not multiply the work.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import _names as n
from .._cardinality import BoundedLabels
from .._label_hygiene import label_value
from .._names import OTHER
from ..baseline import Baseline
from ._app_gauges import AppGauges
from ._join_store import DAY, JoinStoreError, SqliteJoinStore
from ._label_input import LabelEvent, request_id_ok
from ._label_join import JoinResult, LabelJoin, joined_by_model
from ._model_state import ModelState
from ._otlp_input import AppGaugePoint
from ._outcomes import OutcomeCounts, OutcomeVocabulary, pair_samples
from ._outputs import OutputSettings, model_outputs, reference_outputs
from ._review_config import ReviewSettings
from ._review_input import ReviewItem
from ._review_queue import AddResult
from ._review_state import Reviews, review_judge
from ._series import SUM_SERIES, ApplyResult, Gauge, IngestError, LimitSettings, MetricBatch, Prediction
from ._throttle import Throttle
from ._windows import DEFAULT_WINDOWS, WindowSpec

__all__ = ["SidecarState", "StateSettings"]

_log = logging.getLogger("otel_ml.sidecar")
LABELS_SOURCE = "labels"
_MAX_UNMATCHED = 100


ModelKey = tuple[str, str]
OutputPart = tuple[tuple[str, ...], tuple[Any, ...], list[Gauge]]
"""(part id, key, gauges): while a part's key stays the same, so do its gauges."""


def window_clock() -> Callable[[], float]:
    """Monotonic seconds that read as the wall clock at start: a wall-clock jump cannot stretch a window."""
    offset = time.time() - time.monotonic()
    return lambda: time.monotonic() + offset


@dataclass(frozen=True)
class StateSettings:
    """What the state keeps and for how long; defaults are the production defaults."""

    windows: tuple[WindowSpec, ...] = tuple(WindowSpec.parse(w) for w in DEFAULT_WINDOWS)
    limits: LimitSettings = field(default_factory=LimitSettings)
    source_ttl: float = 3600.0  # a source silent this long is forgotten (its counts stay in the totals)
    join_ttl: float = 32 * 86400.0  # how long a prediction waits for its label (the 30d cohort needs 31)
    join_store: Path | None = None  # the SQLite join store; None: in memory, lost on restart
    token_keys: tuple[bytes, ...] = ()  # HMAC keys of signed prediction tokens (the first signs)
    negative_outcome: str = "false"
    multiclass: bool = False  # other label values are classes of their own (else a 400)
    compute_ttl: float = 1.0
    outputs: OutputSettings = field(default_factory=OutputSettings)
    review: ReviewSettings = field(default_factory=ReviewSettings)


def check_values(batches: Sequence[MetricBatch], max_count: float) -> None:
    """Counts must be finite, non-negative and at most ``max_count``; sums finite. All or nothing."""
    for batch in batches:
        for name, _, value in batch.samples:
            if not 0.0 <= value <= max_count and not (name in SUM_SERIES and math.isfinite(value)):
                raise IngestError(
                    400, "invalid_value", f"{name}: a count must be finite, >= 0 and <= {max_count:g}; sums finite"
                )


class SidecarState:
    """Models (one per baseline), the label join store and the sidecar's own counters."""

    def __init__(
        self,
        baselines: Sequence[Baseline],
        settings: StateSettings | None = None,
        now: float | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings or StateSettings()
        self.clock = clock or window_clock()  # windows; the wall clock only for timestamps shown or saved
        start = self.clock() if now is None else now
        self.lock = threading.RLock()
        self.models: dict[tuple[str, str], ModelState] = {}
        for b in baselines:
            key = (b.model_name, b.model_version)
            if key in self.models:
                raise ValueError(f"two baselines for model {key[0]!r} version {key[1]!r}")
            self.models[key] = self.new_model(b, start)
        self.vocabulary = OutcomeVocabulary(
            self.settings.outputs.positive_outcome, self.settings.negative_outcome, self.settings.multiclass
        )
        self.join_store_error: str | None = None  # why the configured store file is not in use
        self.joins = LabelJoin(self._open_store(), baselines, self.settings.token_keys)
        self.seed_combinations()
        self.reviews = Reviews(self.settings.review, self.settings.limits.max_segment_combinations)
        self.review_judge = review_judge(
            self.settings.outputs.positive_decision, self.vocabulary.positive, self.settings.multiclass
        )
        self.app_gauges = AppGauges(self.settings.limits.max_sources_per_model)
        self.outcome_counts = {
            key: OutcomeCounts(m.baseline.score.edges if m.baseline.score else None, self.vocabulary.positive)
            for key, m in self.models.items()
        }
        self.ingest_errors: dict[str, int] = {}
        self.ingested: dict[str, int] = {}
        self.unmatched_labels: dict[str, int] = {}
        self.labels_received: dict[str, int] = {}
        budget = self.settings.limits.label_budget
        self._outcomes = BoundedLabels(budget)  # label values (multiclass) and label sources: bounded
        self._sources = BoundedLabels(budget)
        self.label_seq = 0  # the last logged label counted into the models (saved with the state)
        self.reexport: set[tuple[str, str]] = set()  # models whose app counters arrived over OTLP
        self.compute_seconds = 0.0
        self._parts: dict[ModelKey, tuple[tuple[Any, ...], float, list[Gauge], list[Gauge]]] = {}  # key, at, gauges
        self.generation = 0  # bumped by every input, so cached expositions know they are stale
        self.unmatched_models: dict[tuple[str, str], int] = {}  # incoming (model, version) without a baseline
        self._log_throttle = Throttle()  # the unmatched-model and output-error lines, once a minute each
        self.ready = False

    # -- the join store -----------------------------------------------------------------------
    def seed_combinations(self) -> None:
        """Each model's combination budget starts with what the store already holds (restarts do
        not grant a fresh budget)."""
        for key, found in self.joins.combinations().items():
            model = self.models.get(key)
            if model is not None:
                model.combinations.update(found)

    def _store(self, path: Path | None) -> SqliteJoinStore:
        return SqliteJoinStore(path, ttl=self.settings.join_ttl, max_bytes=self.settings.limits.join_max_bytes)

    def _open_store(self) -> SqliteJoinStore:
        """The configured store, or one in memory (and the reason, for ``/readyz``) when its file
        cannot be opened: the sidecar keeps serving, and labels wait (503) until it can be."""
        path = self.settings.join_store
        try:
            return self._store(path)
        except (JoinStoreError, OSError) as exc:
            self.join_store_error = (
                str(exc) if isinstance(exc, JoinStoreError) else f"cannot open the join store {path}: {exc}"
            )
            _log.error("%s: predictions are held in memory, labels are refused until it opens", exc)
            return self._store(None)

    @property
    def labels_durable(self) -> bool:
        """Whether an acknowledged label is on disk, as configured (in memory by choice counts as yes)."""
        return self.join_store_error is None

    def retry_join_store(self) -> bool:
        """Move to the configured store file once it can be written (the store held in memory is
        saved there first, so no waiting prediction is lost); a file that exists is never replaced."""
        path = self.settings.join_store
        if self.join_store_error is None or path is None:
            return True
        if path.exists():
            return False  # corrupt or foreign: an operator moves it; it is never overwritten
        try:
            with self.lock:
                self.joins.store.save_to(path)
                opened = self._store(path)
                old, self.joins.store = self.joins.store, opened
                self.label_seq = opened.last_seq  # the log numbering is the new file's from here on
                self.join_store_error = None
                self._changed()
        except (JoinStoreError, OSError, sqlite3.Error) as exc:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)  # the copy this attempt wrote, if it got that far
            self.join_store_error = f"cannot open the join store {path}: {exc}"
            return False
        old.close()
        _log.info("join store %s is in use again", path)
        return True

    def new_model(self, baseline: Baseline, now: float) -> ModelState:
        """An empty model state for one baseline, with this state's windows and limits."""
        return ModelState(baseline, self.settings.windows, self.settings.limits, now=now)

    # -- counters of the sidecar itself --------------------------------------------------------
    def count_error(self, reason: str, amount: int = 1) -> None:
        with self.lock:
            self.ingest_errors[reason] = self.ingest_errors.get(reason, 0) + amount
            self._changed()

    def _count_ingested(self, source: str) -> None:
        self.ingested[source] = self.ingested.get(source, 0) + 1

    # -- inputs ----------------------------------------------------------------------------------
    def apply_metrics(self, batches: Iterable[MetricBatch], source_kind: str, now: float | None = None) -> ApplyResult:
        """Apply decoded metric batches; unknown models and rejected series are counted, never fatal.

        A value no counter can have rejects the whole payload first (:class:`IngestError`)."""
        now = time.time() if now is None else now
        batches = list(batches)
        check_values(batches, self.settings.limits.max_count)
        total = ApplyResult()
        with self.lock:
            for batch in batches:
                for reason, count in batch.fixes.items():
                    self.ingest_errors[reason] = self.ingest_errors.get(reason, 0) + count
                model = self.models.get((batch.model, batch.version))
                if model is None:
                    total.reject("unknown_model")
                    self._note_unmatched(batch.model, batch.version)
                    continue
                result = model.apply(
                    batch.source, batch.samples, now=now, cumulative=batch.cumulative, start_ns=batch.start_ns
                )
                total.applied += result.applied
                for reason, count in result.rejected.items():
                    total.reject(reason, count)
                if source_kind == "otlp" and result.applied:
                    self.reexport.add((batch.model, batch.version))
            for reason, count in total.rejected.items():
                self.ingest_errors[reason] = self.ingest_errors.get(reason, 0) + count
            self._count_ingested(source_kind)
            self._changed()
        return total

    def _note_unmatched(self, model: str, version: str) -> None:
        """Count data for a model version no baseline describes; warn once a minute, naming both sides."""
        model, version = label_value(model)[:64], label_value(version)[:64]  # bounded, printable
        key = (model, version)
        if key in self.unmatched_models or len(self.unmatched_models) < _MAX_UNMATCHED:
            self.unmatched_models[key] = self.unmatched_models.get(key, 0) + 1
        if self._log_throttle.allow("unmatched"):
            known = ", ".join(f"{m!r} version {v!r}" for m, v in sorted(self.models)) or "none"
            _log.warning(
                "no baseline matches incoming model %r version %r (baselines loaded: %s): its data is dropped",
                model,
                version,
                known,
            )

    def add_predictions(
        self, predictions: Iterable[Prediction], now: float | None = None, source: str = "traces"
    ) -> int:
        """Store predictions (spans, ``/v1/predictions``) to wait for their labels; returns how many."""
        now = time.time() if now is None else now
        predictions = list(predictions)
        kept = [p for p in predictions if request_id_ok(p.request_id)]
        known = [p for p in kept if (p.model, p.version) in self.models]
        with self.lock:
            if len(kept) < len(predictions):
                self._error("request_id_too_long", len(predictions) - len(kept))
            for model, version in {(p.model, p.version) for p in kept} - self.models.keys():
                self._note_unmatched(model, version)
            added, overflow = self.joins.add(
                [self._shadow_known(self.models[(p.model, p.version)].bounded_prediction(p)) for p in known], now
            )
            if overflow:
                self._error("join_dims_budget", overflow)
            self._count_ingested(source)
            self._changed()
            return added

    def _shadow_known(self, p: Prediction) -> Prediction:
        """A shadow's prediction names its primary only if a baseline describes that version: the
        pair's counters live with the primary, and the name is stored in the join store's ids. A
        version shadowing itself is no pair (the app refuses such a shadow; a producer may not)."""
        if p.shadow_of is None or (p.shadow_of != p.version and (p.model, p.shadow_of) in self.models):
            return p
        return replace(p, shadow_of=None)

    def _error(self, reason: str, amount: int = 1) -> None:
        self.ingest_errors[reason] = self.ingest_errors.get(reason, 0) + amount

    def apply_labels(self, events: Sequence[LabelEvent], now: float | None = None) -> tuple[int, int]:
        """Join labels to their predictions and count them; returns (joined, unmatched).

        The store logs every label durably before this returns (and so before the HTTP answer):
        a restart replays what the last state snapshot did not cover yet."""
        now = time.time() if now is None else now
        if not self.labels_durable and any(e.source != n.REVIEW_SOURCE for e in events):
            raise IngestError(503, "join_store_unavailable", f"{self.join_store_error}; send the labels again later")
        outcomes = []
        for i, event in enumerate(events):  # the whole request is a 400 before anything changes
            canonical = self.vocabulary.canonical(event.outcome)
            if canonical is None:
                raise IngestError(
                    400,
                    "bad_label",
                    f"labels[{i}].label: not one of the configured outcomes (positive_outcome, negative_outcome;"
                    " labels.multiclass: true takes any value)",
                )
            outcomes.append(canonical)
        review = [  # a review label that names its model and version answers that model's item only
            (e.request_id, o, None if e.inline is None else (e.inline.model, e.inline.version))
            for e, o in zip(events, outcomes)
            if e.source == n.REVIEW_SOURCE
        ]
        others = [(e, o) for e, o in zip(events, outcomes) if e.source != n.REVIEW_SOURCE]
        with self.lock:
            # review labels only mark their queued items and count by stratum: never the unweighted
            # outcome counters (a sample drawn around the threshold would bias them)
            reviewed = self.reviews.label(review, now, self.review_judge) if review else []
            bounded = [b for b in (self._bounded(e, o) for e, o in others) if b is not None]
            if len(bounded) < len(others):
                self._error("unknown_model", len(others) - len(bounded))
            result = self.joins.label(bounded, now) if bounded else JoinResult(last_seq=self.label_seq)
            self._count_joined(result, now)
            self._count_ingested("labels")
        labelled = sum(r.status == "labelled" for r in reviewed)
        return len(result.joined) + labelled, sum(result.unmatched.values()) + len(reviewed) - labelled

    def add_review_items(self, items: Sequence[ReviewItem], now: float | None = None) -> AddResult:
        """Queue validated review items (committed before this returns); 507 when the queue is full."""
        now = time.time() if now is None else now
        with self.lock:
            try:
                result = self.reviews.add(items, self.models, now)
            finally:
                self._changed()  # a refused body counted its items as dropped
            self._count_ingested("review")
            return result

    def apply_app_gauges(self, points: Sequence[AppGaugePoint], now: float | None = None) -> int:
        """Keep the last value of each app gauge per source (never summed like the counters)."""
        if not points:
            return 0
        now = time.time() if now is None else now
        with self.lock:
            kept = self.app_gauges.apply(points, self.models, now)
            self._changed()
            return kept

    def _bounded(self, event: LabelEvent, outcome: str) -> LabelEvent | None:
        """The event with its canonical ``outcome`` and what becomes a label or an interned id held
        to the label budget; None for an inline prediction of a model no baseline describes."""
        inline = event.inline
        model = None if inline is None else self.models.get((inline.model, inline.version))
        if inline is not None:
            if model is None:  # before the budgets: nothing is counted, so no slot is taken
                return None
            inline = model.bounded_prediction(inline)
        outcome = self._outcomes.label(self._outcomes.index(outcome))
        source = self.bounded_source(event.source)
        if (outcome, source, inline) == (event.outcome, event.source, event.inline):
            return event
        return replace(event, outcome=outcome, source=source, inline=inline)

    def bounded_source(self, source: str) -> str:
        """A label source held to the label budget (``__other__`` beyond it); ``__other__`` itself
        (a source folded before it was logged or saved) takes no slot."""
        return source if source == OTHER else self._sources.label(self._sources.index(source))

    def restore_label_counts(self, unmatched: dict[str, int], received: dict[str, int]) -> None:
        """Add saved label counters; the saved sources take their budget slots again (largest
        first, the rest fold into ``__other__``), so a restart never admits a fresh budget."""
        with self.lock:
            for reason, count in unmatched.items():
                self.unmatched_labels[reason] = self.unmatched_labels.get(reason, 0) + count
            for source, count in sorted(received.items(), key=lambda kv: (-kv[1], kv[0])):
                bounded = self.bounded_source(source)
                self.labels_received[bounded] = self.labels_received.get(bounded, 0) + count
            self._changed()

    def replay_labels(self, now: float | None = None) -> int:
        """Count the labels logged after the restored snapshot; returns how many were replayed."""
        now = time.time() if now is None else now
        with self.lock:
            before = self.label_seq
            result = self.joins.replay(self.label_seq)
            self._count_joined(result, now)
            return self.label_seq - before

    def _count_joined(self, result: JoinResult, now: float) -> None:
        for reason, count in result.unmatched.items():
            self.unmatched_labels[reason] = self.unmatched_labels.get(reason, 0) + count
        for source, count in result.received.items():
            source = self.bounded_source(source)  # live: admitted already; replayed: admitted as live was
            self.labels_received[source] = self.labels_received.get(source, 0) + count
        for key, joined in joined_by_model(result.joined).items():
            model = self.models.get(key)
            if model is None:  # a logged label of a model no baseline describes any more
                self._error("unknown_model", len(joined))
                continue
            model.apply(LABELS_SOURCE, self.outcome_counts[key].samples(joined), now=now, cumulative=False)
        outputs = self.settings.outputs
        pairs = pair_samples(
            result.pairs, outputs.positive_decision, self.vocabulary.positive, self.settings.multiclass
        )
        for key, samples in pairs.items():
            primary = self.models.get(key)
            if primary is not None:  # None: a replayed pair whose primary's baseline is no longer loaded
                primary.apply(LABELS_SOURCE, samples, now=now, cumulative=False)
        self.label_seq = max(self.label_seq, result.last_seq)
        if self.joins.store.path is None:
            self.joins.store.forget_log(self.label_seq)  # nothing persists: the log has no reader
        self._changed()

    # -- time ------------------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> None:
        """Take due snapshots, forget silent sources, expire old predictions."""
        window_now = self.clock() if now is None else now
        wall = time.time() if now is None else now
        with self.lock:
            changed = False
            for model in self.models.values():
                changed |= model.take_snapshots(window_now)
                changed |= model.expire_sources(wall, self.settings.source_ttl) > 0
            changed |= self.app_gauges.expire(wall, self.settings.source_ttl)
            changed |= self.reviews.expire(wall)
            if changed:
                self._changed()
        if self.joins.store.expire(wall):  # the store has its own lock: ingest does not wait for a drop
            with self.lock:
                self._changed()

    # -- outputs ---------------------------------------------------------------------------------
    def _coverage_gauges(self) -> list[Gauge]:
        """Label coverage per prediction cohort (the vintage curve), from the join store's counts."""
        out: list[Gauge] = []
        for (model, version, age, decision), (predicted, labelled) in sorted(self.joins.coverage(time.time()).items()):
            if (model, version) not in self.models:
                continue
            labels = {
                n.LABEL_MODEL_NAME: model,
                n.LABEL_MODEL_VERSION: version,
                n.LABEL_COHORT_AGE: age,
                n.LABEL_DECISION: decision,
            }
            out.append((n.LABEL_COHORT_PREDICTIONS, labels, float(predicted)))
            if predicted > 0:
                out.append((n.LABEL_COVERAGE, labels, labelled / predicted))
        return out

    def _output_failed(self, model: ModelState) -> None:
        """Count (reason ``output_error``) and log, at most once a minute, a model whose gauges failed."""
        self.count_error("output_error")
        if self._log_throttle.allow("output_error"):
            _log.exception("computing the outputs of %s %s failed; its gauges are left out", model.model, model.version)

    def _changed(self) -> None:
        """Something on the page changed: cached expositions are stale (the models' own change
        counts tell which outputs are)."""
        self.generation += 1

    def page_key(self, now: float | None = None) -> tuple[Any, ...]:
        """Equal keys, equal ``/metrics`` pages: the generation (every change of state bumps it),
        the snapshots each window starts from (time moves a window only when it passes one), and
        the UTC day (the label-coverage cohorts are whole days). Cheap: no output is computed."""
        now = self.clock() if now is None else now
        with self.lock:
            return self._page_key(now)

    def _page_key(self, now: float) -> tuple[Any, ...]:
        windows = tuple(m.output_key(now)[1] for m in self.models.values())
        return (self.generation, windows, math.floor(time.time() / DAY), self.reviews.page_key(time.time()))

    def outputs(self, now: float | None = None) -> list[Gauge]:
        """Every gauge for every model and window, then the label-coverage gauges (see
        :meth:`output_parts`)."""
        return [g for _, _, gauges in self.output_parts(now)[0] for g in gauges]

    def output_parts(self, now: float | None = None) -> tuple[list[OutputPart], bool]:
        """The gauges in parts that change independently, each with a key that changes when its
        gauges may: per model its baseline's reference gauges (never), its windowed gauges (its
        own changes and window starts), then the label coverage (any change, the UTC day).

        Only a model whose key moved is computed again, at most once per ``compute_ttl`` seconds
        while its input keeps moving it, from a detached copy, off the lock: ingest never waits
        for it, and a sidecar serving many models pays for the ones that changed. The flag says
        whether every part is current (False while ``compute_ttl`` holds an older one back: a
        page built from them must not be cached as the current page)."""
        now = self.clock() if now is None else now
        ttl = self.settings.compute_ttl
        with self.lock:
            due: list[tuple[ModelKey, tuple[Any, ...], ModelState]] = []
            for key, m in self.models.items():
                try:
                    reference_outputs(m)  # computed once per model, then shared by every copy
                except Exception:
                    pass  # counted and logged below, off the lock
                part_key = m.output_key(now)
                cached = self._parts.get(key)
                if cached is None or (cached[0] != part_key and now - cached[1] >= ttl):
                    due.append((key, part_key, m.detached()))
            coverage_key = (self.generation, math.floor(time.time() / DAY))
        if due:
            started = time.perf_counter()
            computed = [(key, part_key, self._model_gauges(model, now)) for key, part_key, model in due]
            with self.lock:
                for key, part_key, gauges in computed:
                    if gauges is not None:
                        self._parts[key] = (part_key, now, *gauges)
                self.compute_seconds = time.perf_counter() - started
        parts: list[OutputPart] = []
        current = True
        with self.lock:
            for key, m in self.models.items():
                cached = self._parts.get(key)
                if cached is not None:  # None: its outputs failed (counted), it is left out
                    parts.append((("reference", *key), (), cached[2]))
                    parts.append((("windows", *key), cached[0], cached[3]))
                current &= cached is not None and cached[0] == m.output_key(now)
        parts.append((("coverage",), coverage_key, self._coverage_gauges()))
        return parts, current

    def _model_gauges(self, model: ModelState, now: float) -> tuple[list[Gauge], list[Gauge]] | None:
        """One model's reference gauges, and its windowed gauges with its last-ingest time; None
        (counted and logged) if they failed."""
        try:
            reference, gauges = reference_outputs(model), model_outputs(model, now, self.settings.outputs)
        except Exception:  # one broken model must not turn every scrape into a 500
            self._output_failed(model)
            return None
        if model.last_ingest:
            labels = {n.LABEL_MODEL_NAME: model.model, n.LABEL_MODEL_VERSION: model.version}
            gauges.append((n.SIDECAR_LAST_INGEST, labels, model.last_ingest))
        return reference, gauges
