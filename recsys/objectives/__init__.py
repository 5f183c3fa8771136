"""Training objectives as registered parts: a model names its objective, shared code looks it up here."""

from __future__ import annotations

from recsys.objectives.base import LossParts, NonFiniteLossError, Objective, training_losses
from recsys.objectives.cross_subsequence import CrossSubsequence, WindowViewsObjective
from recsys.objectives.labelled import LabelledCandidates
from recsys.objectives.listwise import ListwiseCandidates
from recsys.objectives.masked import Masked
from recsys.objectives.random_window import RandomWindow
from recsys.objectives.text import TextNextItem

OBJECTIVES: dict[str, type[Objective]] = {
    "next_item": Objective,
    "random_window": RandomWindow,
    "masked": Masked,
    "cross_subsequence": CrossSubsequence,
    "window_views": WindowViewsObjective,
    "text_next_item": TextNextItem,
    "labelled_candidates": LabelledCandidates,
    "listwise_candidates": ListwiseCandidates,
}


def build_objective(name: str) -> Objective:
    """The objective registered as `name`; an unknown name raises `KeyError` listing the valid ones."""
    if name not in OBJECTIVES:
        raise KeyError(f"unknown objective {name!r}; valid names: {sorted(OBJECTIVES)}")
    return OBJECTIVES[name]()


__all__ = ["OBJECTIVES", "LossParts", "NonFiniteLossError", "Objective", "build_objective", "training_losses"]
