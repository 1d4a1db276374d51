"""Benchmark: what a shadow version costs the served call, and what the shadow itself can do.

Served call: one row (20 numeric features, 1 segment, tracing off), timed by the caller, with no
shadow, with one shadow whose model does nothing (the enqueue plus what the worker thread takes
from the served thread: it counts the shadow's own features and the pair, under the same GIL),
and with one whose worker is held (the enqueue alone). Blocks of calls alternate between the
monitors; the table shows p50/p99 over all calls. On a shared machine these differences are
within the noise of a ~50 us call, so ``Shadow.submit`` (what the request path adds) is also
timed alone.
Shadow throughput: comparisons per second on the worker (queue pre-filled, then drained).
Overload: a shadow that takes 1 ms (sleep, releasing the GIL like a native model) offered 10x
its capacity: share of requests dropped, and served p99 against the same paced load unshadowed.

Run: ``python bench/shadow.py`` (``--quick`` for fewer calls).
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from _machine import machine_line
from opentelemetry import trace
from prometheus_client import CollectorRegistry

from otel_ml import ModelMonitor, Shadow, fit_baseline
from otel_ml import _names as n
from otel_ml.instrument._context import CallState

N_FEATURES = 20


def _baseline() -> Any:
    rng = np.random.default_rng(0)
    data: dict[str, Any] = {f"f{i}": rng.normal(size=5000) for i in range(N_FEATURES)}
    data["region"] = rng.choice(["north", "south", "east"], 5000)
    return fit_baseline(data, model="bench", version="v7", scores=rng.uniform(size=5000), segments=["region"])


def _model(row: dict[str, Any]) -> float:
    return 0.42


def _monitor(baseline: Any, shadow: Shadow | None) -> Callable[[dict[str, Any]], float]:
    mon = ModelMonitor(
        baseline=baseline,
        segments=["region"],
        decision=0.7,
        shadow=[shadow] if shadow is not None else [],
        tracer_provider=trace.NoOpTracerProvider(),
        registry=CollectorRegistry(),
    )
    return mon(_model)


def _rows(count: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(1)
    regions = ["north", "south", "east"]
    return [
        {**{f"f{i}": float(v) for i, v in enumerate(rng.normal(size=N_FEATURES))}, "region": regions[k % 3]}
        for k in range(count)
    ]


def _timed(predict: Callable[[dict[str, Any]], float], rows: list[dict[str, Any]], out: list[float]) -> None:
    clock = time.perf_counter_ns
    for row in rows:
        start = clock()
        predict(row)
        out.append(clock() - start)


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) / 1000.0  # ns -> us


def served_latency(baseline: Any, calls: int) -> dict[str, float]:
    shadow = Shadow(lambda row: 0.40, version="v8", queue_size=100_000, timeout=60)
    gate = threading.Event()
    held = Shadow(lambda row: gate.wait() or 0.40, version="v8", queue_size=calls + 2, timeout=600)
    plain, shadowed, enqueue_only = _monitor(baseline, None), _monitor(baseline, shadow), _monitor(baseline, held)
    rows = _rows(2000)
    enqueue_only(rows[0])  # the held worker now waits on the gate: what remains is the enqueue
    bare: list[float] = []
    with_shadow: list[float] = []
    queued: list[float] = []
    for _ in range(max(1, calls // len(rows))):
        _timed(plain, rows, bare)
        _timed(shadowed, rows, with_shadow)
        shadow.drain(60)  # the next block starts with no shadow work left to share the GIL with
        _timed(enqueue_only, rows, queued)
    gate.set()
    held.drain(600)
    return {
        "p50_bare": _pct(bare, 50),
        "p99_bare": _pct(bare, 99),
        "p50_shadow": _pct(with_shadow, 50),
        "p99_shadow": _pct(with_shadow, 99),
        "p50_queued": _pct(queued, 50),
        "p99_queued": _pct(queued, 99),
    }


def enqueue_cost(baseline: Any, count: int) -> float:
    """Microseconds per ``Shadow.submit`` of one row, the worker held: the request id (made here
    when nothing else asked for it), the row's copy, the item and the put."""
    gate = threading.Event()
    shadow = Shadow(lambda row: gate.wait() or 0.40, version="v8", queue_size=10 * count + 2, timeout=600)
    predict = _monitor(baseline, shadow)
    row = _rows(1)[0]
    predict(row)  # starts the worker, which then waits on the gate
    span = trace.INVALID_SPAN  # what a call gets without a tracer SDK
    counted = (1, 0.42, "false")
    times = []
    for _ in range(10):
        start = time.perf_counter()
        for _ in range(count):
            shadow.submit(CallState(), span, row, ((row,), {}), counted)
        times.append((time.perf_counter() - start) / count * 1e6)
    gate.set()
    shadow.drain(600)
    return float(np.median(times))


def throughput(baseline: Any, count: int) -> float:
    gate = threading.Event()

    def v8(row: dict[str, Any]) -> float:
        gate.wait()
        return 0.40

    shadow = Shadow(v8, version="v8", queue_size=count + 1, timeout=600, max_load=1.0)  # capacity: uncapped
    predict = _monitor(baseline, shadow)
    for row in _rows(count):
        predict(row)
    start = time.perf_counter()
    gate.set()
    shadow.drain(600)
    return count / (time.perf_counter() - start)


def _paced(
    predict: Callable[[dict[str, Any]], float], rows: list[dict[str, Any]], rate: float
) -> tuple[list[float], float]:
    """Calls at up to ``rate`` per second, each timed by the caller; between calls the thread
    sleeps (releasing the GIL, as a server waiting on its sockets does). Returns the timings
    and the rate achieved."""
    out: list[float] = []
    clock = time.perf_counter_ns
    step = 1e9 / rate
    first = due = float(clock())
    for row in rows:
        wait = due - clock()
        if wait > 0:
            time.sleep(wait / 1e9)
        start = clock()
        predict(row)
        out.append(clock() - start)
        due += step
    return out, len(rows) / ((clock() - first) / 1e9)


def overload(baseline: Any, seconds: float) -> dict[str, float]:
    cost = 0.001
    capacity = 1.0 / cost
    rate = 10 * capacity
    rows = _rows(int(rate * seconds))

    def slow(row: dict[str, Any]) -> float:
        time.sleep(cost)
        return 0.40

    shadow = Shadow(slow, version="v8", queue_size=1000, timeout=1.0)
    bare, _ = _paced(_monitor(baseline, None), rows, rate)
    loaded, achieved = _paced(_monitor(baseline, shadow), rows, rate)
    shadow.drain(30)
    mon = shadow.monitor
    assert mon is not None
    snap = mon.counters.snapshot()
    compared = sum(c for key, _, _, c in snap.shadow_pairs if key == n.ALL)
    return {
        "rate": achieved,
        "capacity": capacity,
        "offered": float(len(rows)),
        "compared": float(compared),
        "queue_full": float(snap.shadow_dropped["queue_full"]),
        "timeout": float(snap.shadow_dropped["timeout"]),
        "p99_bare": _pct(bare, 99),
        "p99_shadow": _pct(loaded, 99),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    calls, count, seconds = (20_000, 20_000, 1.0) if args.quick else (100_000, 100_000, 3.0)
    print(machine_line())
    baseline = _baseline()
    lat = served_latency(baseline, calls)
    tput = throughput(baseline, count)
    enqueue = enqueue_cost(baseline, count // 10)
    over = overload(baseline, seconds)
    added = lat["p50_shadow"] - lat["p50_bare"]
    print(f"\n| served call (1 row, {N_FEATURES} features, tracing off) | p50 us | p99 us |")
    print("|---|---|---|")
    print(f"| no shadow | {lat['p50_bare']:.1f} | {lat['p99_bare']:.1f} |")
    print(f"| one shadow (no-op model) | {lat['p50_shadow']:.1f} | {lat['p99_shadow']:.1f} |")
    print(f"| added by the shadow | {added:+.1f} | {lat['p99_shadow'] - lat['p99_bare']:+.1f} |")
    print(f"| one shadow, its worker held (enqueue only) | {lat['p50_queued']:.1f} | {lat['p99_queued']:.1f} |")
    print(
        f"| added by the enqueue alone | {lat['p50_queued'] - lat['p50_bare']:+.1f} | "
        f"{lat['p99_queued'] - lat['p99_bare']:+.1f} |"
    )
    print(f"\nShadow.submit alone (median of 10 x {count // 10:,}): {enqueue:.2f} us per served call")
    print(f"shadow throughput on the worker: {tput:,.0f} comparisons/s (no-op model, 1 row each)")
    dropped = over["queue_full"] + over["timeout"]
    print(
        f"\n| overload: 1 ms shadow ({over['capacity']:,.0f}/s) offered {over['rate']:,.0f} req/s | offered | "
        "compared | dropped queue_full | dropped timeout | share dropped | served p99 us (no shadow / shadow) |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {over['offered']:,.0f} requests | {over['offered']:,.0f} | {over['compared']:,.0f} | "
        f"{over['queue_full']:,.0f} | {over['timeout']:,.0f} | {dropped / over['offered']:.1%} | "
        f"{over['p99_bare']:.1f} / {over['p99_shadow']:.1f} |"
    )


if __name__ == "__main__":
    main()
