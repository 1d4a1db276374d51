"""Benchmark: the SQLite join store of delayed labels (otel_ml/sidecar/_join_store.py).

1. Predictions stored per second (batches of 10k, 20 dims, one day), against a naive store that
   INSERTs one row per statement in autocommit (target >= 100k/s on one core).
2. Bytes per stored prediction on disk after 1M rows (target <= 40).
3. Labels joined per second (batches of 1000, every label joins), on 1M rows spread over 31
   day partitions (the worst case: a label probes every day), against a naive per-label
   SELECT per day + UPDATE + log INSERT in autocommit (target >= 50k/s).
4. TTL drop of a 1M-row day (DROP TABLE).
5. Resident memory of a fresh process after 10k and after ``--rows`` stored predictions (target:
   within 10 %: the store keeps counts per (day, dims) in memory, never per row).

Run: ``python bench/labels.py`` (``--rows 10000000`` for the 10M memory case, ~2 minutes more).
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from _machine import machine_line

from otel_ml.sidecar._join_store import DAY, LabelEvent, SqliteJoinStore, request_id_hashes

NOW = 1_800_000_000.0
DIMS = 20


def new_store(path: Path, ttl: float = 30 * DAY) -> tuple[SqliteJoinStore, list[int]]:
    store = SqliteJoinStore(path, max_bytes=1 << 40, ttl=ttl)
    dims = [
        store.intern(("loans", f"v{i % 2}", "approve" if i % 3 else "deny", "region", f"r{i}")) for i in range(DIMS)
    ]
    return store, dims


def batch(rng: np.random.Generator, n: int, first: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    rids = [f"req-{i:012d}" for i in range(first, first + n)]
    return rids, rng.integers(0, DIMS, size=n), rng.uniform(size=n)


def bench_add(tmp: Path, rows: int) -> tuple[tuple[float, float], float, float]:
    """Our (CPU, wall) rate, bytes per row after ``rows``, the time to drop that day."""
    rng = np.random.default_rng(0)
    store, dims = new_store(tmp / "add.db")
    ids = np.asarray(dims)
    elapsed = cpu = 0.0
    for first in range(0, rows, 10_000):
        rids, d, s = batch(rng, 10_000, first)
        t = NOW - rng.uniform(0, 3600, size=10_000)
        start, start_cpu = time.perf_counter(), time.process_time()
        store.add(request_id_hashes(rids), ids[d], t, s, now=NOW)  # hashing the ids is part of the cost
        elapsed += time.perf_counter() - start
        cpu += time.process_time() - start_cpu
    per_row = store.bytes / store.rows
    start = time.perf_counter()
    dropped = store.expire(NOW + store.ttl + store.grace + DAY)
    drop = time.perf_counter() - start
    assert dropped == rows, (dropped, rows)
    store.close()
    return (rows / cpu, rows / elapsed), per_row, drop


def naive_add(tmp: Path, rows: int) -> float:
    con = sqlite3.connect(tmp / "naive_add.db", isolation_level=None)
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("PRAGMA synchronous = NORMAL")
    con.execute("CREATE TABLE p (h INTEGER, d INTEGER, t INTEGER, s REAL, l INTEGER, PRIMARY KEY (h, d)) WITHOUT ROWID")
    rng = np.random.default_rng(1)
    rids, d, s = batch(rng, rows, 0)
    start = time.perf_counter()
    for h, di, si in zip(request_id_hashes(rids).tolist(), d.tolist(), s.tolist()):
        con.execute("INSERT OR IGNORE INTO p VALUES (?, ?, ?, ?, 0)", (h, di, int(NOW), si))
    rate = rows / (time.perf_counter() - start)
    con.close()
    return rate


def labelled_store(tmp: Path, rows: int, days: int) -> tuple[SqliteJoinStore, list[str]]:
    rng = np.random.default_rng(2)
    store, dims = new_store(tmp / "labels.db", ttl=32 * DAY)  # 31 days all within the TTL
    ids = np.asarray(dims)
    all_rids: list[str] = []
    per_day = rows // days
    for day in range(days):
        for first in range(day * per_day, (day + 1) * per_day, 10_000):
            n = min(10_000, (day + 1) * per_day - first)
            rids, d, s = batch(rng, n, first)
            store.add(request_id_hashes(rids), ids[d], NOW - (days - day - 0.5) * DAY, s, now=NOW)
            all_rids += rids
    return store, all_rids


def bench_labels(
    tmp: Path, rows: int, days: int, labels: int
) -> tuple[tuple[float, float], tuple[float, float], float]:
    """(CPU, wall) rates for labels of one day's predictions (a typical delay) and for labels
    spread uniformly over every day (each label probes half the days on average); naive rate."""
    store, rids = labelled_store(tmp, rows, days)
    rng = np.random.default_rng(3)
    per_day = rows // days
    one_day = rng.choice(np.arange(7 * per_day, 8 * per_day), size=labels // 2, replace=False)
    rest = np.setdiff1d(np.arange(len(rids)), one_day)
    spread = rng.choice(rest, size=labels + 2000, replace=False)
    rates = []
    for chosen in (one_day, spread[:labels]):
        events = [LabelEvent(rids[i], "true" if i % 2 else "false", source="bench") for i in chosen.tolist()]
        wall, cpu, joined = time.perf_counter(), time.process_time(), 0
        for a in range(0, len(events), 1000):
            joined += sum(r.status == "joined" for r in store.label(events[a : a + 1000], now=NOW))
        rates.append((len(events) / (time.process_time() - cpu), len(events) / (time.perf_counter() - wall)))
        assert joined == len(events), joined
    store.close()
    naive = naive_labels(tmp / "labels.db", [rids[i] for i in spread[labels:].tolist()])
    return rates[0], rates[1], naive


def naive_labels(path: Path, chosen: list[str]) -> float:
    """One SELECT per day table, one UPDATE and one log INSERT per label, each committed alone."""
    con = sqlite3.connect(path, isolation_level=None)
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE name LIKE 'p\\_%' ESCAPE '\\'")]
    con.execute("CREATE TABLE IF NOT EXISTS naive_log (seq INTEGER PRIMARY KEY, h INTEGER, o TEXT)")
    hashes = request_id_hashes(chosen).tolist()
    start = time.perf_counter()
    for h in hashes:
        for name in tables:
            row = con.execute(f"SELECT d, t, s, l FROM {name} WHERE h = ?", (h,)).fetchone()
            if row is not None and not row[3]:
                con.execute(f"UPDATE {name} SET l = 1 WHERE h = ? AND d = ?", (h, row[0]))
        con.execute("INSERT INTO naive_log (h, o) VALUES (?, 'true')", (h,))
    rate = len(hashes) / (time.perf_counter() - start)
    con.close()
    return rate


_RSS_CHILD = r"""
import sys, time, numpy as np
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from labels import new_store, batch, NOW, DAY
from otel_ml.sidecar._join_store import request_id_hashes
def rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
store, dims = new_store(Path(sys.argv[1]))
ids = np.asarray(dims)
rng = np.random.default_rng(4)
total, marks, out = int(sys.argv[2]), (10_000, int(sys.argv[2])), []
days = 10
for first in range(0, total, 10_000):
    rids, d, s = batch(rng, 10_000, first)
    day = first * days // total  # the rows spread over 10 days, so the in-memory counts span 10 days
    now = NOW + day * DAY
    store.add(request_id_hashes(rids), ids[d], now - rng.uniform(0, 3600, size=10_000), s, now=now)
    if first + 10_000 in marks:
        out.append(rss())
print(out[0], out[1], store.rows, store.bytes)
"""


def bench_rss(tmp: Path, rows: int) -> tuple[float, float, int, int]:
    here = Path(__file__).resolve().parent
    proc = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(tmp / "rss.db"), str(rows), str(here)],
        check=True,
        capture_output=True,
        text=True,
    )
    small, large, stored, size = proc.stdout.split()
    return float(small), float(large), int(stored), int(size)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="stored predictions for the memory case")
    args = parser.parse_args(argv)
    ok = True
    print(machine_line())
    print(f"SQLite {sqlite3.sqlite_version}; otel-ml join store benchmark\n")
    print("| measure | otel-ml | naive | ratio | target |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        (add_cpu, add_wall), per_row, drop = bench_add(tmp, 1_000_000)
        naive = naive_add(tmp, 20_000)
        ok &= add_cpu >= 100_000 and per_row <= 40
        print(
            f"| predictions stored (batches of 10k) | {add_cpu:,.0f}/s CPU ({add_wall:,.0f}/s wall) | {naive:,.0f}/s | "
            f"{add_cpu / naive:.1f}x | >= 100,000/s |"
        )
        print(f"| bytes per stored prediction (1M rows) | {per_row:.1f} | | | <= 40 |")
        print(f"| TTL drop of a 1M-row day | {drop * 1e3:.0f} ms | | | |")
        (one_cpu, one_wall), (all_cpu, all_wall), naive_l = bench_labels(tmp, 1_000_000, 31, 50_000)
        ok &= one_cpu >= 50_000
        print(
            f"| labels joined, one day's predictions (batches of 1000) | {one_cpu:,.0f}/s CPU ({one_wall:,.0f}/s wall) | "
            f"{naive_l:,.0f}/s | {one_cpu / naive_l:.1f}x | >= 50,000/s |"
        )
        print(
            f"| labels joined, spread over 31 days (batches of 1000) | {all_cpu:,.0f}/s CPU ({all_wall:,.0f}/s wall) | "
            f"{naive_l:,.0f}/s | {all_cpu / naive_l:.1f}x | |"
        )
        small, large, stored, size = bench_rss(tmp, args.rows)
        growth = large / small - 1
        ok &= abs(growth) <= 0.10
        print(
            f"| RSS after 10k / {stored:,} stored predictions | {small:.1f} MiB / {large:.1f} MiB | | "
            f"{growth:+.1%} | within 10% |"
        )
        print(f"\n(store of 1M rows over 31 days for the labels; {stored:,} rows took {size / 2**20:,.0f} MiB on disk:")
        print(f" {size / stored:.1f} bytes a row; rates are per CPU second of this process, the machine being shared)")
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
