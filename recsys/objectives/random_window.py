"""Next-item training on one randomly placed window per user and epoch.

The default objective trains on each user's last `max_len + 1` items only: a model that reads a
short history (an LLM backbone on a CPU budget) would then never learn from the rest of a long
history. Here every read of a user's row draws a target uniformly in their training sequence and the
row is the `max_len` items before it and the target (`recsys.data.datasets.RandomCuts`); as in the
default objective, every position of the window predicts the item after it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from recsys.data.datasets import RandomCuts, TrainRows
from recsys.objectives.base import Objective


class RandomWindow(Objective):
    """The default next-item objective over random windows instead of each user's last one."""

    def train_rows(self, seqs: Sequence[Sequence[int]], max_len: int, *, generator: torch.Generator) -> TrainRows:
        return RandomCuts(seqs, max_len, generator=generator)
