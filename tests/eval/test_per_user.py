"""Per-user results: built by hand on a tiny split, and stored by a real training run (MLflow and record)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from pipelines import train as train_cli
from recsys.data.split import leave_one_out_split
from recsys.eval.analysis import ndcg_per_user
from recsys.eval.evaluate import EvalResult
from recsys.eval.per_user import beside_record, item_stats, per_user_results, read_run_table


def tiny_split() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_idx": [0, 1, 2],
            "items": [[1, 2, 3, 4], [2, 3, 5], [1, 1, 2, 6, 3]],
            "timestamps": [[10, 20, 30, 40], [5, 15, 25], [1, 2, 3, 4, 50]],
        }
    )


def test_item_stats_and_per_user_by_hand() -> None:
    split = leave_one_out_split(tiny_split())
    # train: u0 [1, 2], u1 [2], u2 [1, 1, 2]; validation targets 3, 3, 6; test targets 4, 5, 3
    items = item_stats(split, n_items=6)
    assert items["train_count"].to_list() == [3, 3, 0, 0, 0, 0]
    assert items["first_seen"].to_list() == [1, 3, 15, 40, 25, 4]
    result = EvalResult(
        metrics={},
        protocol={},
        n_users=3,
        ranks=torch.tensor([7, 1, 2]),  # rows come in the loader's order: 2, 0, 1
        topk_ids=torch.tensor([[3, 1], [4, 2], [1, 5]]),
        rows=torch.tensor([2, 0, 1]),
    )
    users = per_user_results(result, split.test, items)
    assert users.columns == [
        "user_idx", "history_len", "target", "target_popularity", "target_cold", "item_age", "rank", "topk"
    ]  # fmt: skip
    assert users["user_idx"].to_list() == [0, 1, 2]
    assert users["rank"].to_list() == [1, 2, 7]
    assert users["topk"].to_list() == [[4, 2], [1, 5], [3, 1]]
    assert users["history_len"].to_list() == [3, 2, 4]
    assert users["target"].to_list() == [4, 5, 3]
    assert users["target_cold"].to_list() == [True, True, True]
    assert users["item_age"].to_list() == [0, 0, 50 - 15]


def test_per_user_results_need_rows() -> None:
    split = leave_one_out_split(tiny_split())
    result = EvalResult(metrics={}, protocol={}, n_users=3, ranks=torch.tensor([1, 1, 1]))
    with pytest.raises(ValueError, match="rows"):
        per_user_results(result, split.test, item_stats(split, 6))


@pytest.mark.slow
def test_training_stores_per_user_results(
    planted_experiment: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    record_path = tmp_path / "records" / "run.json"
    exp = planted_experiment(max_epochs=1)
    assert train_cli.main(["--config", str(exp), "--results-json", str(record_path)]) == 0
    record = json.loads(record_path.read_text())
    run_id = record["mlflow_run_id"]
    for stage in ("val", "test"):
        users = read_run_table(uri, run_id, stage)
        assert users.height == record["protocol"]["n_users"]
        # the stored ranks give back the logged metric: nothing needs scoring again
        ndcg = float(ndcg_per_user(users["rank"].to_numpy(), 10).mean())
        assert ndcg == pytest.approx(record["metrics"][f"{stage}/ndcg@10"], abs=1e-9)
        assert users["topk"].list.len().to_list() == [20] * users.height
        beside = pl.read_parquet(beside_record(record_path) / f"{stage}.parquet")
        assert beside.equals(users)
    items = read_run_table(uri, run_id, "items")
    assert items.height == 40 and int(items["train_count"].sum()) > 0
    assert np.all(items["item_idx"].to_numpy() == np.arange(1, 41))
