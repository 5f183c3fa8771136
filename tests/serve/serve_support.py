"""Helpers behind tests/serve/conftest.py (a unique module name: every test dir has a conftest)."""

from __future__ import annotations

import csv
import json
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI

from recsys.data import schema as S
from recsys.serve.server import make_server

REPO_ROOT_DIR = Path(__file__).resolve().parents[2]
N_USERS, N_ITEMS, SEQ_LEN = 48, 40, 12
MODEL_NAME = "tiny"


@dataclass(frozen=True)
class TrainedRun:
    tracking_uri: str
    run_id: str
    data_dir: Path
    root: Path


def write_log(root: Path) -> tuple[Path, Path]:
    """Planted pattern: every user walks the item ring it00 -> it01 -> ... from a user-specific start."""
    log_path, items_path = root / "log.csv", root / "items.csv"
    with log_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user", "item", "timestamp"])
        for u in range(N_USERS):
            for t in range(SEQ_LEN):
                w.writerow([f"user{u}", f"it{(u * 7 + t) % N_ITEMS:02d}", 1000 * u + t])
    with items_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item", "title"])
        for i in range(N_ITEMS):
            w.writerow([f"it{i:02d}", f"Title of item {i}"])
    return log_path, items_path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_local_bundle(root: Path) -> Path:
    """A bundle directory (no registry) of a seeded, untrained SASRec over the `write_log` catalog:
    for tests of the HTTP surface, where what the model ranks first does not matter."""
    import torch

    from recsys.config import from_dict
    from recsys.data.config import DataConfig
    from recsys.data.etl import run_etl
    from recsys.model_io import save_model
    from recsys.registry import build_model
    from recsys.retrieval.bundle import write_bundle
    from recsys.retrieval.index import IndexConfig

    log_path, items_path = write_log(root)
    data_cfg = {
        "name": "tiny-local",
        "output_dir": str(root / "processed"),
        "source": {
            "format": "csv",
            "path": str(log_path),
            "id_type": "str",
            "items": {"path": str(items_path), "format": "csv", "id_column": "item", "text_columns": ["title"]},
        },
    }
    run_etl(from_dict(DataConfig, data_cfg))
    n_items = int(json.loads((root / "processed" / S.META_FILE).read_text())["n_items"])
    params = {"max_len": 8, "hidden": 16, "n_layers": 1, "n_heads": 2}
    with torch.random.fork_rng():  # seeded without touching the global generator
        torch.manual_seed(0)
        model = build_model("sasrec", params, n_items).eval()
    save_model(model, "sasrec", params, n_items, root / "model")
    with torch.no_grad():
        emb = model.item_embeddings().numpy()
    bundle = root / "bundle"
    write_bundle(
        bundle,
        model_dir=root / "model",
        item_emb=emb,
        data_dir=root / "processed",
        index_config=IndexConfig(kind="flat"),
        name=MODEL_NAME,
        source_run_id=None,
    )
    return bundle


class ThreadServer:
    """The service's server (recsys.serve.server) on 127.0.0.1:<free port> in a background thread."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = make_server(app, app.state.settings, host="127.0.0.1", port=self.port, log_level="warning")
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


class ServerProcess:
    """`python -m pipelines.serve` in a subprocess on 127.0.0.1:<free port>, as an operator runs it."""

    def __init__(self, model_uri: str, log_path: Path, **settings: object) -> None:
        import os
        import subprocess
        import sys

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, **{f"RECSYS_SERVE_{k.upper()}": str(v) for k, v in settings.items()}}
        cmd = [sys.executable, "-m", "pipelines.serve", "--model-uri", model_uri, "--port", str(self.port)]
        self.log = log_path.open("w")
        self.proc = subprocess.Popen(
            [*cmd, "--log-level", "info"], cwd=REPO_ROOT_DIR, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def __enter__(self) -> ServerProcess:
        from pipelines.serve_demo import wait_ready

        wait_ready(self.url, self.proc, timeout_s=180)
        return self

    def stop(self, timeout_s: float = 60.0) -> tuple[int, float]:
        """SIGTERM, then wait: (exit status, seconds from the signal to the exit)."""
        import signal

        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout_s)
        return code, time.monotonic() - t0

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def open_upload(port: int, body: bytes, sent: int) -> socket.socket:
    """A raw connection that has sent the headers of `POST /recommend` with `body` and its first `sent` bytes."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        f"POST /recommend HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock.sendall(head + body[:sent])
    return sock


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """(status, raw response) read until the server closes the connection or sends a whole response."""
    data = b""
    while b"\r\n\r\n" not in data or len(data) < _expected_length(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else -1
    return status, data


def _expected_length(data: bytes) -> int:
    head, _, _ = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + 4 + int(value)
    return len(data) + 1  # unknown: read until the server closes
