"""The running sidecar: HTTP server, scrapers, the snapshot ticker and persistence.

:class:`Sidecar` wires :class:`SidecarState` to its inputs and outputs. Threads: one for the
HTTP server (plus one per connection), one per scrape target, one ticker that takes window
snapshots and saves the state atomically every ``persist_interval`` seconds and on stop.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType

from prometheus_client import CollectorRegistry

from ..baseline import Baseline
from ._collector import SidecarCollector
from ._config import ScrapeTarget, SidecarConfig
from ._otlp_input import IngestError
from ._persist import load_state, save_state
from ._scrape import fetch_exposition, parse_exposition
from ._server import SidecarServer
from ._state import SidecarState

__all__ = ["Sidecar"]

_log = logging.getLogger("otel_ml.sidecar")


class Sidecar:
    """One sidecar process' worth of state and threads. ``start()``, then ``stop()``."""

    def __init__(self, config: SidecarConfig) -> None:
        self.config = config
        baselines = [Baseline.load(p) for p in config.baselines]
        self.state = SidecarState(baselines, config.state_settings())
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SidecarCollector(self.state))
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.server: SidecarServer | None = None
        self.restored = False

    @property
    def url(self) -> str:
        assert self.server is not None, "start() first"
        return self.server.url

    def start(self) -> Sidecar:
        if self.config.state_file is not None:
            self.restored = load_state(self.state, self.config.state_file)
            if self.restored:
                _log.info("restored state from %s", self.config.state_file)
        self.server = SidecarServer(
            self.config.listen,
            self.state,
            self.registry,
            token=self.config.token,
            max_body_bytes=self.config.max_body_bytes,
        )
        self._spawn("otel-ml-http", self.server.serve_forever, 0.1)
        self._spawn("otel-ml-ticker", self._tick_loop)
        for target in self.config.scrape:
            self._spawn(f"otel-ml-scrape-{target.url}", self._scrape_loop, target)
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
        except IngestError as exc:
            self.state.count_error(exc.reason)
            _log.warning("scrape failed (%s): %s", exc.reason, exc)
            return
        self.state.apply_metrics(batches, "scrape")

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
                if self.config.state_file and time.monotonic() - last_persist >= self.config.persist_interval:
                    save_state(self.state, self.config.state_file, time.time())
                    last_persist = time.monotonic()
            except Exception:
                _log.exception("sidecar tick failed")

    def persist(self) -> None:
        if self.config.state_file:
            save_state(self.state, self.config.state_file, time.time())

    def stop(self) -> None:
        """Stop threads and save the state one last time."""
        self._stop.set()
        self.state.ready = False
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        for thread in self._threads:
            thread.join(timeout=10)
        self.state.tick()
        self.persist()

    def run(self) -> None:
        """Start, then block until SIGTERM or SIGINT; save the state on the way out."""
        stop = threading.Event()

        def handler(signum: int, frame: FrameType | None) -> None:
            _log.info("signal %d: saving state and stopping", signum)
            stop.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
        self.start()
        while not stop.wait(1.0):
            pass
        self.stop()
