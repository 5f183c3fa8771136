"""The one DataModule: a processed dataset -> train / validation / test loaders of one split."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytorch_lightning as pl
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, SequentialSampler

from recsys.data.datasets import (
    EvalBatch,
    EvalSequences,
    TrainBatch,
    TrainRows,
    TrainRowsFactory,
    TrainSequences,
    ViewBatch,
)
from recsys.data.processed import load_processed
from recsys.data.schema import ITEMS
from recsys.data.split import TARGET, SequenceSplit, SplitConfig, split_sequences


class SequenceDataModule(pl.LightningDataModule):
    """Training rows and validation / test users of one split (`recsys.data.split`): leave-one-out by
    default (per user, the last item is the test target, the one before it validation, the rest
    trains; users with fewer than 3 items train and are never evaluated) or global temporal.

    A training sequence needs at least 2 items (one target). The data is small per user, so loaders
    index pre-built tensors in whole batches (no per-sample Python). Which training rows the sequences become is the
    objective's choice (`rows`, e.g. `Objective.train_rows`): one window per user by default.

    Args:
        data_dir: a processed dataset directory (`python -m pipelines.prepare_data`).
        max_len: history window of the model.
        batch_size: training rows per batch.
        eval_batch_size: users per validation / test batch.
        seed: the training shuffle and the rows' own draws.
        rows: builds the training rows from the training sequences.
        length_pool: > 0: length-grouped training batches (see `LengthGroupedBatches`).
        split: which split; its protocol is `self.protocol` after `setup`.
        val_users: validation checks during a fit rank a fixed sample of this many validation users,
            drawn with `seed` (None: all); `val_dataloader(all_users=True)` always ranks every user.
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        max_len: int,
        batch_size: int,
        eval_batch_size: int,
        seed: int,
        rows: TrainRowsFactory = TrainSequences,
        length_pool: int = 0,
        split: SplitConfig | None = None,
        val_users: int | None = None,
    ) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self.max_len = max_len
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.rows = rows
        if length_pool < 0:
            raise ValueError(f"length_pool must be >= 0, got {length_pool}")
        self.length_pool = length_pool
        self.split = split or SplitConfig()
        if val_users is not None and val_users < 1:
            raise ValueError(f"val_users must be >= 1 or None (all users), got {val_users}")
        self.val_users = val_users
        self.val_sample: set[int] | None = None  # rows of `val_set` validation checks rank (None: all)
        self.n_items = 0
        self.protocol: dict[str, object] = {}
        self.sequence_split: SequenceSplit | None = None
        self.rows_generator: torch.Generator | None = None  # the training rows' own draws (set up in setup)
        self._shuffle: ShardedShuffle | None = None

    def prepare_data(self) -> None:
        if not (self.data_dir / "meta.json").is_file():
            raise FileNotFoundError(
                f"processed dataset not found in {self.data_dir}; run `python -m pipelines.prepare_data` first"
            )

    def setup(self, stage: str | None = None) -> None:
        del stage
        ds = load_processed(self.data_dir)
        self.n_items = ds.n_items
        split = split_sequences(ds.sequences, self.split, ds.n_items)
        self.protocol = split.protocol
        self.sequence_split = split  # the frames behind the loaders (per-user results read them)
        train = [s for s in split.train[ITEMS].to_list() if len(s) >= 2]  # >= 1 target
        if not train or split.validation.height == 0 or split.test.height == 0:
            raise ValueError(
                f"{self.data_dir}: too short for {self.split.kind} training ({ds.sequences.height} users: "
                f"{len(train)} training sequences of >= 2 items, {split.validation.height} validation and "
                f"{split.test.height} test users)"
            )
        gen = torch.Generator().manual_seed(self.seed)  # the rows' own draws (e.g. positive views)
        self.rows_generator = gen
        self.train_sequences = train  # the users' training sequences the rows are drawn from
        self.train_set: TrainRows = self.rows(train, self.max_len, generator=gen)
        self.val_set = EvalSequences(
            split.validation[ITEMS].to_list(), split.validation[TARGET].to_list(), self.max_len
        )
        self.test_set = EvalSequences(split.test[ITEMS].to_list(), split.test[TARGET].to_list(), self.max_len)
        self.val_sample = None
        if self.val_users is not None and self.val_users < len(self.val_set):
            # its own generator: the sample is the same whatever else draws from the seed
            draw = torch.randperm(len(self.val_set), generator=torch.Generator().manual_seed(self.seed))
            self.val_sample = set(draw[: self.val_users].tolist())

    def training_items(self) -> torch.Tensor:
        """The distinct item ids [K] of the training sequences (after `setup`), ascending."""
        return self.training_item_counts().nonzero().flatten()

    def training_item_counts(self) -> torch.Tensor:
        """[N + 1] how often each item occurs in the training sequences (after `setup`; 0 for padding and for
        items held out of training)."""
        if self.sequence_split is None:
            raise RuntimeError("training_items() and training_item_counts() need setup() first")
        items = self.sequence_split.train[ITEMS].explode().drop_nulls()
        return torch.bincount(torch.tensor(items.to_list(), dtype=torch.long), minlength=self.n_items + 1)

    def train_dataloader(self) -> DataLoader[TrainBatch | ViewBatch]:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        shuffle = ShardedShuffle(len(self.train_set), seed=self.seed, rank=rank, world_size=world)
        self._shuffle = shuffle
        sampler: Sampler[list[int]] = BatchSampler(shuffle, self.batch_size, drop_last=False)
        if self.length_pool:
            sampler = LengthGroupedBatches(shuffle, self.train_set.lengths(), self.batch_size, self.length_pool)
        return DataLoader(self._train_dataset(), sampler=sampler, batch_size=None)

    def set_epoch(self, epoch: int) -> None:
        """The training shuffle of the coming epoch is the one of `epoch` (seed + epoch), however many
        epochs this process has run: a resumed fit shuffles as the uninterrupted one did."""
        if self._shuffle is not None:
            self._shuffle.epoch = epoch

    def ordered_train_dataloader(self) -> DataLoader[TrainBatch | ViewBatch]:
        """Every training row once, in dataset order, in eval-sized batches (not sharded under DDP).

        For passes over the training data outside the optimisation (an objective's epoch-start
        hook, e.g. clustering the rows' representations); it leaves the training shuffle untouched.
        """
        sampler = BatchSampler(SequentialSampler(self.train_set), self.eval_batch_size, drop_last=False)
        return DataLoader(self._train_dataset(), sampler=sampler, batch_size=None)

    def _train_dataset(self) -> Dataset[TrainBatch | ViewBatch]:
        return cast("Dataset[TrainBatch | ViewBatch]", self.train_set)  # rows indexed by lists of rows

    def val_dataloader(self, *, all_users: bool = False) -> DataLoader[EvalBatch]:
        """Validation users: the fixed sample of `val_users` when set, unless `all_users` (a run's final
        evaluation); a batch's `rows` are the users' rows in `val_set` either way."""
        return self._eval_loader(self.val_set, None if all_users else self.val_sample)

    def test_dataloader(self) -> DataLoader[EvalBatch]:
        return self._eval_loader(self.test_set)

    def _eval_loader(self, dataset: EvalSequences, rows: set[int] | None = None) -> DataLoader[EvalBatch]:
        # Not sharded under DDP: every rank ranks all users, so validation metrics agree across ranks.
        # Rows go in history-length order: a batch is trimmed to its longest history, which saves most
        # of the encoder's work on short-history data; the metrics do not depend on the row order.
        order = dataset.rows_by_length()
        if rows is not None:  # a sample of the users: their rows, in the same order
            order = [row for row in order if row in rows]
        sampler = BatchSampler(order, self.eval_batch_size, drop_last=False)
        return DataLoader(dataset, sampler=sampler, batch_size=None)


class ShardedShuffle(Sampler[int]):
    """A fresh seeded permutation each epoch, split across DDP ranks (rank r takes every world-th row).

    Every rank gets the same number of rows, so the same number of batches: DDP ranks that ran
    different step counts would wait on each other's gradients forever. When the rows do not
    divide evenly, the first rows of the permutation are repeated to fill the shards (as
    `DistributedSampler` does); with one process nothing is repeated.
    """

    def __init__(self, n: int, *, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.seed, self.rank, self.world_size = n, seed, rank, world_size
        self.epoch = 0

    def __len__(self) -> int:
        return -(-self.n // self.world_size)

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        perm = torch.randperm(self.n, generator=gen)
        padded = torch.cat([perm, perm[: len(self) * self.world_size - self.n]])
        return iter(padded[self.rank :: self.world_size].tolist())


class LengthGroupedBatches(Sampler[list[int]]):
    """Batches of similar history length, so trimming removes most of the padding.

    Each epoch the shuffled rows are cut into pools of `pool` x `batch_size`; a pool is sorted by
    length and cut into batches, and the batches of all pools are shuffled. Every row still comes
    once per epoch and a batch mixes users at random within its length band; what changes is that
    a batch's rows have similar lengths (so in-batch negatives of a contrastive loss do too).

    Args:
        rows: the epoch's row order (a fresh shuffle each epoch, e.g. `ShardedShuffle`).
        lengths: [N] history length of every row of the dataset.
        batch_size: rows per batch.
        pool: batches per pool; larger pools group lengths more tightly.
    """

    def __init__(self, rows: ShardedShuffle, lengths: torch.Tensor, batch_size: int, pool: int) -> None:
        if batch_size < 1 or pool < 1:
            raise ValueError(f"batch_size and pool must be >= 1, got {batch_size} and {pool}")
        self.rows, self.lengths, self.batch_size, self.pool = rows, lengths, batch_size, pool

    def __len__(self) -> int:
        return -(-len(self.rows) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        epoch = self.rows.epoch  # read before iterating the rows advances it
        order = torch.tensor(list(self.rows), dtype=torch.long)  # [n]
        batches: list[torch.Tensor] = []
        for chunk in torch.split(order, self.pool * self.batch_size):
            by_length = chunk[torch.argsort(self.lengths[chunk], stable=True)]
            batches.extend(torch.split(by_length, self.batch_size))
        # the batch order has its own stream per epoch and rank, apart from the row shuffle's (seed + epoch)
        gen = torch.Generator().manual_seed(self.rows.seed + self.rows.rank + 1_000_003 * (epoch + 1))
        return iter([batches[i].tolist() for i in torch.randperm(len(batches), generator=gen).tolist()])
