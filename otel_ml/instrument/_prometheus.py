"""Prometheus exposition of the model counters: one custom collector per registry.

Following client_python's custom-collector pattern, the collector holds no metric objects:
``collect()`` takes a snapshot of each model's numpy counters, turns it into neutral points
(``_points``) and encodes them as fresh metric families, so the request path never touches
prometheus_client. All counters in a registry share one collector (two collectors yielding the
same family names would clash); the registry holds it. The encoder (``_families``) is the
one the sidecar reuses to re-expose app counts it received over OTLP. In multiprocess mode
(``_multiproc``) the collector sums every worker's counter file instead.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client import start_http_server as _start_http_server
from prometheus_client.core import Metric

from .. import _names as n
from ._counters import ModelCounters, flush_all
from ._dirsum import DirSummer
from ._families import prometheus_families
from ._multiproc import multiproc_dir
from ._points import InstrumentPoints, snapshot_points
from ._snapshot import CountsSnapshot, merge_snapshots

__all__ = [
    "CountersCollector",
    "collector_for",
    "counts_families",
    "make_asgi_app",
    "make_wsgi_app",
    "start_http_server",
]

_log = logging.getLogger("otel_ml")
_MODEL = [n.LABEL_MODEL_NAME, n.LABEL_MODEL_VERSION]


def counts_families(snapshots: Iterable[CountsSnapshot]) -> list[Metric]:
    """Metric families for the given model snapshots, in the exposition's stable order."""
    return prometheus_families(snapshot_points(snapshots))


class CountersCollector:
    """The prometheus_client collector for every model's :class:`ModelCounters` in one registry.

    In multiprocess mode it sums every counter file in the directory instead (the files of
    this process's counters among them), so any process, a gunicorn master with no monitor of
    its own included, serves the totals of all workers.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._counters: dict[tuple[str, str], ModelCounters] = {}
        self._lock = threading.Lock()
        self._summer = DirSummer()
        self._registry = weakref.ref(registry)
        # A scrape in flight at fork time must not leave the child's locks taken forever.
        own = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _after_fork_in_child(own))

    def add(self, counters: ModelCounters) -> None:
        key = (counters.model_name, counters.model_version)
        with self._lock:
            if key in self._counters and self._counters[key] is not counters:
                raise ValueError(
                    f"model {key[0]!r} version {key[1]!r} is already monitored in this registry; "
                    "reuse that monitor or pass registry=CollectorRegistry()"
                )
            self._counters[key] = counters

    def remove(self, counters: ModelCounters) -> None:
        with self._lock:
            if self._counters.get((counters.model_name, counters.model_version)) is counters:
                del self._counters[(counters.model_name, counters.model_version)]

    def counters(self) -> list[ModelCounters]:
        """The counters exposed here, in registration order."""
        with self._lock:
            return list(self._counters.values())

    def snapshots(self) -> list[CountsSnapshot]:
        counters = self.counters()
        directory = multiproc_dir()
        if directory is None:
            return [c.snapshot() for c in counters]
        flush_all()  # this process's buffered rows into its files before the files are summed
        shared = [c for c in counters if c.file is not None and c.file.path.parent == directory]
        prefer = {(c.model_name, c.model_version): c.file.digest for c in shared if c.file is not None}
        merged = {(s.model_name, s.model_version): s for s in self._summer.snapshots(directory, prefer)}
        for c in counters:  # e.g. a monitor created before the directory was set counts in memory
            if c not in shared:
                key = (c.model_name, c.model_version)
                own = c.snapshot()
                merged[key] = merge_snapshots([merged[key], own]) if key in merged else own
        return list(merged.values())

    def describe(self) -> Iterator[Metric]:
        # Names only: lets the registry catch a clash with another collector at registration.
        yield from prometheus_families(InstrumentPoints(i) for i in n.APP_INSTRUMENTS)

    def collect(self) -> Iterator[Metric]:
        yield from counts_families(self.snapshots())


def _after_fork_in_child(ref: weakref.ref[CountersCollector]) -> None:
    collector = ref()
    if collector is None:
        return
    collector._lock = threading.Lock()
    collector._summer = DirSummer()
    registry = collector._registry()
    if registry is not None and isinstance(getattr(registry, "_lock", None), type(collector._lock)):
        registry._lock = threading.Lock()  # prometheus_client's own lock, recreated like ours


_REGISTRY_ATTRIBUTE = "_otel_ml_collector"  # the registry holds its collector: no process-wide map
_register_lock = threading.Lock()


def collector_for(registry: CollectorRegistry) -> CountersCollector:
    """The otel-ml collector of a registry, registering it on first use."""
    collector: CountersCollector | None = getattr(registry, _REGISTRY_ATTRIBUTE, None)
    if collector is None:
        with _register_lock:
            collector = getattr(registry, _REGISTRY_ATTRIBUTE, None)
            if collector is None:
                collector = CountersCollector(registry)
                registry.register(collector)
                setattr(registry, _REGISTRY_ATTRIBUTE, collector)
    return collector


def start_http_server(
    port: int, addr: str = "127.0.0.1", registry: CollectorRegistry = REGISTRY, *, standby_interval: float = 5.0
) -> tuple[Any, threading.Thread] | None:
    """Serve ``/metrics`` for Prometheus (or the sidecar) to scrape, on loopback by default.

    Bind ``addr="0.0.0.0"`` (or the pod IP) only when Prometheus must reach the app directly.
    Returns prometheus_client's ``(server, thread)``; call ``server.shutdown()`` to stop.

    Never raises for a port in use: when N workers each call it, the first binds and the
    others log it once and return ``None``. In multiprocess mode (any process serves the sums
    of all) those others stand by and retry every ``standby_interval`` seconds, so another
    worker takes over the port when the serving one dies.
    """
    if multiproc_dir() is not None:
        collector_for(registry)  # a process without monitors (a gunicorn master) serves the files
    try:
        return _start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            _log.warning("otel-ml: cannot serve /metrics on %s:%d (%s); the application carries on", addr, port, exc)
            return None
    if multiproc_dir() is None:
        _log.warning(
            "otel-ml: port %s:%d is taken (another worker?); this process's metrics are not served. "
            "Set OTEL_ML_MULTIPROC_DIR so whichever process serves /metrics sums all of them.",
            addr,
            port,
        )
        return None
    _log.info("otel-ml: %s:%d is served by another process (pid %d stands by)", addr, port, os.getpid())
    threading.Thread(
        target=_standby, args=(port, addr, registry, standby_interval), name="otel-ml-metrics-standby", daemon=True
    ).start()
    return None


def _standby(port: int, addr: str, registry: CollectorRegistry, interval: float) -> None:
    """Take over the port when the process serving it goes away (multiprocess mode only)."""
    while True:
        time.sleep(interval)
        try:
            _start_http_server(port, addr=addr, registry=registry)
        except OSError:
            continue
        _log.info("otel-ml: pid %d now serves /metrics on %s:%d", os.getpid(), addr, port)
        return


def make_wsgi_app(registry: CollectorRegistry = REGISTRY) -> Callable[..., Any]:
    """A WSGI ``/metrics`` app to mount in a Flask/Django/gunicorn app (sums all workers in multiprocess mode)."""
    from prometheus_client import make_wsgi_app as _make

    if multiproc_dir() is not None:
        collector_for(registry)
    return _make(registry)


def make_asgi_app(registry: CollectorRegistry = REGISTRY) -> Callable[..., Any]:
    """An ASGI ``/metrics`` app: ``app.mount("/metrics", make_asgi_app())`` in FastAPI/Starlette."""
    from prometheus_client import make_asgi_app as _make

    if multiproc_dir() is not None:
        collector_for(registry)
    return _make(registry)
