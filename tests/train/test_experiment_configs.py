"""Every shipped config parses and validates; `_base` composition merges key by key."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.config import load_config
from recsys.data.config import DataConfig
from recsys.models.ranker import Ranker, RankerData
from recsys.registry import choose_registered
from recsys.train.experiment import load_experiment
from recsys.train.fit import ranker_data_config

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = sorted((REPO / "configs/experiment").glob("*.yaml"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_config_is_valid(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # configs name other configs relative to the repo root
    cfg = load_experiment(path)
    choice = choose_registered(cfg.model.name, cfg.model.params)  # a retrieval model or a ranker
    # the data its objective trains on: sequences (a data config), labelled rows or candidate lists (a ranker's)
    ranker_data_config(cfg.data) if issubclass(choice.cls, Ranker) else load_config(DataConfig, cfg.data)
    choice.resolved(RankerData()).build(n_items=11)


def test_base_merge_keeps_base_keys_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    cfg = load_experiment(REPO / "configs/experiment/sasrec_beauty_linear.yaml", ["train.lr=0.002"])
    assert cfg.model.params["attention"] == "linear"  # from the experiment
    assert cfg.model.params["hidden"] == 64  # from configs/model/sasrec.yaml
    assert cfg.train.loss == "ce" and cfg.train.lr == 0.002  # base file, then the override
