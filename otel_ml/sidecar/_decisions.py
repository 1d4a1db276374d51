"""Segment decision rates as tests: one family per model and window, Holm across it.

Per segment and decision three tests (:func:`otel_ml.drift.rate_verdicts`): this window
against the baseline rate, this window against the previous window, and the last three windows
pooled against the baseline (a drift of 20 % of a 0.2 rate is 3.2 standard errors in one
1,000-prediction window, too few under a family-wise limit over ~60 tests, and 5.5 in three
pooled windows). The pooled look pages only while this window still shows half the minimum
effect in the same direction, so a page resolves soon after a rollback. The looks are part
of the family, so the correction also pays for looking twice (Bonferroni over looks, inside
Holm). The baseline stores rates, not per-segment counts:
the reference count of a segment is estimated as the baseline's row count times the segment's
share of the window's predictions under its segment key. The yes/no decisions of a segment
with two decisions are one test (their rates move together) and count once.

Gauges: ``ml_segment_decision_rate_status`` and ``..._pvalue`` per reference; for the baseline
the worse status and the smaller adjusted p-value of the two looks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

from .. import _names as n
from .._names import DRIFT_STATUS_DRIFT, DRIFT_STATUS_WARN
from ..drift import DecisionSettings, rate_verdicts
from ._model_state import ModelState
from ._series import Gauge

__all__ = ["family_verdicts", "grouped", "segment_outputs"]

FloatArray = npt.NDArray[np.float64]
Counts = dict[tuple[str, str], dict[str, float]]


def grouped(
    state: ModelState, name: str, delta: FloatArray | None, group: tuple[str, ...], split: str
) -> dict[tuple[str, ...], dict[str, float]]:
    """Window counts of one counter family as {group label values: {split label value: count}}."""
    out: dict[tuple[str, ...], dict[str, float]] = defaultdict(dict)
    if delta is None:
        return out
    for i, labels in state.series_of(name):
        d = dict(labels)
        key = tuple(d.get(g, "") for g in group)
        value = float(delta[i]) if i < delta.size else 0.0
        out[key][d.get(split, "")] = out[key].get(d.get(split, ""), 0.0) + max(value, 0.0)
    return out


def _segments(state: ModelState, delta: FloatArray | None) -> Counts:
    group = (n.LABEL_SEGMENT_KEY, n.LABEL_SEGMENT)
    return grouped(state, n.PREDICTIONS.series, delta, group, n.LABEL_DECISION)  # type: ignore[return-value]


def _key_totals(counts: Counts) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for (key, _), decisions in counts.items():
        out[key] += sum(decisions.values())
    return out


def _look(
    rows: list[tuple[str, str, str]], counts: Counts, reference: Counts | None, baseline_rows: float
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """x, n, reference rate, reference count per row, against the baseline (reference None) or ``reference``."""
    key_totals = _key_totals(counts)
    x, size, rate, m = (np.zeros(len(rows)) for _ in range(4))
    for i, (key, segment, decision) in enumerate(rows):
        here = counts.get((key, segment), {})
        x[i], size[i] = here.get(decision, 0.0), sum(here.values())
        if reference is None:
            continue
        there = reference.get((key, segment), {})
        total = sum(there.values())
        rate[i] = there.get(decision, 0.0) / total if total > 0 else np.nan
        m[i] = total
    if reference is None:
        share = size / np.maximum([key_totals.get(k, 0.0) for k, _, _ in rows], 1.0)
        m = baseline_rows * share if baseline_rows > 0 else np.full(len(rows), np.inf)
    return x, size, rate, m


def _baseline_rates(state: ModelState, rows: list[tuple[str, str, str]]) -> FloatArray:
    reference = state.baseline.score.decision_rates if state.baseline.score else {}
    out = np.full(len(rows), np.nan)
    for i, (key, segment, decision) in enumerate(rows):
        known = reference.get(key, {}).get(segment)
        if known:
            out[i] = known.get(decision, 0.0)
    return out


def _twins(rows: list[tuple[str, str, str]], now: Counts) -> npt.NDArray[np.int64]:
    """Index of the test each row duplicates: a two-decision segment's second decision is its first."""
    first: dict[tuple[str, str], int] = {}
    twin = np.arange(len(rows))
    for i, (key, segment, _) in enumerate(rows):
        j = first.setdefault((key, segment), i)
        if len(now.get((key, segment), {})) == 2:
            twin[i] = j
    return twin


Look = tuple[FloatArray, ...]


def family_verdicts(
    current: Look,
    previous: Look,
    pooled: Look,
    baseline_rate: FloatArray,
    twin: npt.NDArray[np.int64],
    settings: DecisionSettings,
) -> tuple[npt.NDArray[np.int64], FloatArray, npt.NDArray[np.int64], FloatArray]:
    """Status and adjusted p-value vs the previous window and vs the baseline, for one family.

    ``current`` and ``pooled`` are (x, n, reference count) against ``baseline_rate``;
    ``previous`` is this window's (x, n) with the previous window's rate and count; the last axis holds the
    segment x decision rows, leading axes independent families (the simulation tests use
    them). A pooled look with n = 0 (the ring is young) is not tested. The baseline verdict
    is the worse of the two looks, its p-value the smaller adjusted one.
    """
    k = baseline_rate.shape[-1]
    result = rate_verdicts(
        np.concatenate(np.broadcast_arrays(current[0], previous[0], pooled[0]), axis=-1),
        np.concatenate(np.broadcast_arrays(current[1], previous[1], pooled[1]), axis=-1),
        np.concatenate(np.broadcast_arrays(baseline_rate, previous[2], baseline_rate), axis=-1),
        np.concatenate(np.broadcast_arrays(current[2], previous[3], pooled[2]), axis=-1),
        settings,
        twin=np.concatenate([twin, twin + k, twin + 2 * k]),
    )
    status = [result.status[..., i * k : (i + 1) * k] for i in range(3)]
    adjusted = [result.adjusted[..., i * k : (i + 1) * k] for i in range(3)]
    pooled_status = _still_there(
        status[2], result.change[..., :k], result.change[..., 2 * k :], baseline_rate, settings
    )
    return status[1], adjusted[1], np.maximum(status[0], pooled_status), np.fmin(adjusted[0], adjusted[2])


def _still_there(
    status: npt.NDArray[np.int64], now: FloatArray, pooled: FloatArray, rate: FloatArray, settings: DecisionSettings
) -> npt.NDArray[np.int64]:
    """The pooled look pages only while this window still moves the same way by half the minimum effect.

    Three pooled windows remember a fixed fault for up to three windows; this lets the page
    resolve in the first window after a rollback (unless noise keeps half the change, ~20 %).
    """
    gate = np.maximum(settings.min_relative_change * np.minimum(rate, 1.0 - rate), settings.min_absolute_change)
    current = np.nan_to_num(now)
    same_way = (np.sign(current) == np.sign(pooled)) & (np.abs(current) >= gate / 2)
    return np.where((status == DRIFT_STATUS_DRIFT) & ~same_way, DRIFT_STATUS_WARN, status)


def segment_outputs(
    state: ModelState,
    delta: FloatArray,
    previous: FloatArray | None,
    pooled: FloatArray | None,
    base: dict[str, str],
    settings: DecisionSettings,
) -> Iterator[Gauge]:
    """Rates, relative changes (dashboards), statuses and adjusted p-values of every segment."""
    now = _segments(state, delta)
    rows = [(k, s, d) for (k, s), decisions in sorted(now.items()) for d in sorted(decisions)]
    baseline_rows = float(state.baseline.score.count) if state.baseline.score else 0.0
    ref_rate = _baseline_rates(state, rows)
    x0, n0, _, m0 = _look(rows, now, None, baseline_rows)
    x1, n1, r1, m1 = _look(rows, now, _segments(state, previous), baseline_rows)
    if pooled is None:
        x2, n2, m2 = np.zeros(len(rows)), np.zeros(len(rows)), np.zeros(len(rows))
    else:
        x2, n2, _, m2 = _look(rows, _segments(state, pooled), None, baseline_rows)
    verdicts = family_verdicts((x0, n0, m0), (x1, n1, r1, m1), (x2, n2, m2), ref_rate, _twins(rows, now), settings)
    yield from _gauges(rows, now, base, (r1, ref_rate), verdicts[0::2], verdicts[1::2])


def _gauges(
    rows: list[tuple[str, str, str]],
    now: Counts,
    base: dict[str, str],
    reference_rates: tuple[FloatArray, FloatArray],
    statuses: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]],
    pvalues: tuple[FloatArray, FloatArray],
) -> Iterator[Gauge]:
    done: set[tuple[str, str]] = set()
    references = (n.REFERENCE_PREVIOUS, n.REFERENCE_BASELINE)
    columns = [tuple(a.tolist() for a in arrays) for arrays in (reference_rates, statuses, pvalues)]
    for i, (key, segment, decision) in enumerate(rows):
        labels = {**base, n.LABEL_SEGMENT_KEY: key, n.LABEL_SEGMENT: segment}
        total = sum(now[(key, segment)].values())
        if (key, segment) not in done:
            done.add((key, segment))
            yield n.SEGMENT_WINDOW_COUNT, labels, total
        if total <= 0:
            continue
        rate = now[(key, segment)][decision] / total
        d_labels = {**labels, n.LABEL_DECISION: decision}
        yield n.SEGMENT_DECISION_RATE, d_labels, rate
        for j, reference in enumerate(references):
            r_labels = {**d_labels, n.LABEL_REFERENCE: reference}
            old, st, p = columns[0][j][i], columns[1][j][i], columns[2][j][i]
            if old == old and old > 0:
                yield n.SEGMENT_DECISION_RATE_CHANGE, r_labels, (rate - old) / old
            yield n.SEGMENT_DECISION_RATE_STATUS, r_labels, float(st)
            if p == p:
                yield n.SEGMENT_DECISION_RATE_PVALUE, r_labels, p
