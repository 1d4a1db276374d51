"""Demo traffic: rows drawn from the model's data, faults applied, sent to the model server.

One background thread posts single-row requests at a steady rate and, a little later, posts
the true outcome of some of them to the sidecar's ``/v1/labels`` (the delayed label), so the
online precision/recall panels have data. Faults are switched on while it runs.
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
            except requests.RequestException:
                self.failed += 1
            self._post_due_labels(session)
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
