"""The serving bundle: everything the online service needs, in one directory.

Layout::

    bundle.json            name, model name, n_items, dim, max_len, index config, source run, created_at
    model/                 the saved model (recsys.model_io): model.json (name, resolved config, n_items)
                           + state_dict.pt
    item_embeddings.npy    float32 [n_items + 1, D], row 0 = padding
    index.faiss            the FAISS index over rows 1..n_items (ids = item_idx)
    items.parquet          item_idx, raw_id, text (nullable)
    histories.parquet      raw_id (user), items (list[int] item_idx, oldest first): the full history
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recsys.config import from_dict
from recsys.data import schema as S
from recsys.model_io import load_model, read_spec, resolved_config, save_model
from recsys.models.base import SequentialRecommender
from recsys.retrieval.index import IndexConfig, ItemIndex, build_index, load_index, save_index

log = logging.getLogger(__name__)

BUNDLE_FORMAT = 1
BUNDLE_FILE = "bundle.json"
MODEL_DIR = "model"
EMBEDDINGS_FILE = "item_embeddings.npy"
INDEX_FILE = "index.faiss"
ITEMS_FILE = "items.parquet"
HISTORIES_FILE = "histories.parquet"


@dataclass(frozen=True)
class BundleMeta:
    """The contents of bundle.json."""

    name: str  # registered model name the bundle was exported for
    model: str  # registry key of the model class (e.g. "sasrec")
    n_items: int
    dim: int
    max_len: int
    index: IndexConfig
    source_run_id: str | None
    created_at: str
    format: int = BUNDLE_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ServingBundle:
    """A loaded bundle: model in eval mode, index, and the vocabularies and histories as arrays."""

    meta: BundleMeta
    model: SequentialRecommender
    index: ItemIndex
    item_raw_ids: np.ndarray  # [n_items + 1] object (str); row 0 = "" (padding)
    item_text: np.ndarray | None  # [n_items + 1] object (str or None); None when no item has text
    item_vocab: dict[str, int]  # raw item id -> item_idx
    user_vocab: dict[str, int]  # raw user id -> row in the history arrays
    history_offsets: np.ndarray  # [n_users + 1] int64; user row u owns history_items[off[u]:off[u+1]]
    history_items: np.ndarray  # [n_interactions] int64 item_idx, oldest first per user

    def user_history(self, raw_user_id: str) -> np.ndarray | None:
        """Item indices of a known user's history (oldest first), or None for an unknown user."""
        row = self.user_vocab.get(raw_user_id)
        if row is None:
            return None
        return self.history_items[self.history_offsets[row] : self.history_offsets[row + 1]]


def write_bundle(
    directory: Path,
    *,
    model_dir: Path,
    item_emb: np.ndarray,
    data_dir: Path,
    index_config: IndexConfig,
    name: str,
    source_run_id: str | None,
) -> BundleMeta:
    """Build the FAISS index and write a complete bundle into `directory` (created).

    Args:
        directory: output directory (must be empty or missing).
        model_dir: a directory written by `recsys.model_io.save_model`; the bundle's copy stores the
            model's resolved config (every field), whatever the directory's model.json held.
        item_emb: [n_items + 1, D] item embeddings of that model (row 0 = padding).
        data_dir: the processed dataset directory the model was trained on.
        index_config: which FAISS index to build.
        name: registered model name, recorded in bundle.json.
        source_run_id: the training run, recorded in bundle.json.
    """
    if directory.exists() and any(directory.iterdir()):
        raise FileExistsError(f"bundle directory {directory} is not empty")
    spec = read_spec(model_dir)
    n_items = int(spec["n_items"])
    emb = np.ascontiguousarray(item_emb, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != n_items + 1:
        raise ValueError(f"item embeddings have shape {emb.shape}; the model has n_items={n_items} (+1 padding row)")
    items, histories = _read_tables(data_dir, n_items)
    model = load_model(model_dir)
    directory.mkdir(parents=True, exist_ok=True)
    save_model(model, str(spec["name"]), resolved_config(model), n_items, directory / MODEL_DIR)
    np.save(directory / EMBEDDINGS_FILE, emb)
    save_index(build_index(emb, index_config), directory / INDEX_FILE)
    items.write_parquet(directory / ITEMS_FILE)
    histories.write_parquet(directory / HISTORIES_FILE)
    meta = BundleMeta(
        name=name,
        model=str(spec["name"]),
        n_items=n_items,
        dim=int(emb.shape[1]),
        max_len=int(model.max_len),
        index=index_config,
        source_run_id=source_run_id,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    (directory / BUNDLE_FILE).write_text(json.dumps(meta.to_dict(), indent=2) + "\n")
    return meta


def read_bundle_meta(directory: Path) -> BundleMeta:
    """Parse bundle.json of a bundle directory."""
    path = directory / BUNDLE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {directory} is not a serving bundle")
    meta = from_dict(BundleMeta, json.loads(path.read_text()), source=str(path))
    if meta.format != BUNDLE_FORMAT:
        raise ValueError(f"{path}: bundle format {meta.format} is not supported (expected {BUNDLE_FORMAT})")
    return meta


def load_bundle(directory: Path) -> ServingBundle:
    """Load a bundle into memory; nothing is read from `directory` afterwards (it may be deleted)."""
    meta = read_bundle_meta(directory)
    model = load_model(directory / MODEL_DIR)
    index = load_index(directory / INDEX_FILE, meta.index)
    if index.n_items != meta.n_items or index.dim != meta.dim:
        raise ValueError(
            f"{directory}: index holds {index.n_items} x {index.dim}, bundle.json says {meta.n_items} x {meta.dim}"
        )
    items = pl.read_parquet(directory / ITEMS_FILE).sort(S.ITEM_IDX)
    raw_ids = np.empty(meta.n_items + 1, dtype=object)
    raw_ids[0] = ""
    idx = items[S.ITEM_IDX].to_numpy()
    raw_ids[idx] = items[S.RAW_ID].to_list()
    text: np.ndarray | None = None
    if S.TEXT in items.columns and items[S.TEXT].null_count() < items.height:
        text = np.full(meta.n_items + 1, None, dtype=object)
        text[idx] = items[S.TEXT].to_list()
    histories = pl.read_parquet(directory / HISTORIES_FILE)
    lengths = histories[S.ITEMS].list.len().to_numpy().astype(np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = histories[S.ITEMS].explode().drop_nulls().to_numpy().astype(np.int64)
    return ServingBundle(
        meta=meta,
        model=model,
        index=index,
        item_raw_ids=raw_ids,
        item_text=text,
        item_vocab={raw: int(i) for raw, i in zip(items[S.RAW_ID].to_list(), idx.tolist(), strict=True)},
        user_vocab={raw: row for row, raw in enumerate(histories[S.RAW_ID].to_list())},
        history_offsets=offsets,
        history_items=flat,
    )


def _read_tables(data_dir: Path, n_items: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(items, histories) from a processed dataset directory, checked against the model's n_items."""
    for name in (S.ITEMS_FILE, S.USERS_FILE, S.SEQUENCES_FILE):
        if not (data_dir / name).is_file():
            raise FileNotFoundError(f"{data_dir / name} not found: is {data_dir} a processed dataset directory?")
    items = pl.read_parquet(data_dir / S.ITEMS_FILE)
    cols = [S.ITEM_IDX, S.RAW_ID] + ([S.TEXT] if S.TEXT in items.columns else [])
    items = items.select(cols).with_columns(pl.col(S.RAW_ID).cast(pl.String)).sort(S.ITEM_IDX)
    if items.height != n_items or items[S.ITEM_IDX].to_list() != list(range(1, n_items + 1)):
        raise ValueError(f"{data_dir}: items table does not hold item_idx 1..{n_items} (the model's catalog)")
    users = pl.read_parquet(data_dir / S.USERS_FILE).select(S.USER_IDX, pl.col(S.RAW_ID).cast(pl.String))
    sequences = pl.read_parquet(data_dir / S.SEQUENCES_FILE).select(S.USER_IDX, S.ITEMS)
    histories = users.join(sequences, on=S.USER_IDX, how="inner").sort(S.USER_IDX).select(S.RAW_ID, S.ITEMS)
    return items, histories
