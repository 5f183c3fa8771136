"""The HTTP server around the app: uvicorn with the service's timeouts, and a clean exit on SIGTERM."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from recsys.serve.settings import ServeSettings


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
    """A server for `app` on host:port with the settings' shutdown and keep-alive timeouts.

    On SIGTERM it stops accepting connections, lets running requests finish for up to
    `shutdown_timeout_s`, cancels what is left, runs the app's shutdown and returns.
    """
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=settings.shutdown_timeout_s,  # type: ignore[arg-type]  # a float works
        timeout_keep_alive=settings.keep_alive_s,  # type: ignore[arg-type]
    )
    return Server(config)
