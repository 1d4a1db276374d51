"""Inclusion probabilities for the app's review sampler, from the population the sidecar counted.

``GET /v1/review/rates`` answers, per (segment key, segment, stratum) of a model version,
``pi = min(1, k / N)``: ``N`` the stratum's volume of ``ml_review_population_total`` over the
configured ``window`` (read from the model's snapshot rings, the same windows every other output
uses), scaled to a day; ``k`` the daily ``quota``, ``threshold_quota`` for bins that touch the
baseline's decision threshold, raised for segments below ``segment_floor``.

``default`` is the pi for a stratum the sidecar has not seen yet: ``quota x strata seen / daily
volume of the model`` (a new stratum is assumed to be an average one, not a flood), or 1.0 while
the model has no volume at all; the app then keeps its own configured rate (an empty table
says nothing about the traffic to come, and pi = 1 would queue every call until the next refresh).
Known bias: the first report of a cumulative counter after the sidecar starts counts the app's
whole history as an increase, so right after a sidecar start the volume (and so ``1/pi``)
may be overestimated for one window; pi is then lower than needed, never a flood.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .. import _names as n
from .._review_sampling import DEFAULT_NEAR, inclusion_probabilities
from ._model_state import ModelState
from ._windows import POOLED_WINDOWS

__all__ = ["RateSettings", "review_rates", "population_volume", "near_strata", "NEAR_WIDTH"]

DAY = 86400.0
NEAR_WIDTH = max(DEFAULT_NEAR)  # bins overlapping (t - w, t + w) are "near" the threshold
_INTERVAL = re.compile(r"\(([^,]+),([^\]\)]+)[\]\)]")
K = TypeVar("K", bound=Hashable)
Stratum = tuple[str, str, str]  # (segment key, segment, stratum)


@dataclass(frozen=True)
class RateSettings:
    """Daily review quotas and the window their volumes are measured over."""

    quota: float = 20.0  # reviews per stratum per day
    threshold_quota: float = 50.0  # ... for bins touching the decision threshold
    segment_floor: float = 10.0  # min reviews per segment per day
    window: float = DAY  # the population volume pi is computed from


def population_volume(model: ModelState, seconds: float, now: float) -> tuple[dict[Stratum, float], float]:
    """Each stratum's ``ml_review_population_total`` increase over the last ``seconds`` and the time
    it covers (shorter while the sidecar is younger than the window). The ring read is the finest
    one reaching back that far (a window's ring holds three of its windows)."""
    rings = [r for r in model.rings.values() if POOLED_WINDOWS * r.spec.seconds >= seconds]
    ring = min(rings or model.rings.values(), key=lambda r: r.spec.step)
    start, then = ring.at(now - seconds)
    totals = model.current_totals()
    out: dict[Stratum, float] = {}
    for i, labels in model.series_of(n.REVIEW_POPULATION.series):
        found = dict(labels)
        key = (found.get(n.LABEL_SEGMENT_KEY, n.ALL), found.get(n.LABEL_SEGMENT, n.ALL), found.get(n.LABEL_STRATUM, ""))
        before = float(then[i]) if i < then.size else 0.0
        out[key] = out.get(key, 0.0) + max(0.0, float(totals[i]) - before)
    return out, max(0.0, now - start)


def _bounds(stratum: str) -> tuple[float, float] | None:
    match = _INTERVAL.fullmatch(stratum)
    if match is None:
        return None
    try:
        return float(match.group(1)), float(match.group(2))
    except ValueError:
        return None


def near_strata(strata: Collection[Stratum], thresholds: Sequence[float], width: float = NEAR_WIDTH) -> set[Stratum]:
    """The strata whose bin ``(lo, hi]`` overlaps ``(t - width, t + width)`` for a threshold ``t``
    (the rule of ``_review_sampling.near_threshold``, applied to bins spelled as labels)."""
    out = set()
    for key in strata:
        bounds = _bounds(key[2])
        if bounds is not None and any(bounds[0] < t + width and bounds[1] > t - width for t in thresholds):
            out.add(key)
    return out


def review_rates(model: ModelState, settings: RateSettings, now: float) -> dict[str, Any]:
    """The ``/v1/review/rates`` answer for one model version (call under the state's lock)."""
    counted, elapsed = population_volume(model, settings.window, now)
    scale = DAY / elapsed if elapsed >= 1.0 else 0.0
    daily = {key: volume * scale for key, volume in counted.items()}
    score = model.baseline.score
    threshold = None if score is None else score.decision_threshold
    near = near_strata(daily, () if threshold is None else (float(threshold),))
    pis = inclusion_probabilities(
        daily,
        quota=settings.quota,
        threshold_quota=settings.threshold_quota,
        near=near,
        segment_floor=settings.segment_floor,
        segment_of={key: key[:2] for key in daily},
    )
    total = sum(daily.values())
    seen = sum(1 for volume in daily.values() if volume > 0)
    default = min(1.0, settings.quota * seen / total) if total > 0 else 1.0
    rates = [
        {
            "segment_key": key[0],
            "segment": key[1],
            "stratum": key[2],
            "pi": pis[key],
            "volume": daily[key],
            "quota": settings.threshold_quota if key in near else settings.quota,
        }
        for key in sorted(daily)
        if daily[key] > 0  # a stratum quiet over the window gets the default, not pi = 1 (a flood when it returns)
    ]
    return {
        "model": model.model,
        "version": model.version,
        "window": settings.window,
        "computed_at": time.time(),
        "default": default if math.isfinite(default) else 1.0,
        "rates": rates,
    }
