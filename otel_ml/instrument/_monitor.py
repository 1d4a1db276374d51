"""``@monitor`` and :class:`ModelMonitor`: wrap an inference function with spans and metrics.

The wrapper follows the OpenTelemetry contrib instrumentations: providers are arguments, the
tracer and counters are built once, the wrapped call is timed and its own exception is
re-raised untouched, and everything otel-ml does around it runs behind a guard that counts
its failures in ``ml_instrumentation_errors_total`` and swallows them. The result the caller
gets is always the object the function returned, and what it raises (any ``BaseException``,
cancellation included) is the same object with the same traceback.

The sync wrapper, the async wrapper and :meth:`ModelMonitor.observe` run their code in one
context manager (:class:`~otel_ml.instrument._call.Call`), so a call is begun and finished the
same way in all three.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, cast

from opentelemetry import trace
from opentelemetry.trace import TracerProvider
from prometheus_client import REGISTRY, CollectorRegistry

from .._binning import DEFAULT_SCORE_EDGES
from .._names import ATTR_MODEL_NAME, ATTR_MODEL_VERSION, ATTR_SHADOW_OF, BASIS_BILLED
from .._prices import PRICES_ENV, PriceError, Prices, prices_from_env
from .._version import __version__
from ..baseline import Baseline
from ._call import Call, CallRecorder
from ._capture import Capture, CaptureSink
from ._context import (
    CURRENT,
    CallState,
    PredictionCapture,
    capture_prediction,
    current_prediction_token,
    current_request_id,
    mark_fallback,
)
from ._counters import ModelCounters
from ._counting import CallCounter, Decision
from ._errors import InstrumentationErrors
from ._prometheus import collector_for
from ._review import Review, ReviewSampler
from ._shadow import Inherit, Shadow, bind_shadows
from ._spans import SpanEnder
from ._tokens import minter_for
from ._usage import CallUsage

__all__ = [
    "ModelMonitor",
    "Observation",
    "Shadow",
    "PredictionCapture",
    "capture_prediction",
    "current_prediction_token",
    "current_request_id",
    "mark_fallback",
    "monitor",
]

_log = logging.getLogger("otel_ml")
F = TypeVar("F", bound=Callable[..., Any])
BaselineSource = Baseline | str | os.PathLike[str]
Inputs = Callable[[tuple[Any, ...], dict[str, Any]], Any]


class _Usage(NamedTuple):
    """How a monitor prices its calls: the price table, its GPU share, the segment key of costs."""

    prices: Prices | None
    gpu_share: float
    cost_segment: str | None


def _review_layout(
    config: Review, segments: Sequence[str], baseline: Baseline | None, decision: Decision | None
) -> tuple[tuple[float, ...], str | None]:
    """The review bins (the score's, split near a threshold decision) and the strata's segment key."""
    if config.segment is not None and config.segment not in tuple(segments):
        raise ValueError(f"Review(segment={config.segment!r}) is not one of segments={tuple(segments)!r}")
    score = baseline.score if baseline is not None else None
    threshold = decision if isinstance(decision, (int, float)) and not isinstance(decision, bool) else None
    edges = ReviewSampler.edges_for(score.edges if score else DEFAULT_SCORE_EDGES, threshold, config.near, config.bins)
    return edges, config.segment


def _gpu_share(share: float) -> float:
    """The GPUs a call holds for its wall time: finite and between 0 and 64 (a share, or several GPUs)."""
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share <= 64.0:
        raise ValueError(f"gpu_share={share!r}: the GPUs a call holds, a number between 0 and 64")
    return float(share)


def _prices_of(prices: Prices | str | os.PathLike[str] | None) -> Prices | None:
    """The monitor's price table: given, a file, else ``OTEL_ML_PRICES`` (a bad file there is
    logged and the model runs unpriced: an environment variable must not stop the app)."""
    if isinstance(prices, Prices):
        return prices
    if prices is not None:
        return Prices.load(prices)
    try:
        return prices_from_env()
    except PriceError as exc:
        _log.error("otel-ml: %s names an unusable price table (%s); costs are not priced", PRICES_ENV, exc)
        return None


class Observation:
    """Holder for the result of a call made inside :meth:`ModelMonitor.observe`; after the
    block it also gives the call's request id and prediction token."""

    __slots__ = ("_state", "result")

    def __init__(self) -> None:
        self.result: Any = None
        self._state: CallState | None = None

    @property
    def request_id(self) -> str | None:
        """The call's request id (the one ``current_request_id()`` gives inside the block)."""
        return None if self._state is None else self._state.request_id

    @property
    def token(self) -> str | None:
        """The call's prediction token once the block has set ``result`` and ended (one row,
        a monitor with a token key); ``None`` otherwise."""
        return None if self._state is None else self._state.token


class ModelMonitor:
    """Telemetry for one model version. Use it as a decorator, or with :meth:`observe`.

    ``baseline`` (a :class:`Baseline` or a path) gives the bin edges and the model name and
    version unless ``model``/``version`` say otherwise (a mismatch is logged, naming both).
    ``feature_names`` names the columns of numpy arrays and lists of lists the function is
    called with (default: the baseline's features, in order); columns are matched to baseline
    features by name, extra columns are ignored. ``inputs`` picks the features out of the
    call's ``(args, kwargs)`` (default: the first argument after ``self``/``cls``);
    ``request_id`` makes the request id from the features (default: a generated one).
    ``segments`` names input columns whose values split the decision counts; ``score`` pulls
    the scores out of the function's result when it is not the scores themselves (a binary
    ``predict_proba`` result counts its second column). Label values from data are kept within
    ``segment_budget``/``decision_budget`` distinct values; the rest is ``__other__``.
    ``record_features`` puts a single row's features on the span; ``tracer_provider`` and
    ``registry`` default to the global ones (``registry=None``: expose nothing).

    ``token_key`` (bytes, at least 16) makes every single-row call mint a prediction token: a
    signed, opaque string of the prediction (score, decision, the baseline's segments, request
    id) that the label producer posts back with the outcome to any sidecar sharing the key, so
    labels join with no store even behind a load balancer. It needs a baseline. Without it the
    key comes from ``OTEL_ML_TOKEN_KEY`` (hex) or the file named by ``OTEL_ML_TOKEN_KEY_FILE``
    when the baseline has a score profile. The caller gets the token from
    :func:`current_prediction_token` inside the call, :func:`capture_prediction` or
    :attr:`Observation.token` after it, and the span attribute ``ml.prediction.token``. A monitor
    without a key pays nothing for tokens.

    ``decision`` turns scores into the ``ml_decision`` label of ``ml_predictions_total``:

    * ``None``: every prediction is counted with decision ``"none"``.
    * a number ``t``: the decision is ``score > t`` (``"true"``/``"false"``). A single row
      whose score is missing or not finite gets ``"none"``; in a batch the comparison is made
      on the whole score array, so a NaN score there compares false and counts as ``"false"``.
    * a callable: for a single row it is called with the score as a ``float`` (only when the
      score is finite; otherwise the decision is ``"none"``) and its return value is the label.
      For a batch it is called once with the whole ``float64`` score array (NaN included) and
      should return one decision per score; when it returns another shape, e.g. one value
      from a rule that reduced the array, it is called again once per score with a ``float``.
      If it raises on the array (``if s > t`` on an array does), the batch's predictions are
      not counted and the failure is an instrumentation error. A vectorised rule
      (``lambda s: np.where(s > 0.7, "review", "pass")``) serves rows and batches alike.

    A call whose function raised counts its features and error but no prediction, and a
    result no score can be read from counts the predictions with decision ``"none"``.

    ``shadow`` lists :class:`Shadow` versions scored on the same input off the request path
    (see :class:`Shadow`); :meth:`close` stops them.

    Cost: every sync call's CPU time on the calling thread is counted
    (``ml_prediction_cpu_seconds_total``, a lower bound: BLAS threads are not in it, and
    ``ml_process_cpu_seconds_total`` beside it shows how much), async calls' is not (their thread
    runs other tasks between awaits). ``prices`` (a :class:`~otel_ml.Prices`, or a YAML/JSON
    file; default: the file named by ``OTEL_ML_PRICES``) prices it in
    ``ml_cost_usd_total{ml_cost_source="compute", ml_cost_basis="configured_rate"}``, plus wall
    time x ``gpu_share`` (the share of one GPU the model holds during a call) x the GPU price;
    :func:`~otel_ml.add_cost` and :func:`~otel_ml.add_tokens` inside the call add what it cost
    elsewhere. ``cost_segment`` (one of ``segments``) splits costs by its values; a batch's cost
    is split by its rows. A shadow's calls cost on the shadow's version.

    ``review`` (a :class:`~otel_ml.Review`) samples predictions for human review: strata of the
    review segment and the score (finer near a threshold ``decision``), a deterministic hash of
    the request id against each stratum's inclusion probability, counts per stratum, and the
    selected ids sent to the sidecar's review queue with their probabilities.

    ``capture`` (a :class:`~otel_ml.Capture`, off by default: it copies what users sent) writes a
    hash-sampled share of rows (raw request, served features, score, decision) to a bounded spool
    for ``otel-ml skew replay``; see :class:`~otel_ml.Capture`.

    A single row's counts are buffered (up to 512 rows) and counted in one vectorised step
    before anything in this process reads them (a scrape, an OTLP export, ``counters.snapshot()``),
    before a fork and at exit; in multiprocess mode also every 0.5 s, the most a scrape served
    by another worker lags. A process killed with SIGKILL loses at most that buffer.
    """

    counters: ModelCounters
    shadows: tuple[Shadow, ...]
    capture: CaptureSink | None
    _recorder: CallRecorder

    def __init__(
        self,
        model: str | None = None,
        version: str | None = None,
        *,
        baseline: BaselineSource | None = None,
        segments: Sequence[str] = (),
        decision: Decision | None = None,
        score: Callable[[Any], Any] | None = None,
        inputs: Inputs | None = None,
        request_id: Callable[[Any], Any] | None = None,
        feature_names: Sequence[str] | None = None,
        record_features: bool = False,
        segment_budget: int = 50,
        decision_budget: int = 16,
        token_key: bytes | None = None,
        shadow: Sequence[Shadow] = (),
        prices: Prices | str | os.PathLike[str] | None = None,
        gpu_share: float = 0.0,
        cost_segment: str | None = None,
        review: Review | None = None,
        capture: Capture | None = None,
        tracer_provider: TracerProvider | None = None,
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        """Over 60 lines because it is the order of set-up: the baseline, then counters laid out with
        every option, then review and capture over them, then the shadows (a failing one unregisters all)."""
        if isinstance(baseline, (str, os.PathLike, Path)):
            baseline = Baseline.load(baseline)
        self.baseline = baseline
        _warn_if_baseline_differs(baseline, model, version)
        name = model or (baseline.model_name if baseline else None)
        ver = version or (baseline.model_version if baseline else None)
        if not name or not ver:
            raise ValueError("ModelMonitor needs model= and version=, or a baseline that names them")
        self._setup(
            name,
            ver,
            segments=tuple(segments),
            decision=decision,
            score=score,
            inputs=inputs,
            request_id=request_id,
            feature_names=feature_names,
            record_features=record_features,
            budgets=(segment_budget, decision_budget),
            token_key=token_key,
            tracer_provider=tracer_provider,
            registry=registry,
            usage=_Usage(_prices_of(prices), _gpu_share(gpu_share), cost_segment),
            review_layout=None if review is None else _review_layout(review, segments, baseline, decision),
            capture=capture is not None,
        )
        if review is not None:
            self._start_review(review)
        if capture is not None:
            self.capture = self._start_capture(capture, decision)
        try:
            for sh in bind_shadows(shadow):
                _attach_shadow(self, sh)
                self.shadows = (*self.shadows, sh)
        except BaseException:
            self.close()  # a bad shadow= registers nothing
            raise
        self._recorder.shadows = (*self.shadows, *(() if self.capture is None else (self.capture,)))
        self._recorder.capture = self.capture

    def _setup(
        self,
        name: str,
        ver: str,
        *,
        segments: tuple[str, ...],
        decision: Decision | None,
        score: Callable[[Any], Any] | None,
        inputs: Inputs | None,
        request_id: Callable[[Any], Any] | None,
        feature_names: Sequence[str] | None,
        record_features: bool,
        budgets: tuple[int, int],
        token_key: bytes | None,
        tracer_provider: TracerProvider | None,
        registry: CollectorRegistry | None,
        usage: _Usage,
        shadow_of: str | None = None,
        review_layout: tuple[Sequence[float], str | None] | None = None,
        capture: bool = False,
    ) -> None:
        """Counters, recorder and registration; a shadow's (``shadow_of``) mint no tokens and
        carry the primary's version on their spans. Over 60 lines because each option (cost, review,
        capture) must reach the counters' layout before they exist: the order is the point."""
        baseline = self.baseline
        self.model_name: str = name
        self.model_version: str = ver
        self.segments = segments
        if feature_names is not None and len(set(feature_names)) != len(tuple(feature_names)):
            raise ValueError("feature_names= has duplicate names")
        self._inputs = inputs
        self.shadows = ()
        segment_budget, decision_budget = budgets
        self._settings = (decision, score, inputs, feature_names, record_features, budgets, tracer_provider, usage)
        self.counters = ModelCounters(
            name,
            ver,
            baseline,
            self.segments,
            segment_budget=segment_budget,
            decision_budget=decision_budget,
            shadow_of=shadow_of,
            cost_segment=usage.cost_segment,
            review_edges=None if review_layout is None else review_layout[0],
            review_segment=None if review_layout is None else review_layout[1],
            prices=usage.prices,
            gpu_share=usage.gpu_share,
            capture=capture,
        )
        self.prices = usage.prices
        self.review: ReviewSampler | None = None
        self.capture = None
        errors = InstrumentationErrors(self.counters, self)
        names = tuple(feature_names) if feature_names is not None else (baseline.feature_names if baseline else ())
        self.feature_names = names
        self._counting = counting = CallCounter(
            self.counters, errors, segments=self.segments, decision=decision, score=score, feature_names=names
        )
        spans = SpanEnder(errors, segments=self.segments, record_features=record_features)
        self._recorder = self._recorder_for(errors, counting, spans, tracer_provider, request_id, token_key, shadow_of)
        self.registry = registry
        if registry is not None:
            collector_for(registry).add(self.counters)

    def _recorder_for(
        self,
        errors: InstrumentationErrors,
        counting: CallCounter,
        spans: SpanEnder,
        tracer_provider: TracerProvider | None,
        request_id: Callable[[Any], Any] | None,
        token_key: bytes | None,
        shadow_of: str | None,
    ) -> CallRecorder:
        """What runs around each call; a shadow's spans name the version it shadows, and it mints no tokens."""
        key = (self.model_name, self.model_version)
        attributes = {ATTR_MODEL_NAME: key[0], ATTR_MODEL_VERSION: key[1]}
        if shadow_of is not None:
            attributes[ATTR_SHADOW_OF] = shadow_of
        return CallRecorder(
            key,
            self.counters,
            errors,
            counting,
            spans,
            trace.get_tracer("otel_ml", __version__, tracer_provider),
            attributes,
            request_id,
            None if shadow_of is not None else minter_for(token_key, self.baseline, counting.decide),
        )

    def _start_review(self, config: Review) -> None:
        """Start review sampling over the strata the counters were laid out with."""
        edges = self.counters.layout.review_edges or ()
        if self._settings[0] is None:
            _log.warning(
                "otel-ml: %r samples predictions for review without decision=: a review answer cannot be "
                "judged right or wrong without the served decision (counted unmatched, no_decision)",
                self,
            )
        client = None
        if config.sidecar is not None:
            from ._review_client import ReviewClient

            counters = self.counters
            client = ReviewClient(
                config.sidecar,
                model=self.model_name,
                version=self.model_version,
                token=config.token,
                on_drop=counters.add_review_dropped,
            )
        self.review = ReviewSampler(config, self.counters, edges, client=client, feature_names=self.feature_names)
        self._counting.review = self.review
        self._recorder.reviewed = True

    def _start_capture(self, config: Capture, decision: Decision | None) -> CaptureSink:
        """The capture sink, after the recorder names every call (the id is what is sampled)."""
        if not isinstance(config, Capture):
            raise TypeError(f"capture= takes an otel_ml.Capture, not {type(config).__name__}")
        plain = isinstance(decision, (int, float)) and not isinstance(decision, bool)
        return CaptureSink(
            config,
            self.counters,
            segments=self.segments,
            feature_names=self.feature_names,
            threshold=float(decision) if plain else None,  # type: ignore[arg-type]
        )

    def add_cost(self, usd: float, *, basis: str = BASIS_BILLED) -> None:
        """Add a cost of this model known only outside a call (a nightly bill, a batch job's API
        spend): ``ml_cost_usd_total{ml_cost_source="api", ml_cost_basis=basis}``, no segment."""
        usage = CallUsage()
        usage.add_cost(usd, basis)
        self._recorder._report_usage(usage, None)

    def add_tokens(self, input: int = 0, output: int = 0, *, model: str | None = None) -> None:
        """Add tokens used outside a call, priced like :func:`otel_ml.add_tokens`'."""
        usage = CallUsage()
        usage.add_tokens(input, output, model)
        self._recorder._report_usage(usage, None)

    def close(self) -> None:
        """Stop exposing this model's metrics (e.g. when a model version is unloaded), and its shadows'."""
        if self.review is not None and self.review.client is not None:
            self.review.client.close()
        if self.capture is not None:
            self.capture.close()
        for sh in self.shadows:
            sh.close()
            if sh.monitor is not None:
                sh.monitor.close()
        if self.registry is not None:
            collector_for(self.registry).remove(self.counters)

    def __repr__(self) -> str:
        return f"ModelMonitor(model={self.model_name!r}, version={self.model_version!r})"

    # -- decorator ----------------------------------------------------------------------------
    def __call__(self, fn: F) -> F:
        return self.wrap(fn)

    def wrap(self, fn: F) -> F:
        """Wrap a sync or async inference function; the wrapper has ``.monitor`` set to self."""
        features_of = _reader(fn, self._inputs)
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with Call(self._recorder, features_of, args, kwargs, cpu=False) as call:
                    call.result = await fn(*args, **kwargs)
                return call.result

            async_wrapper.monitor = self  # type: ignore[attr-defined]
            return cast(F, async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with Call(self._recorder, features_of, args, kwargs) as call:
                call.result = fn(*args, **kwargs)
            return call.result

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
        with Call(self._recorder, _first, (features,), {}) as call:
            obs._state = call.state if call.state is not None else CURRENT.get()
            yield obs
            call.result = obs.result

    def record(self, features: Any, result: Any, *, duration_seconds: float | None = None) -> None:
        """Count features and predictions made elsewhere (e.g. a batch scoring job); no span."""
        self._recorder.finish(CallState(), None, features, result, None, None, duration_seconds)


def _reader(fn: Callable[..., Any], inputs: Inputs | None) -> Callable[[tuple[Any, ...], dict[str, Any]], Any]:
    """How a call of ``fn`` gives its features: ``inputs=``, else its first data argument."""
    if inputs is not None:
        return inputs
    index, name = _first_data_parameter(fn)

    def features_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if len(args) > index:
            return args[index]
        return kwargs.get(name) if name else None

    return features_of


def _attach_shadow(primary: ModelMonitor, shadow: Shadow) -> None:
    """Give a shadow its own monitor: the primary's registry, tracer, segments, names and budgets."""
    decision, score, inputs, feature_names, record_features, budgets, tracer_provider, usage = primary._settings
    if shadow.monitor is not None:
        raise ValueError(f"{shadow!r} already shadows a model; make one Shadow per primary")
    baseline = shadow.baseline
    if isinstance(baseline, (str, os.PathLike, Path)):
        baseline = Baseline.load(baseline)
    _warn_if_baseline_differs(baseline, shadow.model, shadow.version)
    name = shadow.model or (baseline.model_name if baseline else primary.model_name)
    ver = shadow.version or (baseline.model_version if baseline else None)
    if not ver:
        raise ValueError("Shadow needs version=, or a baseline that names it")
    if (name, ver) == (primary.model_name, primary.model_version):
        raise ValueError(f"Shadow of model {name!r} has the primary's version {ver!r}: give it its own version")
    mon = ModelMonitor.__new__(ModelMonitor)
    mon.baseline = baseline
    mon._setup(
        name,
        ver,
        segments=primary.segments,
        decision=decision if isinstance(shadow.decision, Inherit) else shadow.decision,
        score=score if isinstance(shadow.score, Inherit) else shadow.score,
        inputs=inputs if isinstance(shadow.inputs, Inherit) else shadow.inputs,
        request_id=None,  # the primary's request id is the shadow call's
        feature_names=feature_names,
        record_features=record_features,
        budgets=budgets,
        token_key=None,
        tracer_provider=tracer_provider,
        registry=primary.registry,
        usage=usage,  # a shadow's calls cost what they cost, on the shadow's version only
        shadow_of=primary.model_version,
    )
    shadow._attach(mon, mon._recorder, _reader(shadow.fn, mon._inputs), mon.feature_names, primary._recorder.key)


def _first(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return args[0]


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


def monitor(
    model: str | None = None,
    version: str | None = None,
    *,
    baseline: BaselineSource | None = None,
    segments: Sequence[str] = (),
    decision: Decision | None = None,
    score: Callable[[Any], Any] | None = None,
    inputs: Inputs | None = None,
    request_id: Callable[[Any], Any] | None = None,
    feature_names: Sequence[str] | None = None,
    record_features: bool = False,
    segment_budget: int = 50,
    decision_budget: int = 16,
    token_key: bytes | None = None,
    shadow: Sequence[Shadow] = (),
    prices: Prices | str | os.PathLike[str] | None = None,
    gpu_share: float = 0.0,
    cost_segment: str | None = None,
    review: Review | None = None,
    capture: Capture | None = None,
    tracer_provider: TracerProvider | None = None,
    registry: CollectorRegistry | None = REGISTRY,
) -> ModelMonitor:
    """Decorate an inference function: ``@monitor(baseline=b, segments=["region"], decision=0.7)``.

    Takes the same arguments as :class:`ModelMonitor` (whose docstring says what each one,
    ``decision=`` included, means for a single row and for a batch) and returns one, which
    wraps the function it decorates; the wrapped function gets a ``.monitor`` attribute.
    """
    if callable(model):
        raise TypeError("@monitor needs arguments: @monitor(baseline=...) or @monitor(model=..., version=...)")
    return ModelMonitor(
        model,
        version,
        baseline=baseline,
        segments=segments,
        decision=decision,
        score=score,
        inputs=inputs,
        request_id=request_id,
        feature_names=feature_names,
        record_features=record_features,
        segment_budget=segment_budget,
        decision_budget=decision_budget,
        token_key=token_key,
        shadow=shadow,
        prices=prices,
        gpu_share=gpu_share,
        cost_segment=cost_segment,
        review=review,
        capture=capture,
        tracer_provider=tracer_provider,
        registry=registry,
    )
