"""The app's review client: hands sampled predictions to the sidecar's queue and reads the rates.

The request path only appends to a bounded deque (:meth:`ReviewClient.submit`) and reads the last
rates (:meth:`ReviewClient.rates`); one daemon thread does all the I/O with stdlib ``urllib``
(already loaded by ``import otel_ml``: the app stays light):

- every ``interval`` s it POSTs ``{"items": [...]}`` in batches of ``batch`` to
  ``{url}/v1/review/items``, with a timeout; 5xx (but 507), 429 and connection errors are retried
  with capped exponential backoff and jitter, the batch kept (new items still queue up to the
  buffer); 4xx and 507 (the queue is full of pending work: retrying only floods) drop the batch,
  reported as ``rejected`` to ``on_drop(reason, n)``; 413 first halves the batch;
- every ``refresh`` s it GETs ``{url}/v1/review/rates?model=&version=``. The answer::

      {"default": 0.05,
       "rates": [{"segment_key": "__all__", "segment": "__all__", "stratum": "(0.6,0.63]", "pi": 0.2}, ...]}

  with every ``pi`` a finite number in [0, 1]. Anything else keeps the previous rates (logged
  once per kind of fault).

Fork-safe: a forked child gets an empty buffer and starts its own thread on first use (the
parent's items are the parent's to send). At exit (and when a ``multiprocessing`` child ends,
which skips atexit) the buffer is flushed with a short deadline; what is left is reported as
``send_failed``. Nothing here raises into the caller.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from .._names import ALL, REVIEW_DROP_REJECTED, REVIEW_DROP_SEND_FAILED
from ._exit_hooks import at_exit

__all__ = ["Rates", "ReviewClient", "parse_rates"]

_log = logging.getLogger("otel_ml.review")

_BACKOFF_BASE: Final = 0.5  # s, the first retry's delay
_BACKOFF_CAP: Final = 30.0  # s, the longest wait between retries
_EXIT_DEADLINE: Final = 2.0  # s an exiting process waits for its review items
_RATES_RETRY: Final = 10.0  # s before a failed rates fetch is tried again
_GIVE_UP: Final = frozenset((507,))  # 5xx that are not worth retrying


@dataclass(frozen=True)
class Rates:
    """Inclusion probabilities by (segment_key, segment, stratum label), and the ``default`` for
    strata the sidecar has not seen yet."""

    table: Mapping[tuple[str, str, str], float] = field(default_factory=dict)
    default: float = 1.0

    def pi(self, stratum: str, segment: str = ALL, segment_key: str = ALL) -> float:
        """The inclusion probability of one stratum (``default`` when unknown)."""
        return self.table.get((segment_key, segment, stratum), self.default)


def _probability(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"not a probability in [0, 1]: {value!r}")
    return float(value)


def parse_rates(body: bytes) -> Rates:
    """The rates in a ``GET /v1/review/rates`` answer; ValueError on anything off contract
    (a partly valid answer is refused whole: mixing it with old rates would be neither)."""
    doc = json.loads(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("rates"), list):
        raise ValueError("not an object with a list 'rates'")
    table: dict[tuple[str, str, str], float] = {}
    for entry in doc["rates"]:
        if not isinstance(entry, dict):
            raise ValueError(f"a rate is not an object: {entry!r}")
        key_, segment, stratum = entry.get("segment_key", ALL), entry.get("segment", ALL), entry.get("stratum")
        if not (isinstance(key_, str) and isinstance(segment, str) and isinstance(stratum, str)):
            raise ValueError(f"a rate without string segment_key, segment and stratum: {entry!r}")
        table[(key_, segment, stratum)] = _probability(entry.get("pi"))
    return Rates(table, _probability(doc.get("default", 1.0)))


def _finite(value: Any) -> Any:
    """A JSON-safe copy: non-finite floats become null (the contract's "score: float|null")."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    """``json`` fallback for numpy scalars and arrays (features may hold them)."""
    for method in ("tolist", "item"):  # an array's item() refuses more than one element
        if callable(getattr(value, method, None)):
            return getattr(value, method)()
    return str(value)


def _encode(item: Mapping[str, Any]) -> str | None:
    try:
        return json.dumps(item, allow_nan=False, default=_plain, separators=(",", ":"))
    except ValueError:  # NaN or inf somewhere
        pass
    except Exception:
        return None
    try:
        return json.dumps(_finite(json.loads(json.dumps(item, default=_plain))), allow_nan=False)
    except Exception:
        return None


class ReviewClient:
    """Background sender of review items and poller of review rates (see the module docstring).

    ``url`` is the sidecar's base URL; ``model``/``version`` select the rates; ``token`` is sent
    as a bearer token; ``buffer`` bounds the items held (queued plus one batch awaiting a retry);
    ``batch`` items go in one POST, every ``interval`` s; the rates are fetched every ``refresh``
    s; ``timeout`` bounds each request; ``on_drop(reason, n)`` hears of items lost (``rejected``,
    ``send_failed``; ``buffer_full`` is the caller's to count when :meth:`submit` says False)."""

    def __init__(
        self,
        url: str,
        *,
        model: str,
        version: str,
        token: str | None = None,
        buffer: int = 10_000,
        batch: int = 500,
        interval: float = 1.0,
        refresh: float = 300.0,
        timeout: float = 5.0,
        on_drop: Callable[[str, int], None] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.model, self.version, self.token = model, version, token
        self.buffer, self.batch = max(1, int(buffer)), max(1, int(batch))
        self.interval, self.refresh, self.timeout = float(interval), float(refresh), float(timeout)
        self.on_drop = on_drop
        self.sent = 0  # items the sidecar answered 200 for
        self.failures = 0  # failed attempts (each retried batch counts once per attempt)
        self._rates: Rates | None = None
        self._logged: set[str] = set()
        self._closed = False
        self._reset()
        _clients.add(self)

    def _reset(self) -> None:
        """Fresh state for a new process: the parent's items, thread and retries stay the parent's."""
        self._items: collections.deque[dict[str, Any]] = collections.deque()
        self._held: list[dict[str, Any]] = []  # a batch waiting for its retry
        self._attempt = 0
        self._limit = self.batch
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._start_lock = threading.Lock()
        self._send_lock = threading.Lock()  # the thread and a flush never send the same batch
        self._thread: threading.Thread | None = None

    # --- the request path: no I/O, no locks held for long, never raises ---
    def submit(self, item: dict[str, Any]) -> bool:
        """Queue one review item; False when the buffer (items queued plus a batch held for its
        retry) is full, or the client is closed: the caller counts ``buffer_full``, it is not
        reported to ``on_drop``."""
        try:
            if self._closed or len(self._items) + len(self._held) >= self.buffer:
                return False
            self._items.append(item)
            if self._thread is None:
                self._start()
            return True
        except Exception:
            return False

    def rates(self) -> Rates | None:
        """The rates last fetched (None before the first good answer)."""
        if self._thread is None and not self._closed:
            self._start()
        return self._rates

    def pending(self) -> int:
        """Items queued or held for a retry, not yet accepted by the sidecar."""
        return len(self._items) + len(self._held)

    # --- the thread ---
    def _start(self) -> None:
        try:
            with self._start_lock:
                if self._thread is None and not self._closed:
                    thread = threading.Thread(target=self._run, name="otel-ml-review", daemon=True)
                    thread.start()
                    self._thread = thread
        except Exception:
            self._log_once("thread", "otel-ml: could not start the review client's thread")

    def _run(self) -> None:
        stop, wake = self._stop, self._wake  # this thread's, even if a fork resets the client
        next_rates = time.monotonic()  # rates at once; items after an interval, so they batch
        next_send = next_rates + self.interval
        while not stop.is_set():
            now = time.monotonic()
            try:
                if now >= next_rates:  # a failed fetch is retried sooner: the app starts before its sidecar
                    ok = self._fetch_rates()
                    next_rates = time.monotonic() + (self.refresh if ok else min(self.refresh, _RATES_RETRY))
                if now >= next_send:
                    ok = self._send_all()
                    next_send = time.monotonic() + (self.interval if ok else self._backoff())
            except Exception:  # the thread must outlive any fault, or the buffer only fills
                self._log_once("thread", "otel-ml: the review client's thread hit an error; going on")
                next_rates, next_send = max(next_rates, now + 1.0), max(next_send, now + 1.0)
            wake.wait(max(0.0, min(next_rates, next_send) - time.monotonic()))
            wake.clear()

    def _backoff(self) -> float:
        """Capped exponential backoff with full jitter in [d/2, d]: replicas retrying after one
        sidecar restart spread out instead of arriving together."""
        delay = min(_BACKOFF_CAP, _BACKOFF_BASE * 2.0 ** min(self._attempt - 1, 30))
        return delay * (0.5 + 0.5 * random.random())

    def _next_batch(self) -> list[dict[str, Any]]:
        if self._held:
            return self._held
        out: list[dict[str, Any]] = []
        self._held = out  # filled in place: pending() never misses more than the item in hand
        while self._items and len(out) < self._limit:
            out.append(self._items.popleft())
        return out

    def _send_all(self, deadline: float = math.inf) -> bool:
        """Send batches until the buffer is empty; False after a failure that is worth a retry
        (or when the deadline passes first)."""
        wait = -1.0 if deadline == math.inf else max(0.0, deadline - time.monotonic())
        if not self._send_lock.acquire(timeout=wait):
            return False
        try:
            return self._send_batches(deadline)
        finally:
            self._send_lock.release()

    def _send_batches(self, deadline: float) -> bool:
        while time.monotonic() < deadline:
            batch = self._next_batch()
            if not batch:
                return True
            self._held = batch
            timeout = min(self.timeout, max(0.05, deadline - time.monotonic()))
            status, n = self._post(batch, timeout)
            if status == 200:
                self._held, self._attempt, self.sent = [], 0, self.sent + n
            elif status == 413 and len(batch) > 1:  # too big a body: halve and go on
                self._limit = max(1, len(batch) // 2)
                self._items.extendleft(reversed(batch))
                self._held = []
            elif (status is not None and 400 <= status < 500 and status != 429) or status in _GIVE_UP:
                self._held, self._attempt = [], 0
                self._dropped(REVIEW_DROP_REJECTED, len(batch))
                self._log_once(f"http{status}", f"otel-ml: the sidecar refused review items (HTTP {status})")
            else:
                self.failures += 1
                self._attempt += 1
                return False
        return False

    def _post(self, batch: list[dict[str, Any]], timeout: float) -> tuple[int | None, int]:
        """One POST: the HTTP status (None for a connection error or timeout) and the number of
        items in it (an item JSON cannot encode is dropped as ``rejected`` first)."""
        parts = []
        for item in batch:
            encoded = _encode(item)
            if encoded is None:
                self._dropped(REVIEW_DROP_REJECTED, 1)
                self._log_once("encode", "otel-ml: a review item is not JSON-serialisable; dropped")
            else:
                parts.append(encoded)
        if not parts:
            return 200, 0
        body = ('{"items":[' + ",".join(parts) + "]}").encode()
        request = urllib.request.Request(self.url + "/v1/review/items", data=body, method="POST")
        request.add_header("Content-Type", "application/json")
        return self._status(request, timeout)[0], len(parts)

    def _status(self, request: urllib.request.Request, timeout: float) -> tuple[int | None, bytes]:
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        deadline = time.monotonic() + timeout
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return int(response.status), _read_by(response, deadline)
        except urllib.error.HTTPError as error:
            error.close()
            return int(error.code), b""
        except Exception as error:  # refused, reset, timed out, DNS ...
            self._log_once("connect", f"otel-ml: the review sidecar is unreachable ({error!r}); retrying")
            return None, b""

    def _fetch_rates(self) -> bool:
        """One GET of the rates; False when it failed (the last good rates stay)."""
        query = urllib.parse.urlencode({"model": self.model, "version": self.version})
        request = urllib.request.Request(f"{self.url}/v1/review/rates?{query}", method="GET")
        status, body = self._status(request, self.timeout)
        if status != 200:
            if status is not None:
                self._log_once(f"rates{status}", f"otel-ml: review rates answered HTTP {status}; keeping the last")
            return False
        try:
            self._rates = parse_rates(body)
        except Exception as error:
            self._log_once("rates", f"otel-ml: a bad review rates answer ({error}); keeping the last rates")
            return False
        return True

    def _dropped(self, reason: str, n: int) -> None:
        if self.on_drop is None or n <= 0:
            return
        try:
            self.on_drop(reason, n)
        except Exception:
            self._log_once("on_drop", "otel-ml: the review client's on_drop callback raised")

    def _log_once(self, kind: str, message: str) -> None:
        if kind not in self._logged:
            self._logged.add(kind)
            _log.warning(message)

    # --- flushing, closing, forking ---
    def flush(self, timeout: float = _EXIT_DEADLINE) -> bool:
        """Send what is queued now, from the calling thread; True when nothing is left.
        Not for the request path (it does I/O): for tests, shutdown hooks and exit."""
        deadline = time.monotonic() + max(0.0, timeout)
        try:
            while self.pending() and time.monotonic() < deadline:
                if not self._send_all(deadline):
                    time.sleep(min(self._backoff(), max(0.0, deadline - time.monotonic())))
        except Exception:
            self._log_once("flush", "otel-ml: flushing review items failed")
        return self.pending() == 0

    def close(self, timeout: float = _EXIT_DEADLINE) -> None:
        """Stop the thread and flush with a deadline; what is left is reported as ``send_failed``."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + max(0.0, timeout)
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
        self.flush(max(0.0, deadline - time.monotonic()))
        left = self.pending()
        self._items.clear()
        self._held = []
        self._dropped(REVIEW_DROP_SEND_FAILED, left)


def _read_by(response: Any, deadline: float, limit: int = 1 << 20) -> bytes:
    """The body, read in chunks until ``deadline`` (``urlopen``'s timeout bounds each socket read,
    not the whole answer: a sidecar trickling bytes must not hold the items) and at most 1 MiB."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        if time.monotonic() > deadline:
            raise TimeoutError("the answer took longer than the timeout")
        chunk = response.read1(min(65536, limit - size))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
    raise ValueError("the answer is larger than 1 MiB")


_clients: weakref.WeakSet[ReviewClient] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for client in list(_clients):
        client._reset()


def _close_all() -> None:
    """At exit: every client's flush shares one deadline, so many monitors cannot add up to more
    than a termination grace period allows."""
    deadline = time.monotonic() + _EXIT_DEADLINE
    for client in list(_clients):
        client.close(max(0.0, deadline - time.monotonic()))


os.register_at_fork(after_in_child=_after_fork_in_child)
at_exit(_close_all)
