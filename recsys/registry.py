"""Explicit name -> implementation tables. Adding a model is one file, one line here, one YAML."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from recsys.config import from_dict, to_dict
from recsys.data.item_features import ItemFeatures
from recsys.models.base import SequentialRecommender
from recsys.models.bert4rec import BERT4Rec
from recsys.models.dare import DARE
from recsys.models.icsrec import ICSRec
from recsys.models.llm_rec import LLMRec
from recsys.models.recformer import Recformer
from recsys.models.sasrec import SASRec

MODELS: dict[str, type[SequentialRecommender]] = {
    "sasrec": SASRec,
    "bert4rec": BERT4Rec,
    "icsrec": ICSRec,
    "recformer": Recformer,
    "llm_rec": LLMRec,
}

# Models that score given candidates (not a dot product with an item table): ranking stages after a
# retrieval model, trained on labelled candidates. Kept apart from MODELS, whose contract is
# encode / item_embeddings.
RANKERS: dict[str, type[SequentialRecommender]] = {
    "dare": DARE,
}


def lookup(table: Mapping[str, Any], name: str, kind: str) -> Any:
    """Return `table[name]`, or raise `KeyError` listing the valid names."""
    if name not in table:
        raise KeyError(f"unknown {kind} {name!r}; valid names: {sorted(table)}")
    return table[name]


@dataclass(frozen=True)
class ModelChoice:
    """A registry entry with its validated config: what builds a model and what describes it on disk."""

    name: str
    cls: type[SequentialRecommender]
    config: Any  # the model's own frozen `Config` dataclass, every field resolved

    def build(self, n_items: int, item_features: ItemFeatures | None = None) -> SequentialRecommender:
        """The model over `n_items` items; `item_features` reach models that declare `uses_item_features`
        (they may be built without, e.g. to load saved weights)."""
        if self.cls.uses_item_features:
            return self.cls(self.config, n_items, item_features)
        return self.cls(self.config, n_items)

    def spec(self, n_items: int) -> dict[str, Any]:
        """What rebuilds the model (`recsys.model_io`): registry name, resolved config, catalog size."""
        return {"name": self.name, "config": to_dict(self.config), "n_items": int(n_items)}


def choose_model(name: str, params: Mapping[str, Any], *, table: Mapping[str, type[Any]] | None = None) -> ModelChoice:
    """Look up model `name` once and validate `params` into its `Config` (missing fields take defaults).

    Args:
        name: a key of `MODELS` (or of `table`).
        params: the model's parameters, e.g. an experiment's `model.params` or a saved spec's config.
        table: the registry table to look in; default `MODELS`.

    Raises:
        KeyError: unknown name (the valid names listed).
        ConfigError: an unknown key, a wrong type or a bad value in `params`.
    """
    kind = "model" if table is None else "ranker"
    cls = lookup(MODELS if table is None else table, name, kind)
    return ModelChoice(name, cls, from_dict(cls.Config, params, source=f"{kind} '{name}'"))


def model_config(name: str, cfg: Mapping[str, Any]) -> Any:
    """Validate `cfg` into model `name`'s `Config` dataclass (defaults filled in)."""
    return choose_model(name, cfg).config


def build_ranker(
    name: str, cfg: Mapping[str, Any], n_items: int, *, item_features: ItemFeatures | None = None
) -> SequentialRecommender:
    """Look up ranker `name` in `RANKERS`, validate `cfg` into its `Config` and construct it."""
    return choose_model(name, cfg, table=RANKERS).build(n_items, item_features)


def build_model(
    name: str, cfg: Mapping[str, Any], n_items: int, *, item_features: ItemFeatures | None = None
) -> SequentialRecommender:
    """Look up model `name`, validate `cfg` into its `Config` dataclass and construct it.

    Args:
        name: a key of `MODELS`.
        cfg: the model's parameters (missing ones take the `Config` defaults).
        n_items: catalog size.
        item_features: the dataset's item text and attributes, handed to models that declare
            `uses_item_features` (they may be built without, e.g. to load saved weights).
    """
    return choose_model(name, cfg).build(n_items, item_features)
