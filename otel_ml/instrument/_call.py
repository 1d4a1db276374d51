"""The machinery around one monitored call, shared by the decorator and ``observe()``.

:class:`Call` is the one context manager the sync wrapper, the async wrapper and
:meth:`~otel_ml.ModelMonitor.observe` run their code in: entering begins the call, leaving
finishes it whatever happened. Nothing here raises into the caller: each step has a guard
that counts its failure as an instrumentation error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, NoOpTracer, ProxyTracer, Span, SpanContext, SpanKind, Tracer

from .._names import SPAN_NAME
from ._context import ACTIVE, CAPTURED, CURRENT, CallState
from ._counters import ModelCounters
from ._counting import NO_INPUT, CallCounter
from ._errors import InstrumentationErrors
from ._spans import SpanEnder
from ._tokens import TokenCallState, TokenMinter
from ._usage import CallUsage

__all__ = ["Call", "CallRecorder", "Reader", "ShadowSink"]

_thread_time_ns = time.thread_time_ns  # ~0.27 us a read here: the one clock that excludes other threads
Reader = Callable[[tuple[Any, ...], dict[str, Any]], Any]  # a call's features from its (args, kwargs)
Counted = tuple[int | None, Any, Any]  # rows, scores, decisions of a finished call
Slot = int | npt.NDArray[np.int64] | None  # a call's cost slot: a row's, a batch's rows per slot, or none


class ShadowSink(Protocol):
    """Where a finished call hands its input and answer: a shadow to score (``_shadow``), the skew
    capture to write (``_capture``). ``stage`` names its failures in ``ml_instrumentation_errors_total``."""

    stage: str

    def submit(
        self,
        call: CallState,
        span: Span | None,
        features: Any,
        inputs: tuple[tuple[Any, ...], dict[str, Any]],
        counted: Counted,
    ) -> None: ...


class CaptureStart(Protocol):
    """What runs at a call's start for the skew capture (``_capture``): copy the sampled rows."""

    stage: str

    def enter(self, call: CallState, args: tuple[Any, ...], kwargs: dict[str, Any], read: Reader) -> None: ...


class CallRecorder:
    """What one monitor does around each call: start its span, then count it and end the span."""

    __slots__ = (
        "_attributes",
        "_counting",
        "_noop",
        "_proxy",
        "_spans",
        "_tracer",
        "alone",
        "capture",
        "counters",
        "errors",
        "key",
        "minter",
        "request_id",
        "reviewed",
        "shadows",
    )

    def __init__(
        self,
        key: tuple[str, str],
        counters: ModelCounters,
        errors: InstrumentationErrors,
        counting: CallCounter,
        spans: SpanEnder,
        tracer: Tracer,
        attributes: dict[str, str],
        request_id: Callable[[Any], Any] | None,
        minter: TokenMinter | None = None,
    ) -> None:
        self.key = key  # (model, version): a call inside a call of the same pair is not counted again
        self.alone = frozenset((key,))
        self.counters = counters
        self.errors = errors
        self.request_id = request_id
        self.minter = minter  # None: this monitor mints no prediction tokens
        self._counting = counting
        self._spans = spans
        self._tracer = tracer
        self._noop = type(tracer) is NoOpTracer
        self._proxy = tracer if type(tracer) is ProxyTracer else None  # NoOp until a global provider is set
        self._attributes = attributes
        self.shadows: tuple[ShadowSink, ...] = ()  # shadow versions scoring this model's successful calls
        self.reviewed = False  # review sampling hashes every call's request id: make it from the input
        self.capture: CaptureStart | None = None  # the skew capture: copies its sampled rows at the start

    def untraced(self) -> bool:
        """True when the tracer is a no-op one. Its span would be non-recording and carry the
        current span's context (or none), so starting, attaching and ending it changes nothing
        anyone can see: skipping it saves ~1 us per call. A real SDK's sampled-out span has a
        context of its own and is always attached, so children inherit the decision."""
        if self._noop:
            return True
        proxy = self._proxy
        return proxy is not None and type(getattr(proxy, "_tracer", None)) is NoOpTracer

    def start_span(
        self, state: CallState, features: Callable[[], Any], parent: SpanContext | None = None
    ) -> tuple[Span | None, Any]:
        """Start the call's span and make it current; ``request_id=`` names the call from its features.
        ``parent`` (a shadow's primary span) makes it that span's child: sampled with it.
        ``(None, None)`` without a tracer (see :meth:`untraced`)."""
        span = ctx = None
        if parent is None and self.untraced():
            if self.request_id is not None and (self.minter is not None or self.shadows or self.reviewed):
                try:
                    self._name_call(state, features)
                except Exception as exc:
                    self.errors.report("span", exc)
            return None, None
        try:
            under = None if parent is None else trace.set_span_in_context(NonRecordingSpan(parent))
            span = self._tracer.start_span(SPAN_NAME, under, kind=SpanKind.INTERNAL, attributes=self._attributes)
            ctx = otel_context.attach(trace.set_span_in_context(span))
            # the id names the span, the token and the shadows' calls (sampled by it), even untraced
            named = span.is_recording() or self.minter is not None or self.shadows or self.reviewed
            if self.request_id is not None and named:
                self._name_call(state, features)
        except Exception as exc:
            self.errors.report("span", exc)
        return span, ctx

    def _name_call(self, state: CallState, features: Callable[[], Any]) -> None:
        found = features()
        if found is not NO_INPUT:
            assert self.request_id is not None
            state.request_id = str(self.request_id(found))

    def _report_usage(self, usage: CallUsage, slot: Slot) -> None:
        """Count what the app reported in the call; a bad report or unpriced tokens are instrumentation errors."""
        unpriced = self.counters.add_reported(usage, slot)
        if usage.invalid:
            self.errors.report("usage", None, reason="invalid_usage", detail=usage.invalid)
        if unpriced:
            names = ", ".join(sorted(set(unpriced)))[:200]
            detail = f"no price for the tokens of {names} (add it, or '*', to the price table)"
            self.errors.report("usage", None, reason="unpriced_tokens", detail=detail)

    def finish(
        self,
        call: CallState,
        span: Span | None,
        features: Any,
        result: Any,
        start: float | None,
        error: BaseException | None,
        duration: float | None = None,
        inputs: tuple[tuple[Any, ...], dict[str, Any]] | None = None,
        cpu_ns: int = 0,
    ) -> Counted:
        """Count one call, hand a successful one (its ``inputs``) to the shadows and end its span;
        returns what was counted. Never raises (each step has its own guard). ``cpu_ns``: the
        calling thread's CPU time during the call (0: not measured)."""
        if start is not None:
            duration = time.perf_counter() - start
        n: int | None = None
        scores = decisions = None
        wall = duration
        slot: Slot = None
        try:
            n, scores, decisions, duration, slot = self._counting.count(features, result, duration, error, cpu_ns, call)
        except Exception as exc:
            self.errors.report("features", exc)
        try:
            counters = self.counters
            if not isinstance(slot, int):  # a row's times were counted with the row
                counters.add_call_usage(cpu_ns, wall, slot)
            if call.usage is not None:
                self._report_usage(call.usage, slot)
            if duration is not None:
                counters.add_duration(duration)
            if error is not None:
                counters.add_error(type(error).__qualname__)
            if call.fallback is not None:
                counters.add_fallback(call.fallback)
        except Exception as exc:
            self.errors.report("counters", exc)
        if n == 1 and error is None and isinstance(call, TokenCallState):
            try:
                call.issue(features, scores, decisions)
            except Exception as exc:
                self.errors.report("token", exc)
        if self.shadows and error is None and inputs is not None:
            for shadow in self.shadows:
                try:
                    shadow.submit(call, span, features, inputs, (n, scores, decisions))
                except Exception as exc:
                    self.errors.report(shadow.stage, exc)
        if span is not None:
            self._spans.end(span, call, features, n, scores, decisions, error)
        return n, scores, decisions


class Call:
    """One monitored call, as a context manager around the wrapped code.

    Entering sets the call context (request id, fallback, the model's nesting mark), starts
    and attaches the span and starts the timer; leaving counts the call and ends its span,
    whether the block returned (``result``) or raised any ``BaseException``, which propagates
    unchanged. Inside a monitored call of the same model and version it does nothing.
    """

    __slots__ = (
        "_args",
        "_cpu",
        "_ctx",
        "_outer",
        "_kwargs",
        "_parent",
        "_read",
        "_recorder",
        "_span",
        "_start",
        "_tokens",
        "counted",
        "result",
        "state",
    )

    def __init__(
        self,
        recorder: CallRecorder,
        read: Reader,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        state: CallState | None = None,
        parent: SpanContext | None = None,
        cpu: bool = True,
    ) -> None:
        """``state`` presets the call's state (a shadow's call carries its primary's request id).
        ``cpu=False`` (an async call) measures no CPU time: the thread runs other tasks between
        the call's awaits, so its thread CPU time would bill them to this call."""
        self._recorder = recorder
        self._read = read  # the features, read after the block (and before it for request_id=)
        self._args = args
        self._kwargs = kwargs
        self._tokens: Any = None  # None: a nested call, not counted
        self.result: Any = None
        self.state: CallState | None = state  # None after entering: a nested call
        self._parent = parent
        self._cpu = 0 if cpu else -1  # the thread's CPU clock at entry; -1: not measured
        self._outer: CallState | None = None  # the enclosing call of another model, if any
        self.counted: Counted | None = None  # rows, scores and decisions, once a successful call is counted

    def __enter__(self) -> Call:
        rec = self._recorder
        active = ACTIVE.get()
        if active and rec.key in active:
            self.state = None
            return self
        if self.state is not None:
            state = self.state
        elif rec.minter is None:
            self.state = state = CallState()
        else:
            self.state = state = TokenCallState(rec.minter, rec.errors, self._read, self._args, self._kwargs)
        if active:  # inside a monitored call of another model: it must not bill this call's CPU again
            self._outer = CURRENT.get()
        self._tokens = (CURRENT.set(state), ACTIVE.set(active | rec.alone if active else rec.alone))
        if rec._noop and rec.request_id is None and self._parent is None:  # nothing to start (see untraced)
            self._span = self._ctx = None
        else:
            self._span, self._ctx = rec.start_span(state, self._features, self._parent)
        capture = rec.capture
        if capture is not None:
            try:
                capture.enter(state, self._args, self._kwargs, self._read)
            except Exception as exc:
                rec.errors.report(capture.stage, exc)
        if not self._cpu:
            self._cpu = _thread_time_ns()
        self._start = time.perf_counter()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._tokens is None:
            return
        state: CallState = self.state  # type: ignore[assignment]  # set when _tokens is
        cpu = _thread_time_ns() - self._cpu if self._cpu > 0 else 0
        if cpu < 0:  # left on another thread than it entered (a generator resumed elsewhere): unknown
            cpu = 0
        outer = self._outer  # self time: an enclosing call of another model does not bill it again
        if outer is not None:
            outer.nested_cpu += cpu
        nested = state.nested_cpu
        if nested:
            cpu = cpu - nested if cpu > nested else 0
        if exc is None:
            self._detach()
            try:
                features = self._read(self._args, self._kwargs)
            except Exception as exc:  # a raising inputs= callback: count the call, not its features
                self._recorder.errors.report("inputs", exc)
                features = NO_INPUT
            self.counted = self._recorder.finish(
                state,
                self._span,
                features,
                self.result,
                self._start,
                None,
                inputs=(self._args, self._kwargs) if self._recorder.shadows else None,  # only shadows need them
                cpu_ns=cpu,
            )
            capture = CAPTURED.get()
            if capture is not None:  # capture_prediction(): hand the call back to its caller
                capture.request_id, capture.token = state.request_id, state.token
            return
        try:  # an error is counted while the call's context is still attached
            self._recorder.finish(state, self._span, self._features(), None, self._start, exc, cpu_ns=cpu)
        finally:
            self._detach()

    def _features(self) -> Any:
        try:
            return self._read(self._args, self._kwargs)
        except Exception as exc:  # a raising inputs= callback: count the call, not its features
            self._recorder.errors.report("inputs", exc)
            return NO_INPUT

    def _detach(self) -> None:
        errors = self._recorder.errors
        try:
            ACTIVE.reset(self._tokens[1])
            CURRENT.reset(self._tokens[0])
        except Exception as exc:  # a token from another context (e.g. a generator resumed elsewhere)
            errors.report("context", exc)
        if self._ctx is not None:
            try:
                otel_context.detach(self._ctx)
            except Exception as exc:
                errors.report("span", exc)
