"""Labelled-candidate datasets (click-through style) built from a processed dataset, for rankers (DARE).

Two recipes, both seeded and saved to disk so every model sees the same samples:

- `paper`: DARE's long-sequence preprocessing. Users with >= `min_events` events; per user the
  targets at offsets 1 (test), 2 (validation) and 3, 3 + stride, ... (training) from the end of the
  sequence, each with the up to `max_history` events before it as history; each positive gets
  `n_negatives` items drawn in proportion to their event count among the items that user never
  interacted with, sharing the positive's history.
- `explicit`: every rating event is a sample, labelled `rating >= threshold`, its history the
  user's earlier events (ratings as a side feature); a global temporal split (the last `test_frac`
  of events in time for test, the `val_frac` before them for validation).

A sample is stored as (user_idx, position, item_idx, label, split): its history is the user's
events before `position` in the processed dataset's chronological order, so the files stay small
and a history is rebuilt exactly from the processed data.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import polars as pl
import torch

from recsys.config import to_dict
from recsys.data import schema as S
from recsys.data.processed import load_processed

Recipe = Literal["paper", "explicit"]
TRAIN, VAL, TEST = 0, 1, 2
SPLITS = {"train": TRAIN, "val": VAL, "test": TEST}
SAMPLES_FILE = "samples.parquet"
LABELLED_META = "labelled_meta.json"
LABELLED_VERSION = 1


@dataclass(frozen=True)
class LabelledConfig:
    """Which labelled dataset to build from which processed dataset, and where to save it."""

    processed: str  # a processed dataset directory written by the ETL (with a rating column for `explicit`)
    output_dir: str
    recipe: Recipe = "paper"
    seed: int = 0  # the negative sampler's seed (recipe `paper`)
    min_events: int = 210  # paper: users with fewer events are left out
    n_train: int = 19  # paper: training targets per user
    stride: int = 5  # paper: events between two training targets
    n_negatives: int = 2  # paper: negatives per positive
    threshold: float = 4.0  # explicit: label = rating >= threshold
    val_frac: float = 0.1  # explicit
    test_frac: float = 0.1  # explicit

    def __post_init__(self) -> None:
        for name in ("min_events", "n_train", "stride", "n_negatives"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.recipe == "paper" and self.min_events < 3 + self.stride * (self.n_train - 1):
            raise ValueError(f"min_events must leave room for {self.n_train} training targets, got {self.min_events}")
        for name in ("val_frac", "test_frac"):
            if not 0.0 < getattr(self, name) < 0.5:
                raise ValueError(f"{name} must be in (0, 0.5), got {getattr(self, name)}")


class LabelledBatch(NamedTuple):
    items: torch.Tensor  # [B, L] left-padded history (0 = pad)
    ratings: torch.Tensor  # [B, L] long rating of each history event (0 = none / pad)
    candidates: torch.Tensor  # [B] long item to score
    labels: torch.Tensor  # [B] float 1 = positive
    users: torch.Tensor  # [B] long user_idx (GAUC groups)


@dataclass(frozen=True)
class LabelledData:
    """Samples plus the users' chronological sequences that their histories are cut from."""

    samples: pl.DataFrame  # user_idx, position, item_idx, label, split
    sequences: torch.Tensor  # [U, T] long, each user's items oldest first, right-padded with 0
    ratings: torch.Tensor  # [U, T] long ratings (rounded, 0 = none), aligned with `sequences`
    n_items: int
    meta: dict[str, Any]

    def split(self, name: str) -> pl.DataFrame:
        """The samples of split `name` (train, val or test)."""
        return self.samples.filter(pl.col("split") == SPLITS[name])

    def batch(self, rows: pl.DataFrame, max_history: int) -> LabelledBatch:
        """The batch of sample `rows`, each history the last `max_history` events before its position."""
        users = torch.from_numpy(rows["user_idx"].to_numpy().astype(np.int64))
        pos = torch.from_numpy(rows["position"].to_numpy().astype(np.int64))
        cols = pos[:, None] - max_history + torch.arange(max_history)  # [B, L] left-padded window
        real = cols >= 0
        cols = cols.clamp(min=0)
        items = self.sequences[users[:, None], cols] * real
        ratings = self.ratings[users[:, None], cols] * real
        return LabelledBatch(
            items=items,
            ratings=ratings,
            candidates=torch.from_numpy(rows["item_idx"].to_numpy().astype(np.int64)),
            labels=torch.from_numpy(rows["label"].to_numpy().astype(np.float32)),
            users=users,
        )


def item_frequencies(sequences: list[np.ndarray], n_items: int) -> np.ndarray:
    """Event count of every item index 0..n_items (0, the padding, counts 0)."""
    counts = np.zeros(n_items + 1, dtype=np.int64)
    for seq in sequences:
        np.add.at(counts, seq, 1)
    counts[S.PAD_ID] = 0
    return counts


def sample_negatives(
    rng: np.random.Generator, counts: np.ndarray, interacted: np.ndarray, n: int, *, batch: int = 64
) -> np.ndarray:
    """`n` item indices drawn with replacement in proportion to `counts`, never one of `interacted`.

    Rejection sampling: draws from the whole catalog and redraws the rejected ones, which is exactly
    the frequency distribution restricted to the allowed items and renormalised.

    Raises:
        ValueError: no item outside `interacted` has a count.
    """
    allowed = counts.astype(np.float64).copy()
    allowed[interacted] = 0.0
    if allowed.sum() <= 0:
        raise ValueError("no item left to sample: the user interacted with every item that has a count")
    p = counts / counts.sum()
    forbidden = np.sort(np.unique(interacted))
    out = np.empty(n, dtype=np.int64)
    filled = 0
    while filled < n:
        draw = rng.choice(len(counts), size=max(batch, 2 * (n - filled)), p=p)
        draw = draw[~np.isin(draw, forbidden, assume_unique=False)]
        take = draw[: n - filled]
        out[filled : filled + len(take)] = take
        filled += len(take)
    return out


def paper_samples(
    sequences: list[np.ndarray], n_items: int, cfg: LabelledConfig, *, forbidden: list[np.ndarray] | None = None
) -> pl.DataFrame:
    """DARE's recipe over `sequences` (index = user_idx, item indices oldest first); see the module doc.

    Args:
        sequences: each user's items, oldest first.
        n_items: catalog size.
        cfg: the recipe's settings.
        forbidden: per user, the items never drawn as negatives (default: the user's sequence); pass
            the whole history when `sequences` are cut short of held-out items.
    """
    rng = np.random.default_rng(cfg.seed)
    counts = item_frequencies(sequences, n_items)
    offsets = [(1, TEST), (2, VAL)] + [(3 + cfg.stride * i, TRAIN) for i in range(cfg.n_train)]
    cols: dict[str, list[Any]] = {"user_idx": [], "position": [], "item_idx": [], "label": [], "split": []}
    for user, seq in enumerate(sequences):
        if len(seq) < cfg.min_events:
            continue
        interacted = seq if forbidden is None else forbidden[user]
        negatives = sample_negatives(rng, counts, interacted, len(offsets) * cfg.n_negatives)
        for j, (offset, split) in enumerate(offsets):
            position = len(seq) - offset
            candidates = [int(seq[position]), *negatives[j * cfg.n_negatives : (j + 1) * cfg.n_negatives].tolist()]
            for k, item in enumerate(candidates):
                cols["user_idx"].append(user)
                cols["position"].append(position)
                cols["item_idx"].append(item)
                cols["label"].append(1 if k == 0 else 0)
                cols["split"].append(split)
    return pl.DataFrame(cols, schema=dict.fromkeys(cols, pl.Int64)).with_columns(pl.col("split").cast(pl.Int8))


def explicit_samples(interactions: pl.DataFrame, cfg: LabelledConfig) -> pl.DataFrame:
    """Every event of `interactions` (user_idx, item_idx, timestamp, rating, chronological per user)
    as a sample labelled `rating >= threshold`, split globally by time."""
    if S.RATING not in interactions.columns:
        raise ValueError("recipe 'explicit' needs a rating column in interactions.parquet; the source has none")
    ts = np.sort(interactions[S.TIMESTAMP].to_numpy())
    n = len(ts)
    test_from = ts[int(np.floor(n * (1 - cfg.test_frac)))]  # events at or after this time are test
    val_from = ts[int(np.floor(n * (1 - cfg.test_frac - cfg.val_frac)))]
    return (
        interactions.with_columns(pl.int_range(pl.len()).over(S.USER_IDX).alias("position"))
        .select(
            S.USER_IDX,
            "position",
            S.ITEM_IDX,
            (pl.col(S.RATING) >= cfg.threshold).cast(pl.Int64).alias("label"),
            pl.when(pl.col(S.TIMESTAMP) >= test_from)
            .then(TEST)
            .when(pl.col(S.TIMESTAMP) >= val_from)
            .then(VAL)
            .otherwise(TRAIN)
            .cast(pl.Int8)
            .alias("split"),
        )
        .with_columns(pl.col("position").cast(pl.Int64))
    )


def _chronological(processed: Path) -> pl.DataFrame:
    """interactions.parquet in the order of sequences.parquet (user, then time, ties in file order)."""
    return pl.read_parquet(processed / S.INTERACTIONS_FILE).sort(S.USER_IDX, S.TIMESTAMP, maintain_order=True)


def build_labelled(cfg: LabelledConfig) -> Path:
    """Build the labelled dataset `cfg` describes from its processed dataset and save it to `output_dir`."""
    ds = load_processed(cfg.processed)
    inter = _chronological(ds.path)
    seqs = [np.asarray(s, dtype=np.int64) for s in ds.sequences.sort(S.USER_IDX)[S.ITEMS].to_list()]
    if cfg.recipe == "paper":
        samples = paper_samples(seqs, ds.n_items, cfg)
    else:
        samples = explicit_samples(inter, cfg)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    samples.write_parquet(out / SAMPLES_FILE)
    source_meta = (ds.path / S.META_FILE).read_bytes()
    counts = {name: int((samples["split"] == code).sum()) for name, code in SPLITS.items()}
    meta = {
        "version": LABELLED_VERSION,
        "config": to_dict(cfg),
        "source_meta_sha256": hashlib.sha256(source_meta).hexdigest(),
        "n_items": ds.n_items,
        "n_users": int(samples["user_idx"].n_unique()),
        "samples": counts,
        "positive_rate": {
            name: float(np.mean(samples.filter(pl.col("split") == code)["label"].to_numpy()))
            for name, code in SPLITS.items()
        },
    }
    (out / LABELLED_META).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def load_labelled(path: str | Path) -> LabelledData:
    """Load a labelled dataset saved by `build_labelled`, with the sequences its histories come from."""
    root = Path(path)
    if not (root / LABELLED_META).is_file():
        raise FileNotFoundError(f"{root}: no {LABELLED_META}; build it with recsys.data.labelled.build_labelled")
    meta = json.loads((root / LABELLED_META).read_text())
    processed = Path(meta["config"]["processed"])
    if hashlib.sha256((processed / S.META_FILE).read_bytes()).hexdigest() != meta["source_meta_sha256"]:
        raise ValueError(f"{root}: {processed} changed since the samples were built; rebuild them")
    inter = _chronological(processed)
    if S.RATING not in inter.columns:
        inter = inter.with_columns(pl.lit(0.0).alias(S.RATING))
    grouped = inter.group_by(S.USER_IDX, maintain_order=True).agg(S.ITEM_IDX, S.RATING)
    n_users = int(inter[S.USER_IDX].to_numpy().max()) + 1
    longest = int(grouped[S.ITEM_IDX].list.len().to_numpy().max())
    sequences = torch.zeros(n_users, longest, dtype=torch.long)
    ratings = torch.zeros(n_users, longest, dtype=torch.long)
    for user, items, rates in grouped.iter_rows():
        sequences[user, : len(items)] = torch.tensor(items)
        ratings[user, : len(items)] = torch.from_numpy(np.rint(np.asarray(rates, dtype=np.float64)).astype(np.int64))
    return LabelledData(
        samples=pl.read_parquet(root / SAMPLES_FILE),
        sequences=sequences,
        ratings=ratings,
        n_items=int(meta["n_items"]),
        meta=meta,
    )


def labelled_dataset(cfg: LabelledConfig) -> LabelledData:
    """The labelled dataset `cfg` describes: loaded from `output_dir`, built there first when missing
    (seeded, so every model sees the same samples)."""
    root = Path(cfg.output_dir)
    return load_labelled(root if (root / LABELLED_META).is_file() else build_labelled(cfg))
