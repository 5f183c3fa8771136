"""SASRec over the item tower through the one run path: a tracked 1-epoch run on the planted dataset's
titles (a tiny random Llama's cached item vectors, fused and dual views), saved and reloaded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from recsys.model_io import load_model
from recsys.tracking.mlflow import download_run_artifacts, read_run
from recsys.train.experiment import load_experiment
from recsys.train.run import train_experiment


@pytest.mark.parametrize("views", ["fused", "dual"])
def test_id_text_sasrec_trains_one_epoch_and_reloads(
    views: str, tmp_path: Path, planted_experiment: Callable[..., Path], tiny_llama_backbone: Path
) -> None:
    tower = {"text": str(tiny_llama_backbone), "fields": ["title"], "cache_dir": str(tmp_path / "cache")}
    params = {"max_len": 8, "hidden": 16, "n_heads": 2, "dropout": 0.1, "views": views, "item_tower": tower}
    path = planted_experiment({"name": "id_text_sasrec", "params": params}, val_every=1, max_epochs=1)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    outcome = train_experiment(load_experiment(path), tracking_uri=uri, command="test")
    assert outcome is not None
    run = read_run(uri, outcome.run_id)
    assert run["status"] == "FINISHED" and "test/ndcg@10" in run["metrics"]
    assert list((tmp_path / "cache" / "item_vectors").glob("*.pt"))  # the vectors were cached on disk
    model = load_model(download_run_artifacts(uri, outcome.run_id, "model", tmp_path / "dl"))
    assert model.tower.text_table[1:].abs().sum() > 0  # type: ignore[union-attr]  # the frozen table came back
    items = torch.tensor([[0, 0, 3, 7, 1, 9, 2, 5]])
    assert model.sequence_representation(items, items != 0).shape == (1, 16 if views == "fused" else 32)
