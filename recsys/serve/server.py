"""The HTTP server around the app: uvicorn with the service's timeouts and connection limits, and a
clean exit on SIGTERM.

uvicorn bounds a request body (the app's body timeout) and an idle keep-alive connection, but not the
time a client takes to send its request line and headers, nor the number of open connections: a
client that opens sockets and sends half a request line would hold them forever, until the process
runs out of file descriptors. `GuardedHttpToolsProtocol` closes a connection whose request head has
not arrived within `header_timeout_s` (408 once part of it has arrived), and refuses connections past
`max_connections` at once (503).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
import signal
import threading
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from recsys.serve.metrics import ServeMetrics
from recsys.serve.settings import ServeSettings

log = logging.getLogger(__name__)

# file descriptors the process needs besides its connections: model and index files, the tracking
# database, logs, the event loop's and the thread pool's own
RESERVED_FDS = 128


class ServiceConfig(uvicorn.Config):
    """uvicorn's config plus what `GuardedHttpToolsProtocol` enforces on every connection."""

    def __init__(self, app: FastAPI, *, settings: ServeSettings, metrics: ServeMetrics, **kwargs: Any) -> None:
        super().__init__(app, http=GuardedHttpToolsProtocol, **kwargs)
        self.header_timeout_s = settings.header_timeout_s
        self.max_connections = settings.max_connections
        self.metrics = metrics


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol (httptools) with a deadline on each request head and a connection cap.

    The head deadline starts when the connection opens, and again when the first byte of a later
    request on it arrives; it ends when the parser has the whole head. Past it the connection is
    closed, with a 408 when part of the head had arrived. While a request runs, the body timeout (the
    app's) and after it the keep-alive timeout take over.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        if not isinstance(config, ServiceConfig):
            raise TypeError(f"{type(self).__name__} needs a ServiceConfig, got {type(config).__name__}")
        self.limits = config
        self._head_deadline: asyncio.TimerHandle | None = None
        self._head_started = False  # a byte of the pending request head has arrived

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._close(503, f"too many open connections (max_connections={self.limits.max_connections})")
            self.limits.metrics.connections_closed.labels("max_connections").inc()
            return
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
        if self._head_deadline is None and (self.cycle is None or self.cycle.response_complete):
            self._arm_head_deadline()  # the first bytes of a new request on a kept-alive connection
        self._head_started = self._head_started or self._head_deadline is not None
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._disarm_head_deadline()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        self._head_deadline = self.loop.call_later(self.limits.header_timeout_s, self._head_deadline_passed)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None
        self._head_started = False

    def _head_deadline_passed(self) -> None:
        started, self._head_deadline = self._head_started, None
        if self.transport.is_closing():
            return
        self.limits.metrics.connections_closed.labels("header_timeout").inc()
        if not started:  # nothing sent at all: nothing to answer
            self.transport.close()
            return
        self._close(408, f"the request line and headers did not arrive within {self.limits.header_timeout_s:g} s")

    def _close(self, status: int, detail: str) -> None:
        """Answer `status` with a JSON `detail` before the request is read, and close the connection."""
        body = json.dumps({"detail": detail}).encode()
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        self.transport.close()


class Server(uvicorn.Server):
    """uvicorn's server, except that a shutdown asked for by SIGTERM or SIGINT ends with status 0.

    uvicorn re-raises the signal once it has shut down, so an orderly stop would read as "killed by
    signal" (exit 143) to supervisors and CI.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def make_server(app: FastAPI, settings: ServeSettings, *, host: str, port: int, log_level: str = "info") -> Server:
    """A server for `app` on host:port with the settings' timeouts and connection limit.

    On SIGTERM it stops accepting connections, lets running requests finish for up to
    `shutdown_timeout_s`, cancels what is left (answered 503), runs the app's shutdown and returns.
    """
    config = ServiceConfig(
        app,
        settings=settings,
        metrics=app.state.metrics,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
        timeout_keep_alive=settings.keep_alive_s,
    )
    return Server(config)


def fit_fd_limit(max_connections: int) -> int:
    """Raise this process's open-file limit (up to its hard limit) so `max_connections` sockets fit.

    Returns the soft limit now in force.

    Args:
        max_connections: the connections the server may hold open at once.

    Raises:
        ValueError: the hard limit is too low; the message names both values.
    """
    needed = max_connections + RESERVED_FDS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise ValueError(
                f"max_connections={max_connections} needs about {needed} open files, but this process may open "
                f"{hard} (ulimit -n): lower RECSYS_SERVE_MAX_CONNECTIONS to {max(hard - RESERVED_FDS, 1)} or less, "
                "or raise the limit"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        log.info("open-file limit raised from %d to %d for max_connections=%d", soft, needed, max_connections)
        soft = needed
    return soft
