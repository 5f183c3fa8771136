"""One run path: a fresh run, `resume_run` and `finalize_run` each look the model up once, build its
objective once and load item features once (only for models that read them)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import recsys.registry
import recsys.train.run
from recsys.objectives import OBJECTIVES
from recsys.tracking.config import TrackingConfig
from recsys.tracking.logger import make_logger
from recsys.train.experiment import load_experiment
from recsys.train.resume import run_checkpoint
from recsys.train.run import assemble_run, train_experiment


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts registry look-ups, objective constructions and item-feature loads from now on."""
    seen: Counter[str] = Counter()
    lookup = recsys.registry.lookup
    load_features = recsys.train.run.load_item_features

    def counted_lookup(table: Any, name: str, kind: str) -> Any:
        seen["lookup"] += 1
        return lookup(table, name, kind)

    def counted_features(*args: Any, **kw: Any) -> Any:
        seen["features"] += 1
        return load_features(*args, **kw)

    for name, cls in list(OBJECTIVES.items()):

        def counted_objective(cls: Any = cls) -> Any:
            seen["objective"] += 1
            return cls()

        monkeypatch.setitem(OBJECTIVES, name, counted_objective)
    monkeypatch.setattr(recsys.registry, "lookup", counted_lookup)
    monkeypatch.setattr(recsys.train.run, "load_item_features", counted_features)
    return seen


def test_fresh_resumed_and_finalized_runs_build_each_part_once(
    tmp_path: Path, planted_experiment: Callable[..., Path], counts: Counter[str]
) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    first = train_experiment(load_experiment(planted_experiment(max_epochs=1)), tracking_uri=uri)
    assert first is not None
    assert counts == {"lookup": 1, "objective": 1}  # SASRec reads no item features: none loaded
    # a run whose process was killed after its first epoch: an open MLflow run and the last.ckpt it left
    stopped = make_logger(TrackingConfig(experiment="test"), uri).run_id
    assert stopped is not None
    longer = load_experiment(planted_experiment(max_epochs=2))
    ckpt = tmp_path / "last.ckpt"
    _write_checkpoint(longer, ckpt)
    counts.clear()
    resumed = train_experiment(longer, tracking_uri=uri, resume_run=stopped, checkpoint=ckpt)
    assert resumed is not None and "resumed_after_epoch" in resumed.record
    assert counts == {"lookup": 1, "objective": 1}
    counts.clear()
    final = train_experiment(longer, tracking_uri=uri, finalize_run=stopped, checkpoint=ckpt)
    assert final is not None and final.record["interrupted"].startswith("fit stopped")
    assert counts == {"lookup": 1, "objective": 1}
    with pytest.raises(ValueError, match="not both"):
        train_experiment(longer, tracking_uri=uri, resume_run=stopped, finalize_run=stopped)
    with pytest.raises(FileNotFoundError):  # a finished run removes its own checkpoint directory
        run_checkpoint(uri, first.run_id, "best.ckpt")


def _write_checkpoint(cfg: Any, path: Path) -> None:
    """A last.ckpt after one epoch, as a run stopped there leaves it (weights, spec, epoch, loop state)."""
    import pytorch_lightning as pl

    from recsys.train.fit import build_trainer, datamodule_for
    from recsys.train.module import RecModule

    parts = assemble_run(cfg)
    trainer, _ = build_trainer(cfg, False, path.parent / "ckpts", parts.spec)  # type: ignore[arg-type]
    module = RecModule(parts.model, cfg.train, cfg.eval, objective=parts.objective)
    pl.Trainer.fit(trainer, module, datamodule=datamodule_for(cfg, parts.data, parts.model, parts.objective))
    (path.parent / "ckpts" / "last.ckpt").rename(path)


def test_item_features_are_loaded_once_for_a_model_that_reads_them(
    planted_experiment: Callable[..., Path], tiny_text_backbone: Path, counts: Counter[str]
) -> None:
    params = {"backbone": str(tiny_text_backbone), "max_len": 4, "fields": ["title"], "max_item_tokens": 6}
    parts = assemble_run(load_experiment(planted_experiment({"name": "recformer", "params": params})))
    assert counts == {"lookup": 1, "objective": 1, "features": 1}
    assert parts.spec["name"] == "recformer" and parts.spec["n_items"] == parts.n_items
