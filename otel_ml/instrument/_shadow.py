"""Shadow scoring: a second model version scored on the primary's input, off the request path.

A successful primary call hands one item per shadow to a bounded queue (an ``enqueue``, nothing
else); a daemon thread per shadow runs the shadow function through the shadow monitor's own
:class:`~otel_ml.instrument._call.Call` (so its features, scores, latency and errors are counted
under its own version, its span carries the primary's request id) and then counts the pair in
the shadow's comparison counters (``_pairs``). A coroutine shadow under an async primary is a
task on the primary's event loop instead. Whatever happens here is counted, never raised.
"""

from __future__ import annotations

import contextvars
import inspect
import os
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Mapping, Sequence
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from opentelemetry.trace import Span, SpanContext

from ._call import Call, CallRecorder, Counted, Reader
from ._comparison import PairCounter, Segments
from ._context import ACTIVE, CallState

if TYPE_CHECKING:
    import asyncio  # imported when a coroutine shadow first runs: ``import otel_ml`` stays light

    from ..baseline import Baseline
    from ._counting import Decision
    from ._monitor import ModelMonitor

__all__ = ["INHERIT", "Inherit", "Shadow"]


class Inherit:
    """The default of ``decision=``/``score=``/``inputs=``: the primary's."""

    def __repr__(self) -> str:
        return "<inherit>"


INHERIT: Final = Inherit()
_STOP: Any = object()
_POLL_SECONDS = 0.0005  # how often an idle worker looks at its queue while traffic flows
_IDLE_POLLS = 200  # after 100 ms without an item it blocks instead
_live: weakref.WeakSet[Shadow] = weakref.WeakSet()
# args, kwargs, features, rows, scores, decisions, request id, primary span context, end time
Item = tuple[tuple[Any, ...], dict[str, Any], Any, int | None, Any, Any, str, SpanContext | None, float]


def sampled(request_id: str, ratio: float) -> bool:
    """Whether a request is shadowed: a hash of its id, so every replica picks the same requests."""
    return zlib.crc32(request_id.encode("utf-8", "surrogatepass")) < ratio * 4294967296.0


class Shadow:
    """A candidate version scored on the same input as the primary, its answer discarded.

    ``@monitor(baseline=b7, decision=0.7, shadow=[Shadow(predict_v8, baseline=b8)])``: after each
    successful primary call (a failed one enqueues nothing) the call's arguments, the primary's
    scores and decisions and its request id are put on a bounded queue of ``queue_size``; a
    daemon thread started on first use calls ``fn`` with the same arguments. The shadow gets its
    own :class:`ModelMonitor` (the primary's registry, tracer provider, segments, feature names
    and budgets; ``decision``, ``score`` and ``inputs`` are the primary's unless given), so its
    feature, score, prediction, latency and error series appear under its own version and its
    cost is never added to the primary's. Its span has the primary's ``ml.request.id``, the
    attribute ``ml.shadow.primary_version`` and is a child of the primary's span (sampled with it).

    Compared per request: ``ml_shadow_pairs_total`` by segment (the primary's segment values)
    and ``ml_flip`` (``none`` when both decided alike, else ``<primary>_to_<shadow>``; a row
    without a decision on one side, e.g. a missing score, counts as ``none``), and
    ``ml_shadow_score_difference`` (shadow minus primary, both scores finite).

    Dropped and counted in ``ml_shadow_dropped_total{reason}``: ``queue_full`` (the queue, or
    for an async shadow the tasks in flight, already hold ``queue_size``), ``error`` (``fn``
    raised: also counted in the shadow's own error series) and ``timeout`` (the shadow's answer
    came more than ``timeout`` seconds after the primary call ended, queue wait included; an
    item already that old is not run at all). A thread cannot be killed: a shadow that hangs
    keeps its worker, and its queue then fills and drops as ``queue_full``.

    ``max_load`` caps the worker's CPU at that share of one core (default a quarter): after each
    item it rests ``cpu * (1 / max_load - 1)`` seconds. The shadow runs Python under the app's GIL,
    so a shadow allowed a whole core slows the served threads down (the demo's scikit-learn model
    served 71 requests/s alone, 40 with an unthrottled shadow, 71 again at 0.25); what it cannot
    keep up with queues and drops as ``queue_full``. Time spent waiting (a remote model, I/O)
    is not CPU and is not throttled. ``sample_ratio`` lowers the load without dropping at random. An async shadow is
    cancelled by ``asyncio.wait_for`` at the timeout (its own error series counts the
    cancellation).

    ``sample_ratio`` below 1 shadows a deterministic share of requests chosen by a hash of the
    request id (the same requests on every replica when ids come from ``request_id=``); the
    others are neither scored nor counted as dropped. A single-row mapping is shallow-copied
    when enqueued (the app may reuse it); arrays and DataFrames are not copied, so an app that
    mutates a batch in place after the call returns changes what the shadow sees (the primary's
    scores are copied: they are often the returned array itself). A shadow that changes its
    input changes the app's batch too; its pairs still count by the segments as served.
    """

    stage = "shadow"  # how its failures are counted

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        baseline: Baseline | str | os.PathLike[str] | None = None,
        model: str | None = None,
        version: str | None = None,
        decision: Decision | None | Inherit = INHERIT,
        score: Callable[[Any], Any] | None | Inherit = INHERIT,
        inputs: Callable[[tuple[Any, ...], dict[str, Any]], Any] | None | Inherit = INHERIT,
        queue_size: int = 1000,
        timeout: float = 1.0,
        sample_ratio: float = 1.0,
        max_load: float = 0.25,
    ) -> None:
        if not callable(fn):
            raise TypeError("Shadow needs the shadow version's inference function")
        if queue_size < 1 or not timeout > 0 or not 0.0 <= sample_ratio <= 1.0 or not 0.0 < max_load <= 1.0:
            raise ValueError("Shadow needs queue_size >= 1, timeout > 0, 0 <= sample_ratio <= 1 and 0 < max_load <= 1")
        self.max_load = float(max_load)
        self._rest_factor = 1.0 / self.max_load - 1.0  # seconds of rest per second of scoring
        self.fn = fn
        self.baseline = baseline
        self.model, self.version = model, version
        self.decision, self.score, self.inputs = decision, score, inputs
        self.queue_size, self.timeout, self.sample_ratio = queue_size, float(timeout), float(sample_ratio)
        self.monitor: ModelMonitor | None = None  # the shadow's own monitor, once attached to a primary
        self._is_async = inspect.iscoroutinefunction(fn)
        self._reset()

    def __repr__(self) -> str:
        return f"Shadow({getattr(self.fn, '__qualname__', self.fn)!r}, monitor={self.monitor!r})"

    def _reset(self, closed: bool = False) -> None:
        """Fresh queue and no worker (construction, and a forked child, which has no threads)."""
        self._queue: SimpleQueue[Any] = SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = closed

    def _attach(
        self,
        monitor: ModelMonitor,
        recorder: CallRecorder,
        read: Reader,
        feature_names: tuple[str, ...],
        primary: tuple[str, str],
    ) -> None:
        """Bind to its own monitor (made by the primary's ``ModelMonitor``): once per Shadow.
        ``primary`` is the primary's (model, version), in progress in every shadow call: a shadow
        that calls the primary (a candidate built on it) is not a served call, and feeds no shadow."""
        if self.monitor is not None:
            raise ValueError(f"{self!r} already shadows a model; make one Shadow per primary")
        if monitor.counters.pairs is None:
            raise ValueError("a shadow's counters need the comparison block")
        self.monitor = monitor
        self._recorder, self._read = recorder, read
        self._counter = PairCounter(monitor.counters, monitor.segments, feature_names)
        self._inside = frozenset((primary,))
        _live.add(self)

    def _dropped(self, reason: str) -> None:
        """Count one dropped item in the counters' comparison block as it is now (a forked child
        rebinds its counters to arrays and a lock of its own)."""
        self._recorder.counters.pairs.add_dropped(reason)  # type: ignore[union-attr]  # checked in _attach

    # -- request path -------------------------------------------------------------------------
    def submit(
        self,
        call: CallState,
        span: Span | None,
        features: Any,
        inputs: tuple[tuple[Any, ...], dict[str, Any]],
        counted: Counted,
    ) -> None:
        """Enqueue one finished primary call (or drop it, counted); the only work on the request path."""
        if self._closed:
            return
        request_id = call.request_id
        if self.sample_ratio < 1.0 and not sampled(request_id, self.sample_ratio):
            return
        args, kwargs = inputs
        n, scores, decisions = counted
        if n == 1 and isinstance(features, Mapping):
            features, args, kwargs = _copied(features, args, kwargs)
        elif isinstance(scores, np.ndarray):  # often the app's result itself, which it may reuse (out *= 100)
            scores = scores.copy()
        context = span.get_span_context() if span is not None else None
        item: Item = (args, kwargs, features, n, scores, decisions, request_id, context, time.perf_counter())
        if self._is_async:
            import asyncio

            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                self._schedule(loop, item)
                return
        self._to_worker(item)

    def _to_worker(self, item: Item) -> None:
        if self._thread is None:
            self._start()
        if self._queue.qsize() >= self.queue_size:
            self._dropped("queue_full")
            return
        self._queue.put(item)

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None and not self._closed:
                name = f"otel-ml-shadow-{self.monitor.model_version if self.monitor else ''}"
                args = (weakref.ref(self), self._queue, self._inside)
                thread = threading.Thread(target=_work, args=args, name=name, daemon=True)
                thread.start()
                self._thread = thread
                weakref.finalize(self, self._queue.put, _STOP)  # never closed, then collected: the worker ends

    def _schedule(self, loop: asyncio.AbstractEventLoop, item: Item) -> None:
        if len(self._tasks) >= self.queue_size:
            self._dropped("queue_full")
            return
        # A context of its own, as the worker thread's: the app's (its capture_prediction(), its
        # span) is not the shadow's, and the primary is in progress in it.
        context = contextvars.Context()
        context.run(ACTIVE.set, self._inside)
        task = loop.create_task(self._run_task(item), context=context)
        self._tasks.add(task)  # the loop keeps only a weak reference to its tasks
        task.add_done_callback(self._tasks.discard)

    # -- worker -------------------------------------------------------------------------------
    def _process(self, item: Item, loop: asyncio.AbstractEventLoop | None) -> asyncio.AbstractEventLoop | None:
        """Score one item on the worker (a coroutine shadow in the worker's own loop); never raises."""
        try:
            if self._is_async:
                loop = loop or _new_event_loop()
                loop.run_until_complete(self._run_task(item))
            else:
                self._run(item)
        except BaseException as exc:  # never let the worker die
            self._recorder.errors.report("shadow", exc)
        return loop

    def _call(self, item: Item) -> Call:
        # a child of the primary's span: a ratio sampler keeps or drops both (labels need both spans)
        parent = item[7] if item[7] is not None and item[7].is_valid else None
        return Call(self._recorder, self._read, item[0], item[1], CallState(item[6]), parent)

    def _served_segments(self, item: Item) -> Segments | None:
        """The primary's segments, read before the shadow may rewrite its input; ``None``
        (dropped as ``error``, reported) when they cannot be read."""
        try:
            return self._counter.segments(item[2], item[3])
        except Exception as exc:
            self._recorder.errors.report("shadow", exc)
            self._dropped("error")
            return None

    def _run(self, item: Item) -> None:
        if time.perf_counter() - item[8] > self.timeout:
            self._dropped("timeout")
            return
        served = self._served_segments(item)
        if served is None:
            return
        call = self._call(item)
        try:
            with call:
                call.result = self.fn(*item[0], **item[1])
        except BaseException:  # counted in the shadow's own error series by its Call
            self._dropped("error")
            return
        if time.perf_counter() - item[8] > self.timeout:
            self._dropped("timeout")
            return
        self._compare(item, served, call.counted)

    async def _run_task(self, item: Item) -> None:
        import asyncio

        remaining = self.timeout - (time.perf_counter() - item[8])
        if remaining <= 0:
            self._dropped("timeout")
            return
        served = self._served_segments(item)  # before the shadow may rewrite its input
        if served is None:
            return
        begun: list[bool] = []
        try:
            counted = await asyncio.wait_for(self._scored(item, begun), remaining)
        except TimeoutError:
            self._dropped("timeout")
            return
        except asyncio.CancelledError:
            if begun or self._closed:
                self._dropped("error")  # cancelled while it ran: its own errors count the cancellation
            else:  # the primary's loop ended first (asyncio.run per request): score it on the worker's
                self._to_worker(item)
            return
        except BaseException:
            self._dropped("error")
            return
        self._compare(item, served, counted)

    async def _scored(self, item: Item, begun: list[bool] | None = None) -> Counted | None:
        if begun is not None:
            begun.append(True)
        call = self._call(item)
        with call:
            result = self.fn(*item[0], **item[1])
            call.result = await result if inspect.isawaitable(result) else result
        return call.counted

    # -- comparison ---------------------------------------------------------------------------
    def _compare(self, item: Item, served: Segments, counted: Counted | None) -> None:
        """Count the pair; a pair that cannot be compared is dropped as ``error`` (and reported)."""
        try:
            if counted is None:
                raise ValueError("the shadow's call was not counted (nested in a call of the same version?)")
            self._counter.count(served, (item[3], item[4], item[5]), counted)
        except Exception as exc:
            self._recorder.errors.report("shadow", exc)
            self._dropped("error")

    # -- lifecycle ----------------------------------------------------------------------------
    def drain(self, timeout: float = 5.0) -> bool:
        """Wait until everything enqueued so far was scored; ``False`` if ``timeout`` ran out.
        Tasks on an event loop are awaited with :meth:`adrain` from that loop."""
        deadline = time.monotonic() + timeout
        if self._thread is not None and self._thread.is_alive():
            done = threading.Event()
            self._queue.put(done)
            if not done.wait(timeout):
                return False
        while self._tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.001)
        return True

    async def adrain(self, timeout: float = 5.0) -> bool:
        """:meth:`drain` from inside a running event loop (awaits its shadow tasks too)."""
        import asyncio

        deadline = time.monotonic() + timeout
        done = await asyncio.get_running_loop().run_in_executor(None, self._drain_thread, timeout)
        while self._tasks and time.monotonic() < deadline:
            await asyncio.wait(set(self._tasks), timeout=max(0.0, deadline - time.monotonic()))
        return done and not self._tasks

    def _drain_thread(self, timeout: float) -> bool:
        """Wait for the worker thread's queue only (what :meth:`adrain` runs off the loop)."""
        if self._thread is None or not self._thread.is_alive():
            return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self, timeout: float = 1.0) -> None:
        """Stop taking requests and stop the worker once its queue is done (``ModelMonitor.close``)."""
        self._closed = True
        thread = self._thread
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout)


def _work(ref: weakref.ref[Shadow], queue: SimpleQueue[Any], inside: frozenset[tuple[str, str]]) -> None:
    """A shadow's worker thread. It holds its shadow weakly between items, so a shadow whose
    monitor was never closed is still collected, and its finalizer's stop ends this thread."""
    loop: asyncio.AbstractEventLoop | None = None
    polls = 0
    ACTIVE.set(inside)  # this thread's own context: the primary is in progress in it
    while True:
        if queue.empty():
            if polls < _IDLE_POLLS:  # poll while traffic flows: a put then never has to wake us
                polls += 1
                time.sleep(_POLL_SECONDS)
                continue
            item = queue.get()  # idle for a while: block until a put wakes us
        else:
            item = queue.get()
        polls = 0
        if item is _STOP:
            break
        if isinstance(item, threading.Event):  # drain(): everything queued before it is done
            item.set()
            continue
        shadow = ref()
        if shadow is None:
            break
        started = time.thread_time()  # CPU time: a shadow waiting on I/O is not throttled
        loop = shadow._process(item, loop)
        rest = (time.thread_time() - started) * shadow._rest_factor
        del shadow, item
        # Hand the GIL back after each item: a served thread waiting for it gets it now, not
        # after the interpreter's 5 ms switch interval (bench/shadow.py: served p99 +4.7 ms without);
        # and rest long enough that the worker uses at most max_load of one CPU.
        time.sleep(rest)
    if loop is not None:
        loop.close()


def _new_event_loop() -> asyncio.AbstractEventLoop:
    import asyncio

    return asyncio.new_event_loop()


def _copied(
    row: Mapping[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[dict[str, Any], tuple[Any, ...], dict[str, Any]]:
    """A shallow copy of the row, put wherever the call's arguments held it."""
    copy = dict(row)
    if len(args) == 1 and args[0] is row and not kwargs:  # the usual predict(row): no scan
        return copy, (copy,), kwargs
    return (
        copy,
        tuple([copy if a is row else a for a in args]),
        {k: copy if v is row else v for k, v in kwargs.items()} if kwargs else kwargs,
    )


def _after_fork_in_child() -> None:
    for shadow in list(_live):
        shadow._reset(shadow._closed)


os.register_at_fork(after_in_child=_after_fork_in_child)


def bind_shadows(shadows: Sequence[Shadow]) -> tuple[Shadow, ...]:
    """The shadows as the recorder's sinks (checked to be Shadow objects)."""
    for s in shadows:
        if not isinstance(s, Shadow):
            raise TypeError(f"shadow= takes Shadow(...) objects, got {type(s).__name__}")
    return tuple(shadows)
