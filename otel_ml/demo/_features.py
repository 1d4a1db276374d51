"""The demo's feature code: the training pipeline, the service's online copy of it, and the model.

A request's body is the raw input: the six measurements and two categories as the caller sends
them. The training pipeline (``training_features``, what the notebook ran) reads them as they
are. The online copy the service runs has drifted from it the way online copies do: its feature
store keeps ``worst_area`` as an integer, so the served value is rounded. The demo's skew replay
(``otel-ml skew replay --pipeline otel_ml.demo._features:training_features --model
otel_ml.demo._features:score``) finds that mismatch on nearly every row and measures what it does
to scores and decisions (little: a fraction of a point at most): a mismatch worth knowing about,
not worth a page.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from ._model import CATEGORICAL, NUMERIC, DemoModel, train_demo_model

__all__ = ["ROUNDED", "online_features", "score", "training_features"]

ROUNDED = "worst_area"  # the feature the online store keeps as an integer


def training_features(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The training pipeline: the model's inputs from one raw request."""
    out: dict[str, Any] = {name: _number(raw.get(name)) for name in NUMERIC.values()}
    out.update({name: raw.get(name) for name in CATEGORICAL})
    return out


def online_features(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The service's copy of the pipeline: the same, but ``worst_area`` comes back as an integer."""
    out = training_features(raw)
    value = out[ROUNDED]
    if isinstance(value, float) and value == value and abs(value) != float("inf"):
        out[ROUNDED] = float(round(value))
    return out


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@functools.lru_cache(maxsize=1)
def _model() -> DemoModel:
    return train_demo_model()  # deterministic: the same fitted pipeline the demo serves


def score(frame: Any) -> Any:
    """The served model's scores for a DataFrame of features (what a replay re-scores with)."""
    return _model().score(frame)
