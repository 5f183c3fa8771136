"""Explicit name -> implementation tables. Adding a model is one file, one line here, one YAML."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

from recsys.config import from_dict, to_dict
from recsys.data.item_features import ItemFeatures
from recsys.models.base import SequentialRecommender
from recsys.models.bert4rec import BERT4Rec
from recsys.models.dare import DARE
from recsys.models.din import DIN
from recsys.models.icsrec import ICSRec
from recsys.models.id_text_sasrec import IDTextSASRec
from recsys.models.llm_rec import LLMRec
from recsys.models.ranker import AnyModel, Ranker, RankerData
from recsys.models.recformer import Recformer
from recsys.models.sasrec import SASRec
from recsys.models.twin import TWIN

MODELS: dict[str, type[SequentialRecommender]] = {
    "sasrec": SASRec,
    "bert4rec": BERT4Rec,
    "icsrec": ICSRec,
    "recformer": Recformer,
    "llm_rec": LLMRec,
    "id_text_sasrec": IDTextSASRec,
}

# Models that score given candidates (`recsys.models.ranker.Ranker`, not a dot product with an item
# table): ranking stages after a retrieval model, trained on labelled candidates. TWIN with linear
# projections (the DARE paper's "TWIN w/ proj") is TWIN with `d_proj > 0`.
RANKERS: dict[str, type[Ranker]] = {
    "dare": DARE,
    "twin": TWIN,
    "din": DIN,
}

M = TypeVar("M", bound=AnyModel)


def lookup(table: Mapping[str, Any], name: str, kind: str) -> Any:
    """Return `table[name]`, or raise `KeyError` listing the valid names."""
    if name not in table:
        raise KeyError(f"unknown {kind} {name!r}; valid names: {sorted(table)}")
    return table[name]


def model_class(name: str) -> type[SequentialRecommender] | type[Ranker]:
    """The class registered as `name` in `MODELS` or `RANKERS`; an unknown name raises `KeyError`
    listing every registered name (what `recsys.model_io` rebuilds a saved model by)."""
    if name in MODELS:
        return MODELS[name]
    if name in RANKERS:
        return RANKERS[name]
    raise KeyError(f"unknown model {name!r}; valid names: {sorted(MODELS)} (models), {sorted(RANKERS)} (rankers)")


@dataclass(frozen=True)
class ModelChoice(Generic[M]):
    """A registry entry with its validated config: what builds a model and what describes it on disk."""

    name: str
    cls: type[M]
    config: Any  # the model's own frozen `Config` dataclass, every field resolved

    def build(self, n_items: int, item_features: ItemFeatures | None = None) -> M:
        """The model over `n_items` items; `item_features` reach models that declare `uses_item_features`
        (they may be built without, e.g. to load saved weights)."""
        if self.cls.uses_item_features:
            return self.cls(self.config, n_items, item_features)
        return self.cls(self.config, n_items)

    def spec(self, n_items: int) -> dict[str, Any]:
        """What rebuilds the model (`recsys.model_io`): registry name, resolved config, catalog size.
        A ranker's `auto` fields are resolved only after `resolved(data)`."""
        return {"name": self.name, "config": to_dict(self.config), "n_items": int(n_items)}

    def resolved(self, data: RankerData) -> ModelChoice[M]:
        """This choice with a ranker's data-dependent (`auto`) config fields resolved from `data`
        (`Ranker.resolve_config`), so `spec` and `build` agree; a retrieval model has none."""
        if not issubclass(self.cls, Ranker):
            return self
        return ModelChoice(self.name, self.cls, self.cls.resolve_config(self.config, data))


@overload
def choose_model(name: str, params: Mapping[str, Any]) -> ModelChoice[SequentialRecommender]: ...


@overload
def choose_model(name: str, params: Mapping[str, Any], *, table: Mapping[str, type[M]]) -> ModelChoice[M]: ...


def choose_model(
    name: str, params: Mapping[str, Any], *, table: Mapping[str, type[Any]] | None = None
) -> ModelChoice[Any]:
    """Look up model `name` once and validate `params` into its `Config` (missing fields take defaults).

    Args:
        name: a key of `MODELS` (or of `table`).
        params: the model's parameters, e.g. an experiment's `model.params` or a saved spec's config.
        table: the registry table to look in (`RANKERS` for a ranker); default `MODELS`.

    Raises:
        KeyError: unknown name (the valid names listed).
        ConfigError: an unknown key, a wrong type or a bad value in `params`.
    """
    kind = "ranker" if table is RANKERS else "model"
    cls = lookup(MODELS if table is None else table, name, kind)
    return ModelChoice(name, cls, from_dict(cls.Config, params, source=f"{kind} '{name}'"))


def choose_registered(name: str, params: Mapping[str, Any]) -> ModelChoice[AnyModel]:
    """`choose_model` over both tables: `name` may be a retrieval model's or a ranker's (`model_class`)."""
    return choose_model(name, params, table={name: model_class(name)})


def model_config(name: str, cfg: Mapping[str, Any]) -> Any:
    """Validate `cfg` into model `name`'s `Config` dataclass (defaults filled in)."""
    return choose_model(name, cfg).config


def build_ranker(
    name: str, cfg: Mapping[str, Any], n_items: int, *, item_features: ItemFeatures | None = None
) -> Ranker:
    """Look up ranker `name` in `RANKERS`, validate `cfg` into its `Config` and construct it; its
    `auto` fields are resolved from `item_features` alone (see `ModelChoice.resolved` for more data)."""
    return choose_model(name, cfg, table=RANKERS).resolved(RankerData(item_features)).build(n_items, item_features)


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
