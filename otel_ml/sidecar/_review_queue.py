"""The persistent, bounded queue of predictions waiting for human review (SQLite, WAL mode).

Why its own file and not the join store: a review item is a row a person reads (request id,
stratum, score, decision, its weight ``1 / pi``, features when configured), paged by a cursor and
kept until it is labelled; the join store keeps 31-byte hashes of every prediction. Same
conventions: WAL with ``synchronous=NORMAL`` (a COMMIT survives ``kill -9``; ``FULL`` survives a
power loss too), one connection behind the queue's lock, every answer after COMMIT, counters in
the same transaction as the rows they count, so a restart neither loses nor double counts them.

Data model
----------
* ``items``: ``seq INTEGER PRIMARY KEY AUTOINCREMENT`` (never reused, even after deletions: a
  consumer's cursor stays valid), the item's fields, ``queued`` (the sidecar's clock when it
  arrived), ``labelled`` (NULL while pending) and the review ``outcome`` (correct, error).
  ``UNIQUE (model, version, rid)``: a retried item is a duplicate, answered as accepted before.
  Partial indexes keep the pending items by (model, version, queued) and the labelled ones by
  time, so expiry, the oldest pending age and the room-making deletes are index ranges.
* ``counts`` ``(k TEXT PRIMARY KEY, v)``: the cumulative counters (JSON label tuples), updated in
  the transaction that moves the items they count. ``meta``: schema version, webhook cursor.

Bounds
------
At most ``max_items`` rows. A body that does not fit deletes labelled items first (oldest
labelled first); if it still does not fit, nothing of it is stored (:class:`QueueFull`, a 507 for
the client to retry) and its items are counted ``dropped{reason="full"}``. Pending items queued
more than ``max_pending_age`` ago are deleted and counted ``expired``; labelled ones are deleted
``retention`` after their label. Measured (``bench/review_queue.py``): ~200 bytes on disk per
item without features.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import _names as n
from .._label_hygiene import storable_request_id
from ._review_input import ReviewItem
from ._sqlite_files import open_cleanly

__all__ = ["ReviewQueue", "ReviewQueueError", "QueueFull", "AddResult", "ReviewLabel", "Judge", "LABELLED", "DUPLICATE"]

SCHEMA_VERSION = 1
_APP_ID = 0x6F6D5251  # "omRQ"
LABELLED = "labelled"
DUPLICATE = "duplicate"
Judge = Callable[[str | None, str], str | None]
"""(the item's decision, the review label) -> correct | error, or None when there is no decision."""
_COLUMNS = "seq, rid, model, version, sk, sg, st, pi, score, decision, t, salt, features, queued"


class ReviewQueueError(Exception):
    """The queue file cannot be used (corrupt, foreign, another schema version, unwritable)."""


class QueueFull(Exception):
    """The body does not fit even after deleting every labelled item: nothing of it was stored."""

    def __init__(self, refused: dict[tuple[str, str], int], room: int) -> None:
        total = sum(refused.values())
        super().__init__(f"the review queue is full: {total} new items, room for {room}")
        self.refused = refused  # new items per (model, version)
        self.room = room


@dataclass
class AddResult:
    accepted: int = 0  # new items queued
    duplicates: int = 0  # already queued (or twice in the body): idempotent retries
    made_room: int = 0  # labelled items deleted to make room


@dataclass(frozen=True)
class ReviewLabel:
    """What one review label did: ``labelled`` (its items, each with its outcome), ``duplicate``
    (every item of the id was labelled already) or ``not_queued``."""

    status: str
    outcomes: tuple[str | None, ...] = ()


def _item_row(item: ReviewItem, now: float) -> tuple[Any, ...]:
    return (
        item.request_id,
        item.model,
        item.version,
        item.segment_key,
        item.segment,
        item.stratum,
        item.pi,
        item.score,
        item.decision,
        item.time,
        item.salt_id,
        item.features,
        now,
    )


def as_json(row: Sequence[Any]) -> dict[str, Any]:
    """One ``items`` row (in ``_COLUMNS`` order) as the wire object, with ``seq`` and ``weight``."""
    seq, rid, model, version, sk, sg, st, pi, score, decision, t, salt, features, queued = row
    out: dict[str, Any] = {
        "seq": seq,
        "request_id": rid,
        "model": model,
        "version": version,
        "segment_key": sk,
        "segment": sg,
        "stratum": st,
        "pi": pi,
        "weight": 1.0 / pi,
        "score": score,
        "decision": decision,
        "time": t,
        "salt_id": salt,
        "queued_at": queued,
    }
    if features is not None:
        out["features"] = json.loads(features)
    return out


class ReviewQueue:
    """Review items on disk; ``path=None`` keeps them in memory (lost on exit)."""

    def __init__(
        self,
        path: str | Path | None,
        *,
        max_items: int = 100_000,
        retention: float = 7 * 86400.0,
        max_pending_age: float = 30 * 86400.0,
        synchronous: str = "NORMAL",
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be 'NORMAL' or 'FULL'")
        self.path = None if path is None else Path(path)
        self.max_items = int(max_items)
        self.retention = float(retention)
        self.max_pending_age = float(max_pending_age)
        self._lock = threading.Lock()
        self.counts: dict[tuple[str, ...], int] = {}
        self.pending: dict[tuple[str, str], int] = {}
        self.rows = 0
        self.changes = 0  # bumped by every commit: the /metrics page key
        self._con = self._connect(synchronous)
        self._load()

    # ---- opening ---------------------------------------------------------------------------
    def _connect(self, synchronous: str) -> sqlite3.Connection:
        return open_cleanly(self.path, lambda: self._connect_file(synchronous))

    def _connect_file(self, synchronous: str) -> sqlite3.Connection:
        if self.path is not None and self.path.exists():
            with open(self.path, "rb") as f:
                head = f.read(16)
            if head and head != b"SQLite format 3\x00":
                raise ReviewQueueError(f"review queue {self.path}: not an SQLite database; move it away")
        try:
            con = sqlite3.connect(
                ":memory:" if self.path is None else str(self.path), isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise ReviewQueueError(f"cannot open the review queue {self.path}: {exc}") from exc
        try:
            self._init(con, synchronous)
        except sqlite3.Error as exc:
            con.close()
            raise ReviewQueueError(f"review queue {self.path}: unusable ({exc})") from exc
        except BaseException:
            con.close()
            raise
        return con

    def _init(self, con: sqlite3.Connection, synchronous: str) -> None:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and "items" not in tables:
            raise ReviewQueueError(f"review queue {self.path}: an SQLite database that is not a review queue")
        con.execute("PRAGMA journal_mode = WAL")
        con.execute(f"PRAGMA synchronous = {synchronous}")
        con.execute("PRAGMA journal_size_limit = 16777216")
        if tables:
            version = con.execute("SELECT v FROM meta WHERE k = 'schema'").fetchone()
            if version is None or int(version[0]) != SCHEMA_VERSION:
                raise ReviewQueueError(f"review queue {self.path}: schema {version} is not {SCHEMA_VERSION}")
            return
        con.execute("BEGIN")
        con.execute(f"PRAGMA application_id = {_APP_ID}")
        con.execute("CREATE TABLE meta (k TEXT PRIMARY KEY, v NOT NULL)")
        con.execute("CREATE TABLE counts (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
        con.execute(
            "CREATE TABLE items (seq INTEGER PRIMARY KEY AUTOINCREMENT, rid TEXT NOT NULL, model TEXT NOT NULL,"
            " version TEXT NOT NULL, sk TEXT NOT NULL, sg TEXT NOT NULL, st TEXT NOT NULL, pi REAL NOT NULL,"
            " score REAL, decision TEXT, t REAL, salt TEXT NOT NULL, features TEXT, queued REAL NOT NULL,"
            " labelled REAL, outcome TEXT, UNIQUE (model, version, rid))"
        )
        con.execute("CREATE INDEX items_rid ON items (rid)")
        con.execute("CREATE INDEX items_pending ON items (model, version, queued) WHERE labelled IS NULL")
        con.execute("CREATE INDEX items_done ON items (labelled) WHERE labelled IS NOT NULL")
        con.execute("INSERT INTO meta VALUES ('schema', ?), ('webhook_cursor', 0)", (SCHEMA_VERSION,))
        con.execute("COMMIT")

    def _load(self) -> None:
        con = self._con
        for k, v in con.execute("SELECT k, v FROM counts"):
            self.counts[tuple(json.loads(k))] = int(v)
        for model, version, count in con.execute(
            "SELECT model, version, count(*) FROM items WHERE labelled IS NULL GROUP BY model, version"
        ):
            self.pending[(model, version)] = int(count)
        self.rows = int(con.execute("SELECT count(*) FROM items").fetchone()[0])

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._con.close()

    # ---- transactions ----------------------------------------------------------------------
    def _commit(self, work: Callable[[sqlite3.Connection, dict[tuple[str, ...], int]], Any]) -> Any:
        """Run ``work`` in one IMMEDIATE transaction with the counter deltas it collects; the deltas
        are written in the same transaction and reach memory only after COMMIT."""
        con = self._con
        deltas: dict[tuple[str, ...], int] = {}
        con.execute("BEGIN IMMEDIATE")
        try:
            result = work(con, deltas)
            con.executemany(
                "INSERT INTO counts VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = v + excluded.v",
                [(json.dumps(list(k)), v) for k, v in deltas.items() if v],
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        for k, v in deltas.items():
            self.counts[k] = self.counts.get(k, 0) + v
        self.changes += 1
        return result

    def _pending_delta(self, model: str, version: str, amount: int) -> None:
        left = self.pending.get((model, version), 0) + amount
        self.pending[(model, version)] = left

    # ---- items -------------------------------------------------------------------------------
    def add(self, items: Sequence[ReviewItem], now: float) -> AddResult:
        """Queue the new items of a validated body, all or none; raises :class:`QueueFull`."""
        result = AddResult()
        added: dict[tuple[str, str], int] = {}
        deleted: list[tuple[str, str]] = []

        def work(con: sqlite3.Connection, deltas: dict[tuple[str, ...], int]) -> None:
            for item in items:
                cur = con.execute(
                    "INSERT OR IGNORE INTO items (rid, model, version, sk, sg, st, pi, score, decision, t, salt,"
                    " features, queued) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    _item_row(item, now),
                )
                if cur.rowcount == 1:
                    key = (item.model, item.version)
                    added[key] = added.get(key, 0) + 1
                else:
                    result.duplicates += 1
            new = sum(added.values())
            excess = self.rows + new - self.max_items
            if excess > 0:
                deleted.extend(
                    con.execute(
                        "DELETE FROM items WHERE seq IN (SELECT seq FROM items WHERE labelled IS NOT NULL"
                        " ORDER BY labelled LIMIT ?) RETURNING model, version",
                        (excess,),
                    ).fetchall()
                )
                if len(deleted) < excess:
                    raise QueueFull(dict(added), self.max_items - self.rows + len(deleted))
            for (model, version), count in added.items():
                deltas[("queued", model, version)] = count

        try:
            with self._lock:
                self._commit(work)
                result.accepted = sum(added.values())
                result.made_room = len(deleted)
                self.rows += result.accepted - result.made_room
                for (model, version), count in added.items():
                    self._pending_delta(model, version, count)
        except QueueFull as full:
            self._count_full(full)
            raise
        return result

    def _count_full(self, full: QueueFull) -> None:
        """Count a refused body's new items as ``dropped{full}`` (a retried item counts each time)."""

        def work(con: sqlite3.Connection, deltas: dict[tuple[str, ...], int]) -> None:
            for (model, version), count in full.refused.items():
                deltas[("dropped", model, version, n.REVIEW_QUEUE_FULL)] = count

        with self._lock:
            self._commit(work)

    def pending_items(
        self, cursor: int, limit: int, model: str | None = None, version: str | None = None
    ) -> list[dict[str, Any]]:
        """Pending items with ``seq > cursor`` in seq order (at most ``limit``), as wire objects."""
        where = "seq > ? AND labelled IS NULL"
        args: list[Any] = [cursor]
        if model is not None:
            where += " AND model = ?"
            args.append(model)
        if version is not None:
            where += " AND version = ?"
            args.append(version)
        with self._lock:
            rows = self._con.execute(
                f"SELECT {_COLUMNS} FROM items WHERE {where} ORDER BY seq LIMIT ?", (*args, limit)
            ).fetchall()
        return [as_json(r) for r in rows]

    # ---- review labels -----------------------------------------------------------------------
    def label(
        self, events: Sequence[tuple[str | None, str, tuple[str, str] | None]], now: float, judge: Judge
    ) -> list[ReviewLabel]:
        """Mark the pending items of each (request id, label, model and version or None) labelled,
        and count them by stratum and outcome, in one transaction; returns after COMMIT. A label
        naming no model labels the request id's items of every model version (one human verdict
        on one request); one naming its model, only that model version's."""
        out: list[ReviewLabel] = []
        pending: dict[tuple[str, str], int] = {}

        def work(con: sqlite3.Connection, deltas: dict[tuple[str, ...], int]) -> None:
            for rid, label, model_version in events:
                rows = [] if rid is None or not storable_request_id(rid) else _rows_of(con, rid, model_version)
                fresh = [r for r in rows if r[7] is None]
                if not fresh:
                    status = DUPLICATE if rows else n.REVIEW_NOT_QUEUED
                    deltas[("labels", status)] = deltas.get(("labels", status), 0) + 1
                    out.append(ReviewLabel(status))
                    continue
                outcomes = []
                for seq, model, version, sk, sg, st, decision, _ in fresh:
                    outcome = judge(decision, label)
                    con.execute("UPDATE items SET labelled = ?, outcome = ? WHERE seq = ?", (now, outcome, seq))
                    key = ("labelled", model, version, sk, sg, st, outcome or n.REVIEW_NO_DECISION)
                    deltas[key] = deltas.get(key, 0) + 1
                    pending[(model, version)] = pending.get((model, version), 0) - 1
                    outcomes.append(outcome)
                deltas[("labels", LABELLED)] = deltas.get(("labels", LABELLED), 0) + 1
                out.append(ReviewLabel(LABELLED, tuple(outcomes)))

        with self._lock:
            self._commit(work)
            for (model, version), delta in pending.items():
                self._pending_delta(model, version, delta)
        return out

    # ---- time ------------------------------------------------------------------------------------
    def expire(self, now: float) -> tuple[int, int]:
        """Delete pending items older than ``max_pending_age`` (counted ``expired``) and labelled ones
        older than ``retention``; returns (expired, deleted)."""
        gone: list[tuple[str, str]] = []
        done: list[tuple[Any, ...]] = []

        def work(con: sqlite3.Connection, deltas: dict[tuple[str, ...], int]) -> None:
            gone.extend(
                con.execute(
                    "DELETE FROM items WHERE labelled IS NULL AND queued < ? RETURNING model, version",
                    (now - self.max_pending_age,),
                ).fetchall()
            )
            for model, version in gone:
                key = ("dropped", model, version, n.REVIEW_QUEUE_EXPIRED)
                deltas[key] = deltas.get(key, 0) + 1
            done.extend(
                con.execute(
                    "DELETE FROM items WHERE labelled IS NOT NULL AND labelled < ? RETURNING seq",
                    (now - self.retention,),
                ).fetchall()
            )

        with self._lock:
            if not self._due(now):
                return 0, 0
            self._commit(work)
            for model, version in gone:
                self._pending_delta(model, version, -1)
            self.rows -= len(gone) + len(done)
        return len(gone), len(done)

    def _due(self, now: float) -> bool:
        """Whether any row is old enough to go (two index seeks), so an idle tick writes nothing."""
        pending = self._con.execute(
            "SELECT 1 FROM items WHERE labelled IS NULL AND queued < ? LIMIT 1", (now - self.max_pending_age,)
        ).fetchone()
        done = self._con.execute(
            "SELECT 1 FROM items WHERE labelled IS NOT NULL AND labelled < ? LIMIT 1", (now - self.retention,)
        ).fetchone()
        return pending is not None or done is not None

    def oldest_pending(self) -> dict[tuple[str, str], float]:
        """When the oldest pending item of each model version was queued (one index seek each)."""
        out: dict[tuple[str, str], float] = {}
        with self._lock:
            for model, version in [k for k, v in self.pending.items() if v > 0]:
                row = self._con.execute(
                    "SELECT min(queued) FROM items WHERE model = ? AND version = ? AND labelled IS NULL",
                    (model, version),
                ).fetchone()
                if row is not None and row[0] is not None:
                    out[(model, version)] = float(row[0])
        return out

    def combinations(self) -> set[tuple[str, str, str, str, str]]:
        """(model, version, segment key, segment, stratum) of every item held or counted: what a
        restarted sidecar's combination budget starts from."""
        with self._lock:
            found = set(self._con.execute("SELECT DISTINCT model, version, sk, sg, st FROM items").fetchall())
        found.update(k[1:6] for k in self.counts if k[0] == "labelled")
        return found

    # ---- the webhook's cursor ----------------------------------------------------------------
    @property
    def webhook_cursor(self) -> int:
        with self._lock:
            return int(self._con.execute("SELECT v FROM meta WHERE k = 'webhook_cursor'").fetchone()[0])

    def set_webhook_cursor(self, seq: int) -> None:
        """Persist the webhook's cursor (after a 2xx): a restart resends from here, at least once."""
        with self._lock:
            self._con.execute("UPDATE meta SET v = max(v, ?) WHERE k = 'webhook_cursor'", (int(seq),))

    @property
    def bytes(self) -> int:
        with self._lock:
            pages = self._con.execute("PRAGMA page_count").fetchone()[0]
            size = self._con.execute("PRAGMA page_size").fetchone()[0]
        return int(pages) * int(size)


def _rows_of(con: sqlite3.Connection, rid: str, model_version: tuple[str, str] | None) -> list[Any]:
    """The queued items of one request id (of one model version, when the label names it)."""
    columns = "SELECT seq, model, version, sk, sg, st, decision, labelled FROM items WHERE rid = ?"
    if model_version is None:
        return con.execute(columns, (rid,)).fetchall()
    return con.execute(columns + " AND model = ? AND version = ?", (rid, *model_version)).fetchall()
