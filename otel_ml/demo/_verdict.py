"""Which fault caused each page the demo received, and did every fault page as it should.

Faults accumulate (fault 2 runs on top of fault 1), so a page is attributed to the latest fault,
injected before the page arrived, whose expected pages or side effects match its alert name and
labels. Shown during a later phase, that page is "carried over"; one that arrives while a later
fault runs is "still active" (faults are never switched off); a page no injected fault
explains, or one during the clean phase, is a surprise. A fault passes when each of its
expected pages arrived, with the right labels, after it was injected.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._faults import Fault, Page

__all__ = ["Delivery", "FaultVerdict", "PageLedger"]


@dataclass
class Delivery:
    """One firing episode of one alert (Alertmanager fingerprint + startsAt)."""

    labels: dict[str, str]
    summary: str
    phase: int  # 0 = clean traffic, k = fault k was the latest one injected when it arrived
    at: float  # seconds since the demo started
    status: str = "firing"


@dataclass(frozen=True)
class FaultVerdict:
    number: int
    fault: Fault
    passed: bool
    lines: tuple[str, ...]


class PageLedger:
    """Pages received from the webhook, each tagged with the phase it arrived in."""

    def __init__(self, faults: Sequence[Fault]) -> None:
        self.faults = tuple(faults)
        self.deliveries: dict[tuple[str, str], Delivery] = {}
        self.injected_at: dict[int, float] = {}

    def inject(self, number: int, at: float) -> None:
        self.injected_at[number] = at

    @property
    def phase(self) -> int:
        return max(self.injected_at, default=0)

    def update(self, alerts: Iterable[Mapping[str, Any]], at: float) -> None:
        """Record new firing episodes and status changes, in the order Alertmanager sent them."""
        for alert in alerts:
            key = (str(alert.get("fingerprint", "")), str(alert.get("startsAt", "")))
            known = self.deliveries.get(key)
            if known is not None:
                known.status = str(alert.get("status", known.status))
            elif alert.get("status") == "firing":
                labels = {str(k): str(v) for k, v in alert.get("labels", {}).items()}
                summary = str(alert.get("annotations", {}).get("summary", ""))
                self.deliveries[key] = Delivery(labels, summary, self.phase, at)

    def cause(self, delivery: Delivery) -> tuple[int, bool] | None:
        """(fault number, expected rather than a side effect) of the page, or None if nothing explains it."""
        for number in range(delivery.phase, 0, -1):
            fault = self.faults[number - 1]
            if _any(fault.pages, delivery.labels):
                return number, True
            if _any(fault.side_effects, delivery.labels):
                return number, False
        return None

    def explain(self, delivery: Delivery, phase: int | None = None) -> str:
        """The page's cause as seen from ``phase`` (default: the current one)."""
        phase = self.phase if phase is None else phase
        cause = self.cause(delivery)
        if cause is None:
            return "UNEXPECTED" if delivery.phase else "UNEXPECTED: during clean traffic"
        number, expected = cause
        if delivery.phase < phase:
            return f"carried over from fault {number}"
        text = f"expected (fault {number})" if expected else f"side effect of fault {number}"
        return text if number == delivery.phase else f"{text}, still active"

    def surprises(self) -> list[Delivery]:
        return [d for d in self.deliveries.values() if self.cause(d) is None]

    def paged(self, number: int) -> bool:
        """Whether every expected page of fault ``number`` arrived after it was injected."""
        return all(self._arrived(number, expected) for expected in self.faults[number - 1].pages)

    def _arrived(self, number: int, expected: Page) -> list[Delivery]:
        return [d for d in self.deliveries.values() if d.phase >= number and expected.matches(d.labels)]

    def verdicts(self) -> list[FaultVerdict]:
        return [self._verdict(number, fault) for number, fault in enumerate(self.faults, 1)]

    def _verdict(self, number: int, fault: Fault) -> FaultVerdict:
        injected = self.injected_at.get(number)
        if injected is None:
            return FaultVerdict(number, fault, False, ("not injected (demo stopped early)",))
        lines, passed = [], True
        for expected in fault.pages:
            arrived = self._arrived(number, expected)
            earlier = [d for d in self.deliveries.values() if d.phase < number and expected.matches(d.labels)]
            if arrived:
                first = min(arrived, key=lambda d: d.at)
                lines.append(f"{expected} paged {first.at - injected:.0f}s after the fault")
            elif earlier:
                passed = False
                lines.append(f"{expected} not paged again: already firing since phase {earlier[0].phase}")
            else:
                passed = False
                lines.append(f"{expected} never paged")
        return FaultVerdict(number, fault, passed, tuple(lines))


def _any(pages: Iterable[Page], labels: Mapping[str, str]) -> bool:
    return any(p.matches(labels) for p in pages)
