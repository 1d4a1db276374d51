"""The sidecar's review part: the queue, its label budgets, and what ``/metrics`` shows of it.

Review labels are counted here only (``ml_review_labelled_total`` by stratum and outcome, in the
queue's own file, in the transaction that marks the item): a sample drawn around the decision
threshold would bias the unweighted ``ml_outcomes_total`` and the online performance gauges, so
review labels never reach the join store or the model's outcome counters.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from .. import _names as n
from .._names import OTHER
from ._model_state import ModelState
from ._review_config import ReviewSettings
from ._review_input import ReviewItem
from ._review_queue import AddResult, Judge, QueueFull, ReviewLabel, ReviewQueue, ReviewQueueError
from ._series import IngestError

__all__ = ["Reviews", "ReviewCounts"]

_log = logging.getLogger("otel_ml.sidecar")
Combination = tuple[str, str, str]  # (segment key, segment, stratum)
_FOLDED: Combination = (OTHER, OTHER, OTHER)


@dataclass(frozen=True)
class ReviewCounts:
    """The review counters and gauges, copied for one ``/metrics`` page."""

    counts: dict[tuple[str, ...], int]
    pending: dict[tuple[str, str], int]
    oldest: dict[tuple[str, str], float]
    webhook_failures: int | None = None  # None: no webhook configured


class Reviews:
    """The queue (or why it is not open) and the per-model stratum budgets."""

    def __init__(self, settings: ReviewSettings, max_combinations: int = 5000) -> None:
        self.settings = settings
        self.error: str | None = None
        self.queue = self._open()
        self.max_combinations = max_combinations
        self.webhook_failures: int | None = None if settings.webhook is None else 0  # since this process started
        self._combinations: dict[tuple[str, str], set[Combination]] = {}
        for model, version, *rest in self.queue.combinations():
            self._combinations.setdefault((model, version), set()).add((rest[0], rest[1], rest[2]))

    def _queue(self, path: Path | None) -> ReviewQueue:
        s = self.settings
        return ReviewQueue(
            path,
            max_items=s.max_items,
            retention=s.retention,
            max_pending_age=s.max_pending_age,
            synchronous=s.synchronous,
        )

    def _open(self) -> ReviewQueue:
        try:
            return self._queue(self.settings.queue_file)
        except (ReviewQueueError, OSError) as exc:
            self.error = str(exc)
            _log.error("%s: review items and labels are refused with 503 until it opens", exc)
            return self._queue(None)

    def retry(self) -> bool:
        """Open the configured file once it can be created (the volume was fixed). Nothing was
        accepted meanwhile (every review request was a 503), so nothing moves; a file that exists
        (corrupt, foreign) is never replaced: an operator moves it."""
        path = self.settings.queue_file
        if self.error is None or path is None or path.exists():
            return self.error is None
        try:
            opened = self._queue(path)
        except (ReviewQueueError, OSError) as exc:
            self.error = str(exc)
            return False
        old, self.queue, self.error = self.queue, opened, None
        old.close()
        _log.info("review queue %s is in use again", path)
        return True

    def _combination(
        self, model: str, version: str, combination: Combination, new: set[tuple[str, str, Combination]]
    ) -> Combination:
        """The (segment key, segment, stratum) of an item, or ``__other__`` thrice once the model's
        budget of combinations is spent: ``ml_review_labelled_total`` has at most
        2 x (max_combinations + 1) series per model version, whatever arrives. Combinations a body
        would add are collected in ``new``: the budget is spent only once the body is stored."""
        seen = self._combinations.setdefault((model, version), set())
        if combination in seen or (model, version, combination) in new:
            return combination
        if len(seen) + sum(1 for m, v, _ in new if (m, v) == (model, version)) >= self.max_combinations:
            new.add((model, version, _FOLDED))
            return _FOLDED
        new.add((model, version, combination))
        return combination

    def _available(self) -> None:
        if self.error is not None:
            raise IngestError(503, "review_queue_unavailable", f"{self.error}; send the items again later")

    def add(self, items: Sequence[ReviewItem], models: Mapping[tuple[str, str], ModelState], now: float) -> AddResult:
        """Queue validated items with their segment and stratum held to the model's budgets (the
        same folding as the app's population series); 507 when the queue is full."""
        self._available()
        bounded = []
        new: set[tuple[str, str, Combination]] = set()
        for item in items:
            model = models[(item.model, item.version)]
            segment = model.bound_segment(item.segment_key, item.segment)  # as the population series fold
            key, segment, stratum = self._combination(
                item.model, item.version, (item.segment_key, segment, item.stratum), new
            )
            if (key, segment, stratum) != (item.segment_key, item.segment, item.stratum):
                item = replace(item, segment_key=key, segment=segment, stratum=stratum)
            bounded.append(item)
        try:
            result = self.queue.add(bounded, now)
        except QueueFull as full:
            raise IngestError(507, "review_queue_full", f"{full}; retry later or review faster") from None
        for model_name, version, combination in new:  # stored: now they count against the budget
            self._combinations.setdefault((model_name, version), set()).add(combination)
        return result

    def label(
        self, events: Sequence[tuple[str | None, str, tuple[str, str] | None]], now: float, judge: Judge
    ) -> list[ReviewLabel]:
        self._available()
        return self.queue.label(events, now, judge)

    def expire(self, now: float) -> bool:
        expired, deleted = self.queue.expire(now)
        return bool(expired or deleted)

    def page_key(self, now: float) -> tuple[int, int]:
        """Changes, and the second while items are pending (their oldest age grows with time)."""
        changes = self.queue.changes + (self.webhook_failures or 0)
        return changes, math.floor(now) if any(self.queue.pending.values()) else 0

    def webhook_failed(self) -> None:
        """One failed webhook delivery (called by the webhook's thread)."""
        self.webhook_failures = (self.webhook_failures or 0) + 1

    def counts(self) -> ReviewCounts:
        queue = self.queue
        return ReviewCounts(dict(queue.counts), dict(queue.pending), queue.oldest_pending(), self.webhook_failures)


def review_judge(positive_decision: str, positive_outcome: str, multiclass: bool) -> Judge:
    """``correct`` when the item's decision agrees with the review's label, ``error`` otherwise, by
    the sidecar's rule for decisions and outcomes (binary: positive decision iff positive label;
    multiclass: the decision names the label's class); None for an item without a decision."""

    def judge(decision: str | None, label: str) -> str | None:
        if decision is None:
            return None
        if multiclass:
            right = decision == label
        else:
            right = (decision == positive_decision) == (label == positive_outcome)
        return n.REVIEW_CORRECT if right else n.REVIEW_ERROR

    return judge
