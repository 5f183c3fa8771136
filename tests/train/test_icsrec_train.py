"""ICSRec through the one training module: a tiny tracked run on the planted dataset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from recsys.tracking.mlflow import read_run
from recsys.train.experiment import load_experiment
from recsys.train.run import train_experiment

REPO = Path(__file__).resolve().parents[2]


def test_icsrec_trains_two_epochs_and_logs_metrics(tmp_path: Path, planted_experiment: Callable[..., Path]) -> None:
    params = {"max_len": 8, "hidden": 16, "n_heads": 2, "dropout": 0.1, "attn_dropout": 0.1, "n_intents": 8}
    path = planted_experiment({"name": "icsrec", "params": params}, batch_size=256, val_every=1)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    outcome = train_experiment(load_experiment(path), tracking_uri=uri, command="test")
    assert outcome is not None
    run = read_run(uri, outcome.run_id)
    assert run["status"] == "FINISHED"
    for key in ("train/loss", "train/rec_loss", "train/contrast_loss", "val/ndcg@10", "test/ndcg@10", "test/hr@10"):
        assert key in run["metrics"], key
    assert run["params"]["model.name"] == "icsrec"
    assert outcome.record["epochs"] == 2


def test_experiment_configs_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # config paths (`_base:`, `data:`) are relative to the repo root, as the CLIs run
    for name in ("icsrec_beauty", "icsrec_sports", "icsrec_beauty_linear"):
        cfg = load_experiment(REPO / "configs/experiment" / f"{name}.yaml")
        assert cfg.model.name == "icsrec"
        assert cfg.model.params["n_intents"] == 512
    assert load_experiment(REPO / "configs/experiment/icsrec_beauty_linear.yaml").model.params["attention"] == "linear"
