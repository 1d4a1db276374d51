"""Realistic production faults, each a pure function of one request's features.

They are the failures otel-ml exists to catch, in the order the demo injects them:
an upstream unit change shifts a numeric feature, an upstream team renames a category the
model one-hot encodes, and a broken feature pipeline for one region zeroes three inputs so that
segment's flag rate collapses while the overall rate moves far less.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Fault", "FAULTS"]

Row = dict[str, Any]


@dataclass(frozen=True)
class Fault:
    name: str
    title: str
    apply: Callable[[Row], Row]
    expect: str  # what on-call should see


def _shift(row: Row) -> Row:
    return {**row, "mean_radius": row["mean_radius"] * 1.35}


def _rename(row: Row) -> Row:
    return {**row, "region": "United States"} if row.get("region") == "US" else row


def _collapse(row: Row) -> Row:
    if row.get("region") != "EU":
        return row
    return {**row, "worst_area": 0.0, "worst_concavity": 0.0, "mean_concave_points": 0.0}


FAULTS: tuple[Fault, ...] = (
    Fault(
        "shift",
        "upstream unit change: mean_radius x1.35",
        _shift,
        "MLFeatureDrift on mean_radius, score distribution shift",
    ),
    Fault(
        "rename",
        "upstream encoding change: region 'US' -> 'United States'",
        _rename,
        "MLUnknownCategorySurge on region, MLFeatureDrift on region",
    ),
    Fault(
        "collapse",
        "EU feature pipeline sends zeros: EU flag rate collapses",
        _collapse,
        "MLSegmentDecisionRateChange for region=EU",
    ),
)
