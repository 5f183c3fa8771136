"""Save and load a model as a directory: `model.json` (name, resolved config, n_items) + `state_dict.pt`.

The config written is the model's own resolved `Config` (every field, defaults included), so a
later change of a default never changes how a saved model is rebuilt. The same spec travels in
Lightning checkpoints (`recsys.train.callbacks.ModelSpecInCheckpoint`) and in serving bundles.
This module sits above the registry: models never import it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from recsys.config import to_dict
from recsys.models.base import SequentialRecommender
from recsys.registry import MODELS, build_model, lookup, model_config

MODEL_JSON = "model.json"
STATE_DICT = "state_dict.pt"
SPEC_KEYS = ("name", "config", "n_items")


def resolved_config(model: SequentialRecommender) -> dict[str, Any]:
    """The model's `Config` dataclass as a plain dict, every field included (defaults resolved)."""
    cfg = vars(model).get("cfg")  # a plain attribute: nn.Module keeps it in __dict__
    if cfg is None or not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"{type(model).__name__} keeps no Config dataclass in .cfg: its config cannot be saved")
    config: dict[str, Any] = to_dict(cfg)
    return config


def model_spec(model: SequentialRecommender, name: str, n_items: int) -> dict[str, Any]:
    """What rebuilds `model` (with `build_from_spec`): registry name, resolved config, catalog size."""
    cls = lookup(MODELS, name, "model")
    if not isinstance(model, cls):
        raise TypeError(f"model is a {type(model).__name__}, not the registry's {name!r} ({cls.__name__})")
    return {"name": name, "config": resolved_config(model), "n_items": int(n_items)}


def build_from_spec(spec: Mapping[str, Any], *, source: str = "<spec>") -> SequentialRecommender:
    """A freshly initialised model from a spec written by `model_spec` (weights not loaded)."""
    missing = [k for k in SPEC_KEYS if k not in spec]
    if missing:
        raise ValueError(f"{source}: model spec lacks {missing} (has {sorted(spec)})")
    return build_model(str(spec["name"]), spec["config"], int(spec["n_items"]))


def save_model(
    model: SequentialRecommender, name: str, params: Mapping[str, Any], n_items: int, directory: Path
) -> None:
    """Write the model's registry name, resolved config and weights so `load_model` can rebuild it.

    Args:
        model: the model to save.
        name: its registry key (e.g. "sasrec").
        params: the parameters it was built from (e.g. an experiment's `model.params`); they must
            resolve to the model's own config. What is written is that resolved config.
        n_items: catalog size the model was built for.
        directory: output directory (created).
    """
    spec = model_spec(model, name, n_items)
    given = to_dict(model_config(name, params))
    if given != spec["config"]:
        diff = sorted(k for k in spec["config"] if given.get(k) != spec["config"][k])
        raise ValueError(f"params {dict(params)} do not resolve to the model's config (fields {diff} differ)")
    write_model(model, spec, directory)


def write_model(model: SequentialRecommender, spec: Mapping[str, Any], directory: Path) -> None:
    """Write `model`'s weights beside `spec` (from `model_spec` or `recsys.registry.ModelChoice.spec`,
    so the caller vouches that it describes `model`) as a directory `load_model` reads."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MODEL_JSON).write_text(json.dumps(dict(spec), indent=2, sort_keys=True))
    torch.save(model.state_dict(), directory / STATE_DICT)


def read_spec(directory: Path) -> dict[str, Any]:
    """The `model.json` of a saved model directory."""
    path = directory / MODEL_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {directory} is not a saved model directory")
    spec: dict[str, Any] = json.loads(path.read_text())
    return spec


def load_model(directory: Path, map_location: str | torch.device = "cpu") -> SequentialRecommender:
    """Rebuild a model saved by `save_model`, in eval mode."""
    model = build_from_spec(read_spec(directory), source=str(directory / MODEL_JSON))
    return load_weights(model, directory, map_location)


def load_weights(
    model: SequentialRecommender, directory: Path, map_location: str | torch.device = "cpu"
) -> SequentialRecommender:
    """Load the `state_dict.pt` of a saved model directory into `model` (built from its spec); eval mode."""
    state = torch.load(directory / STATE_DICT, map_location=map_location, weights_only=True)
    model.load_state_dict(state)
    return model.eval()
