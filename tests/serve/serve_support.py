"""Helpers behind tests/serve/conftest.py (a unique module name: every test dir has a conftest)."""

from __future__ import annotations

import csv
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI

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


class ThreadServer:
    """uvicorn on 127.0.0.1:<free port> in a background thread."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
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
