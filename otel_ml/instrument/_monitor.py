"""``@monitor`` and :class:`ModelMonitor`: wrap an inference function with spans and metrics.

The wrapper follows the OpenTelemetry contrib instrumentations: providers are arguments, the
tracer and counters are built once, the wrapped call is timed and its own exception is
re-raised untouched, and everything otel-ml does around it runs behind a guard that counts
its failures in ``ml_instrumentation_errors_total`` and swallows them. The result the caller
gets is always the object the function returned, and what it raises (any ``BaseException``,
cancellation included) is the same object with the same traceback.

Inputs that don't match the baseline are never binned by position into the wrong features:
an array whose width differs from the feature names counts no features (its predictions and
scores are still counted), a DataFrame or dict of columns lacking a feature counts that
feature as missing; both are counted as instrumentation errors with the reason as
``error_type`` (``feature_count_mismatch``, ``missing_feature``) and logged once. A single
mapping lacking a key is an ordinary missing value (how JSON spells one).

A monitored call made inside a monitored call of the same model and version is not counted
again (a context variable, like OTel's ``suppress_instrumentation``); other models are.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from itertools import count
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider
from prometheus_client import REGISTRY, CollectorRegistry

from .._frame import (
    REASON_MISSING_FEATURE,
    Columns,
    InputMismatch,
    as_float,
    canonical_label,
    is_single_row,
    missing_columns,
    to_columns,
)
from .._names import (
    ATTR_BATCH_SIZE,
    ATTR_ERROR_TYPE,
    ATTR_FALLBACK,
    ATTR_FALLBACK_REASON,
    ATTR_FEATURE_PREFIX,
    ATTR_MODEL_NAME,
    ATTR_MODEL_VERSION,
    ATTR_PREDICTION_DECISION,
    ATTR_REQUEST_ID,
    ATTR_SCORE,
    ATTR_SCORE_MEAN,
    ATTR_SEGMENT_PREFIX,
    SPAN_NAME,
    label_value,
)
from .._version import __version__
from ..baseline import Baseline
from ._counters import NO_DECISION, ModelCounters
from ._prometheus import collector_for

__all__ = ["ModelMonitor", "monitor", "current_request_id", "mark_fallback"]

_log = logging.getLogger("otel_ml")
F = TypeVar("F", bound=Callable[..., Any])
Decision = Callable[[npt.NDArray[np.float64]], Any] | float
_ids = count(1)
_ID_PREFIX = os.urandom(6).hex()


class _Call:
    """Per-call state reachable from inside the wrapped function (request id, fallback)."""

    __slots__ = ("_request_id", "fallback")

    def __init__(self, request_id: str | None = None) -> None:
        self._request_id = request_id
        self.fallback: str | None = None

    @property
    def request_id(self) -> str:
        if self._request_id is None:
            self._request_id = f"{_ID_PREFIX}-{next(_ids):x}"
        return self._request_id


_CURRENT: ContextVar[_Call | None] = ContextVar("otel_ml_call", default=None)
# (model, version) pairs whose monitored call is in progress in this context: nested calls of
# the same model (predict -> predict_proba, both decorated) are the caller's, not new predictions.
_ACTIVE: ContextVar[frozenset[tuple[str, str]]] = ContextVar("otel_ml_active", default=frozenset())
_NO_INPUT: Any = object()  # the features could not be read (a raising ``inputs=`` callback)
_WARN_KEYS = 64  # distinct log-once keys per monitor, so hostile input can't grow the set


def current_request_id() -> str | None:
    """The request id of the prediction being made, for returning it to the caller and
    posting the outcome (label) to the sidecar later. ``None`` outside a monitored call."""
    call = _CURRENT.get()
    return None if call is None else call.request_id


def mark_fallback(reason: str = "fallback") -> None:
    """Mark the current monitored call as answered by a fallback (rules, cache, default).

    Counted in ``ml_prediction_fallbacks_total{ml_fallback_reason=...}`` and put on the span.
    Outside a monitored call this does nothing.
    """
    call = _CURRENT.get()
    if call is not None:
        call.fallback = reason


def _first_data_parameter(fn: Callable[..., Any]) -> tuple[int, str | None]:
    """Position and name of the argument holding the features (skipping ``self``/``cls``)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return 0, None
    for i, p in enumerate(params):
        if p.name in ("self", "cls") and i == 0:
            continue
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            return i, p.name
        break
    return 0, None


class ModelMonitor:
    """Telemetry for one model version. Use it as a decorator, or with :meth:`observe`.

    ``baseline`` (a :class:`Baseline` or a path) gives the bin edges and the model name and
    version unless ``model``/``version`` say otherwise (a mismatch is logged, naming both).
    ``feature_names`` names the columns of numpy arrays and lists of lists the function is
    called with (default: the baseline's features, in order); columns are matched to baseline
    features by name, extra columns are ignored. ``segments`` names input columns
    whose values split the decision counts; ``decision`` turns scores into decisions (a
    vectorised function or a threshold: ``score > t``); ``score`` pulls scores out of the
    function's result when it is not the scores themselves. Label values from data are kept
    within ``segment_budget``/``decision_budget`` distinct values; the rest is ``__other__``.
    """

    def __init__(
        self,
        model: str | None = None,
        version: str | None = None,
        *,
        baseline: Baseline | str | os.PathLike[str] | None = None,
        segments: Sequence[str] = (),
        decision: Decision | None = None,
        score: Callable[[Any], Any] | None = None,
        inputs: Callable[[tuple[Any, ...], dict[str, Any]], Any] | None = None,
        request_id: Callable[[Any], Any] | None = None,
        feature_names: Sequence[str] | None = None,
        record_features: bool = False,
        segment_budget: int = 50,
        decision_budget: int = 16,
        tracer_provider: TracerProvider | None = None,
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        if isinstance(baseline, (str, os.PathLike, Path)):
            baseline = Baseline.load(baseline)
        self.baseline = baseline
        _warn_if_baseline_differs(baseline, model, version)
        name = model or (baseline.model_name if baseline else None)
        ver = version or (baseline.model_version if baseline else None)
        if not name or not ver:
            raise ValueError("ModelMonitor needs model= and version=, or a baseline that names them")
        self.model_name: str = name
        self.model_version: str = ver
        self.segments = tuple(segments)
        self._decision = decision
        self._score = score
        self._inputs = inputs
        self._request_id = request_id
        if feature_names is not None and len(set(feature_names)) != len(tuple(feature_names)):
            raise ValueError("feature_names= has duplicate names")
        self._feature_names: tuple[str, ...] = (
            tuple(feature_names) if feature_names is not None else (baseline.feature_names if baseline else ())
        )
        self._key = (name, ver)
        self._alone = frozenset((self._key,))
        self._record_features = record_features
        self.counters = ModelCounters(
            name, ver, baseline, self.segments, segment_budget=segment_budget, decision_budget=decision_budget
        )
        self._tracer = trace.get_tracer("otel_ml", __version__, tracer_provider)
        self._base_attributes = {ATTR_MODEL_NAME: name, ATTR_MODEL_VERSION: ver}
        self._warned: set[str] = set()
        self.registry = registry
        if registry is not None:
            collector_for(registry).add(self.counters)

    def close(self) -> None:
        """Stop exposing this model's metrics (e.g. when a model version is unloaded)."""
        if self.registry is not None:
            collector_for(self.registry).remove(self.counters)

    def __repr__(self) -> str:
        return f"ModelMonitor(model={self.model_name!r}, version={self.model_version!r})"

    # -- decorator ----------------------------------------------------------------------------
    def __call__(self, fn: F) -> F:
        return self.wrap(fn)

    def wrap(self, fn: F) -> F:
        """Wrap a sync or async inference function; the wrapper has ``.monitor`` set to self."""
        index, name = _first_data_parameter(fn)

        def features_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if self._inputs is not None:
                return self._inputs(args, kwargs)
            if len(args) > index:
                return args[index]
            return kwargs.get(name) if name else None

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                if self._key in _ACTIVE.get():
                    return await fn(*args, **kwargs)
                call, tokens, span, ctx = self._begin(args, kwargs, features_of)
                start = time.perf_counter()
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as exc:  # cancellation too: the span ends, the call is counted
                    self._finish(call, span, self._features(features_of, args, kwargs), None, start, exc)
                    raise
                finally:
                    self._detach(tokens, ctx)
                self._finish(call, span, self._features(features_of, args, kwargs), result, start, None)
                return result

            async_wrapper.monitor = self  # type: ignore[attr-defined]
            return cast(F, async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if self._key in _ACTIVE.get():
                return fn(*args, **kwargs)
            call, tokens, span, ctx = self._begin(args, kwargs, features_of)
            start = time.perf_counter()
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                self._finish(call, span, self._features(features_of, args, kwargs), None, start, exc)
                raise
            finally:
                self._detach(tokens, ctx)
            self._finish(call, span, self._features(features_of, args, kwargs), result, start, None)
            return result

        wrapper.monitor = self  # type: ignore[attr-defined]
        return cast(F, wrapper)

    # -- without a decorator ------------------------------------------------------------------
    @contextmanager
    def observe(self, features: Any) -> Iterator[Observation]:
        """Time and record one call: ``with mon.observe(x) as obs: obs.result = model(x)``.

        An exception inside the block is counted as a prediction error and re-raised. Inside
        a monitored call of the same model the block is not counted again.
        """
        obs = Observation()
        if self._key in _ACTIVE.get():
            yield obs
            return
        call, tokens, span, ctx = self._begin((features,), {}, lambda a, k: a[0])
        start = time.perf_counter()
        try:
            yield obs
        except BaseException as exc:
            self._finish(call, span, features, None, start, exc)
            raise
        finally:
            self._detach(tokens, ctx)
        self._finish(call, span, features, obs.result, start, None)

    def record(self, features: Any, result: Any, *, duration_seconds: float | None = None) -> None:
        """Count features and predictions made elsewhere (e.g. a batch scoring job); no span."""
        self._finish(_Call(), None, features, result, None, None, duration_seconds)

    # -- the steps around a call ---------------------------------------------------------------
    def _features(self, features_of: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            return features_of(args, kwargs)
        except Exception as exc:  # a raising inputs= callback: count the call, not its features
            self._instrumentation_error("inputs", exc)
            return _NO_INPUT

    def _begin(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], features_of: Callable[..., Any]
    ) -> tuple[_Call, Any, Span | None, Any]:
        call = _Call()
        active = _ACTIVE.get()
        tokens = (_CURRENT.set(call), _ACTIVE.set(active | self._alone if active else self._alone))
        span = ctx = None
        try:
            span = self._tracer.start_span(SPAN_NAME, kind=SpanKind.INTERNAL, attributes=self._base_attributes)
            ctx = otel_context.attach(trace.set_span_in_context(span))
            if self._request_id is not None and span.is_recording():
                features = self._features(features_of, args, kwargs)
                if features is not _NO_INPUT:
                    call._request_id = str(self._request_id(features))
        except Exception as exc:
            self._instrumentation_error("span", exc)
        return call, tokens, span, ctx

    def _detach(self, tokens: Any, ctx: Any) -> None:
        try:
            _ACTIVE.reset(tokens[1])
            _CURRENT.reset(tokens[0])
        except Exception as exc:  # a token from another context (e.g. a generator resumed elsewhere)
            self._instrumentation_error("context", exc)
        if ctx is not None:
            try:
                otel_context.detach(ctx)
            except Exception as exc:
                self._instrumentation_error("span", exc)

    def _finish(
        self,
        call: _Call,
        span: Span | None,
        features: Any,
        result: Any,
        start: float | None,
        error: BaseException | None,
        duration: float | None = None,
    ) -> None:
        """Count one call and end its span; never raises (each step has its own guard)."""
        if start is not None:
            duration = time.perf_counter() - start
        n: int | None = None
        scores = decisions = None
        try:
            n, scores, decisions, duration = self._count(features, result, duration, error)
        except Exception as exc:
            self._instrumentation_error("features", exc)
        try:
            counters = self.counters
            if duration is not None:
                counters.add_duration(duration)
            if error is not None:
                counters.add_error(type(error).__qualname__)
            if call.fallback is not None:
                counters.add_fallback(call.fallback)
        except Exception as exc:
            self._instrumentation_error("counters", exc)
        if span is not None:
            self._end_span(span, call, features, n, scores, decisions, error)

    def _count(
        self, features: Any, result: Any, duration: float | None, error: BaseException | None
    ) -> tuple[int | None, Any, Any, float | None]:
        """Count features and predictions; returns rows, scores, decisions and the duration
        still to count (``None`` once the single-row path counted it with the row)."""
        if features is _NO_INPUT:
            return None, None, None, duration
        if is_single_row(features):
            try:
                scores, decisions = self._record_row(features, result, duration, error)
                return 1, scores, decisions, None
            except Exception as exc:
                self._instrumentation_error("row", exc)
                return 1, None, None, duration
        columns = self._columns(features)
        if columns is None:
            return None, None, None, duration
        scores = decisions = None
        if error is None:
            try:
                scores, decisions = self._count_predictions(columns, result, columns.n_rows)
            except Exception as exc:
                self._instrumentation_error("predictions", exc)
        return columns.n_rows, scores, decisions, duration

    def _columns(self, features: Any) -> Columns | None:
        """The batch as columns with its features counted, or rows only when they can't be attributed."""
        try:
            columns = to_columns(features, self._feature_names)
        except InputMismatch as exc:
            if self.counters.feature_names:  # nothing to attribute is not an error
                self._instrumentation_error("features", exc, reason=exc.reason, detail=str(exc))
            return None if exc.n_rows is None else Columns(exc.n_rows, lambda name: None)
        except Exception as exc:
            self._instrumentation_error("batch", exc)
            return None
        absent = missing_columns(columns, self.counters.feature_names)
        if absent:
            detail = f"the input has no column for feature(s) {', '.join(map(repr, absent[:5]))}; counted as missing"
            self._instrumentation_error("features", None, reason=REASON_MISSING_FEATURE, detail=detail)
        try:
            self.counters.add_columns(columns)
        except Exception as exc:
            self._instrumentation_error("batch", exc)
        return columns

    def _record_row(
        self, row: Mapping[str, Any], result: Any, duration: float | None, error: BaseException | None
    ) -> tuple[Any, Any]:
        score: float | None = None
        decision: str | None = None  # None: count the features only
        if error is None:
            try:
                score, decision = self._row_prediction(result)
            except Exception as exc:  # a raising score=/decision=: the features still count, the prediction can't
                self._instrumentation_error("predictions", exc)
                score = None
        segments = [_scalar_label(row.get(k)) for k in self.segments]
        # A failed call still saw its features, but made no prediction (decision None).
        self.counters.add_row(row, score, decision, segments, duration)
        return score, (None if decision == NO_DECISION else decision)

    def _row_prediction(self, result: Any) -> tuple[float | None, str | None]:
        score = self._row_score(result)
        decision: str | None = NO_DECISION
        rule = self._decision
        if rule is not None and score is not None and math.isfinite(score):
            verdict = score > rule if isinstance(rule, (int, float)) else rule(score)  # type: ignore[arg-type]
            decision = _scalar_label(verdict)
        return score, decision

    def _row_score(self, result: Any) -> float | None:
        raw = self._score(result) if self._score is not None else result
        if raw is None:
            return None
        if type(raw) is float:
            return raw
        scores = self._scores(raw, 1)
        return None if scores is None else float(scores[0])

    def _count_predictions(self, columns: Columns, result: Any, n: int) -> tuple[Any, Any]:
        scores = self._scores(result, n)
        decisions = self._decisions(scores) if scores is not None else None
        self.counters.add_predictions(scores, decisions, [columns.raw(k) for k in self.segments], n)
        return scores, decisions

    def _scores(self, result: Any, n: int) -> npt.NDArray[np.float64] | None:
        raw = self._score(result) if self._score is not None else result
        return None if raw is None else _score_array(raw, n)

    def _decisions(self, scores: npt.NDArray[np.float64]) -> Any:
        rule = self._decision
        if rule is None:
            return None
        if isinstance(rule, (int, float)):
            return scores > rule
        out = np.asarray(rule(scores))
        if out.shape != scores.shape:
            if out.size == 1 and scores.size == 1:
                return out.reshape(1)
            # A rule written for one score (`if s > t: ...`): apply it per score.
            return np.asarray([rule(s) for s in scores.tolist()])
        return out

    def _end_span(
        self,
        span: Span,
        call: _Call,
        features: Any,
        n: int | None,
        scores: Any,  # a float for one row, an array for a batch, or None
        decisions: Any,
        error: BaseException | None,
    ) -> None:
        try:
            if span.is_recording():
                self._span_attributes(span, call, features, n, scores, decisions, error)
        except Exception as exc:
            self._instrumentation_error("span", exc)
        finally:
            try:
                span.end()
            except Exception as exc:
                self._instrumentation_error("span", exc)

    def _span_attributes(
        self,
        span: Span,
        call: _Call,
        features: Any,
        n: int | None,
        scores: Any,
        decisions: Any,
        error: BaseException | None,
    ) -> None:
        if error is not None:  # first, so a failure reading the features can't lose it
            span.set_attribute(ATTR_ERROR_TYPE, type(error).__qualname__)
            span.set_status(Status(StatusCode.ERROR, type(error).__qualname__))
            span.record_exception(error)
        attrs: dict[str, Any] = {ATTR_REQUEST_ID: call.request_id}
        if n is not None:
            attrs[ATTR_BATCH_SIZE] = n
        if isinstance(scores, float):  # one row: the score and decision themselves
            attrs[ATTR_SCORE] = scores
            if decisions is not None:
                attrs[ATTR_PREDICTION_DECISION] = decisions
        elif scores is not None and np.isfinite(scores).any():
            attrs[ATTR_SCORE_MEAN] = float(np.nanmean(scores))
        if call.fallback is not None:
            attrs[ATTR_FALLBACK] = True
            attrs[ATTR_FALLBACK_REASON] = call.fallback
        span.set_attributes(attrs)
        if n == 1 and isinstance(features, Mapping):
            span.set_attributes(self._row_attributes(features))

    def _row_attributes(self, row: Mapping[str, Any]) -> dict[str, Any]:
        attrs: dict[str, Any] = {}
        for key in self.segments:
            value = _scalar_label(row.get(key))
            if value is not None:
                attrs[ATTR_SEGMENT_PREFIX + key] = value
        if self._record_features:
            for key, value in row.items():
                if isinstance(value, str):  # a lone surrogate would fail the whole span batch's encoding
                    attrs[label_value(ATTR_FEATURE_PREFIX + str(key))] = label_value(value)
                elif isinstance(value, (bool, int, float)):
                    attrs[label_value(ATTR_FEATURE_PREFIX + str(key))] = value
        return attrs

    def _instrumentation_error(
        self, stage: str, exc: BaseException | None, *, reason: str | None = None, detail: str | None = None
    ) -> None:
        """Count a failure of otel-ml itself (``error_type`` = ``reason`` or the exception's
        class) and log it once per stage and kind; never raises."""
        try:
            kind = reason or type(exc).__qualname__
            self.counters.instrumentation_errors.add(kind)
            key = f"{stage}:{kind}"
            if key not in self._warned and len(self._warned) < _WARN_KEYS:
                self._warned.add(key)
                _log.warning(
                    "otel-ml %s: %s failed (%s%s); the prediction is unaffected, this is logged once",
                    self,
                    stage,
                    kind,
                    f": {detail}" if detail else "",
                )
        except Exception:
            pass


class Observation:
    """Holder for the result of a call made inside :meth:`ModelMonitor.observe`."""

    __slots__ = ("result",)

    def __init__(self) -> None:
        self.result: Any = None


def _score_array(raw: Any, n: int) -> npt.NDArray[np.float64]:
    arr = np.asarray(raw)
    if arr.ndim == 2 and arr.shape[1] == 2:  # predict_proba of a binary classifier
        arr = arr[:, 1]
    scores = as_float(arr)
    if arr.dtype.kind == "O" and scores.size and np.isnan(scores).all():
        raise ValueError(f"cannot read a score from a {type(raw).__name__} result: pass score=lambda result: ...")
    if scores.size != n:
        raise ValueError(f"expected {n} scores for {n} rows, got {scores.size}")
    return scores


def _scalar_label(value: Any) -> str | None:
    """The label of one segment value or decision: the same identity as a batch column's."""
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0] if value.size == 1 else value.tolist()
    return canonical_label(value)


def _warn_if_baseline_differs(baseline: Baseline | None, model: str | None, version: str | None) -> None:
    """Explicit model=/version= win over the baseline's, but a mismatch is almost always a mistake."""
    if baseline is None:
        return
    if (model and model != baseline.model_name) or (version and version != baseline.model_version):
        _log.warning(
            "otel-ml: monitoring model %r version %r with the baseline of model %r version %r; "
            "its bins and reference rates describe another model",
            model or baseline.model_name,
            version or baseline.model_version,
            baseline.model_name,
            baseline.model_version,
        )


def monitor(model: str | None = None, version: str | None = None, **kwargs: Any) -> ModelMonitor:
    """Decorate an inference function: ``@monitor(baseline=b, segments=["region"], decision=0.7)``.

    Takes the same arguments as :class:`ModelMonitor` and returns one, which wraps the
    function it decorates; the wrapped function gets a ``.monitor`` attribute holding it.
    """
    if callable(model):
        raise TypeError("@monitor needs arguments: @monitor(baseline=...) or @monitor(model=..., version=...)")
    return ModelMonitor(model, version, **kwargs)
