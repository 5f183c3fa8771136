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
