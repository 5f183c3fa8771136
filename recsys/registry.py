"""Explicit name -> implementation tables. Adding a model is one file, one line here, one YAML."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from recsys.config import from_dict
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


def model_config(name: str, cfg: Mapping[str, Any]) -> Any:
    """Validate `cfg` into model `name`'s `Config` dataclass (defaults filled in)."""
    cls = lookup(MODELS, name, "model")
    return from_dict(cls.Config, cfg, source=f"model '{name}'")


def build_ranker(
    name: str, cfg: Mapping[str, Any], n_items: int, *, item_features: ItemFeatures | None = None
) -> SequentialRecommender:
    """Look up ranker `name` in `RANKERS`, validate `cfg` into its `Config` and construct it."""
    cls = lookup(RANKERS, name, "ranker")
    config = from_dict(cls.Config, cfg, source=f"ranker '{name}'")
    model: SequentialRecommender = (
        cls(config, n_items, item_features) if cls.uses_item_features else cls(config, n_items)
    )
    return model


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
    cls = lookup(MODELS, name, "model")
    config = model_config(name, cfg)
    model: SequentialRecommender
    if cls.uses_item_features:
        model = cls(config, n_items, item_features)
    else:
        model = cls(config, n_items)
    return model
