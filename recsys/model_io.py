"""Save and load a model as a directory: `model.json` (name, resolved config, n_items) + `state_dict.pt`.

One format for every registered model, retrieval models (`recsys.registry.MODELS`) and rankers
(`RANKERS`) alike. The config written is the model's own resolved `Config` (every field, defaults
and a ranker's `auto` fields included), so a later change of a default never changes how a saved
model is rebuilt. The same spec travels in Lightning checkpoints
(`recsys.train.callbacks.ModelSpecInCheckpoint`) and in serving bundles. This module sits above
the registry: models never import it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

import torch

from recsys.config import to_dict
from recsys.models.base import SequentialRecommender
from recsys.models.ranker import AUTO, AnyModel, Ranker
from recsys.registry import choose_registered, model_class

MODEL_JSON = "model.json"
STATE_DICT = "state_dict.pt"
SPEC_KEYS = ("name", "config", "n_items")
# the ranker format before rankers were saved like every model (ranker.json + ranker.pt): refused
OLD_RANKER_JSON = "ranker.json"
REEXPORT = "python -m pipelines.train_ranker --config configs/experiment/<ranker>_<data>.yaml"

M = TypeVar("M", bound=AnyModel)
Kind = Literal["retrieval", "ranker"]  # which contract a loaded model must implement


def resolved_config(model: AnyModel) -> dict[str, Any]:
    """The model's `Config` dataclass as a plain dict, every field included (defaults resolved)."""
    cfg = vars(model).get("cfg")  # a plain attribute: nn.Module keeps it in __dict__
    if cfg is None or not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"{type(model).__name__} keeps no Config dataclass in .cfg: its config cannot be saved")
    config: dict[str, Any] = to_dict(cfg)
    return config


def model_spec(model: AnyModel, name: str, n_items: int) -> dict[str, Any]:
    """What rebuilds `model` (with `build_from_spec`): registry name, resolved config, catalog size."""
    cls = model_class(name)
    if not isinstance(model, cls):
        raise TypeError(f"model is a {type(model).__name__}, not the registry's {name!r} ({cls.__name__})")
    return {"name": name, "config": resolved_config(model), "n_items": int(n_items)}


@overload
def build_from_spec(
    spec: Mapping[str, Any], *, source: str = ..., kind: Literal["retrieval"] = ...
) -> SequentialRecommender: ...


@overload
def build_from_spec(spec: Mapping[str, Any], *, source: str = ..., kind: Literal["ranker"]) -> Ranker: ...


def build_from_spec(spec: Mapping[str, Any], *, source: str = "<spec>", kind: Kind = "retrieval") -> AnyModel:
    """A freshly initialised model from a spec written by `model_spec` (weights not loaded).

    Args:
        spec: name, config and n_items of the model.
        source: where the spec came from, named in errors.
        kind: the contract the caller expects: "retrieval" (a `SequentialRecommender`, default)
            or "ranker" (a `recsys.models.ranker.Ranker`).

    Raises:
        ValueError: the spec lacks a key.
        KeyError: the name is registered in neither table.
        TypeError: the spec names a model of the other kind.
    """
    missing = [k for k in SPEC_KEYS if k not in spec]
    if missing:
        raise ValueError(f"{source}: model spec lacks {missing} (has {sorted(spec)})")
    name = str(spec["name"])
    cls = model_class(name)
    found: Kind = "ranker" if issubclass(cls, Ranker) else "retrieval"
    if found != kind:
        raise TypeError(f"{source}: {name!r} ({cls.__name__}) is a {found} model, not a {kind} model")
    return choose_registered(name, saved_config(cls, spec["config"])).build(int(spec["n_items"]))


def saved_config(cls: type[AnyModel], config: Mapping[str, Any]) -> dict[str, Any]:
    """A saved model's config with every field it predates set to what the model was trained with:
    its `Config.SAVED_BEFORE` value (e.g. Recformer's `pooling: cls`), not today's default."""
    before: Mapping[str, Any] = getattr(cls.Config, "SAVED_BEFORE", {})
    return {**before, **config}


def save_model(model: AnyModel, name: str, params: Mapping[str, Any], n_items: int, directory: Path) -> None:
    """Write the model's registry name, resolved config and weights so `load_model` can rebuild it.

    Args:
        model: the model to save (a retrieval model or a ranker).
        name: its registry key (e.g. "sasrec", "dare").
        params: the parameters it was built from (e.g. an experiment's `model.params`); they must
            resolve to the model's own config, where a field given as `auto` matches what the model
            resolved it to. What is written is the model's resolved config.
        n_items: catalog size the model was built for.
        directory: output directory (created).
    """
    spec = model_spec(model, name, n_items)
    given = to_dict(choose_registered(name, params).config)
    saved = spec["config"]
    diff = sorted(k for k in saved if given.get(k) not in (saved[k], AUTO))
    if diff:
        raise ValueError(f"params {dict(params)} do not resolve to the model's config (fields {diff} differ)")
    write_model(model, spec, directory)


def write_model(model: AnyModel, spec: Mapping[str, Any], directory: Path) -> None:
    """Write `model`'s weights beside `spec` (from `model_spec` or `recsys.registry.ModelChoice.spec`,
    so the caller vouches that it describes `model`) as a directory `load_model` reads."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MODEL_JSON).write_text(json.dumps(dict(spec), indent=2, sort_keys=True))
    torch.save(model.state_dict(), directory / STATE_DICT)


def read_spec(directory: Path) -> dict[str, Any]:
    """The `model.json` of a saved model directory."""
    path = directory / MODEL_JSON
    if not path.is_file() and (directory / OLD_RANKER_JSON).is_file():
        raise ValueError(f"{directory} holds a ranker in the old format ({OLD_RANKER_JSON}); re-export it: {REEXPORT}")
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {directory} is not a saved model directory")
    spec: dict[str, Any] = json.loads(path.read_text())
    return spec


@overload
def load_model(
    directory: Path, map_location: str | torch.device = ..., *, kind: Literal["retrieval"] = ...
) -> SequentialRecommender: ...


@overload
def load_model(directory: Path, map_location: str | torch.device = ..., *, kind: Literal["ranker"]) -> Ranker: ...


def load_model(directory: Path, map_location: str | torch.device = "cpu", *, kind: Kind = "retrieval") -> AnyModel:
    """Rebuild a model saved by `save_model`, in eval mode; `kind` as in `build_from_spec`
    (`load_model(d, kind="ranker")` for a ranker)."""
    model: AnyModel = build_from_spec(read_spec(directory), source=str(directory / MODEL_JSON), kind=kind)
    return load_weights(model, directory, map_location)


def load_weights(model: M, directory: Path, map_location: str | torch.device = "cpu") -> M:
    """Load the `state_dict.pt` of a saved model directory into `model` (built from its spec); eval mode."""
    state = torch.load(directory / STATE_DICT, map_location=map_location, weights_only=True)
    model.load_state_dict(state)
    model.eval()
    return model
