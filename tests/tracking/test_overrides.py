"""recsys.tracking.overrides: parsing recorded training commands and the override classifier."""

from __future__ import annotations

from recsys.tracking.overrides import behavioural_overrides, is_quiet, parse_train_command

COMMAND = (
    "OMP_NUM_THREADS=1 python -m pipelines.train --config configs/experiment/toy.yaml --prepare "
    "model.params.dropout=0.3 train.seed=43 train.progress_bar=false train.num_threads=1 train.max_minutes=70 "
    "tracking.experiment=beauty --finalize-run abc123 --results-json=bench/results/experiments/toy.json"
)


def test_parse_takes_the_config_and_the_overrides_after_the_module_only() -> None:
    config, overrides = parse_train_command(COMMAND)
    assert config == "configs/experiment/toy.yaml"
    assert overrides[:2] == ["model.params.dropout=0.3", "train.seed=43"]  # `--prepare` takes no value
    assert "OMP_NUM_THREADS=1" not in overrides and "abc123" not in overrides
    assert parse_train_command("") == (None, [])


def test_behavioural_overrides_leave_out_run_mechanics_and_by_default_the_seed() -> None:
    assert behavioural_overrides(COMMAND) == ["model.params.dropout=0.3"]
    assert behavioural_overrides(COMMAND, keep_seed=True) == ["model.params.dropout=0.3", "train.seed=43"]
    assert behavioural_overrides("python -m pipelines.train --config x.yaml train.seed=1") == []


def test_is_quiet() -> None:
    assert is_quiet("tracking.run_name") and is_quiet("train.max_minutes") and is_quiet("train.seed")
    assert not is_quiet("train.seed", keep_seed=True) and not is_quiet("train.lr")
