"""The serving bundle: everything the online service needs, in one directory.

Layout::

    bundle.json            name, model name, n_items, dim, max_len, index config, source run, created_at,
                           and every other file's size and sha256 (checked before anything is loaded)
    model/                 the saved model (recsys.model_io): model.json (name, resolved config, n_items)
                           + state_dict.pt
    item_embeddings.npy    float32 [n_items + 1, D], row 0 = padding
    index.faiss            the FAISS index over rows 1..n_items (ids = item_idx)
    items.parquet          item_idx, raw_id, text (nullable)
    histories.parquet      raw_id (user), items (list[int] item_idx, oldest first): the full history
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from recsys.config import ConfigError, from_dict
from recsys.data import schema as S
from recsys.model_io import (
    MODEL_JSON,
    STATE_DICT,
    build_from_spec,
    load_model,
    load_weights,
    read_spec,
    resolved_config,
    save_model,
)
from recsys.models.base import SequentialRecommender
from recsys.retrieval.index import IndexConfig, ItemIndex, build_index, load_index, save_index

log = logging.getLogger(__name__)

BUNDLE_FORMAT = 2  # 2: bundle.json lists each file's size and sha256; 1 (still read): no checksums
BUNDLE_FILE = "bundle.json"
MODEL_DIR = "model"
EMBEDDINGS_FILE = "item_embeddings.npy"
INDEX_FILE = "index.faiss"
ITEMS_FILE = "items.parquet"
HISTORIES_FILE = "histories.parquet"


class BundleError(ValueError):
    """A bundle file that is missing, corrupted or inconsistent; names the file inside the bundle.

    `public` (file and problem) holds no path or URI, so a service may show it to clients; the
    message adds the underlying error for logs and the command line.
    """

    def __init__(self, file: str, problem: str, detail: str | None = None) -> None:
        self.file = file
        self.problem = problem
        self.public = f"bundle file {file}: {problem}"
        super().__init__(self.public + (f" ({detail})" if detail else ""))


@dataclass(frozen=True)
class FileDigest:
    """Size and sha256 of one bundle file, as bundle.json lists it."""

    bytes: int
    sha256: str


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
    files: dict[str, FileDigest] = field(default_factory=dict)  # path inside the bundle -> digest

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
    return _write(
        directory, model, str(spec["name"]), emb, build_index(emb, index_config), items, histories, name, source_run_id
    )


def save_bundle(directory: Path, bundle: ServingBundle, *, source_run_id: str | None) -> BundleMeta:
    """Write a loaded (possibly grown, e.g. by `Recommender.with_new_items`) bundle into `directory`.

    The model, its live index (not rebuilt) and the vocabularies and histories are written as they
    are in memory; the result loads with `load_bundle` like any exported bundle.
    """
    if directory.exists() and any(directory.iterdir()):
        raise FileExistsError(f"bundle directory {directory} is not empty")
    meta = bundle.meta
    with_text = bundle.item_text is not None
    idx = np.arange(1, meta.n_items + 1, dtype=np.int64)
    columns: dict[str, object] = {S.ITEM_IDX: idx, S.RAW_ID: bundle.item_raw_ids[1:].tolist()}
    if with_text:
        assert bundle.item_text is not None
        columns[S.TEXT] = pl.Series(S.TEXT, bundle.item_text[1:].tolist(), dtype=pl.String)
    items = pl.DataFrame(columns)
    users = sorted(bundle.user_vocab, key=bundle.user_vocab.__getitem__)
    off = bundle.history_offsets
    seqs = [bundle.history_items[off[row] : off[row + 1]].tolist() for row in range(len(users))]
    histories = pl.DataFrame({S.RAW_ID: users, S.ITEMS: pl.Series(S.ITEMS, seqs, dtype=pl.List(pl.Int64))})
    with torch.no_grad():
        emb = np.ascontiguousarray(bundle.model.item_embeddings().detach().float().numpy())
    if emb.shape != (meta.n_items + 1, meta.dim):
        raise ValueError(f"the model's item embeddings are {emb.shape}, the bundle holds {meta.n_items} x {meta.dim}")
    return _write(directory, bundle.model, meta.model, emb, bundle.index, items, histories, meta.name, source_run_id)


def _write(
    directory: Path,
    model: SequentialRecommender,
    model_name: str,
    emb: np.ndarray,
    index: ItemIndex,
    items: pl.DataFrame,
    histories: pl.DataFrame,
    name: str,
    source_run_id: str | None,
) -> BundleMeta:
    """Write every bundle file under a temporary name beside `directory`, then rename it: a crash
    never leaves a directory that looks like a bundle."""
    n_items = len(emb) - 1
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        save_model(model, model_name, resolved_config(model), n_items, tmp / MODEL_DIR)
        np.save(tmp / EMBEDDINGS_FILE, emb)
        save_index(index, tmp / INDEX_FILE)
        items.write_parquet(tmp / ITEMS_FILE)
        histories.write_parquet(tmp / HISTORIES_FILE)
        meta = BundleMeta(
            name=name,
            model=model_name,
            n_items=n_items,
            dim=int(emb.shape[1]),
            max_len=int(model.max_len),
            index=index.config,
            source_run_id=source_run_id,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            files={rel: file_digest(tmp / rel) for rel in _payload_files()},
        )
        (tmp / BUNDLE_FILE).write_text(json.dumps(meta.to_dict(), indent=2) + "\n")
        os.replace(tmp, directory)  # onto a missing or empty directory
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def file_digest(path: Path) -> FileDigest:
    """Size and sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return FileDigest(bytes=path.stat().st_size, sha256=digest.hexdigest())


def verify_bundle(directory: Path, meta: BundleMeta) -> None:
    """Check every file bundle.json lists against its size and sha256; `BundleError` names the first bad one."""
    if meta.format >= 2 and set(meta.files) != set(_payload_files()):
        raise BundleError(BUNDLE_FILE, f"lists files {sorted(meta.files)}, expected {sorted(_payload_files())}")
    for rel, expected in meta.files.items():
        path = directory / rel
        if not path.is_file():
            raise BundleError(rel, "is missing")
        size = path.stat().st_size
        if size != expected.bytes:
            raise BundleError(rel, f"has {size} bytes, bundle.json lists {expected.bytes} (truncated or replaced)")
        got = file_digest(path).sha256
        if got != expected.sha256:
            raise BundleError(
                rel, f"checksum mismatch: sha256 {got[:12]}..., bundle.json lists {expected.sha256[:12]}... (corrupted)"
            )


def read_bundle_meta(directory: Path) -> BundleMeta:
    """Parse bundle.json of a bundle directory."""
    path = directory / BUNDLE_FILE
    if not path.is_file():
        raise BundleError(BUNDLE_FILE, "is missing: the directory is not a serving bundle")
    try:
        meta = from_dict(BundleMeta, json.loads(path.read_text()), source=BUNDLE_FILE)
    except (ValueError, UnicodeDecodeError) as err:  # JSON, or fields that do not fit (ConfigError)
        problem = str(err) if isinstance(err, ConfigError) else "is not valid JSON"
        raise BundleError(BUNDLE_FILE, problem) from err
    if meta.format not in (1, BUNDLE_FORMAT):
        raise BundleError(BUNDLE_FILE, f"bundle format {meta.format} is not supported (expected {BUNDLE_FORMAT})")
    return meta


def load_bundle(directory: Path) -> ServingBundle:
    """Load a bundle into memory; nothing is read from `directory` afterwards (it may be deleted).

    Every failure is a `BundleError` naming the file: checksums first (format 2), then parse errors and
    inconsistencies between the files.
    """
    meta = read_bundle_meta(directory)
    verify_bundle(directory, meta)
    model_json, state_dict = f"{MODEL_DIR}/{MODEL_JSON}", f"{MODEL_DIR}/{STATE_DICT}"
    with _reading(model_json):
        model = build_from_spec(read_spec(directory / MODEL_DIR), source=model_json)
    with _reading(state_dict):
        model = load_weights(model, directory / MODEL_DIR)
    with _reading(INDEX_FILE):
        index = load_index(directory / INDEX_FILE, meta.index)
    if index.n_items != meta.n_items or index.dim != meta.dim:
        raise BundleError(
            INDEX_FILE, f"holds {index.n_items} x {index.dim} vectors, bundle.json says {meta.n_items} x {meta.dim}"
        )
    with _reading(ITEMS_FILE):
        items = pl.read_parquet(directory / ITEMS_FILE).sort(S.ITEM_IDX)
        idx = items[S.ITEM_IDX].to_numpy()
        raw_list = items[S.RAW_ID].to_list()
        text_col = items[S.TEXT] if S.TEXT in items.columns else None
    if not np.array_equal(idx, np.arange(1, meta.n_items + 1)):
        raise BundleError(ITEMS_FILE, f"does not hold item_idx 1..{meta.n_items} once each")
    raw_ids = np.empty(meta.n_items + 1, dtype=object)
    raw_ids[0] = ""
    raw_ids[idx] = raw_list
    text: np.ndarray | None = None
    if text_col is not None and text_col.null_count() < items.height:
        text = np.full(meta.n_items + 1, None, dtype=object)
        text[idx] = text_col.to_list()
    with _reading(HISTORIES_FILE):
        histories = pl.read_parquet(directory / HISTORIES_FILE)
        lengths = histories[S.ITEMS].list.len().to_numpy().astype(np.int64)
        flat = histories[S.ITEMS].explode().drop_nulls().to_numpy().astype(np.int64)
        users = histories[S.RAW_ID].to_list()
    if len(flat) and (flat.min() < 1 or flat.max() > meta.n_items):
        raise BundleError(HISTORIES_FILE, f"holds item indices outside 1..{meta.n_items}")
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if meta.format < 2:
        log.warning("bundle %s has format %d: no checksums were verified (export it again)", directory, meta.format)
    return ServingBundle(
        meta=meta,
        model=model,
        index=index,
        item_raw_ids=raw_ids,
        item_text=text,
        item_vocab={raw: int(i) for raw, i in zip(raw_list, idx.tolist(), strict=True)},
        user_vocab={raw: row for row, raw in enumerate(users)},
        history_offsets=offsets,
        history_items=flat,
    )


@contextlib.contextmanager
def _reading(file: str) -> Iterator[None]:
    """Turn any error while reading one bundle file into a `BundleError` naming it."""
    try:
        yield
    except BundleError:
        raise
    except Exception as err:  # torch, FAISS, polars and numpy each raise their own kinds
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise BundleError(file, "cannot be read", f"{type(err).__name__}: {first}"[:300]) from err


def _payload_files() -> tuple[str, ...]:
    """Every file of a bundle but bundle.json, as paths inside the bundle."""
    return (
        f"{MODEL_DIR}/{MODEL_JSON}",
        f"{MODEL_DIR}/{STATE_DICT}",
        EMBEDDINGS_FILE,
        INDEX_FILE,
        ITEMS_FILE,
        HISTORIES_FILE,
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
