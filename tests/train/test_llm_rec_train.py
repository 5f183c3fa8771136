"""The LLM-backed model through the one training module: a tiny tracked run on the planted dataset's
titles (a tiny random Llama with LoRA), saved and reloaded with its adapters and item vectors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from recsys.model_io import load_model
from recsys.tracking.mlflow import download_run_artifacts, read_run
from recsys.train.experiment import load_experiment
from recsys.train.run import train_experiment

REPO = Path(__file__).resolve().parents[2]


def test_llm_rec_trains_and_reloads(
    tmp_path: Path, planted_experiment: Callable[..., Path], tiny_llama_backbone: Path, tiny_text_backbone: Path
) -> None:
    params = {
        "backbone": str(tiny_llama_backbone),
        "item_encoder": str(tiny_text_backbone),
        "cache_dir": str(tmp_path / "cache"),
        "fields": ["title"],
        "n_layers": 2,
        "max_len": 6,
    }
    path = planted_experiment({"name": "llm_rec", "params": params}, batch_size=32, val_every=1, max_epochs=2)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    outcome = train_experiment(load_experiment(path), tracking_uri=uri, command="test")
    assert outcome is not None
    run = read_run(uri, outcome.run_id)
    assert run["status"] == "FINISHED" and "test/ndcg@10" in run["metrics"]
    model = load_model(download_run_artifacts(uri, outcome.run_id, "model", tmp_path / "dl"))
    state = model.state_dict()
    assert any("lora_A" in k for k in state) and state["item_vectors"][1:].abs().sum() > 0  # adapters, vectors
    items = torch.tensor([[0, 0, 3, 7, 1, 9]])
    assert torch.isfinite(model.sequence_representation(items, items != 0)).all()


def test_llm_rec_experiment_config_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # config paths (`_base:`, `data:`) are relative to the repo root, as the CLIs run
    cfg = load_experiment(REPO / "configs/experiment/llm_rec_ml-1m.yaml")
    assert cfg.model.name == "llm_rec" and cfg.model.params == {"n_layers": 2, "max_len": 20, "windows": "random"}
