"""The DataModule of rankers: labelled (history, candidate, label) rows of a labelled dataset
(`recsys.data.labelled`) as shuffled training batches and ordered validation / test batches."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl
import pytorch_lightning as pl_light
from torch.utils.data import BatchSampler, DataLoader, Dataset, SequentialSampler

from recsys.data.datamodule import ShardedShuffle
from recsys.data.labelled import LabelledBatch, LabelledData


class _Rows(Dataset[LabelledBatch]):
    """Sample rows of one split, indexed by lists of rows (one batch per index list)."""

    def __init__(self, data: LabelledData, rows: pl.DataFrame, max_history: int) -> None:
        self.data, self.rows, self.max_history = data, rows, max_history

    def __len__(self) -> int:
        return self.rows.height

    def __getitem__(self, index: Sequence[int]) -> LabelledBatch:
        return self.data.batch(self.rows[list(index)], self.max_history)


class LabelledDataModule(pl_light.LightningDataModule):
    """Train / validation / test loaders over a labelled dataset (`recsys.data.labelled.labelled_dataset`).

    Args:
        data: the labelled samples and the histories they are cut from.
        max_history: history events per sample (the ranker's `max_len`).
        batch_size: training rows per batch.
        eval_batch_size: rows per validation / test batch.
        seed: the training shuffle.
    """

    def __init__(
        self, data: LabelledData, *, max_history: int, batch_size: int, eval_batch_size: int, seed: int
    ) -> None:
        super().__init__()
        self.data = data
        self.max_history = max_history
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self._shuffle: ShardedShuffle | None = None

    @property
    def protocol(self) -> dict[str, object]:
        """How the rows were made, recorded with every result."""
        config = self.data.meta.get("config", {})
        return {"kind": "labelled", "recipe": config.get("recipe"), "labelled_dir": config.get("output_dir")}

    def split_rows(self, split: str) -> pl.DataFrame:
        """The sample rows of `split` (train, val or test), in loader order."""
        return self.data.split(split)

    def train_dataloader(self) -> DataLoader[LabelledBatch]:
        rows = self.split_rows("train")
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        self._shuffle = ShardedShuffle(rows.height, seed=self.seed, rank=rank, world_size=world)
        sampler = BatchSampler(self._shuffle, self.batch_size, drop_last=False)
        return DataLoader(_Rows(self.data, rows, self.max_history), sampler=sampler, batch_size=None)

    def set_epoch(self, epoch: int) -> None:
        """The training shuffle of the coming epoch is the one of `epoch`, as `SequenceDataModule`'s."""
        if self._shuffle is not None:
            self._shuffle.epoch = epoch

    def val_dataloader(self) -> DataLoader[LabelledBatch]:
        return self._ordered("val")

    def test_dataloader(self) -> DataLoader[LabelledBatch]:
        return self._ordered("test")

    def _ordered(self, split: str) -> DataLoader[LabelledBatch]:
        # not sharded under DDP: every rank scores all rows, so validation metrics agree across ranks
        rows = self.split_rows(split)
        sampler = BatchSampler(SequentialSampler(range(rows.height)), self.eval_batch_size, drop_last=False)
        return DataLoader(_Rows(self.data, rows, self.max_history), sampler=sampler, batch_size=None)
