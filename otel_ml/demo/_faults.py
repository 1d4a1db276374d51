"""Realistic production faults, each a pure function of one request's features.

They are the failures otel-ml exists to catch, in the order the demo injects them:
an upstream unit change shifts a numeric feature, an upstream team renames a category the
model one-hot encodes, and a broken feature pipeline for one region zeroes three inputs so that
segment's flag rate collapses while the overall rate moves far less.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Fault", "FAULTS", "Page", "page"]

Row = dict[str, Any]


@dataclass(frozen=True)
class Page:
    """An alert on-call should receive: its name and the labels that say where (feature, segment)."""

    alertname: str
    labels: tuple[tuple[str, str], ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return labels.get("alertname") == self.alertname and all(labels.get(k) == v for k, v in self.labels)

    def __str__(self) -> str:
        where = ", ".join(f'{k}="{v}"' for k, v in self.labels)
        return f"{self.alertname}{{{where}}}" if where else self.alertname


def page(alertname: str, **labels: str) -> Page:
    return Page(alertname, tuple(sorted(labels.items())))


@dataclass(frozen=True)
class Fault:
    name: str
    title: str
    apply: Callable[[Row], Row]
    pages: tuple[Page, ...]  # must page, with these labels
    side_effects: tuple[Page, ...] = ()  # may page too, as a consequence of this fault

    @property
    def expect(self) -> str:
        """What on-call should see, in words."""
        return ", ".join(str(p) for p in self.pages)


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
        pages=(page("MLFeatureDrift", ml_feature="mean_radius"),),
        # a bigger radius means a higher risk score: the scores and every region's flag rate move
        side_effects=(page("MLScoreDistributionShift"), page("MLSegmentDecisionRateChange")),
    ),
    Fault(
        "rename",
        "upstream encoding change: region 'US' -> 'United States'",
        _rename,
        pages=(page("MLUnknownCategorySurge", ml_feature="region"),),
        side_effects=(page("MLFeatureDrift", ml_feature="region"),),
    ),
    Fault(
        "collapse",
        "EU feature pipeline sends zeros: EU flag rate collapses",
        _collapse,
        pages=(page("MLSegmentDecisionRateChange", ml_segment_key="region", ml_segment="EU"),),
        side_effects=(
            page("MLFeatureDrift", ml_feature="worst_area"),
            page("MLFeatureDrift", ml_feature="worst_concavity"),
            page("MLFeatureDrift", ml_feature="mean_concave_points"),
            page("MLScoreDistributionShift"),
            page("MLSegmentDecisionRateChange", ml_segment_key="__all__"),
        ),
    ),
)
