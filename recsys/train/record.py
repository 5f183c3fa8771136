"""What a finished run keeps: its val/test evaluation, its results record and its MLflow params and
artifacts, all carrying one resolved experiment config."""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import yaml

from recsys.config import to_dict
from recsys.data.candidate_list_datamodule import CandidateListDataModule
from recsys.data.datamodule import SequenceDataModule
from recsys.data.labelled_datamodule import LabelledDataModule
from recsys.eval.evaluate import evaluate
from recsys.eval.labelled import labelled_split_metrics
from recsys.eval.part_weight import WeightedParts, choose_part_weights
from recsys.eval.per_user import ITEMS_TABLE, item_stats, log_tables, per_user_results
from recsys.eval.two_stage import choose_stage1_weight, score_lists, stage1_only, two_stage_metrics
from recsys.model_io import resolved_config, write_model
from recsys.models.base import SequentialRecommender
from recsys.models.ranker import AnyModel, Ranker
from recsys.tracking.mlflow import RunRecorder
from recsys.tracking.records import base_record
from recsys.train.experiment import ExperimentConfig
from recsys.train.fit import RunData
from recsys.train.module import RecModule

log = logging.getLogger(__name__)
DATA_CONFIG_KEY = "data_config"  # the resolved data config, beside `data` (its path)


@dataclass(frozen=True)
class TrainOutcome:
    run_id: str
    tracking_uri: str
    metrics: dict[str, float]  # final val/* and test/* of the best checkpoint
    record: dict[str, Any]  # the results record (ARCHITECTURE.md)
    per_user: dict[str, pl.DataFrame] = field(default_factory=dict)  # val, test, items (recsys.eval.per_user)


@dataclass(frozen=True)
class RunContext:
    """One run's settings and provenance, as its record and its MLflow run report them."""

    cfg: ExperimentConfig
    data: RunData  # the processed dataset (its meta.json, resolved data config, a ranker's labelled rows)
    command: str
    started_at: str  # ISO time the run started (a resumed run: its first start)
    t0: float  # time.perf_counter() at that start (earlier than now by the time already spent)
    model_spec: dict[str, Any]  # what rebuilds the model (`recsys.model_io`), saved with its weights

    @property
    def n_items(self) -> int:
        return int(self.data.meta["n_items"])


def resolved_experiment(cfg: ExperimentConfig, model: AnyModel, data_config: dict[str, Any]) -> dict[str, Any]:
    """The experiment config with nothing left to defaults: `model.params` is the model's own
    resolved `Config` and `data_config` the resolved data config `data` names. What MLflow logs
    (params and config.yaml) and what every results record carries under `config`."""
    out: dict[str, Any] = to_dict(cfg)
    out["model"]["params"] = resolved_config(model)
    out[DATA_CONFIG_KEY] = data_config
    return out


def evaluate_and_log(
    ctx: RunContext,
    module: RecModule,
    dm: SequenceDataModule | LabelledDataModule | CandidateListDataModule,
    best: dict[str, Any] | None,
    recorder: RunRecorder,
    fields: dict[str, Any],
) -> TrainOutcome:
    """Load the best checkpoint, evaluate it on val and test, log everything to MLflow.

    A retrieval model ranks the full catalog (with per-user results); a ranker scores its labelled
    rows (AUC, GAUC, log loss) or re-orders stage 1's candidate lists (two-stage metrics, with the
    weight of the stage-1 score chosen on validation and saved in the model's config).

    Args:
        ctx: the run's settings and provenance.
        module: the trained module (its weights are replaced by the best checkpoint's).
        dm: the run's DataModule, set up.
        best: the best checkpoint (None: keep the module's weights).
        recorder: the run's MLflow recorder; the run is marked FINISHED at the end.
        fields: more record fields (epochs, fit time, why the fit stopped, ...).
    """
    cfg = ctx.cfg
    if best is not None:
        module.load_state_dict(best["state_dict"])
    model = module.model.cpu().eval()
    if isinstance(dm, LabelledDataModule):
        if not isinstance(model, Ranker):
            raise TypeError(f"labelled rows are scored by a ranker, not a {type(model).__name__}")
        metrics = labelled_split_metrics(model, dm.val_dataloader(), "val")
        metrics |= labelled_split_metrics(model, dm.test_dataloader(), "test")
        protocol: dict[str, Any] = dm.protocol
        per_user: dict[str, pl.DataFrame] = {}
    elif isinstance(dm, CandidateListDataModule):
        if not isinstance(model, Ranker):
            raise TypeError(f"candidate lists are re-ordered by a ranker, not a {type(model).__name__}")
        metrics = _two_stage_val_test(model, dm, ctx.cfg.eval.monitor_k, ctx.cfg.eval.ks)
        ctx = dataclasses.replace(ctx, model_spec={**ctx.model_spec, "config": resolved_config(model)})
        protocol, per_user = dm.protocol, {}
    else:
        if not isinstance(model, SequentialRecommender):
            raise TypeError(f"full ranking needs a retrieval model, not a {type(model).__name__}")
        module.objective.on_fit_end(model)  # e.g. a text model's item table encoded by the final weights
        chosen = _choose_part_weights(ctx, model, dm)
        if chosen:  # the model's config changed: it is saved as chosen
            ctx = dataclasses.replace(ctx, model_spec={**ctx.model_spec, "config": resolved_config(model)})
        metrics, protocol, per_user = _rank_val_test(ctx, model, dm)
        metrics |= chosen
    config = resolved_experiment(cfg, model, ctx.data.config)
    record = base_record(cfg.name, ctx.command, ctx.started_at, time.perf_counter() - ctx.t0) | {
        "dataset": ctx.data.meta.get("name"),
        "model": cfg.model.name,
        "attention": config["model"]["params"].get("attention"),
        "loss": cfg.train.loss,
        "protocol": protocol,
        **fields,
        "best_epoch": int(best["epoch"]) if best is not None else None,
        "mlflow_run_id": recorder.run_id,
        "metrics": metrics,
        "config": config,
    }
    log_run(recorder, ctx, model, config, metrics, record, per_user)
    return TrainOutcome(
        run_id=recorder.run_id, tracking_uri=recorder.uri, metrics=metrics, record=record, per_user=per_user
    )


def _two_stage_val_test(model: Ranker, dm: CandidateListDataModule, k: int, ks: tuple[int, ...]) -> dict[str, float]:
    """Choose the stage-1 weight on the validation lists (set in `model.cfg`, so the saved and served
    ranker combines the scores as chosen), then the two-stage metrics of val and test, and stage 1's alone."""
    if not hasattr(model.cfg, "stage1_weight"):
        raise TypeError(f"{type(model).__name__} has no stage1_weight: it cannot be combined with stage 1")
    model.cfg = dataclasses.replace(model.cfg, stage1_weight=0.0)
    alone = {
        split: score_lists(model, loader)
        for split, loader in (("val", dm.val_dataloader()), ("test", dm.test_dataloader()))
    }
    weight, _ = choose_stage1_weight(alone["val"], k)
    model.cfg = dataclasses.replace(model.cfg, stage1_weight=weight)
    metrics: dict[str, float] = {"stage1_weight": weight}
    for split, lists in alone.items():  # the ranker's own order (weight 0): where a shortfall comes from
        metrics |= two_stage_metrics(lists, ks, f"ranker_{split}")
    for split, loader in (("val", dm.val_dataloader()), ("test", dm.test_dataloader())):
        lists = score_lists(model, loader)
        metrics |= two_stage_metrics(lists, ks, split) | two_stage_metrics(stage1_only(lists), ks, f"stage1_{split}")
    return metrics


def _choose_part_weights(ctx: RunContext, model: SequentialRecommender, dm: SequenceDataModule) -> dict[str, float]:
    """For a model with part weights to choose (`recsys.eval.part_weight`): choose them on every validation
    user and return each (`<part>_weight`) with each weight's validation NDCG@k; otherwise nothing."""
    if not (isinstance(model, WeightedParts) and model.part_weights()):
        return {}
    k = ctx.cfg.eval.monitor_k
    chosen = choose_part_weights(
        model,
        dm.val_dataloader(all_users=True),
        k=k,
        exclude_seen=ctx.cfg.eval.exclude_seen,
        item_chunk=ctx.cfg.eval.item_chunk,
    )
    metrics: dict[str, float] = {}
    for part, (weight, ndcg) in chosen.items():
        log.info("%s weight %g chosen on validation NDCG@%d: %s", part, weight, k, ndcg)
        metrics |= {f"{part}_weight": weight} | {f"val/ndcg@{k}_{part}_weight_{w:g}": v for w, v in ndcg.items()}
    return metrics


def _rank_val_test(
    ctx: RunContext, model: SequentialRecommender, dm: SequenceDataModule
) -> tuple[dict[str, float], dict[str, Any], dict[str, pl.DataFrame]]:
    """Full-ranking val and test metrics, the protocol and the per-user results of a retrieval model."""
    cfg = ctx.cfg
    kw: dict[str, Any] = {
        "ks": cfg.eval.ks,
        "exclude_seen": cfg.eval.exclude_seen,
        "item_chunk": cfg.eval.item_chunk,
        "split_protocol": dm.protocol,
    }
    val = evaluate(model, dm.val_dataloader(all_users=True), split="val", **kw)  # not the checks' sample
    test = evaluate(model, dm.test_dataloader(), split="test", **kw)
    split = dm.sequence_split
    if split is None:
        raise RuntimeError("the DataModule has not been set up: no split to attach per-user results to")
    items = item_stats(split, ctx.n_items)
    per_user = {
        "val": per_user_results(val, split.validation, items),
        "test": per_user_results(test, split.test, items),
        ITEMS_TABLE: items,
    }
    return {**val.metrics, **test.metrics}, test.protocol, per_user


def log_run(
    recorder: RunRecorder,
    ctx: RunContext,
    model: AnyModel,
    config: dict[str, Any],
    metrics: dict[str, float],
    record: dict[str, Any],
    per_user: dict[str, pl.DataFrame] | None = None,
) -> None:
    """Everything a run keeps: params and config.yaml (the resolved config), final metrics, dataset
    meta, the results record, the per-user results, weights and item embeddings; then the run is
    marked FINISHED."""
    cfg = ctx.cfg
    recorder.log_params(config)
    recorder.log_metrics(metrics, step=int(record["epochs"]))
    recorder.log_text(yaml.safe_dump(config, sort_keys=False), "config.yaml")
    recorder.log_text(Path(cfg.data).read_text(), "data/data_config.yaml")
    recorder.log_json(ctx.data.meta, "data/meta.json")
    recorder.log_json(record, "result.json")
    recorder.set_tags({"data_dir": str(ctx.data.data_dir.resolve()), "command": ctx.command[:5000]})
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        write_model(model, ctx.model_spec, model_dir)
        recorder.log_dir(model_dir, "model")
        if isinstance(model, SequentialRecommender):  # a ranker has no item table
            emb_path = Path(tmp) / "item_embeddings.npy"
            with torch.no_grad():
                np.save(emb_path, model.item_embeddings().float().numpy())
            recorder.log_file(emb_path, "embeddings")
    if per_user:
        log_tables(recorder, per_user)
    recorder.finish("FINISHED")
