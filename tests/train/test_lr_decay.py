"""The lr decays on a validation plateau (ReduceLROnPlateau on the early-stopping metric)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from recsys.tracking.mlflow import metric_history
from recsys.train.experiment import TrainConfig, load_experiment
from recsys.train.run import train_experiment


def test_lr_decays_when_validation_stops_improving(tmp_path: Path, planted_experiment: Callable[..., Path]) -> None:
    # every check without a new best halves the lr
    path = planted_experiment(max_epochs=8, lr_decay=0.5, lr_decay_patience=0, patience=4)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    outcome = train_experiment(load_experiment(path), tracking_uri=uri, command="test")
    assert outcome is not None
    lrs = metric_history(uri, outcome.run_id, "train/lr")["value"].tolist()
    ndcg = metric_history(uri, outcome.run_id, "val/ndcg@10")["value"].tolist()[: len(lrs)]
    assert lrs[0] == pytest.approx(0.005)
    # the lr of epoch e + 1 is halved exactly when epoch e's check set no new best
    for epoch in range(len(lrs) - 1):
        improved = ndcg[epoch] > max(ndcg[:epoch], default=float("-inf"))
        expected = lrs[epoch] if improved else lrs[epoch] / 2
        assert lrs[epoch + 1] == pytest.approx(expected), (epoch, lrs, ndcg)
    assert min(lrs) < 0.005, f"no plateau in {ndcg}: the test did not exercise the decay"


def test_lr_decay_patience_must_leave_room_before_early_stopping() -> None:
    with pytest.raises(ValueError, match="lr_decay_patience must be in \\[0, patience=3\\), got 3"):
        TrainConfig(lr_decay=0.5, lr_decay_patience=3, patience=3)
    with pytest.raises(ValueError, match="lr_decay must be in \\(0, 1\\], got 0.0"):
        TrainConfig(lr_decay=0.0)
    TrainConfig(lr_decay=1.0, lr_decay_patience=3, patience=3)  # no decay: patience is not used
