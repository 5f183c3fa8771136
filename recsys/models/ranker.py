"""The ranker contract: a model that scores given candidates against a user's history (DARE, TWIN, DIN).

A ranker is the second stage after a retrieval model (`recsys.models.base.SequentialRecommender`):
it never scores the whole catalog, only the candidates it is handed, so it has no `encode` /
`item_embeddings`. It is registered in `recsys.registry.RANKERS`, saved and loaded by
`recsys.model_io` like every model, configured by YAML (`configs/model/<name>.yaml`) and trained
through its `objective` (labelled candidates).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeAlias

import torch
from torch import nn

from recsys.data.item_features import ItemFeatures
from recsys.data.labelled import LabelledData
from recsys.models.base import SequentialRecommender

AUTO: Final = "auto"  # a config value the ranker resolves from its data when built (`Ranker.resolve_config`)


@dataclass(frozen=True)
class RankerData:
    """What a ranker's data-dependent config fields (`AUTO`) are resolved from."""

    item_features: ItemFeatures | None = None  # the items' side information (genres)
    # history ratings given as an input take values 1..rating_levels - 1 (0 = none); 0: no ratings input
    rating_levels: int = 0

    @classmethod
    def of_labelled(cls, data: LabelledData, item_features: ItemFeatures | None) -> RankerData:
        """The facts of a labelled dataset: its histories carry ratings as an input only under the
        `explicit` recipe (the label is the rating there; the `paper` recipe is implicit feedback)."""
        explicit = data.meta.get("config", {}).get("recipe") == "explicit"
        return cls(item_features, int(data.ratings.max()) + 1 if explicit and data.ratings.numel() else 0)


def check_count(name: str, value: int | str) -> None:
    """Raise `ValueError` naming the config field `name` unless `value` is `AUTO` or an integer >= 0."""
    if value != AUTO and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"{name} must be >= 0 or {AUTO!r}, got {value!r}")


def resolve_count(value: int | str, from_data: int) -> int:
    """`from_data` where a config field is `AUTO`, else its own value."""
    if value == AUTO:
        return from_data
    assert isinstance(value, int)  # checked by the config's `check_count`
    return value


def unknown_stage1_scores(candidates: torch.Tensor) -> torch.Tensor:
    """All-zero stage-1 scores [B, C] for `candidates` [B, C] that come with none (labelled rows)."""
    return torch.zeros(candidates.shape, dtype=torch.float32, device=candidates.device)


class Ranker(nn.Module, abc.ABC):
    """A plain `nn.Module` that scores candidate items after a history; `score` is its one method.

    Histories are left-padded like everywhere: `items` [B, L] long with 0 = pad, the most recent
    event in the last column. A subclass defines its frozen `Config` dataclass in its own file,
    keeps the resolved config in `self.cfg` (what `recsys.model_io` saves) and sets `max_len`.
    """

    Config: ClassVar[type[Any]]  # the ranker's frozen config dataclass, defined in its own file
    objective: str = "labelled_candidates"
    uses_item_features: bool = False  # True: it is built with the dataset's `ItemFeatures` (may be None)
    cfg: Any  # an instance of `Config`, every `AUTO` field resolved
    max_len: int  # history events read: the last `max_len` columns of `items`
    n_items: int  # the catalog it was built for (item ids 1..n_items)

    @classmethod
    def resolve_config(cls, cfg: Any, data: RankerData) -> Any:
        """`cfg` with its `AUTO` fields resolved from `data`; a ranker without such fields returns it."""
        del data
        return cfg

    @abc.abstractmethod
    def score(
        self,
        items: torch.Tensor,
        candidates: torch.Tensor,
        stage1_scores: torch.Tensor,
        *,
        ratings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [B, C] of `candidates` [B, C] (item ids) after the left-padded histories `items` [B, L].

        Args:
            items: the histories, 0 = pad.
            candidates: the items to score.
            stage1_scores: [B, C] float, the retrieval stage's score of each candidate; all zeros
                when unknown (`unknown_stage1_scores`, e.g. labelled training rows). Every ranker
                receives it; one may ignore it (and says so in its docstring).
            ratings: [B, L] long rating of each history event (0 = none), for rankers with a rating
                input; None = no ratings. Inputs added later come as keyword arguments like this one.
        """

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any, **kwargs: Any) -> None:
        """A side table (a buffer of this module, e.g. item genres) takes the shape it was saved with,
        so a ranker built without its item features loads the tables it was trained with."""
        for name, buffer in list(self._buffers.items()):
            saved = state_dict.get(prefix + name)
            if buffer is not None and saved is not None and saved.shape != buffer.shape:
                self._buffers[name] = torch.empty(saved.shape, dtype=buffer.dtype, device=buffer.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


# what the registry builds and `recsys.model_io` saves: a retrieval model or a ranker
AnyModel: TypeAlias = SequentialRecommender | Ranker
