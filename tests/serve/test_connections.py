"""Connections that never finish their request head, and more connections than the limit, over real
sockets on 127.0.0.1: the half-sent ones are closed at the header deadline while a normal client is
served, a connection past max_connections is refused at once, and the open-file limit is fitted to
the connection cap (or the service refuses to start, saying why)."""

from __future__ import annotations

import re
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from serve_support import REPO_ROOT_DIR, ThreadServer, free_port, read_response

from recsys.serve.app import create_app
from recsys.serve.settings import ServeSettings

# what a slow or malicious client may have sent when it stops: nothing, part of the request line,
# part of the headers
HALF_HEADS = [b"", b"POST /recomm", b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Ty"]
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def _half_sent(port: int, head: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    if head:
        sock.sendall(head)
    return sock


def _still_open(sock: socket.socket) -> bool:
    """No answer and no end of stream yet (a non-blocking peek)."""
    sock.setblocking(False)
    try:
        return not sock.recv(1, socket.MSG_PEEK)  # b"" = the server closed it
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(15)


def _closed_by_server(metrics: str, reason: str) -> float:
    match = re.search(rf'^recsys_http_connections_closed_total{{reason="{reason}"}} (\S+)$', metrics, re.M)
    return float(match[1]) if match else 0.0


def test_half_sent_heads_are_closed_at_the_deadline_while_a_normal_client_is_served(local_bundle: Path) -> None:
    timeout_s = 4.0
    app = create_app(ServeSettings(model_uri=str(local_bundle), header_timeout_s=timeout_s, max_connections=32))
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=15) as client:
        t0 = time.monotonic()
        halves = [_half_sent(server.port, head) for head in HALF_HEADS * 5]
        # a kept-alive connection: one whole request answered, then half of the next one's head
        kept = _half_sent(server.port, HEALTHZ)
        assert read_response(kept)[0] == 200
        kept.sendall(HALF_HEADS[2])
        for _ in range(3):
            assert client.post("/recommend", json={"user_id": "user1"}).status_code == 200
        assert time.monotonic() - t0 < timeout_s  # (the probe below is only meaningful before the deadline)
        assert all(_still_open(s) for s in [*halves, kept])  # served while they are held

        answers = [read_response(s) for s in [*halves, kept]]
        waited = time.monotonic() - t0
        for s in [*halves, kept]:
            s.close()
        assert 0.9 * timeout_s < waited < timeout_s + 10.0, waited
        for head, (status, raw) in zip([*HALF_HEADS * 5, HALF_HEADS[2]], answers, strict=True):
            if head:  # part of a head arrived: answered 408, then closed
                assert status == 408 and b"did not arrive within 4 s" in raw and b"connection: close" in raw, raw
            else:  # nothing arrived: closed without an answer
                assert raw == b""
        assert client.post("/recommend", json={"user_id": "user2"}).status_code == 200  # still serving
        assert _closed_by_server(client.get("/metrics").text, "header_timeout") == len(answers)


def test_a_connection_past_the_limit_is_refused_at_once(local_bundle: Path) -> None:
    app = create_app(ServeSettings(model_uri=str(local_bundle), header_timeout_s=3.0, max_connections=4))
    with ThreadServer(app) as server:
        held = [_half_sent(server.port, HALF_HEADS[2]) for _ in range(4)]
        time.sleep(0.3)  # the server has taken all four
        t0 = time.monotonic()
        extra = _half_sent(server.port, b"")
        status, raw = read_response(extra)
        extra.close()
        assert status == 503 and b"too many open connections (max_connections=4)" in raw, raw
        assert time.monotonic() - t0 < 2.0  # refused at once, not at the header deadline
        assert [read_response(s)[0] for s in held] == [408] * 4
        for s in held:
            s.close()
        with httpx.Client(base_url=server.url, timeout=15) as client:  # the slots are free again
            assert client.post("/recommend", json={"user_id": "user1"}).status_code == 200
            assert _closed_by_server(client.get("/metrics").text, "max_connections") == 1


def _limit_files(soft: int, hard: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.skipif(resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 1024, reason="needs a hard open-file limit >= 1024")
def test_the_open_file_limit_is_fitted_to_max_connections_or_the_start_refused(local_bundle: Path) -> None:
    fit = "from recsys.serve.server import fit_fd_limit; print(fit_fd_limit(512))"
    raised = subprocess.run(
        [sys.executable, "-c", fit],
        cwd=REPO_ROOT_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: _limit_files(256, 1024),
    )
    assert raised.returncode == 0 and raised.stdout.split()[-1] == "640", raised.stderr  # 512 + 128 reserved

    serve = [sys.executable, "-m", "pipelines.serve", "--model-uri", str(local_bundle), "--port", str(free_port())]
    refused = subprocess.run(
        serve, cwd=REPO_ROOT_DIR, capture_output=True, text=True, timeout=120, preexec_fn=lambda: _limit_files(256, 256)
    )
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1] == (
        "error: max_connections=512 needs about 640 open files, but this process may open 256 (ulimit -n): "
        "lower RECSYS_SERVE_MAX_CONNECTIONS to 128 or less, or raise the limit"
    )
