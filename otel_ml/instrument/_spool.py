"""The skew capture spool: encoded rows go to disk on a daemon thread, never on the request path.

A call hands the spool one JSON line (``put``: a length check and an enqueue); the writer thread
drains what is queued and writes it with one ``os.write`` to the open file. There is no Python
buffer in between, so a process killed with SIGKILL loses only the queue, and the next process
to start a spool in the directory finishes its open file (cut at its last whole line). A file is
written as ``.capture-*.jsonl.open`` and renamed to its finished name (``_capture_format``) when it
reaches ``file_bytes``, after ``file_seconds``, at ``close`` and at exit: a reader never sees half
a file. After each rename the oldest finished files of the directory are deleted until the
directory holds at most ``max_bytes``, their rows counted as dropped (``evicted``).

A write the disk refuses (full, read-only) counts its rows as ``write_error``, cuts the file back
to its last whole line and finishes it, so what was written stays readable. A forked child starts
with an empty queue and no file (the parent's stays the parent's).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from queue import Empty, SimpleQueue
from typing import Any, Final

from .. import _names as n
from .._capture_format import OPEN_SUFFIX, CaptureFile, capture_files, encode_line, finished_name, open_name
from ._exit_hooks import at_exit

__all__ = ["Spool", "SpoolLimits"]

_log = logging.getLogger("otel_ml")
_STOP: Any = object()
_EXIT_SECONDS: Final = 2.0  # the most the interpreter's exit waits for a spool to write its queue
_live: weakref.WeakSet[Spool] = weakref.WeakSet()


class SpoolLimits:
    """How big a spool, its files and its queue may grow (validated once, at the monitor's start)."""

    __slots__ = ("file_bytes", "file_seconds", "max_bytes", "max_record_bytes", "queue_size")

    def __init__(
        self, *, max_bytes: int, file_bytes: int, file_seconds: float, max_record_bytes: int, queue_size: int
    ) -> None:
        if not 4096 <= file_bytes <= max_bytes // 2:
            raise ValueError(
                f"Capture(file_bytes={file_bytes}, max_bytes={max_bytes}): a file holds at least 4 KiB "
                "and at most half the spool, so rotation keeps at least one finished file"
            )
        if not 1.0 <= file_seconds <= 86400.0:
            raise ValueError(f"Capture(file_seconds={file_seconds!r}): between 1 s and a day")
        if not 256 <= max_record_bytes:
            raise ValueError(f"Capture(max_record_bytes={max_record_bytes}): at least 256 bytes")
        if not 1 <= queue_size <= 1_000_000:
            raise ValueError(f"Capture(queue_size={queue_size}): between 1 and 1,000,000 rows")
        self.max_bytes = max_bytes
        self.file_bytes = file_bytes
        self.file_seconds = float(file_seconds)
        self.max_record_bytes = min(max_record_bytes, file_bytes)  # a row never outgrows its file
        self.queue_size = queue_size


class _OpenFile:
    """The file being written: its descriptor, names, size and rows."""

    __slots__ = ("fd", "name", "opened", "rows", "seq", "size", "started")

    def __init__(self, fd: int, name: str, started: str, seq: int, size: int) -> None:
        self.fd = fd
        self.name = name
        self.started = started
        self.seq = seq
        self.size = size  # bytes known written: what a failed write is cut back to
        self.rows = 0
        self.opened = time.monotonic()


class Spool:
    """One monitor's capture files in ``directory``, written by one daemon thread per process."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        header: Callable[[], dict[str, Any]],
        limits: SpoolLimits,
        on_written: Callable[[int, int], None],
        on_dropped: Callable[[str, int], None],
    ) -> None:
        self.directory = Path(directory)
        self._warned: set[str] = set()
        self._make_directory()  # a refusal is the disk's, counted as write_error, never the app's start
        self.limits = limits
        self._header = header  # the file's first line, made when a file opens (pid, time)
        self._on_written = on_written
        self._on_dropped = on_dropped
        self._closed = False
        self._reset()
        _live.add(self)

    def _reset(self) -> None:
        """Fresh state: no queue, file or thread (at start and in a forked child, whose copy of the
        lock may be held by a thread that does not exist there)."""
        self._lock = threading.Lock()
        self._queue: SimpleQueue[Any] = SimpleQueue()
        self._thread: threading.Thread | None = None
        self._file: _OpenFile | None = None
        self._nonce = secrets.token_hex(4)
        self._seq = 0
        self._recovered = False

    # -- the request path ---------------------------------------------------------------------------
    def put(self, line: bytes) -> None:
        """Queue one encoded row; drop it (counted) when too large or when the writer is behind."""
        if self._closed:
            return
        if len(line) > self.limits.max_record_bytes:
            self._on_dropped(n.CAPTURE_DROP_TOO_LARGE, 1)
            return
        if self._queue.qsize() >= self.limits.queue_size:
            self._on_dropped(n.CAPTURE_DROP_QUEUE_FULL, 1)
            return
        if self._thread is None:
            self._start()
        self._queue.put(line)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None and not self._closed:
                thread = threading.Thread(target=_work, args=(weakref.ref(self), self._queue), daemon=True)
                thread.name = "otel-ml-capture"
                thread.start()
                self._thread = thread

    # -- the writer thread ----------------------------------------------------------------------------
    def _wait_seconds(self) -> float:
        """How long the writer may block: until the open file is due for rotation, else a while."""
        f = self._file
        if f is None:
            return 60.0
        return max(0.05, f.opened + self.limits.file_seconds - time.monotonic())

    def _write(self, lines: list[bytes]) -> None:
        """Write drained rows, one ``os.write`` per file they fill, and rotate when due."""
        if not self._recovered:
            self._recovered = True
            self._recover_orphans()
        start = 0
        while start < len(lines):
            f = self._file or self._open()
            if f is None:
                self._on_dropped(n.CAPTURE_DROP_WRITE_ERROR, len(lines) - start)
                return
            end, size = start, f.size
            while end < len(lines) and (end == start or size + len(lines[end]) <= self.limits.file_bytes):
                size += len(lines[end])
                end += 1
            if not self._append(f, lines[start:end]):
                if end < len(lines):  # the rest of the drained rows: the disk just said no
                    self._on_dropped(n.CAPTURE_DROP_WRITE_ERROR, len(lines) - end)
                return
            start = end
            if f.size + (len(lines[end]) if end < len(lines) else 0) > self.limits.file_bytes:
                self._finish()
        f = self._file
        if f is not None and time.monotonic() - f.opened >= self.limits.file_seconds:
            self._finish()

    def _append(self, f: _OpenFile, chunk: list[bytes]) -> bool:
        """One ``os.write`` of rows; the disk's refusal counts them (and cuts the file back)."""
        data = b"".join(chunk)
        try:
            _write_all(f.fd, data)
        except OSError as exc:
            self._warn("write", f"cannot write to {self.directory} ({exc}); rows counted as write_error")
            self._on_dropped(n.CAPTURE_DROP_WRITE_ERROR, len(chunk))
            self._cut_back(f)
            self._finish()
            return False
        f.size += len(data)
        f.rows += len(chunk)
        self._on_written(len(chunk), len(data))
        return True

    def _open(self) -> _OpenFile | None:
        """A new open file with its header line; ``None`` (logged) when the directory refuses."""
        now = time.time()
        started = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now * 1000) % 1000:03d}Z"
        self._seq += 1
        name = open_name(started, os.getpid(), self._nonce, self._seq)
        head = encode_line(self._header())
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
        try:
            try:
                fd = os.open(self.directory / name, flags, 0o600)
            except FileNotFoundError:  # the directory was deleted (a cleaner, an operator): make it again
                self._make_directory()
                fd = os.open(self.directory / name, flags, 0o600)
        except OSError as exc:
            self._warn("open", f"cannot create a capture file in {self.directory} ({exc})")
            return None
        try:
            _write_all(fd, head)
        except OSError as exc:
            os.close(fd)
            _remove(self.directory / name)
            self._warn("write", f"cannot write to {self.directory} ({exc}); rows counted as write_error")
            return None
        self._on_written(0, len(head))
        self._file = _OpenFile(fd, name, started, self._seq, len(head))
        return self._file

    def _make_directory(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._warn("directory", f"cannot make the capture directory {self.directory} ({exc})")

    def _cut_back(self, f: _OpenFile) -> None:
        """After a failed write: the file ends at its last whole row again."""
        try:
            os.ftruncate(f.fd, f.size)
        except OSError:
            pass

    def _finish(self) -> None:
        """Close the open file and give it its finished name (a file with no rows is removed)."""
        f, self._file = self._file, None
        if f is None:
            return
        try:
            os.fsync(f.fd)
        except OSError:
            pass
        os.close(f.fd)
        path = self.directory / f.name
        if f.rows == 0:
            _remove(path)
            return
        final = finished_name(f.started, os.getpid(), self._nonce, f.seq, f.rows)
        try:
            os.replace(path, self.directory / final)
        except OSError as exc:
            self._warn("rename", f"cannot finish {path} ({exc}); it is recovered at the next start")
            return
        self._evict()

    def _evict(self) -> None:
        """Delete the oldest finished files until they and this writer's next file (``file_bytes``:
        it grows on top of them until the next eviction) fit ``max_bytes`` (rows counted)."""
        try:
            files = _eviction_order(capture_files(self.directory), time.time())
        except OSError:
            return
        sizes = [_size(f.path) for f in files]
        total = sum(sizes) + (self._file.size if self._file is not None else self.limits.file_bytes)
        for f, size in zip(files, sizes):
            if total <= self.limits.max_bytes:
                break
            try:
                f.path.unlink()
            except FileNotFoundError:  # another process evicted it first: its rows are its count
                total -= size
                continue
            except OSError:
                break
            total -= size
            self._on_dropped(n.CAPTURE_DROP_EVICTED, f.records)

    def _recover_orphans(self) -> None:
        """Finish the open files of processes that died (kill -9, OOM): cut to their last whole row."""
        try:
            entries = [e for e in os.scandir(self.directory) if e.name.endswith(OPEN_SUFFIX)]
        except OSError:
            return
        stale = time.time() - 2 * self.limits.file_seconds - 60.0
        for entry in entries:
            parts = entry.name[len(".capture-") : -len(OPEN_SUFFIX)].split("-")
            if len(parts) != 4 or not parts[1].isdigit():
                continue
            started, pid, nonce, seq = parts[0], int(parts[1]), parts[2], parts[3]
            try:
                # a pid means something only on this host: another replica's writer on a shared
                # volume is taken for alive until its file has not changed for a while
                here = _written_here(Path(entry.path))
                alive = (_alive(pid, nonce) if here else True) and entry.stat().st_mtime > stale
            except OSError:
                continue
            if not alive and seq.isdigit():
                _recover(Path(entry.path), started, pid, nonce, int(seq))

    def _warn(self, what: str, message: str) -> None:
        if what not in self._warned:
            self._warned.add(what)
            _log.error("otel-ml: capture: %s", message)

    # -- stopping ----------------------------------------------------------------------------------
    def close(self, timeout: float = _EXIT_SECONDS) -> None:
        """Write what is queued, finish the open file and stop the writer (``ModelMonitor.close``, exit)."""
        self._closed = True
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(_STOP)
            thread.join(timeout)
        elif self._file is not None:
            self._finish()


def _work(ref: weakref.ReferenceType[Spool], queue: SimpleQueue[Any]) -> None:
    """The writer: drain the queue, write, rotate; stops at ``_STOP`` or when the spool is gone."""
    while True:
        spool = ref()
        if spool is None:
            return
        wait = spool._wait_seconds()
        del spool
        try:
            first = queue.get(timeout=wait)
        except Empty:
            first = None
        lines: list[bytes] = []
        stop = first is _STOP
        if first is not None and not stop:
            lines.append(first)
        while not stop and len(lines) < 4096:
            try:
                item = queue.get_nowait()
            except Empty:
                break
            stop = item is _STOP
            if not stop:
                lines.append(item)
        spool = ref()
        if spool is None:
            return
        try:
            spool._write(lines)
            if stop:
                spool._finish()
        except Exception as exc:  # never let the writer die silently: count the rows and go on
            spool._on_dropped(n.CAPTURE_DROP_WRITE_ERROR, len(lines))
            spool._warn("crash", f"the writer failed ({exc!r}); rows counted as write_error")
        if stop:
            return
        del spool


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # evicted by another process since it was listed
        return 0


_CLOCK_SLACK: Final = 60.0  # seconds a file's start may lie ahead of this clock (another host's)


def _eviction_order(files: list[CaptureFile], now: float) -> list[CaptureFile]:
    """Oldest first, by the start time in the names; a file that starts in the future was written
    before the clock stepped back (or by a host whose clock runs ahead), so it goes first: sorted by
    name it would outlive every new file, and the cap would delete each new file as it finishes."""
    ahead = now + _CLOCK_SLACK
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(ahead)) + f"{int(ahead * 1000) % 1000:03d}Z"
    future = [f for f in files if f.path.name[len("capture-") : len("capture-") + len(stamp)] > stamp]
    if not future:
        return files
    first = set(future)
    return future + [f for f in files if f not in first]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _alive(pid: int, nonce: str) -> bool:
    """Whether the writer of a file may still be writing it: a spool of this process (a restarted
    container often gets its predecessor's pid: the nonce tells them apart), or a live pid."""
    if pid == os.getpid():
        return nonce in {spool._nonce for spool in list(_live)}
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _written_here(path: Path) -> bool:
    """Whether an open file's header names this host (an unreadable header: assume so)."""
    with open(path, "rb") as fh:
        first = fh.readline(64 * 1024)
    try:
        host = json.loads(first).get("host")
    except (ValueError, AttributeError):
        return True
    return not isinstance(host, str) or host == HOST


def _recover(path: Path, started: str, pid: int, nonce: str, seq: int) -> None:
    """Claim a dead writer's open file (an atomic rename: one recoverer wins), cut it at its last
    newline and finish it; a file with no whole row is removed."""
    claimed = path.with_name(path.name + f".{os.getpid()}-{secrets.token_hex(2)}.recovering")
    try:
        os.replace(path, claimed)
    except OSError:
        return  # another process claimed it
    try:
        data = claimed.read_bytes()
        end = data.rfind(b"\n") + 1
        rows = max(0, data.count(b"\n", 0, end) - 1)  # the header is not a row
        if rows == 0:
            claimed.unlink()
            return
        with open(claimed, "r+b") as fh:
            fh.truncate(end)
            os.fsync(fh.fileno())
        os.replace(claimed, path.with_name(finished_name(started, pid, nonce, seq, rows)))
        _log.warning("otel-ml: capture: finished %s of a process that died (%d rows)", path.name, rows)
    except OSError as exc:
        _log.error("otel-ml: capture: cannot recover %s (%s)", claimed, exc)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _host() -> str:
    try:
        return socket.gethostname()
    except OSError:
        return ""


HOST: Final = _host()


def _after_fork_in_child() -> None:
    for spool in list(_live):
        f = spool._file
        if f is not None:
            try:
                os.close(f.fd)  # the child's copy only: the parent goes on writing its file
            except OSError:
                pass
        spool._reset()


def _close_all() -> None:
    deadline = time.monotonic() + _EXIT_SECONDS
    for spool in list(_live):
        spool.close(max(0.0, deadline - time.monotonic()))


os.register_at_fork(after_in_child=_after_fork_in_child)
at_exit(_close_all, priority=101)  # before the counters' flush: closing counts the last rows
