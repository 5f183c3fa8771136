"""Recformer through the one training module: a tiny tracked run on the planted dataset's titles,
pre-training then both fine-tuning stages, saved and reloaded with its item table."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from recsys.model_io import load_model
from recsys.models.recformer import RecformerConfig
from recsys.tracking.mlflow import download_run_artifacts, metric_history, read_run
from recsys.train.experiment import load_experiment
from recsys.train.run import train_experiment

REPO = Path(__file__).resolve().parents[2]


def _tiny(backbone: Path, **settings: object) -> dict[str, object]:
    """A tiny Recformer on the planted titles: 4 items of history, 6 tokens an item, 30 a history."""
    base = {"backbone": str(backbone), "max_len": 4, "fields": ["title"], "max_item_tokens": 6, "max_tokens": 30}
    return {"name": "recformer", "params": base | settings}


def test_recformer_pretrains_fine_tunes_and_reloads(
    tmp_path: Path, planted_experiment: Callable[..., Path], tiny_text_backbone: Path
) -> None:
    model = _tiny(tiny_text_backbone, pretrain_epochs=1, refresh_epochs=1, cuts_per_user=2)
    path = planted_experiment(model, batch_size=32, val_every=1, max_epochs=3, accumulate_batches=2)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    outcome = train_experiment(load_experiment(path), tracking_uri=uri, command="test")
    assert outcome is not None
    run = read_run(uri, outcome.run_id)
    assert run["status"] == "FINISHED"
    for key in ("train/loss", "train/mlm_loss", "val/ndcg@10", "test/ndcg@10"):  # mlm: the pre-training epoch
        assert key in run["metrics"], key
    assert outcome.record["epochs"] == 3
    # two cuts per user and epoch, two batches per optimiser step: the steps the loss was logged at
    users = outcome.per_user["test"].height + outcome.record["protocol"]["train_only_users"]
    steps_per_epoch = math.ceil(math.ceil(2 * users / 32) / 2)
    assert metric_history(uri, outcome.run_id, "train/loss")["step"].tolist() == [
        steps_per_epoch * e - 1 for e in (1, 2, 3)
    ]
    model = load_model(download_run_artifacts(uri, outcome.run_id, "model", tmp_path / "dl"))
    table = model.item_embeddings()
    assert torch.isfinite(table).all() and torch.allclose(table[1:].norm(dim=-1), torch.ones(len(table) - 1))


def test_recformer_experiment_configs_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # config paths (`_base:`, `data:`) are relative to the repo root, as the CLIs run
    cold = load_experiment(REPO / "configs/experiment/recformer_ml-1m_cold.yaml")
    assert cold.model.name == "recformer" and cold.split.cold_item_share == 0.1
    assert load_experiment(REPO / "configs/experiment/sasrec_ml-1m_cold.yaml").split.cold_item_share == 0.1


def test_recformer_with_item_ids_keeps_text_only_cold_items(
    tmp_path: Path, planted_experiment: Callable[..., Path], tiny_text_backbone: Path
) -> None:
    model = _tiny(tiny_text_backbone, refresh_epochs=1, item_ids=True, id_dropout=0.2)
    path = planted_experiment(model, batch_size=32, max_epochs=2)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    outcome = train_experiment(load_experiment(path, ["split.cold_item_share=0.2"]), tracking_uri=uri, command="test")
    assert outcome is not None
    model = load_model(download_run_artifacts(uri, outcome.run_id, "model", tmp_path / "dl"))
    counts = torch.tensor(outcome.per_user["items"].sort("item_idx")["train_count"].to_list())
    warm = torch.cat([torch.zeros(1, dtype=torch.bool), counts > 0])
    cold = torch.cat([torch.zeros(1, dtype=torch.bool), counts == 0])
    assert model.tower is not None and torch.equal(model.tower.has_id, warm)
    with torch.no_grad():
        table = model.item_embeddings()
    torch.testing.assert_close(table[cold], model.item_table[cold])  # the cold items: their text vector
    assert torch.allclose(table[1:].norm(dim=-1), torch.ones(len(table) - 1))
    # the warm items' ID rows started at their text vector and trained away from it
    assert float(F.cosine_similarity(table[warm], model.item_table[warm]).mean()) < 0.9999
    with pytest.raises(ValueError, match="id_dropout=0.2 needs item_ids"):
        RecformerConfig(id_dropout=0.2)


@pytest.mark.parametrize(
    ("item_bias", "id_rows", "item_prior"),
    [(False, "fused", False), (True, "fused", True), (True, "free", False), (True, "compact", True)],
)
def test_recformer_with_ids_on_the_user_side_warms_them_up_then_trains_and_reloads(
    tmp_path: Path,
    planted_experiment: Callable[..., Path],
    tiny_text_backbone: Path,
    caplog: pytest.LogCaptureFixture,
    item_bias: bool,
    id_rows: str,
    item_prior: bool,
) -> None:
    params = {"refresh_epochs": 1, "item_ids": True, "id_len": 8, "id_hidden": 8, "id_epochs": 2, "id_batch": 16}
    params["item_bias"] = item_bias  # a learned score per trained item, through the ID part
    params["id_rows"] = id_rows  # free, compact: the ID rows beside the text table, their norm free
    params["text_weights"] = [0.0, 0.5, 1.0]  # the text summary's weight, chosen on validation after the fit
    if item_prior:  # a fixed popularity column, its weight chosen on validation after the text weight
        params |= {"item_prior": True, "prior_weights": [0.0, 0.5, 2.0]}
    path = planted_experiment(_tiny(tiny_text_backbone, **params), batch_size=32, max_epochs=2)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with caplog.at_level("INFO", logger="recsys.objectives.text"):
        outcome = train_experiment(load_experiment(path), tracking_uri=uri, command="test")
    assert outcome is not None and "test/ndcg@10" in outcome.metrics
    passes = [r.getMessage() for r in caplog.records if "ID warm-up pass" in r.getMessage()]
    assert [p.split(":")[0] for p in passes] == ["ID warm-up pass 1/2", "ID warm-up pass 2/2"]  # once, epoch 0
    model = load_model(download_run_artifacts(uri, outcome.run_id, "model", tmp_path / "dl")).eval()
    assert model.max_len == 8 and model.id_encoder is not None
    history = torch.tensor([[0, 0, 1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        user = model.sequence_representation(history, history != 0)
        text = F.normalize(model.encode_history(history)[0], dim=-1) / model.cfg.temperature
        table = model.item_embeddings()
    assert not torch.allclose(user[:, : text.shape[1]], text)  # the ID encoder's state is part of the user vector
    id_half = {"fused": 0, "free": text.shape[1], "compact": 8}[id_rows]  # compact: id_hidden wide
    # item_bias: the column of biases, learned; item_prior: the popularity column, last
    assert table.shape[1] == text.shape[1] + id_half + item_bias + item_prior
    if id_rows == "free":  # the warm-up moved the trained items' ID rows off the unit sphere
        trained_rows = table[model.trained_items(), text.shape[1] : -1]  # untrained items' zero rows would pass too
        assert float((trained_rows.norm(dim=-1) - 1).abs().max()) > 1e-3
    if id_rows == "compact":  # the ID rows beside the text table, then the bias and prior columns
        assert model.tower is not None and model.tower.id_emb is not None
        torch.testing.assert_close(table[:, text.shape[1] : text.shape[1] + 8], model.id_table()[:, :8])
    if item_bias:
        column = -2 if item_prior else -1
        assert user[0, column] == 1.0 and table[0, column] == 0.0 and float(table[1:, column].abs().max()) > 0
    # each weight chosen on every validation user is the one saved; the final validation figure is the last's
    parts = {"text": (0.0, 0.5, 1.0)} | ({"prior": (0.0, 0.5, 2.0)} if item_prior else {})
    for part, weights in parts.items():
        weight = outcome.metrics[f"{part}_weight"]
        assert weight in weights and getattr(model.cfg, f"{part}_weight") == weight
        assert outcome.record["config"]["model"]["params"][f"{part}_weight"] == weight
        chosen = outcome.metrics[f"val/ndcg@10_{part}_weight_{weight:g}"]
        assert chosen == max(outcome.metrics[f"val/ndcg@10_{part}_weight_{w:g}"] for w in weights)
    assert outcome.metrics["val/ndcg@10"] == pytest.approx(chosen, abs=1e-9)
    if item_prior:  # log(1 + training count), centred on the trained items, saved with the model
        counts = torch.tensor([0, *outcome.per_user["items"].sort("item_idx")["train_count"].to_list()])
        prior = torch.log1p(counts.float())
        expected = torch.where(counts > 0, prior - prior[counts > 0].mean(), torch.zeros_like(prior))
        torch.testing.assert_close(table[:, -1], expected)
        assert user[0, -1] == model.cfg.prior_weight
