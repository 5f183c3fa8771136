"""Pure ASGI middlewares: request metrics plus a catch-all 500, and a request body size and time limit."""

from __future__ import annotations

import asyncio
import json
import logging
import time

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recsys.serve.metrics import ServeMetrics

log = logging.getLogger(__name__)

INTERNAL_ERROR = b'{"detail":"internal server error"}'
SHUT_DOWN = b'{"detail":"the server shut down before the request finished; retry"}'


class GuardMiddleware:
    """Outermost layer: times every request, counts it by route template and status, and turns any
    exception that escapes the app into a generic 500 (logged here; no stack trace reaches the client).

    A request still running when the graceful shutdown times out is cancelled by the server; it is
    answered 503 here (uvicorn would send a plain-text 500).
    """

    def __init__(self, app: ASGIApp, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = int(message["status"]), True
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except asyncio.CancelledError:  # only the server cancels a request's task: the shutdown timeout
            log.warning("%s %s cancelled: the shutdown timeout passed", scope.get("method"), scope.get("path"))
            status = 503
            if started:
                raise
            # answered, and not re-raised: uvicorn would log the expected cancellation as an app error
            await _send_json(send, 503, SHUT_DOWN, close=True)
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            self.metrics.errors.labels(_route(scope)).inc()
            status = 500
            if started:  # headers are gone: the server closes the connection
                raise
            await _send_json(send, 500, INTERNAL_ERROR)
        finally:
            self.metrics.observe(_route(scope), str(scope.get("method", "")), status, time.perf_counter() - start)


class BodyTooLarge(HTTPException):
    """Raised from `receive` once the body passes the limit; FastAPI answers it as a 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            status_code=413,
            detail=f"request body is larger than the limit of {limit} bytes",
            headers={"Connection": "close"},  # the rest of the body is never read
        )


class BodyTimeout(HTTPException):
    """Raised from `receive` when the body has not fully arrived in time; answered as a 408."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            status_code=408,
            detail=f"the request body did not arrive within {timeout_s:g} s",
            headers={"Connection": "close"},
        )


class BodyLimitMiddleware:
    """413 for a body over `max_bytes`: by its Content-Length up front, and by counting what arrives
    (chunked uploads, or a Content-Length that lies). 408 when the whole body has not arrived within
    `timeout_s` of the first read: a client that stalls mid-upload cannot hold a request open."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _send_json(send, 413, _detail(BodyTooLarge(self.max_bytes)), close=True)
            return
        received = 0
        body_done = False
        deadline: float | None = None
        started = False

        async def limited_receive() -> Message:
            nonlocal received, body_done, deadline
            if body_done:  # later reads wait for the disconnect: no deadline
                return await receive()
            loop = asyncio.get_running_loop()
            deadline = deadline or loop.time() + self.timeout_s
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
            except TimeoutError:
                raise BodyTimeout(self.timeout_s) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, send_tracked)
        except (BodyTooLarge, BodyTimeout) as err:  # read outside FastAPI's request parsing
            if started:
                raise
            await _send_json(send, err.status_code, _detail(err), close=True)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _route(scope: Scope) -> str:
    """The matched route template (bounded label values); unmatched paths share one label."""
    route = scope.get("route")
    return str(getattr(route, "path", "unmatched"))


def _detail(err: HTTPException) -> bytes:
    return json.dumps({"detail": err.detail}).encode()


async def _send_json(send: Send, status: int, body: bytes, *, close: bool = False) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
