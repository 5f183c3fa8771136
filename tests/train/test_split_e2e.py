"""The temporal and cold-start splits end to end: a tracked run trains and is scored on them, and
`pipelines.evaluate` re-scores the run on the split it was trained on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pipelines.evaluate import run_split
from recsys.data.split import SplitConfig
from recsys.tracking.mlflow import read_run
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
