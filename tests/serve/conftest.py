"""A tiny SASRec trained for real (a few epochs on a planted-pattern log), exported to a temporary MLflow
registry, and a real uvicorn server on 127.0.0.1 serving it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from serve_support import MODEL_NAME, ThreadServer, TrainedRun, write_local_bundle, write_log

from recsys.config import from_dict
from recsys.data.config import DataConfig
from recsys.data.etl import run_etl
from recsys.retrieval.export import export_run
from recsys.retrieval.index import IndexConfig
from recsys.serve.app import create_app
from recsys.serve.settings import ServeSettings
from recsys.train.experiment import ExperimentConfig
from recsys.train.run import train_experiment


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    root = tmp_path_factory.mktemp("serve-e2e")
    log_path, items_path = write_log(root)
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
    run_etl(from_dict(DataConfig, data_cfg))  # training reads processed data, never writes it
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
    with torch.random.fork_rng():  # seeded as pipelines.train seeds, whichever test asks first
        torch.manual_seed(0)
        outcome = train_experiment(cfg, tracking_uri=uri)
    assert outcome is not None
    return TrainedRun(tracking_uri=uri, run_id=outcome.run_id, data_dir=root / "processed", root=root)


@pytest.fixture(scope="session")
def local_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle directory of an untrained seeded SASRec (no training, no registry): tests of the HTTP
    surface copy it before changing it."""
    return write_local_bundle(tmp_path_factory.mktemp("local-bundle"))


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


@pytest.fixture(scope="module")
def server(
    trained_run: TrainedRun, registered: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ThreadServer]:
    settings = ServeSettings(
        model_uri=registered,
        tracking_uri=trained_run.tracking_uri,
        max_body_bytes=4096,
        max_history_items=8,  # 8 ids of up to 16 characters fit in 4 kB, whatever the characters
        max_id_chars=16,
        admin_token="secret",
        cache_dir=str(tmp_path_factory.mktemp("cache")),
    )
    with ThreadServer(create_app(settings)) as srv:
        yield srv
