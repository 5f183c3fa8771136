"""A tiny SASRec trained for real (a few epochs on a planted-pattern log), exported to a temporary MLflow
registry, and a real uvicorn server on 127.0.0.1 serving it."""

from __future__ import annotations

import csv
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
import yaml
from fastapi import FastAPI

from recsys.config import from_dict
from recsys.retrieval.export import export_run
from recsys.retrieval.index import IndexConfig
from recsys.serve.app import create_app
from recsys.serve.settings import ServeSettings
from recsys.train.experiment import ExperimentConfig
from recsys.train.run import train_experiment

REPO_ROOT_DIR = Path(__file__).resolve().parents[2]
N_USERS, N_ITEMS, SEQ_LEN = 48, 40, 12
MODEL_NAME = "tiny"


@dataclass(frozen=True)
class TrainedRun:
    tracking_uri: str
    run_id: str
    data_dir: Path
    root: Path


def _write_log(root: Path) -> tuple[Path, Path]:
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


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    root = tmp_path_factory.mktemp("serve-e2e")
    log_path, items_path = _write_log(root)
    data_cfg = {
        "name": "tiny",
        "output_dir": str(root / "processed"),
        "source": {
            "format": "csv",
            "path": str(log_path),
            "id_type": "str",
            "items": {"path": str(items_path), "format": "csv", "id_column": "item", "text_columns": ["title"]},
        },
    }
    (root / "data.yaml").write_text(yaml.safe_dump(data_cfg))
    uri = f"sqlite:///{root}/mlflow.db"
    cfg = from_dict(
        ExperimentConfig,
        {
            "name": "tiny_sasrec",
            "data": str(root / "data.yaml"),
            "model": {
                "name": "sasrec",
                "params": {
                    "max_len": 8,
                    "hidden": 16,
                    "n_layers": 1,
                    "n_heads": 2,
                    "dropout": 0.1,
                    "attn_dropout": 0.1,
                },
            },
            "train": {
                "max_epochs": 30,
                "lr": 0.01,
                "batch_size": 16,
                "accelerator": "cpu",
                "progress_bar": False,
                "seed": 0,
            },
            "eval": {"batch_size": 64},
            "tracking": {"tracking_uri": uri, "experiment": "serve-tests", "artifact_dir": str(root / "mlartifacts")},
        },
    )
    outcome = train_experiment(cfg, tracking_uri=uri)
    assert outcome is not None
    return TrainedRun(tracking_uri=uri, run_id=outcome.run_id, data_dir=root / "processed", root=root)


@pytest.fixture(scope="session")
def registered(trained_run: TrainedRun) -> str:
    """Version 1 of `tiny` (flat index) with alias champion; returns the alias URI."""
    export_run(
        trained_run.run_id,
        tracking_uri=trained_run.tracking_uri,
        name=MODEL_NAME,
        alias="champion",
        index_config=IndexConfig(kind="flat"),
    )
    return f"models:/{MODEL_NAME}@champion"


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


@pytest.fixture(scope="module")
def server(
    trained_run: TrainedRun, registered: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ThreadServer]:
    settings = ServeSettings(
        model_uri=registered,
        tracking_uri=trained_run.tracking_uri,
        max_body_bytes=4096,
        admin_token="secret",
        cache_dir=str(tmp_path_factory.mktemp("cache")),
    )
    with ThreadServer(create_app(settings)) as srv:
        yield srv
