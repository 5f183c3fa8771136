"""Shutdown and timeouts over real HTTP, with the server in its own process: SIGTERM lets requests in
flight finish and exits 0; a client that stalls mid-upload delays the exit by at most the
graceful-shutdown timeout, and on its own gets a 408 after the body timeout."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from serve_support import ServerProcess, ThreadServer, open_upload, read_response

from recsys.serve.app import create_app
from recsys.serve.settings import ServeSettings

JSON = {"content-type": "application/json"}
BODY = json.dumps({"user_id": "user3", "history": ["it01", "it02"], "k": 5}).encode()


class Load:
    """Closed-loop workers posting /recommend; each records an HTTP status or the transport error's type."""

    def __init__(self, url: str, workers: int = 4) -> None:
        self.url = url
        self.stop = threading.Event()
        self.results: list[tuple[float, int | str]] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(workers)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30.0) as client:
            while not self.stop.is_set():
                try:
                    outcome: int | str = client.post("/recommend", content=BODY, headers=JSON).status_code
                except httpx.TransportError as err:  # the server has closed its socket: expected after SIGTERM
                    outcome = type(err).__name__
                    time.sleep(0.05)
                self.results.append((time.monotonic(), outcome))

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


@pytest.mark.slow
def test_sigterm_under_load_lets_requests_in_flight_finish_and_exits_0(local_bundle: Path, tmp_path: Path) -> None:
    with ServerProcess(str(local_bundle), tmp_path / "server.log", shutdown_timeout_s=10) as server:
        with Load(server.url) as load:
            time.sleep(1.0)
            half = open_upload(server.port, BODY, len(BODY) // 2)  # a request in flight: half its body sent
            time.sleep(0.3)
            signalled = time.monotonic()
            server.proc.send_signal(15)
            time.sleep(0.5)
            half.sendall(BODY[len(BODY) // 2 :])  # the rest arrives after the signal
            status, raw = read_response(half)
            half.close()
            code = server.proc.wait(30)
            exited = time.monotonic()
    assert status == 200 and b'"items"' in raw, raw[:300]
    assert code == 0, (tmp_path / "server.log").read_text()[-2000:]
    assert exited - signalled < 5.0  # nothing stalled: no need to wait out the 10 s timeout
    before = [o for t, o in load.results if t < signalled]
    after = [o for t, o in load.results if t >= signalled]
    assert len(before) > 10 and set(before) == {200}
    # after the signal: answers still in flight come back 200; new connections are refused
    assert {o for o in after if isinstance(o, int)} <= {200}, after
    assert "Traceback" not in (tmp_path / "server.log").read_text()


@pytest.mark.slow
def test_a_stalled_upload_delays_sigterm_by_at_most_the_shutdown_timeout(local_bundle: Path, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with ServerProcess(str(local_bundle), log, shutdown_timeout_s=2, body_timeout_s=120) as server:
        stalled = open_upload(server.port, BODY, 1)  # headers and one byte, then nothing
        time.sleep(0.5)
        code, waited = server.stop(timeout_s=30)
        status, raw = read_response(stalled)
        stalled.close()
    assert code == 0, log.read_text()[-2000:]
    assert 1.5 < waited < 2.0 + 6.0, waited  # the timeout, plus the app's shutdown and interpreter exit
    assert "timeout graceful shutdown exceeded" in log.read_text()
    assert status == 503 and b"the server shut down before the request finished" in raw, raw  # the JSON body
    assert "Exception in ASGI application" not in log.read_text()


def test_a_request_cancelled_by_the_shutdown_timeout_gets_a_json_503(local_bundle: Path) -> None:
    app = create_app(ServeSettings(model_uri=str(local_bundle), shutdown_timeout_s=0.5, body_timeout_s=60))
    with ThreadServer(app) as server:
        stalled = open_upload(server.port, BODY, 1)
        time.sleep(0.3)
        t0 = time.monotonic()
    # leaving the block shut the server down: it waited shutdown_timeout_s for the stalled upload, then cancelled it
    status, raw = read_response(stalled)
    stalled.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert status == 503 and b"content-type: application/json" in head.lower(), raw
    assert json.loads(body) == {"detail": "the server shut down before the request finished; retry"}
    assert time.monotonic() - t0 < 10.0
    metrics = app.state.metrics.render().decode()
    assert 'recsys_http_requests_total{method="POST",route="/recommend",status="503"} 1.0' in metrics


def test_a_stalled_upload_gets_408_after_the_body_timeout(local_bundle: Path) -> None:
    app = create_app(ServeSettings(model_uri=str(local_bundle), body_timeout_s=0.5))
    with ThreadServer(app) as server:
        sock = open_upload(server.port, BODY, 3)
        t0 = time.monotonic()
        status, raw = read_response(sock)
        sock.close()
        assert status == 408 and b"did not arrive within 0.5 s" in raw and b"connection: close" in raw.lower()
        assert 0.4 < time.monotonic() - t0 < 5.0
        # a whole body, sent slowly but within the time, is served
        sock = open_upload(server.port, BODY, 5)
        time.sleep(0.2)
        sock.sendall(BODY[5:])
        status, raw = read_response(sock)
        sock.close()
        assert status == 200, raw[:300]
        assert httpx.get(f"{server.url}/healthz").status_code == 200
