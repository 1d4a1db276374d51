"""The span of one monitored call: what it carries when it ends (never raises)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from opentelemetry.trace import Span, Status, StatusCode

from .._label_hygiene import label_value
from .._names import (
    ATTR_BATCH_SIZE,
    ATTR_COST_USD,
    ATTR_ERROR_TYPE,
    ATTR_FALLBACK,
    ATTR_FALLBACK_REASON,
    ATTR_FEATURE_PREFIX,
    ATTR_PREDICTION_DECISION,
    ATTR_REQUEST_ID,
    ATTR_REVIEW_PROBABILITY,
    ATTR_REVIEW_SAMPLED,
    ATTR_SCORE,
    ATTR_SCORE_MEAN,
    ATTR_SEGMENT_PREFIX,
    ATTR_USAGE_INPUT_TOKENS,
    ATTR_USAGE_OUTPUT_TOKENS,
)
from ._context import CallState
from ._counting import scalar_label
from ._errors import InstrumentationErrors
from ._tokens import ATTR_PREDICTION_TOKEN

__all__ = ["SpanEnder"]


class SpanEnder:
    """Sets a call's attributes on its span and ends it: the request id, batch size, score (a
    row's own, a batch's mean), decision, prediction token, fallback, error, segments and
    optionally features."""

    __slots__ = ("_errors", "_record_features", "_segments")

    def __init__(self, errors: InstrumentationErrors, *, segments: Sequence[str], record_features: bool) -> None:
        self._errors = errors
        self._segments = tuple(segments)
        self._record_features = record_features

    def end(
        self,
        span: Span,
        call: CallState,
        features: Any,
        n: int | None,
        scores: Any,  # a float for one row, an array for a batch, or None
        decisions: Any,
        error: BaseException | None,
    ) -> None:
        try:
            if span.is_recording():
                self._set_attributes(span, call, features, n, scores, decisions, error)
        except Exception as exc:
            self._errors.report("span", exc)
        finally:
            try:
                span.end()
            except Exception as exc:
                self._errors.report("span", exc)

    def _set_attributes(
        self,
        span: Span,
        call: CallState,
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
        if call.token is not None:
            attrs[ATTR_PREDICTION_TOKEN] = call.token
        if call.fallback is not None:
            attrs[ATTR_FALLBACK] = True
            attrs[ATTR_FALLBACK_REASON] = call.fallback
        usage = call.usage
        if usage is not None:  # what the app reported in the call: its cost and GenAI token usage
            if usage.usd:
                attrs[ATTR_COST_USD] = usage.usd
            if usage.token_uses:
                attrs[ATTR_USAGE_INPUT_TOKENS] = usage.input_tokens
                attrs[ATTR_USAGE_OUTPUT_TOKENS] = usage.output_tokens
        if call.review_pi is not None:
            attrs[ATTR_REVIEW_SAMPLED] = call.review_pi > 0
            if call.review_pi > 0:
                attrs[ATTR_REVIEW_PROBABILITY] = call.review_pi
        if n == 1 and (self._segments or self._record_features) and isinstance(features, Mapping):
            attrs.update(self._row_attributes(features))
        span.set_attributes(attrs)  # once: the SDK takes its lock per call

    def _row_attributes(self, row: Mapping[str, Any]) -> dict[str, Any]:
        attrs: dict[str, Any] = {}
        for key in self._segments:
            value = scalar_label(row.get(key))
            if value is not None:
                attrs[ATTR_SEGMENT_PREFIX + key] = value
        if self._record_features:
            for key, value in row.items():
                if isinstance(value, str):  # a lone surrogate would fail the whole span batch's encoding
                    attrs[label_value(ATTR_FEATURE_PREFIX + str(key))] = label_value(value)
                elif isinstance(value, (bool, int, float)):
                    attrs[label_value(ATTR_FEATURE_PREFIX + str(key))] = value
        return attrs
