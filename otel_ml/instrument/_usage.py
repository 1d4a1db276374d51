"""What a model's calls cost and what review sampling saw: their arrays, snapshot and points.

Costs are kept as integers so that sums stay exact wherever they are taken (a worker's file,
the sum of a multiprocess directory, an archive of dead workers): CPU and wall time in
nanoseconds, reported costs in nano-dollars (1e-9 USD: one token at $0.15 per million is 150,
and int64 holds 9.2 billion dollars). A float sum could lose its last bit when dead workers'
files are folded, and Prometheus would read that counter going down as a restart. A file also
records the rates its process priced CPU and GPU time with, so its compute cost is
``round(ns x rate)`` in nano-dollars, computed from the exact time totals (no rounding per
call), exact and never decreasing, even when processes of one model priced with different tables.

The review arrays count, per stratum (review segment slot x review bin, the last bin for calls
without a finite score), every prediction (``population``) and those selected for review. The
capture arrays (only with ``capture=``) count the skew spool's records and bytes written and
the sampled rows it dropped, by reason.
"""

from __future__ import annotations

import decimal
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _names as n
from .._review_sampling import stratum_labels

if TYPE_CHECKING:
    from .._prices import Prices
    from ._multiproc import Spec
    from ._snapshot import CounterLayout

__all__ = [
    "CAPTURE_ARRAYS",
    "CallUsage",
    "CaptureCounts",
    "capture_from_json",
    "capture_json",
    "capture_of",
    "merge_capture",
    "NANO",
    "REPORTED_BASES",
    "REPORTED_SOURCES",
    "ReviewCounts",
    "UsageCounts",
    "merge_review",
    "merge_usage",
    "review_from_json",
    "review_json",
    "review_of",
    "usage_from_json",
    "usage_json",
    "usage_of",
    "usage_specs",
]

NANO = 1e9  # nano-dollars per dollar
REPORTED_SOURCES = (n.COST_API, n.COST_TOKENS)  # costs added per call, by the app or from tokens
REPORTED_BASES = (n.BASIS_CONFIGURED_RATE, n.BASIS_BILLED)  # allocation never comes from the app

Cost = tuple[str | None, str | None, str, str, int]  # segment key, segment, source, basis, nano-USD
Price = tuple[str, str, float]  # the table's hash, its updated date as written, as Unix seconds


MAX_CALL_USD = 1e6  # one call reporting more is a unit mistake (cents, micro-dollars), not a cost
MAX_CALL_TOKENS = 10**9


class CallUsage:
    """What the app reported inside one call (``add_cost``, ``add_tokens``), priced when the call
    is counted. Invalid reports are kept out and named in ``invalid`` (an instrumentation error)."""

    __slots__ = ("billed_usd", "configured_usd", "input_tokens", "invalid", "output_tokens", "token_uses")

    def __init__(self) -> None:
        self.billed_usd = 0.0
        self.configured_usd = 0.0
        self.input_tokens = 0
        self.output_tokens = 0
        self.token_uses: list[tuple[str | None, int, int]] = []  # (LLM, input, output) per add_tokens
        self.invalid: str | None = None

    @property
    def usd(self) -> float:
        """The cost the app reported for the call (``ml.cost.usd`` on its span)."""
        return self.billed_usd + self.configured_usd

    def add_cost(self, usd: Any, basis: Any) -> None:
        """Add an amount (int, float, numpy, Decimal, Fraction; never a str or a bool) on a basis."""
        value = _dollars(usd)
        if type(basis) is not str or basis not in (n.BASIS_BILLED, n.BASIS_CONFIGURED_RATE):
            self.invalid = f"add_cost(basis=...): expected {n.BASIS_BILLED!r} or {n.BASIS_CONFIGURED_RATE!r}"
        elif not (0.0 <= value <= MAX_CALL_USD):
            self.invalid = f"add_cost(): expected US dollars between 0 and {MAX_CALL_USD:g}"
        elif basis == n.BASIS_BILLED:
            self.billed_usd += value
        else:
            self.configured_usd += value

    def add_tokens(self, input_tokens: Any, output_tokens: Any, llm: Any) -> None:
        counts = [_count(value) for value in (input_tokens, output_tokens)]
        if min(counts) < 0 or (llm is not None and type(llm) is not str):
            self.invalid = f"add_tokens(): expected counts 0..{MAX_CALL_TOKENS:g} and a str model name"
            return
        self.input_tokens += counts[0]
        self.output_tokens += counts[1]
        self.token_uses.append((llm, counts[0], counts[1]))

    def reported(self, prices: Prices | None) -> tuple[list[tuple[tuple[int, int], int]], list[str]]:
        """Nano-dollars per (source, basis) index pair, and the LLMs whose tokens have no price."""
        out: list[tuple[tuple[int, int], int]] = []
        if self.configured_usd:
            out.append(((0, 0), round(self.configured_usd * NANO)))
        if self.billed_usd:
            out.append(((0, 1), round(self.billed_usd * NANO)))
        unpriced: list[str] = []
        tokens = 0.0
        for llm, inp, outp in self.token_uses:
            price = None if prices is None else prices.token_price(llm)
            if price is None:
                unpriced.append(llm or "(unnamed)")
                continue
            tokens += (inp * price.input + outp * price.output) * (NANO / 1e6)  # prices are per million
        if tokens:
            out.append(((1, 0), round(tokens)))
        return out, unpriced


def _dollars(usd: Any) -> float:
    """A reported amount as a float, NaN when it is not a number (never raises)."""
    try:
        if isinstance(usd, (numbers.Real, decimal.Decimal)) and not isinstance(usd, bool):
            return float(usd)
    except Exception:  # a hostile __float__
        pass
    return math.nan


def _count(value: Any) -> int:
    """A token count, -1 when it is not an integer in 0..MAX_CALL_TOKENS (never raises)."""
    try:
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= value <= MAX_CALL_TOKENS:
            return int(value)
    except Exception:
        pass
    return -1


@dataclass(frozen=True)
class UsageCounts:
    """CPU time, costs and tokens of one model's calls (integers: see the module docstring)."""

    cpu_ns: int = 0
    process_cpu_ns: int = 0
    costs: tuple[Cost, ...] = ()
    tokens: tuple[int, int] = (0, 0)  # input, output
    prices: tuple[Price, ...] = ()  # the price tables the processes priced with (none: unpriced)


@dataclass(frozen=True)
class CaptureCounts:
    """The skew capture spool of one model: rows and bytes written, sampled rows dropped by reason."""

    records: int = 0
    written_bytes: int = 0
    dropped: Mapping[str, int] = field(default_factory=dict)  # every reason, zeros included


@dataclass(frozen=True)
class ReviewCounts:
    """Predictions and review selections per stratum (segment key, segment, stratum label)."""

    rows: tuple[tuple[str, str, str, int, int], ...] = ()  # key, segment, stratum, population, sampled
    dropped: Mapping[str, int] = field(default_factory=dict)  # every reason, zeros included


def usage_specs(layout: CounterLayout) -> list[Spec]:
    """The cost arrays (always, a few dozen bytes) and the review arrays (only with review)."""
    slots = layout.segment_slots(layout.cost_segment)
    specs: list[Spec] = [
        ("cpu_ns", "i8", (slots,)),
        ("wall_ns", "i8", (slots,)),
        ("process_cpu_ns", "i8", (1,)),
        ("reported_nano", "i8", (slots, len(REPORTED_SOURCES), len(REPORTED_BASES))),
        ("tokens", "i8", (len(n.TOKEN_TYPES),)),
        ("rates", "f8", (2,)),  # nano-USD per CPU-nanosecond, per wall-nanosecond (GPU share x price)
    ]
    if layout.review_edges is not None:
        strata = (layout.segment_slots(layout.review_segment), len(layout.review_edges) + 2)
        specs += [
            ("review_population", "i8", strata),
            ("review_sampled", "i8", strata),
            ("review_dropped", "i8", (len(n.REVIEW_DROP_REASONS),)),
        ]
    if layout.capture:
        specs += [("capture", "i8", (2,)), ("capture_dropped", "i8", (len(n.CAPTURE_DROP_REASONS),))]
    return specs


CAPTURE_ARRAYS = ("capture", "capture_dropped")  # capture: records, bytes
USAGE_ARRAYS = ("cpu_ns", "wall_ns", "process_cpu_ns", "reported_nano", "tokens", "rates")
REVIEW_ARRAYS = ("review_population", "review_sampled", "review_dropped")


def _slot_labels(layout: CounterLayout, key: str | None, vocab: Mapping[str, Any]) -> list[tuple[str, str] | None]:
    """(segment key, segment) of each slot of ``key``'s values; None where not yet published."""
    if key is None:
        return [(n.ALL, n.ALL)]
    k = layout.segment_keys.index(key)
    segments = vocab.get("segments", ())
    published = list(segments[k]) if k < len(segments) else []
    out: list[tuple[str, str] | None] = [
        (key, published[i]) if i < len(published) else None for i in range(layout.segment_budget)
    ]
    out.append((key, n.OTHER))
    return out


def usage_of(layout: CounterLayout, arrays: Mapping[str, Any], vocab: Mapping[str, Any]) -> UsageCounts:
    """The usage part of a snapshot of one set of arrays (copies)."""
    cpu, wall = arrays["cpu_ns"], arrays["wall_ns"]
    # a file's rates as its process wrote them; anything but a finite price is none (a reader never raises)
    cpu_rate, wall_rate = (float(r) if math.isfinite(r) and r >= 0 else 0.0 for r in arrays["rates"].tolist())
    reported = arrays["reported_nano"]
    labels = _slot_labels(layout, layout.cost_segment, vocab)
    costs: list[Cost] = []
    for i, slot in enumerate(labels):
        if slot is None:
            continue  # not published yet: next read
        key, segment = (None, None) if layout.cost_segment is None else slot
        if cpu_rate or wall_rate:
            nano = round(int(cpu[i]) * cpu_rate + int(wall[i]) * wall_rate)
            if nano or layout.cost_segment is None:  # the model's series exists from the start
                costs.append((key, segment, n.COST_COMPUTE, n.BASIS_CONFIGURED_RATE, nano))
        for j, source in enumerate(REPORTED_SOURCES):
            for b, basis in enumerate(REPORTED_BASES):
                if reported[i, j, b]:
                    costs.append((key, segment, source, basis, int(reported[i, j, b])))
    price = vocab.get("prices")
    prices: tuple[Price, ...] = ()
    if isinstance(price, Mapping):
        prices = ((str(price["hash"]), str(price["updated"]), float(price["updated_ts"])),)
    return UsageCounts(
        cpu_ns=int(cpu.sum()),
        process_cpu_ns=int(arrays["process_cpu_ns"][0]),
        costs=tuple(costs),
        tokens=(int(arrays["tokens"][0]), int(arrays["tokens"][1])),
        prices=prices,
    )


def review_of(layout: CounterLayout, arrays: Mapping[str, Any], vocab: Mapping[str, Any]) -> ReviewCounts | None:
    """The review part of a snapshot, or None for a model without review sampling."""
    if layout.review_edges is None:
        return None
    strata = stratum_labels(layout.review_edges)
    population, sampled = arrays["review_population"], arrays["review_sampled"]
    slots = _slot_labels(layout, layout.review_segment, vocab)
    rows = []
    for i, b in np.argwhere(population > 0).tolist():
        slot = slots[i]
        if slot is not None:
            rows.append((slot[0], slot[1], strata[b], int(population[i, b]), int(sampled[i, b])))
    dropped = arrays["review_dropped"].tolist()
    return ReviewCounts(tuple(rows), dict(zip(n.REVIEW_DROP_REASONS, (int(d) for d in dropped))))


def capture_of(layout: CounterLayout, arrays: Mapping[str, Any]) -> CaptureCounts | None:
    """The capture part of a snapshot, or None for a model that captures nothing."""
    if not layout.capture:
        return None
    records, written = (int(v) for v in arrays["capture"].tolist())
    dropped = arrays["capture_dropped"].tolist()
    return CaptureCounts(records, written, dict(zip(n.CAPTURE_DROP_REASONS, (int(d) for d in dropped))))


def merge_capture(parts: Sequence[CaptureCounts | None]) -> CaptureCounts | None:
    given = [c for c in parts if c is not None]
    if not given:
        return None
    return CaptureCounts(
        sum(c.records for c in given),
        sum(c.written_bytes for c in given),
        {reason: sum(c.dropped.get(reason, 0) for c in given) for reason in n.CAPTURE_DROP_REASONS},
    )


def capture_json(c: CaptureCounts | None) -> dict[str, Any] | None:
    return None if c is None else {"records": c.records, "written_bytes": c.written_bytes, "dropped": dict(c.dropped)}


def capture_from_json(data: Mapping[str, Any] | None) -> CaptureCounts | None:
    if data is None:
        return None
    dropped = {str(k): int(v) for k, v in data["dropped"].items()}
    return CaptureCounts(int(data["records"]), int(data["written_bytes"]), dropped)


def _sum_keyed(tables: Sequence[Sequence[tuple[Any, ...]]], width: int) -> tuple[tuple[Any, ...], ...]:
    """Rows of several processes summed by their first ``width`` fields (the label strings)."""
    out: dict[tuple[Any, ...], list[int]] = {}
    for table in tables:
        for row in table:
            key, values = row[:width], row[width:]
            acc = out.setdefault(key, [0] * len(values))
            for i, v in enumerate(values):
                acc[i] += v
    return tuple((*k, *v) for k, v in sorted(out.items(), key=lambda kv: tuple(str(x) for x in kv[0])))


def merge_usage(parts: Sequence[UsageCounts]) -> UsageCounts:
    """Several processes' usage summed exactly (integers); price tables listed once each."""
    return UsageCounts(
        cpu_ns=sum(u.cpu_ns for u in parts),
        process_cpu_ns=sum(u.process_cpu_ns for u in parts),
        costs=_sum_keyed([u.costs for u in parts], 4),
        tokens=(sum(u.tokens[0] for u in parts), sum(u.tokens[1] for u in parts)),
        prices=tuple(sorted({p for u in parts for p in u.prices})),
    )


def merge_review(parts: Sequence[ReviewCounts | None]) -> ReviewCounts | None:
    given = [r for r in parts if r is not None]
    if not given:
        return None
    dropped: dict[str, int] = {}
    for r in given:
        for reason, count in r.dropped.items():
            dropped[reason] = dropped.get(reason, 0) + count
    return ReviewCounts(_sum_keyed([r.rows for r in given], 3), dropped)


# -- archives of dead workers' files (``_dirsum``): the same integers as JSON ---------------------
def usage_json(u: UsageCounts) -> dict[str, Any]:
    return {
        "cpu_ns": u.cpu_ns,
        "process_cpu_ns": u.process_cpu_ns,
        "costs": [list(c) for c in u.costs],
        "tokens": list(u.tokens),
        "prices": [list(p) for p in u.prices],
    }


def usage_from_json(data: Mapping[str, Any]) -> UsageCounts:
    return UsageCounts(
        cpu_ns=int(data["cpu_ns"]),
        process_cpu_ns=int(data["process_cpu_ns"]),
        costs=tuple(
            (None if k is None else str(k), None if s is None else str(s), str(src), str(b), int(v))
            for k, s, src, b, v in data["costs"]
        ),
        tokens=(int(data["tokens"][0]), int(data["tokens"][1])),
        prices=tuple((str(h), str(u), float(t)) for h, u, t in data["prices"]),
    )


def review_json(r: ReviewCounts | None) -> dict[str, Any] | None:
    return None if r is None else {"rows": [list(row) for row in r.rows], "dropped": dict(r.dropped)}


def review_from_json(data: Mapping[str, Any] | None) -> ReviewCounts | None:
    if data is None:
        return None
    rows = tuple((str(k), str(s), str(h), int(p), int(c)) for k, s, h, p, c in data["rows"])
    return ReviewCounts(rows, {str(k): int(v) for k, v in data["dropped"].items()})
