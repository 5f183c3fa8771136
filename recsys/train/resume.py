"""A stopped run: where its checkpoints are, how far its fit got, and the model it trained."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from recsys.config import from_dict, to_dict
from recsys.model_io import saved_config
from recsys.registry import ModelChoice
from recsys.tracking.mlflow import read_run, reopen_run
from recsys.train.callbacks import checkpoint_model_spec

log = logging.getLogger(__name__)

CHECKPOINT_DIR_TAG = "checkpoint_dir"  # where a run keeps best.ckpt and last.ckpt while it trains


@dataclass(frozen=True)
class ResumePoint:
    """A stopped run reopened to continue its fit from `checkpoint`."""

    run_id: str
    checkpoint: Path
    state: dict[str, Any]  # the loaded checkpoint
    started_at: str  # the run's own start (ISO time)
    spent_s: float  # seconds of fit before the stop (Lightning's Timer state)
    epoch: int  # the last epoch the checkpoint finished


def run_checkpoint(tracking_uri: str, run_id: str, name: str) -> Path:
    """`name` (best.ckpt or last.ckpt) in the checkpoint directory the run recorded when it started."""
    tags = read_run(tracking_uri, run_id)["tags"]
    if CHECKPOINT_DIR_TAG not in tags:
        raise ValueError(f"run {run_id} did not record its {CHECKPOINT_DIR_TAG}: pass --checkpoint PATH")
    path = Path(tags[CHECKPOINT_DIR_TAG]) / name
    if not path.is_file():
        raise FileNotFoundError(f"run {run_id} has no {name} in {path.parent} (pass --checkpoint PATH)")
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A Lightning checkpoint, on the CPU."""
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    return state


def reopen(tracking_uri: str, run_id: str, checkpoint: Path | None = None) -> ResumePoint:
    """Mark a stopped run as running again and read its checkpoint (default: the run's last.ckpt)."""
    reopen_run(tracking_uri, run_id)
    path = checkpoint or run_checkpoint(tracking_uri, run_id, "last.ckpt")
    state = load_checkpoint(path)
    spent = state.get("callbacks", {}).get("Timer", {}).get("time_elapsed", {})
    return ResumePoint(
        run_id=run_id,
        checkpoint=path,
        state=state,
        started_at=read_run(tracking_uri, run_id)["start_time"],
        spent_s=float(sum(spent.values())),
        epoch=int(state["epoch"]),
    )


def checkpoint_choice(current: ModelChoice[Any], state: dict[str, Any], n_items: int) -> ModelChoice[Any]:
    """The model a checkpoint was trained as: its class is `current`'s (the experiment's model, looked
    up once), its config the resolved one the checkpoint stores, so a default changed since the run
    started does not change it. A checkpoint written before the config was stored keeps `current`.

    Raises:
        ValueError: the checkpoint holds another model or another catalog size than the experiment's.
    """
    spec = checkpoint_model_spec(state)
    if spec is None:
        log.warning("the checkpoint stores no model config: the model is built from the experiment config")
        return current
    if spec["name"] != current.name or int(spec["n_items"]) != n_items:
        raise ValueError(
            f"the checkpoint holds a {spec['name']!r} model over {spec['n_items']} items; "
            f"the experiment asks for {current.name!r} over {n_items} items"
        )
    saved = saved_config(current.cls, spec["config"])
    now = to_dict(current.config)
    changed = sorted(k for k in now if saved.get(k) != now[k])
    if changed:
        log.warning(
            "the experiment config now resolves to other model settings than the checkpoint's in %s: "
            "the checkpoint's are kept (%s)",
            changed,
            {k: saved.get(k) for k in changed},
        )
    config = from_dict(current.cls.Config, saved, source="checkpoint")
    return ModelChoice(current.name, current.cls, config)
