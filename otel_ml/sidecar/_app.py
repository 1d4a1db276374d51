"""The running sidecar: HTTP server, scrapers, the snapshot ticker and persistence.

:class:`Sidecar` wires :class:`SidecarState` to its inputs and outputs. Threads: one for the
HTTP event loop (plus a small worker pool for decoding and rendering), one per scrape target,
one ticker that takes window snapshots and saves the state atomically every
``persist_interval`` seconds and on stop. A state file that cannot be written (disk full,
read-only) makes ``/readyz`` answer 503 with the reason and logs one line a minute; the
sidecar keeps serving from memory and exits cleanly on SIGTERM even then.
"""

from __future__ import annotations

import logging
import resource
import signal
import threading
import time
from types import FrameType

from .._atomic import clean_orphans
from ..baseline import Baseline
from ._collector import Exposition, SidecarCollector
from ._config import ScrapeTarget, SidecarConfig
from ._persist import load_state, save_state
from ._review_webhook import ReviewWebhook
from ._scrape import fetch_exposition, parse_exposition
from ._series import IngestError
from ._server import SidecarServer
from ._state import SidecarState
from ._throttle import Throttle

__all__ = ["Sidecar"]

_log = logging.getLogger("otel_ml.sidecar")


class Sidecar:
    """One sidecar process' worth of state and threads. ``start()``, then ``stop()``."""

    def __init__(self, config: SidecarConfig) -> None:
        self.config = config
        baselines = [Baseline.load(p) for p in config.baselines]
        self.state = SidecarState(baselines, config.state_settings())
        self.collector = SidecarCollector(self.state)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.server: SidecarServer | None = None
        self.restored = False
        self.persist_error: str | None = None
        self._log_throttle = Throttle()  # state-write failures; scrape failures per target and reason
        hook = self.state.settings.review.webhook
        reviews = self.state.reviews
        self.webhook = None if hook is None else ReviewWebhook(reviews.queue, hook, on_failure=reviews.webhook_failed)

    @property
    def url(self) -> str:
        assert self.server is not None, "start() first"
        return self.server.url

    @property
    def metrics_url(self) -> str:
        assert self.server is not None, "start() first"
        return self.server.metrics_url

    def start(self) -> Sidecar:
        if self.config.state_file is not None:
            for orphan in clean_orphans(self.config.state_file):
                _log.info("removed %s, left by an interrupted state write", orphan)
            self.restored = load_state(self.state, self.config.state_file)
            if self.restored:
                _log.info("restored state from %s", self.config.state_file)
        replayed = self.state.replay_labels()  # labels acknowledged after the last snapshot
        if replayed:
            _log.info("counted %d labels logged after the last state snapshot", replayed)
        _raise_file_limit()
        self.server = SidecarServer(
            self.config.listen,
            self.state,
            Exposition(self.collector),
            token=self.config.token,
            limits=self.config.http,
            metrics_address=self.config.metrics_listen,
            readiness=self.readiness,
        ).start()
        self._spawn("otel-ml-ticker", self._tick_loop)
        for target in self.config.scrape:
            self._spawn(f"otel-ml-scrape-{target.url}", self._scrape_loop, target)
        if self.webhook is not None:
            self._spawn("otel-ml-review-webhook", self.webhook.run, self._stop)
        self.state.ready = True
        _log.info("otel-ml sidecar listening on %s for %d model version(s)", self.url, len(self.state.models))
        return self

    def _spawn(self, name: str, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def scrape_once(self, target: ScrapeTarget) -> None:
        """One scrape of one target: fetch, parse completely, then apply (errors are counted)."""
        try:
            text = fetch_exposition(target.url, target.timeout)
            batches = parse_exposition(text, target.url)
            self.state.apply_metrics(batches, "scrape")  # raises, changing nothing, on impossible counts
        except IngestError as exc:
            self.state.count_error(exc.reason)  # counted every time, logged once a minute per target and reason
            if self._log_throttle.allow(("scrape", target.url, exc.reason)):
                _log.warning("scrape failed (%s): %s", exc.reason, exc)

    def _scrape_loop(self, target: ScrapeTarget) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.scrape_once(target)
            self._stop.wait(max(0.0, target.interval - (time.monotonic() - started)))

    def _tick_interval(self) -> float:
        steps = [w.step for w in self.config.window_specs()]
        return max(0.1, min([*steps, self.config.persist_interval, 5.0]) / 2)

    def _tick_loop(self) -> None:
        last_persist = time.monotonic()
        interval = self._tick_interval()
        while not self._stop.wait(interval):
            try:
                self.state.tick()
            except Exception:
                _log.exception("sidecar tick failed")
            if self.config.state_file and time.monotonic() - last_persist >= self.config.persist_interval:
                self.persist()
                try:
                    self.state.retry_join_store()
                    with self.state.lock:  # the webhook holds the queue it was given: it follows the swap
                        if self.state.reviews.retry() and self.webhook is not None:
                            self.webhook.queue = self.state.reviews.queue
                except Exception:  # never the end of the tick thread
                    _log.exception("reopening the join store or the review queue failed")
                last_persist = time.monotonic()

    def persist(self) -> bool:
        """Save the state; a failure is kept for ``/readyz`` and logged at most once a minute."""
        if not self.config.state_file:
            return True
        try:
            save_state(self.state, self.config.state_file, self.state.clock())
        except Exception as exc:
            self.persist_error = f"cannot write the state file {self.config.state_file}: {exc}"
            if self._log_throttle.allow("persist"):
                _log.error(
                    "%s (windows are kept in memory; retrying every %gs)",
                    self.persist_error,
                    self.config.persist_interval,
                )
            return False
        if self.persist_error is not None:
            _log.info("state file %s is writable again", self.config.state_file)
            self.persist_error = None
        return True

    def readiness(self) -> tuple[bool, list[str]]:
        """(ready, notes) for ``/readyz``: not ready while starting or when the state cannot be saved;
        data for model versions no baseline describes is reported but does not fail readiness."""
        notes = []
        ready = self.state.ready
        if self.persist_error is not None:
            ready = False
            notes.append(f"error: {self.persist_error}")
        if self.state.join_store_error is not None:
            ready = False
            notes.append(f"error: {self.state.join_store_error} (labels are refused with 503 until it opens)")
        if self.state.reviews.error is not None:
            ready = False
            notes.append(f"error: {self.state.reviews.error} (review items and labels are refused with 503)")
        with self.state.lock:
            unmatched = sorted(self.state.unmatched_models.items())
            known = sorted(self.state.models)
        if unmatched:
            names = ", ".join(f"{m!r} version {v!r} ({count} batches)" for (m, v), count in unmatched[:10])
            loaded = ", ".join(f"{m!r} version {v!r}" for m, v in known)
            notes.append(f"warning: no baseline matches incoming {names}; baselines loaded: {loaded}")
        return ready, notes

    def stop(self) -> None:
        """Stop threads and save the state one last time (a failure is logged, not raised)."""
        self._stop.set()
        self.state.ready = False
        if self.server is not None:
            self.server.stop()
        for thread in self._threads:
            thread.join(timeout=10)
        self.state.tick()
        if not self.persist():
            _log.error("exiting without saving the state: %s", self.persist_error)
        self.state.joins.store.close()
        self.state.reviews.queue.close()

    def run(self) -> None:
        """Start, then block until SIGTERM or SIGINT; save the state on the way out."""
        received: list[int] = []

        def handler(signum: int, frame: FrameType | None) -> None:
            # only a list append: no lock, no logging. Setting a threading.Event here deadlocked when
            # a second signal ran this handler nested in the first, or inside Event.wait itself.
            received.append(signum)

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
        self.start()
        while not received:
            time.sleep(0.2)
        _log.info("signal %d: saving state and stopping", received[0])
        self.stop()


def _raise_file_limit() -> None:
    """Allow as many open connections as the hard limit does (the soft limit is often 1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            pass
