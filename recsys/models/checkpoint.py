"""Save and load a model as a directory: `model.json` (name, config, n_items) + `state_dict.pt`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from recsys.models.base import SequentialRecommender
from recsys.registry import build_model

MODEL_JSON = "model.json"
STATE_DICT = "state_dict.pt"


def save_model(model: SequentialRecommender, name: str, cfg: Mapping[str, Any], n_items: int, directory: Path) -> None:
    """Write the model's registry name, config and weights so `load_model` can rebuild it."""
    directory.mkdir(parents=True, exist_ok=True)
    spec = {"name": name, "config": dict(cfg), "n_items": n_items}
    (directory / MODEL_JSON).write_text(json.dumps(spec, indent=2, sort_keys=True))
    torch.save(model.state_dict(), directory / STATE_DICT)


def load_model(directory: Path, map_location: str | torch.device = "cpu") -> SequentialRecommender:
    """Rebuild a model saved by `save_model`, in eval mode."""
    spec_path = directory / MODEL_JSON
    if not spec_path.is_file():
        raise FileNotFoundError(f"{spec_path} not found: {directory} is not a saved model directory")
    spec = json.loads(spec_path.read_text())
    model = build_model(spec["name"], spec["config"], int(spec["n_items"]))
    state = torch.load(directory / STATE_DICT, map_location=map_location, weights_only=True)
    model.load_state_dict(state)
    return model.eval()
