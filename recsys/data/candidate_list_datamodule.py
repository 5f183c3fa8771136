"""The DataModule of a two-stage ranker: candidate lists (`recsys.data.candidate_lists`) as shuffled
training batches (lists whose target stage 1 retrieved) and ordered validation / test batches (all)."""

from __future__ import annotations

from collections.abc import Sequence

import pytorch_lightning as pl_light
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, SequentialSampler

from recsys.data.candidate_lists import CandidateListBatch, CandidateLists, rows
from recsys.data.datamodule import ShardedShuffle


class _Lists(Dataset[CandidateListBatch]):
    """The lists of one split, indexed by lists of rows (one batch per index list)."""

    def __init__(self, lists: CandidateListBatch) -> None:
        self.lists = lists

    def __len__(self) -> int:
        return len(self.lists.items)

    def __getitem__(self, index: Sequence[int]) -> CandidateListBatch:
        return rows(self.lists, torch.as_tensor(list(index), dtype=torch.long))


class CandidateListDataModule(pl_light.LightningDataModule):
    """Train / validation / test loaders over candidate lists.

    Args:
        lists: the lists of every split.
        batch_size: training lists per batch.
        eval_batch_size: lists per validation / test batch.
        seed: the training shuffle.
    """

    def __init__(self, lists: CandidateLists, *, batch_size: int, eval_batch_size: int, seed: int) -> None:
        super().__init__()
        self.lists = lists
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self._shuffle: ShardedShuffle | None = None

    @property
    def protocol(self) -> dict[str, object]:
        """How the lists were made, recorded with every result."""
        return {"kind": "candidate_lists", **self.lists.meta}

    def train_dataloader(self) -> DataLoader[CandidateListBatch]:
        train = self.lists.split("train")
        # a list without its target teaches nothing
        retrieved = rows(train, torch.nonzero(train.target_pos >= 0).squeeze(1))
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        self._shuffle = ShardedShuffle(len(retrieved.items), seed=self.seed, rank=rank, world_size=world)
        sampler = BatchSampler(self._shuffle, self.batch_size, drop_last=False)
        return DataLoader(_Lists(retrieved), sampler=sampler, batch_size=None)

    def set_epoch(self, epoch: int) -> None:
        """The training shuffle of the coming epoch is the one of `epoch`."""
        if self._shuffle is not None:
            self._shuffle.epoch = epoch

    def val_dataloader(self) -> DataLoader[CandidateListBatch]:
        return self._ordered("val")

    def test_dataloader(self) -> DataLoader[CandidateListBatch]:
        return self._ordered("test")

    def _ordered(self, split: str) -> DataLoader[CandidateListBatch]:
        lists = self.lists.split(split)
        sampler = BatchSampler(SequentialSampler(range(len(lists.items))), self.eval_batch_size, drop_last=False)
        return DataLoader(_Lists(lists), sampler=sampler, batch_size=None)
