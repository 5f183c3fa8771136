"""The temporal and cold-start splits end to end: a tracked run trains and is scored on them, and
`pipelines.evaluate` re-scores the run on the split it was trained on; a model with ID rows beside text
keeps none for the items it never trained on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from pipelines.evaluate import run_split
from recsys.data.split import SplitConfig
from recsys.model_io import load_model
from recsys.models.id_text_sasrec import IDTextSASRec
from recsys.tracking.mlflow import download_run_artifacts, read_run
from recsys.train import run
from recsys.train.experiment import load_experiment
from recsys.train.run import train_experiment


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["split.kind=temporal", "split.valid_quantile=0.7"], {"split": "temporal", "valid_quantile": 0.7}),
        (["split.cold_item_share=0.2", "split.cold_seed=3"], {"split": "leave_one_out", "cold_items": 8}),
    ],
)
def test_a_run_trains_and_is_scored_on_its_split(
    tmp_path: Path, planted_experiment: Callable[..., Path], overrides: list[str], expected: dict[str, object]
) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = load_experiment(planted_experiment(max_epochs=1), overrides)
    outcome = train_experiment(cfg, tracking_uri=uri, command="test")
    assert outcome is not None
    protocol = outcome.record["protocol"]
    assert {k: protocol[k] for k in expected} == expected
    assert 0 < protocol["n_users"] < 100  # the planted log's 100 users, not all evaluated at a cut
    params = read_run(uri, outcome.run_id)["params"]
    assert run_split(params) == cfg.split  # what pipelines.evaluate rebuilds the split from


def test_runs_logged_before_splits_were_configurable_score_on_leave_one_out() -> None:
    assert run_split({"model.name": "sasrec"}) == SplitConfig()


def test_an_item_no_training_sequence_holds_keeps_no_id_row(
    tmp_path: Path, planted_experiment: Callable[..., Path], tiny_llama_backbone: Path
) -> None:
    tower = {
        "text": str(tiny_llama_backbone),
        "fields": ["title"],
        "cache_dir": str(tmp_path / "cache"),
        "text_dim": 32,
    }
    model = {"name": "id_text_sasrec", "params": {"max_len": 8, "hidden": 16, "n_heads": 2, "item_tower": tower}}
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = load_experiment(planted_experiment(model=model, max_epochs=1), ["split.cold_item_share=0.2"])
    outcome = train_experiment(cfg, tracking_uri=uri, command="test")
    assert outcome is not None
    trained = load_model(download_run_artifacts(uri, outcome.run_id, "model", tmp_path / "model"))
    counts = outcome.per_user["items"].sort("item_idx")["train_count"].to_list()
    assert isinstance(trained, IDTextSASRec) and counts.count(0) == 8  # the cold items
    assert trained.tower.has_id[1:].tolist() == [c > 0 for c in counts]  # saved with the model


@pytest.mark.parametrize("negatives", ["catalog", "trained"])
def test_with_negatives_trained_an_item_that_never_trains_is_never_pushed_down(
    tmp_path: Path, planted_experiment: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, negatives: str
) -> None:
    built: list[dict[str, torch.Tensor]] = []

    def assemble_and_keep(*args: Any, **kwargs: Any) -> run.RunParts:
        parts = assemble(*args, **kwargs)
        built.append({k: v.clone() for k, v in parts.model.state_dict().items()})
        return parts

    assemble = run.assemble_run
    monkeypatch.setattr(run, "assemble_run", assemble_and_keep)
    overrides = ["split.cold_item_share=0.2", f"train.negatives={negatives}"]
    cfg = load_experiment(planted_experiment(max_epochs=1, weight_decay=0.0), overrides)
    outcome = train_experiment(cfg, tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", command="test")
    assert outcome is not None and len(built) == 1
    trained = load_model(
        download_run_artifacts(f"sqlite:///{tmp_path}/mlflow.db", outcome.run_id, "model", tmp_path / "m")
    )
    counts = torch.tensor(outcome.per_user["items"].sort("item_idx")["train_count"].to_list())
    cold = torch.cat([torch.zeros(1, dtype=torch.bool), counts == 0])  # the 8 cold items' rows
    key = next(k for k in built[0] if k.endswith("item_emb.weight"))
    before, after = built[0][key], trained.state_dict()[key]
    assert int(cold.sum()) == 8 and not torch.equal(before[~cold], after[~cold])
    # without gradient (never a class) a cold row keeps its initial value; as a negative it moves
    assert torch.equal(before[cold], after[cold]) == (negatives == "trained")
