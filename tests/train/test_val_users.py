"""Validation checks on a fixed seeded sample of users; the final evaluation ranks every user. Also
the per-step lr schedule and the fused optimiser wired through a whole run."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest

from recsys.data.datamodule import SequenceDataModule
from recsys.eval.per_user import RANK
from recsys.tracking.mlflow import metric_history
from recsys.train.experiment import EvalConfig, load_experiment
from recsys.train.run import train_experiment


def validated_rows(dm: SequenceDataModule, *, all_users: bool = False) -> list[int]:
    return [int(i) for batch in dm.val_dataloader(all_users=all_users) for i in batch.rows]


def planted_dm(data_dir: Path, seed: int, val_users: int | None) -> SequenceDataModule:
    dm = SequenceDataModule(data_dir, max_len=8, batch_size=16, eval_batch_size=7, seed=seed, val_users=val_users)
    dm.setup()
    return dm


def test_a_seeded_sample_of_users_is_validated(planted_dataset: Path) -> None:
    data_dir = planted_dataset / "processed"
    everyone = planted_dm(data_dir, 0, None)
    n_users = len(everyone.val_set)
    assert sorted(validated_rows(everyone)) == list(range(n_users))

    sample = validated_rows(planted_dm(data_dir, 0, 10))
    assert len(sample) == len(set(sample)) == 10
    assert validated_rows(planted_dm(data_dir, 0, 10)) == sample  # same seed, same users
    assert sorted(validated_rows(planted_dm(data_dir, 1, 10))) != sorted(sample)  # another seed, another draw
    # the sample keeps the loaders' history-length order, and all_users still gives everyone
    order = [r for r in everyone.val_set.rows_by_length() if r in set(sample)]
    assert sample == order
    assert sorted(validated_rows(planted_dm(data_dir, 0, 10), all_users=True)) == list(range(n_users))
    assert sorted(validated_rows(planted_dm(data_dir, 0, n_users + 5))) == list(range(n_users))  # more than exist


def test_val_users_must_be_positive(planted_dataset: Path) -> None:
    with pytest.raises(ValueError, match="val_users must be >= 1 or None \\(all users\\), got 0"):
        EvalConfig(val_users=0)
    with pytest.raises(ValueError, match="val_users must be >= 1 or None \\(all users\\), got -1"):
        planted_dm(planted_dataset / "processed", 0, -1)


def test_a_run_checks_one_user_and_evaluates_all(
    tmp_path: Path, planted_dataset: Path, planted_experiment: Callable[..., Path]
) -> None:
    path = planted_experiment(max_epochs=2, lr_schedule="warmup_cosine", warmup_frac=0.25, optimizer_impl="fused")
    cfg = load_experiment(path, ["eval.val_users=1"])
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    outcome = train_experiment(cfg, tracking_uri=uri, command="test")
    assert outcome is not None

    # during the fit one user was ranked: NDCG@10 is 0 or 1 / log2(rank + 1) for one rank <= 10
    one_user = {0.0} | {1 / math.log2(r + 1) for r in range(1, 11)}
    checks = metric_history(uri, outcome.run_id, "val/ndcg@10")["value"].tolist()[:-1]  # the last: the final
    assert len(checks) == 2 and all(any(math.isclose(v, o, rel_tol=1e-6) for o in one_user) for v in checks), checks
    # the final evaluation ranked every validation user
    val = outcome.per_user["val"]
    assert val.height == len(planted_dm(planted_dataset / "processed", 0, None).val_set) > 1
    ranks = val[RANK].to_list()
    ndcg = sum(1 / math.log2(r + 1) for r in ranks if r <= 10) / len(ranks)
    assert outcome.metrics["val/ndcg@10"] == pytest.approx(ndcg)

    # the lr followed warm-up + cosine over both epochs' steps (logged at each epoch's end, at the step
    # index of its last optimiser step)
    lr_log = metric_history(uri, outcome.run_id, "train/lr")
    steps, lrs = lr_log["step"].tolist(), lr_log["value"].tolist()
    total = 2 * (steps[0] + 1)
    assert steps == [total // 2 - 1, total - 1]
    warmup = round(0.25 * total)
    for step, lr in zip(steps, lrs, strict=True):
        done = step + 1  # optimiser steps taken when the epoch ended
        cosine = 0.5 * (1 + math.cos(math.pi * (done - warmup) / (total - warmup)))
        expected = done / warmup if done < warmup else cosine
        assert lr == pytest.approx(0.005 * expected, abs=1e-9), (steps, lrs)
