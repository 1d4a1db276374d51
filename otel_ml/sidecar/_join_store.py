"""A durable, bounded store of predictions waiting for their delayed label (SQLite, WAL mode).

Why SQLite: stdlib, crash-safe, and a B-tree keyed by the request-id hash joins a label in
microseconds without holding one byte of process memory per waiting prediction (the in-memory
``JoinStore`` it replaces held ~500 bytes each). Memory here is per (day, dims), never per row.

Data model
----------
* ``p_<day>`` (one table per UTC day of the *prediction* time, ``day = t // 86400``):
  ``(h, d, t, s, l)``, ``PRIMARY KEY (h, d) WITHOUT ROWID``. ``h`` is :func:`request_id_hash`
  (signed 64 bits), ``d`` a dims id from :meth:`SqliteJoinStore.intern` (model, version, decision,
  seg_key1, seg_val1, ...), ``t`` seconds since the partition's midnight (3 bytes on disk instead
  of 4), ``s`` the score as a REAL (NULL when none), ``l`` the labelled flag (0 bytes on disk:
  SQLite stores the integers 0 and 1 in the record header alone). Measured: ~31 bytes a row.
  Why float64 for the score: it is exact, and float32 (4 bytes less) is not exact enough for log
  loss: a negative scored 0.99999997 becomes 1.0 in float32, and its term goes from 17.3 to 34.5.
* Keyed by (h, d): the same request scored by a primary and a shadow version is two rows, and one
  label joins every unlabelled row of its hash. The same (h, d) twice: the first prediction wins,
  the second is counted in ``rejected["duplicate"]``.
* A label resolves to one of :data:`STATUSES`: ``sampled_out`` (its hash fails the sample),
  ``unknown_request_id`` (no row), ``joined`` (every unlabelled row of its hash younger than the
  TTL is marked and returned as :class:`Match` es), ``duplicate`` (rows, all labelled already),
  ``expired`` (rows, none labelled, all older than the TTL). A seek costs ~0.7 us even when it
  misses, so days are probed in the order of their past hits and a hash found leaves the probe;
  the rows of one hash are looked for in the day it was found in, and in the day beside it when
  the row is within ``SAME_REQUEST_SKEW`` (1 h) of midnight. Rows of one request id further apart
  than that are not joined by one label (the id was reused, or the shadow lagged by hours).
* ``s_<day>`` ``(h, d)``: label events that carried their prediction inline and a request id, so
  a replayed inline label is a ``duplicate`` too (by the inline prediction's day; dropped with the
  day). Inline events never touch ``p_*`` rows: a producer sending a request-id label as well as
  an inline one for the same request is counted twice.
* ``label_log`` ``(seq INTEGER PRIMARY KEY, ...)``: every label event with its resolution and the
  rows it joined, so a sidecar can replay it into its counters after restoring its last snapshot.
* ``dims`` and ``words`` (outcome and source strings) intern tables; ``meta`` holds the schema
  version, the sampling shift ``k``, the log's sequence floor and the cumulative counters.

Bounds
------
* TTL: a label arriving at ``now`` for a prediction older than ``now - ttl`` is ``expired``. A
  whole day is dropped (``DROP TABLE``) once all of it is older than ``ttl + grace``; its rows are
  counted in ``evicted["ttl"]`` (labelled or not: ``rows`` always equals stored minus evicted).
  After the drop a label for it is ``unknown_request_id``: the grace keeps that distinction.
  Predictions already older than ``ttl`` (``rejected["too_old"]``) or more than a day in the future
  (``rejected["future"]``) are not stored.
* Byte cap: ``bytes`` is the main file, ``page_count * page_size`` (the WAL is not counted: it is
  checkpointed every ~4 MB and truncated to ``journal_size_limit``). Above ``max_bytes`` the free
  pages are released first (incremental vacuum); if still above, the sampling shift ``k`` rises by
  one: every partition is rebuilt keeping only ``h & (2**k - 1) == 0`` (a rebuild, not a DELETE:
  deleting half the rows of every page frees no page; the rebuilt table is also packed), the rows
  removed are counted in ``evicted["cap"]``, and later predictions failing the sample are counted
  in ``rejected["sampled_out"]``. ``k`` is persisted and never falls. A label whose hash fails the
  sample is ``sampled_out``. ``sample_ratio = 2**-k`` is the weight to export. The cap covers the
  whole file, log included: call :meth:`forget_log` after every snapshot.

Durability
----------
``label()`` returns after COMMIT. In WAL mode with ``synchronous="NORMAL"`` a committed
transaction is in the WAL file (the OS page cache at least), so it survives ``kill -9`` of the
process; a power loss may lose the last transactions. ``synchronous="FULL"`` fsyncs the WAL at
every commit and survives power loss too, at the cost of one fsync per call. ``path=None`` is a
private in-memory database: nothing survives the process (tests, sidecars without a state dir).

Wiring (for the sidecar)
------------------------
``d = store.intern(key)`` per distinct key (raises :class:`DimsOverflow` beyond ``max_dims``:
count it and drop the prediction); ``store.add(request_id_hashes(rids), d, times, scores,
now=now)``; ``store.label([LabelEvent(...)], now=now)`` returns one :class:`LoggedLabel` per event
(``matches`` are the joined rows: ``dims_key(m.dims)``, ``m.time``, ``m.score``) to turn into
counters; on restart replay ``log_after(snapshot_seq)``, and after saving a snapshot covering
``seq`` call ``forget_log(seq)``. ``coverage(now)`` is a dict walk, fine for every scrape.

Thread safety: one connection (``check_same_thread=False``) behind the store's own lock.

Costs measured (bench/labels.py, 2 shared cores): ~115k predictions stored per CPU second in
batches of 10k; ~40-75k labels joined per CPU second in batches of 1000 when labels land in one
day (~15k when spread evenly over 31 days: each probes half of them); dropping a 1M-row day
~0.25 s; a cap shift rebuilds every day, ~1.5-2 s per 1M rows, holding the lock; opening scans
every day once (GROUP BY), ~1 s per 1M rows. ``PRAGMA incremental_vacuum`` must run through
``executescript``: ``execute`` steps it once, which frees one page.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import struct
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from hashlib import blake2b
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from .._token import request_id_hash
from ._sqlite_files import open_cleanly

__all__ = [
    "DAY",
    "DimsOverflow",
    "JoinStoreError",
    "LabelEvent",
    "LoggedLabel",
    "Match",
    "AddResult",
    "InlinePrediction",
    "SqliteJoinStore",
    "STATUSES",
    "request_id_hash",
    "request_id_hashes",
]

DAY = 86400
SCHEMA_VERSION = 1
_APP_ID = 0x6F6D4C4A  # "omLJ" in PRAGMA application_id: our files are recognisable as ours
STATUSES = ("joined", "unknown_request_id", "expired", "duplicate", "sampled_out")
# resolved by the caller before the store (a token that does not verify, the dims budget): logged
# all the same, so a replay counts every acknowledged label; appended, so older logs read the same
REJECTED = ("malformed", "forged_token", "unknown_baseline", "no_token_key", "dims_budget")
_ALL_STATUSES = STATUSES + REJECTED
_CODE = {name: i for i, name in enumerate(_ALL_STATUSES)}
_MAX_SHIFT = 62
_ROW_BYTES_AT_MOST = 64  # a stored prediction on disk, page slack included (measured: 31)
_MATCH = struct.Struct("<qqd")  # dims id, prediction time, score (NaN for none)
_LOG_PAGE = 10_000
SAME_REQUEST_SKEW = 3600  # a primary and its shadow score one request within this many seconds
_COUNTERS: tuple[str, ...] = (
    "evicted_ttl",
    "evicted_cap",
    "rejected_too_old",
    "rejected_future",
    "rejected_duplicate",
    "rejected_sampled_out",
)


class JoinStoreError(Exception):
    """The store cannot be used: a file that is corrupt, foreign, or of another schema version."""


class DimsOverflow(JoinStoreError):
    """More distinct dims (or outcome/source words) than the store allows: count it, drop the row."""


def _new_id() -> int:
    return int.from_bytes(os.urandom(7), "big")  # fits an SQLite INTEGER, never negative


def request_id_hashes(rids: Sequence[str]) -> npt.NDArray[np.int64]:
    """:func:`otel_ml._token.request_id_hash` of every id, as one int64 array (one C call per id,
    no int objects): the app's tokens carry the same hash, so either finds the same rows."""
    joined = b"".join(blake2b(r.encode("utf-8", "surrogatepass"), digest_size=8).digest() for r in rids)
    return np.frombuffer(joined, dtype=">i8").astype(np.int64)


class InlinePrediction(NamedTuple):
    """The prediction a label event carries itself: no lookup needed."""

    dims: int
    time: float | None = None  # prediction time; None: the label's arrival
    score: float | None = None


class LabelEvent(NamedTuple):
    request_id: str | None
    outcome: str
    label_time: float | None = None  # when the outcome happened (for delays); None: arrival
    source: str = ""
    inline: InlinePrediction | None = None
    request_hash: int | None = None  # the hash itself, when only it travelled (a signed token)
    rejected: str | None = None  # one of REJECTED: resolved already, only logged


class Match(NamedTuple):
    """One prediction a label joined."""

    dims: int
    time: int
    score: float | None


class LoggedLabel(NamedTuple):
    seq: int
    status: str  # one of STATUSES
    request_hash: int | None
    outcome: str
    source: str
    label_time: float
    inline: bool
    matches: tuple[Match, ...]  # empty unless joined


@dataclass
class AddResult:
    """What one :meth:`SqliteJoinStore.add` did: every row offered is in exactly one of stored,
    duplicate, too_old, future, sampled_out; evicted_cap counts older rows the cap then removed."""

    stored: int = 0
    duplicate: int = 0
    too_old: int = 0
    future: int = 0
    sampled_out: int = 0
    evicted_cap: int = 0  # older rows the cap removed after this batch


_P_DDL = (
    "CREATE TABLE IF NOT EXISTS {} (h INTEGER NOT NULL, d INTEGER NOT NULL, t INTEGER NOT NULL, s REAL,"
    " l INTEGER NOT NULL, PRIMARY KEY (h, d)) WITHOUT ROWID"
)
_S_DDL = "CREATE TABLE IF NOT EXISTS {} (h INTEGER NOT NULL, d INTEGER NOT NULL, PRIMARY KEY (h, d)) WITHOUT ROWID"


class SqliteJoinStore:
    """Predictions waiting for their label, on disk; see the module docstring for the model."""

    def __init__(
        self,
        path: str | Path | None,
        *,
        ttl: float = 30 * DAY,
        grace: float = DAY,
        max_bytes: int = 1 << 30,
        max_dims: int = 1_000_000,
        synchronous: str = "NORMAL",
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be 'NORMAL' or 'FULL'")
        self.path = None if path is None else Path(path)
        self.ttl = float(ttl)
        self.grace = float(grace)
        self.max_bytes = int(max_bytes)
        self.max_dims = int(max_dims)
        self._lock = threading.Lock()
        self._dims: dict[tuple[str, ...], int] = {}
        self._dims_keys: list[tuple[str, ...]] = []
        self._words: dict[str, int] = {}
        self._words_list: list[str] = []
        self._days: set[int] = set()
        self._seen_days: set[int] = set()
        self._hits: dict[int, int] = {}  # day -> labels found in it since open: the probe order
        self._cov: dict[int, dict[int, list[int]]] = {}  # day -> dims -> [predicted, labelled]
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._k = 0
        self._id = 0
        self._seq = 0
        self._rows = 0
        self._con = self._open(synchronous)

    # ---- opening -------------------------------------------------------------------------
    def _fail(self, why: str) -> JoinStoreError:
        return JoinStoreError(f"join store {self.path}: {why}; move it away or point the store elsewhere")

    def _open(self, synchronous: str) -> sqlite3.Connection:
        return open_cleanly(self.path, lambda: self._connect(synchronous))

    def _connect(self, synchronous: str) -> sqlite3.Connection:
        fresh = True
        if self.path is not None and self.path.exists():
            with open(self.path, "rb") as f:
                head = f.read(100)
            if head and not head.startswith(b"SQLite format 3\x00"):
                raise self._fail("not an SQLite database (corrupt or foreign file)")
            fresh = not head
        target = ":memory:" if self.path is None else str(self.path)
        try:
            con = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
        except sqlite3.DatabaseError as exc:
            raise JoinStoreError(f"cannot open the join store {self.path}: {exc}") from exc
        try:
            return self._init(con, fresh, synchronous)
        except sqlite3.DatabaseError as exc:
            con.close()
            if fresh:  # nothing was there: the volume is the problem (full, read-only), not the file
                raise JoinStoreError(f"cannot open the join store {self.path}: cannot create it ({exc})") from exc
            raise self._fail(f"unreadable ({exc})") from exc
        except BaseException:
            con.close()
            raise

    def _init(self, con: sqlite3.Connection, fresh: bool, synchronous: str) -> sqlite3.Connection:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and "meta" not in tables:
            raise self._fail("an SQLite database that is not a join store (no meta table)")
        if not tables:
            if not fresh and con.execute("PRAGMA application_id").fetchone()[0] not in (0, _APP_ID):
                raise self._fail("an SQLite database of another application")
            con.execute("PRAGMA auto_vacuum = INCREMENTAL")  # before the first table, or it is too late
            con.execute(f"PRAGMA application_id = {_APP_ID}")
        con.execute("PRAGMA journal_mode = WAL")
        con.execute(f"PRAGMA synchronous = {synchronous}")
        con.execute("PRAGMA temp_store = MEMORY")
        con.execute("PRAGMA journal_size_limit = 33554432")
        if not tables:
            con.execute("BEGIN")
            con.execute("CREATE TABLE meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
            con.execute("CREATE TABLE dims (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE)")
            con.execute("CREATE TABLE words (id INTEGER PRIMARY KEY, w TEXT NOT NULL UNIQUE)")
            con.execute(
                "CREATE TABLE label_log (seq INTEGER PRIMARY KEY, st INTEGER NOT NULL, h INTEGER,"
                " o INTEGER NOT NULL, src INTEGER NOT NULL, lt REAL NOT NULL, inl INTEGER NOT NULL, m BLOB)"
            )
            rows = [("schema_version", SCHEMA_VERSION), ("sample_shift", 0), ("seq_floor", 0), ("store_id", _new_id())]
            con.executemany("INSERT INTO meta VALUES (?, ?)", rows + [(c, 0) for c in _COUNTERS])
            con.execute("COMMIT")
        meta = dict(con.execute("SELECT k, v FROM meta").fetchall())
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise self._fail(f"schema version {meta.get('schema_version')}, this otel-ml reads {SCHEMA_VERSION}")
        self._k = int(meta["sample_shift"])
        self._id = int(meta["store_id"])
        self._counts = {c: int(meta.get(c, 0)) for c in _COUNTERS}
        for i, key in con.execute("SELECT id, key FROM dims ORDER BY id"):
            if i != len(self._dims_keys):
                raise self._fail("dims ids are not contiguous")
            t = tuple(json.loads(key))
            self._dims[t] = i
            self._dims_keys.append(t)
        for i, w in con.execute("SELECT id, w FROM words ORDER BY id"):
            if i != len(self._words_list):
                raise self._fail("word ids are not contiguous")
            self._words[w] = i
            self._words_list.append(w)
        top = con.execute("SELECT max(seq) FROM label_log").fetchone()[0]
        self._seq = max(int(top or 0), int(meta["seq_floor"]))
        for name in sorted(tables):
            if name.startswith("p_") and name[2:].isdigit():
                day = int(name[2:])
                self._days.add(day)
                cov = self._cov.setdefault(day, {})
                for d, n, lab in con.execute(f"SELECT d, count(*), sum(l) FROM {name} GROUP BY d"):
                    cov[int(d)] = [int(n), int(lab)]
                    self._rows += int(n)
            elif name.startswith("s_") and name[2:].isdigit():
                self._seen_days.add(int(name[2:]))
        return con

    def save_to(self, path: str | Path) -> None:
        """Write the whole store to a new database file at ``path`` (``VACUUM INTO`` a temporary
        name, then an atomic rename): how predictions held in memory while the volume was broken
        move to disk once it is writable again. A failure leaves no file behind."""
        target = Path(path)
        tmp = target.with_name(f".{target.name}.tmp")
        try:
            with self._lock:
                self._con.execute("VACUUM INTO ?", (str(tmp),))
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            self._con.close()

    # ---- health ----------------------------------------------------------------------------
    @property
    def rows(self) -> int:
        return self._rows

    @property
    def bytes(self) -> int:
        with self._lock:
            return self._bytes()

    def _bytes(self) -> int:
        pages = self._con.execute("PRAGMA page_count").fetchone()[0]
        return int(pages) * int(self._con.execute("PRAGMA page_size").fetchone()[0])

    @property
    def sample_shift(self) -> int:
        return self._k

    @property
    def sample_ratio(self) -> float:
        return 2.0**-self._k

    @property
    def store_id(self) -> int:
        """Random at creation, kept by copies (``save_to``): a state snapshot's ``label_seq`` counts
        this store's log only, so a snapshot names the store whose log it covered."""
        return self._id

    @property
    def evicted(self) -> dict[str, int]:
        """Rows removed after they were stored, cumulative across restarts (``ttl``, ``cap``)."""
        return {"ttl": self._counts["evicted_ttl"], "cap": self._counts["evicted_cap"]}

    @property
    def rejected(self) -> dict[str, int]:
        """Predictions never stored, cumulative across restarts, by reason."""
        return {c.removeprefix("rejected_"): v for c, v in self._counts.items() if c.startswith("rejected_")}

    @property
    def last_seq(self) -> int:
        return self._seq

    # ---- interning -------------------------------------------------------------------------
    def intern(self, key: Sequence[str]) -> int:
        """The id of a dims key (model, version, decision, seg_key1, seg_val1, ...), made once."""
        t = tuple(key)
        found = self._dims.get(t)
        if found is not None:
            return found
        with self._lock:
            found = self._dims.get(t)
            if found is not None:
                return found
            if len(self._dims_keys) >= self.max_dims:
                raise DimsOverflow(f"join store: more than {self.max_dims} distinct model/version/segment keys")
            i = len(self._dims_keys)
            self._con.execute("INSERT INTO dims VALUES (?, ?)", (i, json.dumps(list(t))))
            self._dims_keys.append(t)
            self._dims[t] = i
            return i

    def dims_key(self, dims: int) -> tuple[str, ...]:
        return self._dims_keys[dims]

    @property
    def dims_count(self) -> int:
        return len(self._dims_keys)

    def _word(self, w: str, new: list[tuple[int, str]]) -> int:
        found = self._words.get(w)
        if found is not None:
            return found
        if len(self._words_list) >= self.max_dims:
            raise DimsOverflow(f"join store: more than {self.max_dims} distinct outcome/source strings")
        i = len(self._words_list)
        self._words[w] = i
        self._words_list.append(w)
        new.append((i, w))
        return i

    # ---- predictions -----------------------------------------------------------------------
    def add(
        self,
        hashes: npt.ArrayLike,
        dims: npt.ArrayLike,
        times: npt.ArrayLike,
        scores: npt.ArrayLike,
        *,
        now: float,
    ) -> AddResult:
        """Store predictions (hashes from :func:`request_id_hashes`; dims ids from :meth:`intern`,
        one or one per row; unix times; scores with NaN for none), in one transaction. One function:
        every step (vectorised checks, partition split, insert, counts) shares the same arrays."""
        h = np.ascontiguousarray(hashes, dtype=np.int64).ravel()
        n = h.size
        d = np.broadcast_to(np.asarray(dims, dtype=np.int64), (n,))
        t = np.floor(np.broadcast_to(np.asarray(times, dtype=np.float64), (n,)))
        s = np.broadcast_to(np.asarray(scores, dtype=np.float64), (n,))
        res = AddResult()
        if n == 0:
            return res
        with self._lock:
            if d.min() < 0 or d.max() >= len(self._dims_keys):
                raise ValueError("dims ids must come from intern()")
            if not np.isfinite(t).all():
                raise ValueError("prediction times must be finite")
            self._expire(now)
            too_old = t < now - self.ttl
            future = ~too_old & (t > now + DAY)
            sampled = ~too_old & ~future & ((h & self._mask) != 0)
            keep = ~(too_old | future | sampled)
            res.too_old, res.future, res.sampled_out = int(too_old.sum()), int(future.sum()), int(sampled.sum())
            ti = t[keep].astype(np.int64)
            day = ti // DAY
            hk, dk, sk = h[keep], d[keep], s[keep]
            # by day then hash: one pass over each day's B-tree in key order (half the CPU of a pass per
            # dims); the sort is stable, so of two equal (h, d) the first offered is the one inserted
            order = np.lexsort((hk, day))
            day, hk, dk, sk, off = day[order], hk[order], dk[order], sk[order], (ti - ti // DAY * DAY)[order]
            cut = (np.flatnonzero(day[1:] != day[:-1]) + 1).tolist()
            spans = list(zip([0, *cut], [*cut, day.size])) if day.size else []
            rows = list(zip(hk.tolist(), dk.tolist(), off.tolist(), sk.tolist()))
            con = self._con
            stored: list[tuple[int, int, int]] = []
            con.execute("BEGIN IMMEDIATE")
            try:
                for a, b in spans:
                    dd = int(day[a])
                    if dd not in self._days:
                        con.execute(_P_DDL.format(f"p_{dd}"))
                    stored += self._insert_day(dd, rows[a:b], dk[a:b])
                res.stored = sum(x[2] for x in stored)
                res.duplicate = int(day.size) - res.stored
                bumps = {
                    "rejected_too_old": res.too_old,
                    "rejected_future": res.future,
                    "rejected_sampled_out": res.sampled_out,
                    "rejected_duplicate": res.duplicate,
                }
                self._bump(bumps)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            self._apply_counts(bumps)
            for dd, gd, c in stored:
                self._days.add(dd)
                cell = self._cov.setdefault(dd, {}).setdefault(gd, [0, 0])
                cell[0] += c
                self._rows += c
            res.evicted_cap = self._enforce_cap()
        return res

    def _insert_day(
        self, day: int, rows: list[tuple[Any, ...]], dims: npt.NDArray[np.int64]
    ) -> list[tuple[int, int, int]]:
        """Insert one day's rows; (day, dims, rows stored) per dims, exact even with duplicates.

        Fast path: one statement for the day; if every row went in, the counts per dims are the
        batch's. If some were duplicates, redo it one statement per dims (slower, but then the
        changes of each statement are that dims' count)."""
        con = self._con
        sql = f"INSERT OR IGNORE INTO p_{day} VALUES (?, ?, ?, ?, 0)"
        con.execute("SAVEPOINT day")
        before = con.total_changes
        con.executemany(sql, rows)
        if con.total_changes - before == len(rows):
            con.execute("RELEASE day")
            ids, counts = np.unique(dims, return_counts=True)
            return [(day, d, c) for d, c in zip(ids.tolist(), counts.tolist())]
        con.execute("ROLLBACK TO day")
        con.execute("RELEASE day")
        order = np.argsort(dims, kind="stable")
        sorted_dims = dims[order]
        cut = (np.flatnonzero(sorted_dims[1:] != sorted_dims[:-1]) + 1).tolist()
        out = []
        for a, b in zip([0, *cut], [*cut, len(rows)]):
            before = con.total_changes
            con.executemany(sql, [rows[i] for i in order[a:b].tolist()])
            out.append((day, int(sorted_dims[a]), con.total_changes - before))
        return out

    @property
    def _mask(self) -> int:
        return (1 << self._k) - 1

    def _bump(self, deltas: dict[str, int]) -> None:
        rows = [(v, k) for k, v in deltas.items() if v]
        if rows:
            self._con.executemany("UPDATE meta SET v = v + ? WHERE k = ?", rows)

    def _apply_counts(self, deltas: dict[str, int]) -> None:
        for k, v in deltas.items():
            self._counts[k] += v

    # ---- bounds ----------------------------------------------------------------------------
    def expire(self, now: float) -> int:
        """Drop every day older than ``ttl + grace``; the rows dropped (also done by add/label)."""
        with self._lock:
            return self._expire(now)

    def _expire(self, now: float) -> int:
        limit = now - self.ttl - self.grace
        old = sorted(x for x in self._days | self._seen_days if (x + 1) * DAY <= limit)
        if not old:
            return 0
        dropped = sum(c[0] for x in old for c in self._cov.get(x, {}).values())
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        try:
            for x in old:
                con.execute(f"DROP TABLE IF EXISTS p_{x}")
                con.execute(f"DROP TABLE IF EXISTS s_{x}")
            self._bump({"evicted_ttl": dropped})
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        self._apply_counts({"evicted_ttl": dropped})
        for x in old:
            self._days.discard(x)
            self._seen_days.discard(x)
            self._cov.pop(x, None)
            self._hits.pop(x, None)
        self._rows -= dropped
        return dropped

    def _enforce_cap(self) -> int:
        if self._bytes() <= self.max_bytes:
            return 0
        self._con.executescript("PRAGMA incremental_vacuum;")  # executescript steps it to the end
        evicted = 0
        while self._bytes() > self.max_bytes and self._rows > 0 and self._k < _MAX_SHIFT:
            if self._rows * _ROW_BYTES_AT_MOST < self.max_bytes // 2:
                break  # the predictions are not what fills the file (the label log until the next snapshot)
            before = self._bytes()
            evicted += self._shift()
            if self._bytes() > 0.9 * before:
                break  # a shift that frees nothing would sample on until no prediction is left
        return evicted

    def raise_sample_shift(self) -> int:
        """What the byte cap does: keep half the request ids from now on; the rows evicted."""
        with self._lock:
            return self._shift()

    def _shift(self) -> int:
        k = self._k + 1
        mask = (1 << k) - 1
        con = self._con
        new_cov: dict[int, dict[int, list[int]]] = {}
        con.execute("BEGIN IMMEDIATE")
        try:
            for x in sorted(self._days):
                con.execute(_P_DDL.format("p_rebuild"))
                con.execute(f"INSERT INTO p_rebuild SELECT h, d, t, s, l FROM p_{x} WHERE (h & {mask}) = 0")
                con.execute(f"DROP TABLE p_{x}")
                con.execute(f"ALTER TABLE p_rebuild RENAME TO p_{x}")
                q = f"SELECT d, count(*), sum(l) FROM p_{x} GROUP BY d"
                new_cov[x] = {int(d): [int(n), int(lab)] for d, n, lab in con.execute(q)}
            rows = sum(c[0] for cov in new_cov.values() for c in cov.values())
            evicted = self._rows - rows
            con.execute("UPDATE meta SET v = ? WHERE k = 'sample_shift'", (k,))
            self._bump({"evicted_cap": evicted})
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.executescript("PRAGMA incremental_vacuum;")
        self._k = k
        self._cov = new_cov
        self._rows = rows
        self._apply_counts({"evicted_cap": evicted})
        return evicted

    # ---- labels ----------------------------------------------------------------------------
    def label(self, events: Sequence[LabelEvent], *, now: float) -> list[LoggedLabel]:
        """Resolve, mark and log every event in ONE transaction; returns after COMMIT.

        One long function on purpose: the per-label loop is the hot path (~66k labels/s), and its
        steps share the transaction's probe results, marks and log rows."""
        for e in events:
            if e.rejected is not None:
                if e.rejected not in REJECTED or e.inline is not None:
                    raise ValueError(f"a rejected label's status is one of {REJECTED}, without a prediction")
            elif e.request_id is None and e.request_hash is None and e.inline is None:
                raise ValueError("a label event needs a request id or an inline prediction")
            if e.inline is not None and not 0 <= e.inline.dims < len(self._dims_keys):
                raise ValueError("inline dims ids must come from intern()")
        with_id = [e.request_id for e in events if e.request_id is not None]
        if len(with_id) == len(events):
            hashes: list[int | None] = request_id_hashes(with_id).tolist()
        else:
            hashes = [e.request_hash if e.request_id is None else request_id_hash(e.request_id) for e in events]
        with self._lock:
            self._expire(now)
            con = self._con
            mask = self._mask
            cutoff = now - self.ttl
            # inline events with a request hash (tokens) probe too: a prediction this store holds is
            # joined as its row (marked labelled: coverage, and one label per request id either way)
            probe = {h for h, e in zip(hashes, events) if h is not None and e.rejected is None and not h & mask}
            new_words: list[tuple[int, str]] = []
            log: list[tuple[Any, ...]] = []
            out: list[LoggedLabel] = []
            marks: dict[int, list[tuple[int, int]]] = {}
            seen_new: dict[int, list[tuple[int, int]]] = {}
            seen_batch: set[tuple[int, int, int]] = set()
            seq = self._seq
            words, pack, nan = self._words, _MATCH.pack, math.nan
            con.execute("BEGIN IMMEDIATE")
            try:
                found = self._lookup(probe)
                for h, (_, outcome, label_time, source, inline, _, rejected) in zip(hashes, events):
                    seq += 1
                    lt = now if label_time is None else float(label_time)
                    matches: tuple[Match, ...] = ()
                    blob: bytes | None = None
                    if rejected is not None:
                        status = rejected
                    elif inline is not None and not (h is not None and h in found):
                        status, matches = self._inline(inline, h, now, cutoff, seen_batch, seen_new)
                        if matches:
                            blob = b"".join(pack(*m[:2], nan if m[2] is None else m[2]) for m in matches)
                    elif h is not None and h & mask:
                        status = "sampled_out"
                    else:
                        rs = found.get(h) if h is not None else None
                        if not rs:
                            status = "unknown_request_id"
                        elif len(rs) == 1 and not rs[0][4] and rs[0][2] >= cutoff:  # the usual case
                            status = "joined"
                            r = rs[0]
                            r[4] = 1
                            marks.setdefault(r[0], []).append((h, r[1]))  # type: ignore[arg-type]
                            matches = (Match(r[1], r[2], r[3]),)
                            blob = pack(r[1], r[2], nan if r[3] is None else r[3])
                        else:
                            fresh = [r for r in rs if not r[4] and r[2] >= cutoff]
                            if fresh:
                                status = "joined"
                                for r in fresh:
                                    r[4] = 1
                                    marks.setdefault(r[0], []).append((h, r[1]))  # type: ignore[arg-type]
                                matches = tuple(Match(r[1], r[2], r[3]) for r in fresh)
                                blob = b"".join(pack(r[1], r[2], nan if r[3] is None else r[3]) for r in fresh)
                            elif any(r[4] for r in rs):
                                status = "duplicate"
                            else:
                                status = "expired"
                    o = words.get(outcome)
                    if o is None:
                        o = self._word(outcome, new_words)
                    src = words.get(source)
                    if src is None:
                        src = self._word(source, new_words)
                    is_inline = inline is not None
                    log.append((seq, _CODE[status], h, o, src, lt, is_inline, blob))
                    out.append(LoggedLabel(seq, status, h, outcome, source, lt, is_inline, matches))
                if new_words:
                    con.executemany("INSERT INTO words VALUES (?, ?)", new_words)
                for x, keys in marks.items():
                    con.executemany(f"UPDATE p_{x} SET l = 1 WHERE h = ? AND d = ?", keys)
                for x, keys in seen_new.items():
                    if x not in self._seen_days:
                        con.execute(_S_DDL.format(f"s_{x}"))
                    con.executemany(f"INSERT OR IGNORE INTO s_{x} VALUES (?, ?)", keys)
                con.executemany("INSERT INTO label_log VALUES (?, ?, ?, ?, ?, ?, ?, ?)", log)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                for _, w in new_words:
                    del self._words[w]
                del self._words_list[len(self._words_list) - len(new_words) :]
                raise
            self._seq = seq
            self._seen_days.update(seen_new)
            for x, keys in marks.items():
                cov = self._cov[x]
                for _, d in keys:
                    cov[d][1] += 1
            return out

    def _lookup(self, probe: set[int]) -> dict[int, list[list[Any]]]:
        """The stored rows of these hashes: one join per day in C, the day most labels hit first.

        A seek costs ~0.7 us even when it misses, so a label probing 31 days spends 20 us before it
        is found. Days are probed in the order of their past hits, a found hash leaves the probe,
        and the probe stops when all are found. The rows of one hash are looked for in the day it
        was found in, and in the day beside it when the row found is within
        ``SAME_REQUEST_SKEW`` of midnight (a primary and a shadow scoring one request around
        midnight); rows of one request id further apart are not joined by one label: the id was
        reused."""
        found: dict[int, list[list[Any]]] = {}
        if not probe or not self._days:
            return found
        order = sorted(self._days, key=lambda x: (-self._hits.get(x, 0), -x))
        pos = {x: i for i, x in enumerate(order)}
        first: dict[int, int] = {}  # hash -> position of the day it was found in
        left = list(probe)
        for i, x in enumerate(order):
            new = self._probe_day(x, left, found)
            if new:
                for h in new:
                    first[h] = i
                if len(first) == len(probe):
                    break
                left = [h for h in left if h not in first]
        beside: dict[int, list[int]] = {}
        hits = self._hits
        for h, i in first.items():
            x = order[i]
            hits[x] = hits.get(x, 0) + 1
            rows = found[h]
            lo = hi = rows[0][2]
            if len(rows) > 1:
                lo, hi = min(r[2] for r in rows), max(r[2] for r in rows)
            # the day beside, if probed after h had left the probe (or not at all)
            if lo - x * DAY < SAME_REQUEST_SKEW and pos.get(x - 1, -1) > i:
                beside.setdefault(x - 1, []).append(h)
            if (x + 1) * DAY - hi <= SAME_REQUEST_SKEW and pos.get(x + 1, -1) > i:
                beside.setdefault(x + 1, []).append(h)
        for y, hs in beside.items():
            self._probe_day(y, hs, found)
        return found

    def _probe_day(self, x: int, hashes: list[int], found: dict[int, list[list[Any]]]) -> list[int]:
        """Add the rows of day ``x`` with one of these hashes to ``found``; the hashes found.

        The hashes go in as one JSON array (``json_each``): cheaper than filling a temp table."""
        base = x * DAY
        new: list[int] = []
        # CROSS JOIN keeps the probe as the outer loop (SQLite never reorders it): one seek per hash
        q = f"SELECT p.h, p.d, p.t, p.s, p.l FROM json_each(?) q CROSS JOIN p_{x} p ON p.h = q.value"
        for h, d, t, s, lab in self._con.execute(q, (json.dumps(hashes),)):
            rows = found.get(h)
            if rows is None:
                found[h] = rows = []
                new.append(h)
            elif rows[-1][0] != x:
                new.append(h)
            rows.append([x, d, base + t, s, lab])
        return new

    def _inline(
        self,
        p: InlinePrediction,
        h: int | None,
        now: float,
        cutoff: float,
        seen_batch: set[tuple[int, int, int]],
        seen_new: dict[int, list[tuple[int, int]]],
    ) -> tuple[str, tuple[Match, ...]]:
        t = math.floor(now if p.time is None else p.time)
        score = None if p.score is None or math.isnan(p.score) else float(p.score)
        if t < cutoff:
            return "expired", ()
        match = (Match(p.dims, t, score),)
        if h is None:
            return "joined", match
        x = min(t, math.floor(now) + DAY) // DAY
        key = (x, h, p.dims)
        if key in seen_batch:
            return "duplicate", ()
        if x in self._seen_days:
            q = f"SELECT 1 FROM s_{x} WHERE h = ? AND d = ?"
            if self._con.execute(q, (h, p.dims)).fetchone() is not None:
                return "duplicate", ()
        seen_batch.add(key)
        seen_new.setdefault(x, []).append((h, p.dims))
        return "joined", match

    # ---- the log -----------------------------------------------------------------------------
    def log_after(self, seq: int) -> Iterator[LoggedLabel]:
        """The logged labels after ``seq``, in order (read in pages, the lock released between)."""
        while True:
            with self._lock:
                rows = self._con.execute(
                    "SELECT seq, st, h, o, src, lt, inl, m FROM label_log WHERE seq > ? ORDER BY seq LIMIT ?",
                    (seq, _LOG_PAGE),
                ).fetchall()
                words = self._words_list
            for r in rows:
                matches = tuple(
                    Match(d, t, None if math.isnan(s) else s) for d, t, s in _MATCH.iter_unpack(r[7] or b"")
                )
                yield LoggedLabel(r[0], _ALL_STATUSES[r[1]], r[2], words[r[3]], words[r[4]], r[5], bool(r[6]), matches)
            if len(rows) < _LOG_PAGE:
                return
            seq = rows[-1][0]

    def forget_log(self, upto_seq: int) -> int:
        """Delete the log up to ``upto_seq`` (a saved snapshot covers it); the events deleted."""
        with self._lock:
            con = self._con
            con.execute("BEGIN IMMEDIATE")
            try:
                n = con.execute("DELETE FROM label_log WHERE seq <= ?", (upto_seq,)).rowcount
                con.execute("UPDATE meta SET v = max(v, ?) WHERE k = 'seq_floor'", (min(upto_seq, self._seq),))
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            return int(n)

    # ---- coverage ----------------------------------------------------------------------------
    def coverage(
        self, now: float, ages: Sequence[int] = (DAY, 7 * DAY, 30 * DAY)
    ) -> dict[tuple[int, int], tuple[int, int]]:
        """(age, dims) -> (predicted, labelled) among stored predictions of the cohort of ``age``.

        The cohort is the last whole UTC day that ended at least ``age`` before ``now`` (every
        prediction in it is at least ``age`` old; counts are kept per day, not per row). With
        sampling both counts are of the sampled rows, so the ratio stays unbiased."""
        out: dict[tuple[int, int], tuple[int, int]] = {}
        with self._lock:
            for age in ages:
                day = math.floor((now - age) / DAY) - 1
                for d, (p, lab) in self._cov.get(day, {}).items():
                    if p:
                        out[(age, d)] = (p, lab)
        return out
