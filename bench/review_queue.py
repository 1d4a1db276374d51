"""Benchmark: the sidecar's review queue (otel_ml/sidecar/_review_queue.py).

1. Queueing a body of 500 items (the app client's batch): validation of the JSON body plus one
   transaction, against the naive queue that commits each item on its own (as a store without
   batching would); interleaved, medians of min-of-repeats. Targets: <= 20 ms per 500, and the
   batched transaction >= 3x faster than commit-per-item.
2. Bytes on disk per queued item (no features) after ``--items`` items (target <= 400).
3. Labelling 500 review items in one transaction, and a cursor page of 1000 items.

Run: ``python bench/review_queue.py`` (``--quick``: 20k items instead of 100k).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _machine import machine_line

from otel_ml.sidecar._review_input import ReviewItem, parse_review_items
from otel_ml.sidecar._review_queue import ReviewQueue

NOW = 1_800_000_000.0
MODELS = {("fraud", "v3")}


def body(prefix: str, n: int) -> bytes:
    items = [
        {
            "request_id": f"{prefix}-{i:08d}-9f1c2a",
            "model": "fraud",
            "version": "v3",
            "segment_key": "country",
            "segment": "US",
            "stratum": "(0.65,0.7]",
            "pi": 0.0123,
            "score": 0.6789,
            "decision": "true",
            "time": NOW,
            "salt_id": "0badc0de",
        }
        for i in range(n)
    ]
    return json.dumps({"items": items}).encode()


def timed(fn: Callable[..., Any], *args: Any) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def ours(queue: ReviewQueue, raw: bytes) -> None:
    queue.add(parse_review_items(raw, 1000, MODELS), NOW)


def naive(queue: ReviewQueue, raw: bytes) -> None:
    for item in parse_review_items(raw, 1000, MODELS):
        queue.add([item], NOW)  # one transaction (one WAL commit) per item


def fill(queue: ReviewQueue, items: int) -> None:
    for first in range(0, items, 1000):
        queue.add(
            [
                ReviewItem(
                    f"f-{i:08d}-9f1c2a",
                    "fraud",
                    "v3",
                    "country",
                    "US",
                    "(0.65,0.7]",
                    0.01,
                    0.5,
                    "true",
                    NOW,
                    "0badc0de",
                )
                for i in range(first, min(items, first + 1000))
            ],
            NOW,
        )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--items", type=int, default=100_000)
    args = parser.parse_args()
    items = 20_000 if args.quick else args.items
    print(machine_line())
    with tempfile.TemporaryDirectory() as tmp:
        a = ReviewQueue(Path(tmp) / "ours.sqlite", max_items=10**7)
        b = ReviewQueue(Path(tmp) / "naive.sqlite", max_items=10**7)
        ours_t, naive_t = [], []
        for r in range(5 if args.quick else 11):  # interleaved: the same load on both
            ours_t.append(timed(ours, a, body(f"a{r}", 500)))
            naive_t.append(timed(naive, b, body(f"b{r}", 500)))
        q = ReviewQueue(Path(tmp) / "size.sqlite", max_items=10**7)
        fill(q, items)
        q._con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        per_item = (Path(tmp) / "size.sqlite").stat().st_size / items
        label_t = [
            timed(
                q.label,
                [(f"f-{i:08d}-9f1c2a", "true") for i in range(k * 500, k * 500 + 500)],
                NOW,
                lambda d, y: "correct",
            )
            for k in range(5)
        ]
        page_t = [timed(q.pending_items, k * 1000, 1000) for k in range(5, 10)]
    rows = [
        ("POST body of 500 items (validate + 1 transaction)", statistics.median(ours_t) * 1e3, "ms", 20.0),
        ("naive: a commit per item", statistics.median(naive_t) * 1e3, "ms", None),
        ("speed-up over naive", statistics.median(naive_t) / statistics.median(ours_t), "x", -3.0),
        (f"bytes per item on disk ({items} items)", per_item, "B", 400.0),
        ("label 500 review items (1 transaction)", statistics.median(label_t) * 1e3, "ms", None),
        ("cursor page of 1000 items", statistics.median(page_t) * 1e3, "ms", None),
    ]
    failed = False
    print(f"{'case':52} {'value':>10} {'unit':>5} {'target':>8}")
    for name, value, unit, target in rows:
        ok = target is None or (value >= -target if target < 0 else value <= target)
        failed |= not ok
        shown = "" if target is None else (f">= {-target:g}" if target < 0 else f"<= {target:g}")
        print(f"{name:52} {value:10.1f} {unit:>5} {shown:>8} {'' if ok else 'MISSED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
