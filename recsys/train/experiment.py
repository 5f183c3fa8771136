"""The experiment config: which data, which model, how to train, evaluate and track.

An experiment YAML names a data config by path and composes model/train sections from files:
a mapping with a `_base: path` key is the YAML at that path deep-merged with the other keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from recsys.config import ConfigError, apply_overrides, from_dict, read_yaml
from recsys.data.split import SplitConfig
from recsys.nn.losses import LOSSES
from recsys.tracking.config import TrackingConfig

BASE_KEY = "_base"


@dataclass(frozen=True)
class ModelSpec:
    name: str  # a key of recsys.registry.MODELS
    params: dict[str, Any] = field(default_factory=dict)  # validated by the model's own Config


@dataclass(frozen=True)
class TrainConfig:
    max_epochs: int = 200
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    loss: str = "ce"  # a key of recsys.nn.losses.LOSSES
    n_negatives: int = 256  # for sampled losses
    label_smoothing: float = 0.0  # loss "ce" only: share of each target's mass spread over the catalog
    # the items a training target is ranked against: "catalog" every item; "trained" only the items of
    # the training sequences (an item that never trains, e.g. the cold-item protocol's, is no negative:
    # items added after training do not exist while it runs)
    negatives: Literal["catalog", "trained"] = "catalog"
    patience: int = 10  # validation checks without NDCG@10 improvement before stopping
    val_every: int = 1  # epochs between validation checks
    # < 1: multiply the lr by this after `lr_decay_patience` + 1 validation checks in a row without
    # NDCG@10 improvement (ReduceLROnPlateau); 1 keeps the lr constant
    lr_decay: float = 1.0
    lr_decay_patience: int = 3
    # per optimiser step over the fit's max_epochs: "constant" keeps `lr`; "warmup_cosine" rises
    # linearly to `lr` over the first `warmup_frac` of the steps, then follows a cosine to 0;
    # "onecycle" is torch's OneCycleLR peaking at `lr` after `warmup_frac` of the steps (betas fixed)
    lr_schedule: Literal["constant", "warmup_cosine", "onecycle"] = "constant"
    warmup_frac: float = 0.1  # share of the fit's total steps spent warming up (per-step schedules)
    # AdamW's implementation: "default" lets torch choose; "foreach" or "fused" ask for that one
    optimizer_impl: Literal["default", "foreach", "fused"] = "default"
    # > 0: validate, checkpoint and test an exponential moving average of the weights, updated each
    # optimiser step with this decay (0.999 averages over ~1000 steps); 0: the trained weights
    ema_decay: float = 0.0
    min_epochs: int = 1
    max_minutes: float | None = None  # wall-clock budget for fit
    grad_clip: float | None = 1.0
    # batches whose gradients are summed into one optimiser step (an effective batch of
    # batch_size * accumulate_batches; per-step lr schedules and the weight average count steps)
    accumulate_batches: int = 1
    seed: int = 42
    accelerator: str = "auto"  # cpu | gpu | auto
    devices: int = 1  # processes (GPUs) per machine
    num_nodes: int = 1  # machines (torchrun --nnodes, SLURM --nodes); world size = devices * num_nodes
    strategy: str = "auto"  # auto | ddp | ddp_spawn ...
    precision: Literal["32-true", "bf16-mixed", "16-mixed"] = "32-true"
    num_threads: int | None = None  # torch CPU threads; None leaves torch's default
    # > 0: batches cut from length-sorted pools of this many batches (less padding, faster on
    # short-history data; batch rows then have similar lengths); 0: plain shuffled batches
    length_pool: int = 0
    # None: every training row once per epoch; else this many batches of a fresh shuffle per epoch (a
    # fixed compute budget on a large training split, e.g. a ranker's labelled rows)
    steps_per_epoch: int | None = None
    progress_bar: bool = True

    def __post_init__(self) -> None:
        for name in (
            "max_epochs",
            "batch_size",
            "n_negatives",
            "patience",
            "val_every",
            "min_epochs",
            "accumulate_batches",
            "devices",
            "num_nodes",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1 or null, got {self.steps_per_epoch}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0.0 < self.lr_decay <= 1.0:
            raise ValueError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        if self.lr_decay < 1.0 and not 0 <= self.lr_decay_patience < self.patience:
            raise ValueError(
                f"lr_decay_patience must be in [0, patience={self.patience}), got {self.lr_decay_patience}: "
                "early stopping would end the run before the lr decays"
            )
        if not 0.0 <= self.warmup_frac < 1.0:
            raise ValueError(f"warmup_frac must be in [0, 1), got {self.warmup_frac}")
        if self.optimizer_impl == "fused" and self.precision != "32-true" and self.grad_clip is not None:
            raise ValueError(
                f"optimizer_impl='fused' with precision={self.precision!r} cannot clip gradients (Lightning "
                f"refuses it; grad_clip={self.grad_clip}): set grad_clip=null or optimizer_impl=default"
            )
        if self.lr_schedule == "onecycle" and self.warmup_frac == 0.0:
            raise ValueError("warmup_frac must be > 0 with lr_schedule 'onecycle' (its rising phase), got 0.0")
        if self.lr_schedule != "constant" and self.lr_decay < 1.0:
            raise ValueError(
                f"lr_decay={self.lr_decay} (decay on a validation plateau) cannot be combined with "
                f"lr_schedule={self.lr_schedule!r}: the per-step schedule sets the lr at every step; "
                "set lr_decay=1.0 or lr_schedule=constant"
            )
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.length_pool < 0:
            raise ValueError(f"length_pool must be >= 0, got {self.length_pool}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss={self.loss!r} is not one of {sorted(LOSSES)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.label_smoothing > 0 and self.loss != "ce":
            raise ValueError(f"label_smoothing applies to loss 'ce' only, got loss={self.loss!r}")
        if self.negatives not in ("catalog", "trained"):
            raise ValueError(f"negatives must be 'catalog' or 'trained', got {self.negatives!r}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"max_minutes must be > 0, got {self.max_minutes}")


@dataclass(frozen=True)
class EvalConfig:
    ks: tuple[int, ...] = (5, 10, 20)
    exclude_seen: bool = True  # mask items of the user's history when ranking
    batch_size: int = 1024
    item_chunk: int = 262_144  # catalog items scored at once
    monitor_k: int = 10  # early stopping and checkpoints follow val/ndcg@monitor_k
    # validation checks during the fit rank a fixed seeded sample of this many users (None: all);
    # the final val/test evaluation of a run always ranks every user
    val_users: int | None = None

    def __post_init__(self) -> None:
        if not self.ks or any(k < 1 for k in self.ks):
            raise ValueError(f"ks must be positive integers, got {list(self.ks)}")
        if self.monitor_k not in self.ks:
            raise ValueError(f"monitor_k={self.monitor_k} must be one of ks={list(self.ks)}")
        if self.batch_size < 1 or self.item_chunk < 1:
            raise ValueError("batch_size and item_chunk must be >= 1")
        if self.val_users is not None and self.val_users < 1:
            raise ValueError(f"val_users must be >= 1 or None (all users), got {self.val_users}")


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    data: str  # path of a data config (configs/data/<name>.yaml)
    model: ModelSpec
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    split: SplitConfig = field(default_factory=SplitConfig)  # leave-one-out, temporal, cold start
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    @property
    def monitor(self) -> str:
        return f"val/ndcg@{self.eval.monitor_k}"


def resolve_bases(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Replace every mapping that has `_base: path` by that file deep-merged with its own keys."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        out[key] = resolve_bases(value, source) if isinstance(value, dict) else value
    base = out.pop(BASE_KEY, None)
    if base is None:
        return out
    if not isinstance(base, str):
        raise ConfigError(f"{source}: '{BASE_KEY}' must be a file path, got {base!r}")
    return deep_merge(resolve_bases(read_yaml(Path(base)), base), out)


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` wins; nested mappings merge key by key."""
    out = dict(base)
    for key, value in top.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_experiment(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read an experiment YAML, resolve `_base` files, apply `key=value` overrides, validate."""
    data = apply_overrides(resolve_bases(read_yaml(path), str(path)), overrides)
    return from_dict(ExperimentConfig, data, source=str(path))
