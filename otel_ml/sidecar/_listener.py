"""The sidecar's listening sockets, served by uvicorn on one asyncio loop in one thread.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) and bounds a request's
header block (``h11_max_incomplete_event_size``), but gives a connection that never finishes
its headers all the time in the world. :class:`_Protocol` adds that deadline: a connection has
``read_timeout`` seconds to deliver complete request headers, counted from its accept or from
the end of its previous response, however slowly the bytes trickle in (slowloris). The body
has its own deadline in the application, which can still answer with a 400. A client that
half-closes after a short body gets that 400 too instead of a silently dropped connection.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import h11
from uvicorn import Config, Server
from uvicorn.protocols.http.h11_impl import H11Protocol

from ._throttle import Throttle

__all__ = ["Listeners", "bind", "BACKLOG", "RateLimitFilter"]

BACKLOG = 1024  # pending connections the kernel queues before accept (Linux caps it at somaxconn)
_TIMEOUT_RESPONSE = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class RateLimitFilter(logging.Filter):
    """Pass each distinct message template at most once per ``interval`` seconds."""

    def __init__(self, interval: float = 60.0) -> None:
        super().__init__()
        self._throttle = Throttle(interval)

    def filter(self, record: logging.LogRecord) -> bool:
        return self._throttle.allow(str(record.msg))


_server_log = logging.getLogger("otel_ml.sidecar.http")
_server_log.addFilter(RateLimitFilter())


def bind(address: tuple[str, int]) -> socket.socket:
    """A listening TCP socket; raises OSError (port taken, no such address) in the caller."""
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=BACKLOG)


class _Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request-header deadline and a 400 for half-closed bodies."""

    read_timeout: float  # set by Listeners on the subclass it makes
    on_error: Callable[[str], None] = staticmethod(lambda reason: None)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.logger = _server_log
        self._deadline: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.read_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # asyncio sets TCP_NODELAY only on sockets created with proto=IPPROTO_TCP, which a socket
            # bound by hand is not; without it the body, a second write, waits 40 ms for a delayed ACK
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE and self.cycle is not None and not self.cycle.response_complete:
            self._disarm()  # headers complete: the application reads the body under its own deadline

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
            return
        if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
            self.on_error("header_timeout")
            self.logger.warning("closed a connection that did not send its request headers in time")
            self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()

    def eof_received(self) -> bool | None:  # type: ignore[override]
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and cycle.more_body:
            cycle.more_body = False  # the body ends here: the application sees it is short and answers 400
            cycle.message_event.set()
            return True  # keep our half open for that answer
        return None

    def send_400_response(self, msg: str) -> None:
        self.on_error("malformed_http")
        super().send_400_response(msg)


class Listeners:
    """Serve one ASGI app per bound socket until :meth:`stop`; all on one event loop thread."""

    def __init__(
        self,
        apps: Sequence[tuple[socket.socket, Any]],
        *,
        read_timeout: float,
        on_error: Callable[[str], None],
        keep_alive: float = 5.0,
    ) -> None:
        protocol = type(
            "SidecarProtocol", (_Protocol,), {"read_timeout": read_timeout, "on_error": staticmethod(on_error)}
        )
        self._sockets = [sock for sock, _ in apps]
        self._servers = [
            Server(
                Config(
                    app,
                    http=protocol,
                    lifespan="off",
                    log_config=None,
                    access_log=False,
                    server_header=False,
                    timeout_keep_alive=int(keep_alive),
                    timeout_graceful_shutdown=3,
                    backlog=BACKLOG,
                    h11_max_incomplete_event_size=16 * 1024,
                )
            )
            for _, app in apps
        ]
        self._thread = threading.Thread(target=self._run, name="otel-ml-http", daemon=True)

    def _run(self) -> None:
        async def serve() -> None:
            await asyncio.gather(*(s.serve(sockets=[sock]) for s, sock in zip(self._servers, self._sockets)))

        asyncio.run(serve())

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not all(s.started for s in self._servers):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise OSError("the HTTP listeners did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        for server in self._servers:
            server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        for sock in self._sockets:
            sock.close()
