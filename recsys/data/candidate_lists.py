"""Candidate lists: a ranker's training and evaluation rows as the ranking stage sees them when serving.

Stage 1 (a trained retrieval model, e.g. the converged SASRec) ranks the whole catalog for each user,
the user's history masked, and keeps its top-N with their scores. A list is (history, top-N, stage-1
scores, where the target sits in the list or -1 when stage 1 missed it).

Which targets (leave-one-out split of the processed dataset):
- `train` and `val`: the validation target of every user (the item before the test item), history
  before it. Stage 1 never took a gradient on these targets (it trained on the earlier items; they were
  its early-stopping set), so its scores and misses on them are what serving sees. The users are split
  once by `seed`: `ranker_val_share` of them validate the ranker (epoch and score-weight selection),
  the others train it.
- with `tail_stage1` (what the two-stage benchmark uses), `train` and `val` are tail lists instead: a
  second stage-1 model trained with the split's `holdout_tail = tail_targets` (the last
  `tail_targets` items before each validation target trained nothing) retrieves for each of those
  items, history before it; the training users' lists train, the validation users' lists validate.
  Its targets were neither trained on nor selected on (it early-stopped on the validation targets),
  while stage 1's validation targets chose its best epoch: on them stage 1 looks better than it is
  (seed 0: a ranker's best weight on stage 1's validation lists was stage 1 alone, on test a mix beat
  it), and there are `tail_targets` tail lists per user instead of one.
- `test`: the test target of every user, history = everything before it: the leaderboard's protocol
  (a target outside the top-N is a miss).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch.utils.data import BatchSampler, DataLoader

from recsys.data.datamodule import SequenceDataModule
from recsys.data.datasets import EvalBatch, EvalSequences
from recsys.data.schema import ITEMS
from recsys.data.split import TARGET
from recsys.model_io import load_model, read_spec
from recsys.models.base import SequentialRecommender

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class CandidateListConfig:
    """Where a ranker's candidate lists come from (a data config of a two-stage ranker experiment)."""

    processed: str  # the processed dataset directory (written by the ETL)
    stage1: str  # the stage-1 retrieval model, a directory written by `recsys.model_io` (e.g. an export)
    top_n: int = 200  # candidates per list
    ranker_val_share: float = 0.15  # share of the users whose validation lists validate the ranker
    seed: int = 0  # which users validate
    # a stage-1 model directory trained with `split.holdout_tail = tail_targets` (None: no tail lists)
    tail_stage1: str | None = None
    tail_targets: int = 0  # training targets per user from `tail_stage1`: its held-out tail

    def __post_init__(self) -> None:
        if self.top_n < 1:
            raise ValueError(f"top_n must be >= 1, got {self.top_n}")
        if (self.tail_stage1 is None) != (self.tail_targets == 0) or self.tail_targets < 0:
            raise ValueError(
                f"tail_stage1 and tail_targets >= 1 go together, got tail_stage1={self.tail_stage1!r}, "
                f"tail_targets={self.tail_targets}"
            )
        if not 0.0 < self.ranker_val_share < 1.0:
            raise ValueError(f"ranker_val_share must be in (0, 1), got {self.ranker_val_share}")


class CandidateListBatch(NamedTuple):
    items: torch.Tensor  # [B, L] left-padded history (0 = pad)
    candidates: torch.Tensor  # [B, N] stage 1's top-N item ids, best first
    stage1: torch.Tensor  # [B, N] float stage-1 scores of the candidates
    target_pos: torch.Tensor  # [B] long position of the target in the list, -1 = not retrieved
    events: torch.Tensor  # [B] long the user's events up to and including the target


@dataclass(frozen=True)
class CandidateLists:
    """The lists of each split (`SPLITS`), as one `CandidateListBatch` of all rows per split."""

    splits: dict[str, CandidateListBatch]
    n_items: int
    meta: dict[str, Any]  # how they were made (recorded with the results)
    objective: ClassVar[str] = "listwise_candidates"  # what a ranker trains on these lists with

    def split(self, name: str) -> CandidateListBatch:
        if name not in self.splits:
            raise KeyError(f"unknown split {name!r}; expected one of {list(self.splits)}")
        return self.splits[name]


def rows(batch: CandidateListBatch, index: torch.Tensor) -> CandidateListBatch:
    """The rows `index` [R] of `batch`."""
    return CandidateListBatch(*(t[index] for t in batch))


@torch.inference_mode()
def retrieve(model: SequentialRecommender, batch: EvalBatch, top_n: int) -> CandidateListBatch:
    """Stage 1's top-`top_n` of one evaluation batch over the whole catalog, history masked (ties:
    lower item id first, as the evaluator breaks them); histories left-padded to the model's `max_len`."""
    items = F.pad(batch.items[:, -model.max_len :], (model.max_len - min(batch.items.shape[1], model.max_len), 0))
    scores = model.sequence_representation(items, items != 0) @ model.item_embeddings().T  # [B, N + 1]
    scores = scores.float()
    scores[:, 0] = float("-inf")
    scores.scatter_(1, batch.seen, float("-inf"))  # seen pads with 0, already -inf
    # a stable sort over descending scores keeps equal scores in item-id order
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :top_n]
    top = scores.gather(1, order)
    hit = order == batch.targets[:, None]
    target_pos = torch.where(hit.any(1), hit.float().argmax(1), torch.full_like(batch.targets, -1))
    events = (batch.seen != 0).sum(1) + 1
    return CandidateListBatch(items, order, top, target_pos.long(), events.long())


def _concat(parts: list[CandidateListBatch], order: torch.Tensor) -> CandidateListBatch:
    """The parts' rows stacked, then put in split-row order (`order` [R]: each stacked row's split row)."""
    stacked = CandidateListBatch(*(torch.cat(ts) for ts in zip(*parts, strict=True)))
    return rows(stacked, torch.argsort(order))


def _stage1(path: str, n_items: int) -> SequentialRecommender:
    model = load_model(Path(path))
    if not isinstance(model, SequentialRecommender):
        raise TypeError(f"stage-1 model {path} is a {type(model).__name__}, not a retrieval model")
    found = model.item_embeddings().shape[0] - 1
    if found != n_items:
        raise ValueError(f"stage-1 model {path} scores {found} items but the data has {n_items}: another catalog")
    return model.eval()


def _retrieve_all(model: SequentialRecommender, data: EvalSequences, top_n: int, batch_size: int) -> CandidateListBatch:
    """Stage 1's lists of every row of `data`, in row order."""
    sampler = BatchSampler(data.rows_by_length(), batch_size, drop_last=False)  # similar widths batch together
    parts, order = [], []
    for batch in DataLoader(data, sampler=sampler, batch_size=None):
        parts.append(retrieve(model, batch, top_n))
        assert batch.rows is not None
        order.append(batch.rows)
    return _concat(parts, torch.cat(order))


def tail_rows(histories: list[list[int]], tail: int) -> tuple[list[list[int]], list[int], list[int]]:
    """(history, target) pairs of each of the last `tail` items of every history that has an item
    before it, with the history's row; oldest target first within a history."""
    hists, targets, owners = [], [], []
    for row, history in enumerate(histories):
        for pos in range(max(1, len(history) - tail), len(history)):
            hists.append(history[:pos])
            targets.append(history[pos])
            owners.append(row)
    return hists, targets, owners


def candidate_lists(config: CandidateListConfig, *, batch_size: int = 256) -> CandidateLists:
    """Build the lists of `config` (see the module docstring), `batch_size` users at a time: a few
    seconds on the ML-1M half (a minute with tail lists)."""
    dm = SequenceDataModule(config.processed, max_len=1, batch_size=batch_size, eval_batch_size=batch_size, seed=0)
    dm.prepare_data()
    dm.setup()
    assert dm.sequence_split is not None  # set up above
    model = _stage1(config.stage1, dm.n_items)
    validation, test = dm.sequence_split.validation, dm.sequence_split.test
    val_hists = validation[ITEMS].to_list()
    val = _retrieve_all(
        model, EvalSequences(val_hists, validation[TARGET].to_list(), model.max_len), config.top_n, batch_size
    )
    draw = torch.randperm(len(val.items), generator=torch.Generator().manual_seed(config.seed))
    n_val = max(1, round(config.ranker_val_share * len(draw)))
    val_rows, train_rows = draw[:n_val].sort().values, draw[n_val:].sort().values
    train, validate = rows(val, train_rows), rows(val, val_rows)
    if config.tail_stage1 is not None:  # lists from the stage 1 that neither trained nor selected on them
        tail_model = _stage1(config.tail_stage1, dm.n_items)

        def tail_lists(users: torch.Tensor) -> CandidateListBatch:
            hists, targets, _ = tail_rows([val_hists[i] for i in users.tolist()], config.tail_targets)
            return _retrieve_all(tail_model, EvalSequences(hists, targets, model.max_len), config.top_n, batch_size)

        train, validate = tail_lists(train_rows), tail_lists(val_rows)
    test_lists = EvalSequences(test[ITEMS].to_list(), test[TARGET].to_list(), model.max_len)
    splits = {
        "train": train,
        "val": validate,
        "test": _retrieve_all(model, test_lists, config.top_n, batch_size),
    }
    meta = {  # the leaderboard's protocol keys: the test lists rank every user's target over the catalog
        "split": "leave_one_out",
        "full_ranking": True,
        "exclude_seen": True,
        "n_users": len(splits["test"].items),
        "n_items": dm.n_items,
        "stage1": config.stage1,
        "stage1_model": read_spec(Path(config.stage1))["name"],
        "tail_stage1": config.tail_stage1,
        "tail_targets": config.tail_targets,
        "top_n": config.top_n,
        "users": {name: len(b.items) for name, b in splits.items()},
        "recall": {name: float((b.target_pos >= 0).float().mean()) for name, b in splits.items()},
    }
    return CandidateLists(splits, dm.n_items, meta)
