"""Demo traffic: rows drawn from the model's data, faults applied, sent to the model server.

One background thread posts single-row requests at a steady rate and, a little later, posts
the true outcome of some of them to the sidecar's ``/v1/labels`` (the delayed label), so the
online precision/recall panels have data. Faults are switched on while it runs. With
``review_url`` it is also the review team: every two seconds it pages the sidecar's review
queue and answers each item with the true outcome (``source: review``), keeping a tally per
stratum for the weighted error rate the demo shows.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from typing import Any

import numpy as np
import requests

from ._faults import Fault
from ._model import DemoModel

__all__ = ["Traffic"]


class Traffic:
    def __init__(
        self,
        model: DemoModel,
        app_url: str,
        *,
        rate: float = 100.0,
        labels_url: str | None = None,
        label_share: float = 0.5,
        label_delay: float = 2.0,
        review_url: str | None = None,
        seed: int = 1,
    ) -> None:
        self.rows: list[dict[str, Any]] = model.frame.to_dict("records")
        self.truth = np.asarray(model.labels).tolist()
        self.app_url = app_url
        self.rate = rate
        self.labels_url = labels_url
        self.label_share = label_share
        self.label_delay = label_delay
        self.faults: list[Fault] = []
        self.sent = 0
        self.failed = 0
        self.labelled = 0
        self._rng = random.Random(seed)
        self._pending: deque[tuple[float, str, int]] = deque()
        self.review_url = review_url
        self.reviews: dict[tuple[str, str], list[int]] = {}  # (segment, stratum): [reviewed, errors]
        self._truth_of: dict[str, int] = {}  # request id -> outcome, the last 100k requests
        self._cursor = 0
        self._next_review = time.monotonic() + 2.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def inject(self, fault: Fault) -> None:
        self.faults.append(fault)

    def start(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, name="demo-traffic", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        with requests.Session() as session:
            self._loop(session)

    def _loop(self, session: requests.Session) -> None:
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not self._stop.is_set():
            i = self._rng.randrange(len(self.rows))
            row = self.rows[i]
            for fault in list(self.faults):
                row = fault.apply(row)
            try:
                response = session.post(self.app_url + "/predict", json=row, timeout=5)
                response.raise_for_status()
                self.sent += 1
                rid = response.json().get("request_id")
                if self.labels_url and rid and self._rng.random() < self.label_share:
                    self._pending.append((time.monotonic() + self.label_delay, rid, int(self.truth[i])))
                if self.review_url and rid:
                    self._remember(rid, int(self.truth[i]))
            except requests.RequestException:
                self.failed += 1
            self._post_due_labels(session)
            if self.review_url and time.monotonic() >= self._next_review:
                self._next_review = time.monotonic() + 2.0
                self._review(session)
            next_at += interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))
            if time.monotonic() - next_at > 1.0:  # fell behind: do not burst to catch up
                next_at = time.monotonic()

    def _post_due_labels(self, session: requests.Session) -> None:
        now = time.monotonic()
        due: list[Any] = []
        while self._pending and self._pending[0][0] <= now:
            _, rid, label = self._pending.popleft()
            due.append({"request_id": rid, "label": label})
        if due and self.labels_url:
            try:
                session.post(self.labels_url, json={"labels": due}, timeout=5)
                self.labelled += len(due)
            except requests.RequestException:
                self.failed += 1

    def _remember(self, rid: str, truth: int) -> None:
        self._truth_of[rid] = truth
        if len(self._truth_of) > 100_000:
            del self._truth_of[next(iter(self._truth_of))]

    def _review(self, session: requests.Session) -> None:
        """Answer the queued review items: the true outcome, as a reviewer would find it."""
        assert self.review_url is not None
        try:
            page = session.get(
                self.review_url + "/v1/review/queue", params={"cursor": self._cursor, "limit": 500}, timeout=5
            ).json()
            answers = []
            for item in page["items"]:
                truth = self._truth_of.get(item["request_id"])
                if truth is None:
                    continue
                answers.append({"request_id": item["request_id"], "label": truth, "source": "review"})
                tally = self.reviews.setdefault((item["segment"], item["stratum"]), [0, 0])
                tally[0] += 1
                tally[1] += str(bool(truth)).lower() != item["decision"]
            if answers:
                session.post(self.labels_url or "", json={"labels": answers}, timeout=5).raise_for_status()
            self._cursor = page["next_cursor"]
        except (requests.RequestException, KeyError, TypeError, ValueError):
            self.failed += 1
