"""The processed dataset directory: write it (ETL) and load it (`load_processed`) for training."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from recsys.data import schema as S
from recsys.data.errors import DataError


@dataclass(frozen=True)
class ProcessedDataset:
    """A processed dataset in memory: per-user sequences, the item and user tables, and meta.json."""

    path: Path
    sequences: pl.DataFrame  # user_idx, items: list[int] oldest first, timestamps: list[int]
    items: pl.DataFrame  # item_idx (1..n_items), raw_id, text (nullable), feature columns (meta["item_features"])
    users: pl.DataFrame  # user_idx (0..n_users-1), raw_id
    meta: dict[str, Any]

    @property
    def n_items(self) -> int:
        """Number of real items; valid item indices are 1..n_items (0 is padding)."""
        return int(self.meta["n_items"])

    @property
    def n_users(self) -> int:
        """Number of users; user indices are 0..n_users-1."""
        return int(self.meta["n_users"])

    def interactions(self) -> pl.LazyFrame:
        """The interaction table (user_idx, item_idx, timestamp[, rating]), scanned lazily."""
        return pl.scan_parquet(self.path / S.INTERACTIONS_FILE)


def write_processed(
    out_dir: Path,
    *,
    interactions: pl.DataFrame,
    sequences: pl.DataFrame,
    items: pl.DataFrame,
    users: pl.DataFrame,
    meta: dict[str, Any],
    rejected_sample: pl.DataFrame | None = None,
) -> None:
    """Write the processed files into `out_dir`, replacing what it held.

    The files are written into a temporary directory beside it, which then takes its place: a crash
    leaves the old dataset or none, never a mix or a half-written file (training finds no meta.json
    and names the ETL command)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        interactions.write_parquet(tmp / S.INTERACTIONS_FILE)
        sequences.write_parquet(tmp / S.SEQUENCES_FILE)
        items.write_parquet(tmp / S.ITEMS_FILE)
        users.write_parquet(tmp / S.USERS_FILE)
        if rejected_sample is not None and rejected_sample.height:
            rejected_sample.write_csv(tmp / S.REJECTED_SAMPLE_FILE)
        (tmp / S.META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n")
        old = out_dir.with_name(f".{out_dir.name}.old-{tmp.name.rsplit('-', 1)[-1]}")
        if out_dir.exists():
            out_dir.rename(old)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def load_processed(path: str | Path) -> ProcessedDataset:
    """Load a processed dataset directory written by the ETL.

    Args:
        path: the directory (e.g. `data/processed/ml-1m`).
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(
            f"processed dataset directory not found: {root} (run `python -m pipelines.prepare_data` first)"
        )
    needed = (S.SEQUENCES_FILE, S.ITEMS_FILE, S.USERS_FILE, S.META_FILE)
    missing = [name for name in needed if not (root / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{root}: missing {missing}; re-run the ETL for this dataset")
    try:
        meta = json.loads((root / S.META_FILE).read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{root / S.META_FILE}: not valid JSON ({err})") from err
    version = meta.get("schema_version")
    if version != S.SCHEMA_VERSION:
        raise DataError(f"{root}: schema_version {version!r}, this code reads {S.SCHEMA_VERSION}; re-run the ETL")
    return ProcessedDataset(
        path=root,
        sequences=pl.read_parquet(root / S.SEQUENCES_FILE),
        items=pl.read_parquet(root / S.ITEMS_FILE),
        users=pl.read_parquet(root / S.USERS_FILE),
        meta=meta,
    )


def diff_processed(a: str | Path, b: str | Path, *, ignore_meta: tuple[str, ...] = ("config",)) -> list[str]:
    """What differs between two processed dataset directories (empty: the same dataset).

    Compares every table's columns, types and rows in file order, meta.json (less the top-level keys in
    `ignore_meta`, by default the config that names the engine) and the rejected-row sample.

    Args:
        a: one processed directory.
        b: the other.
        ignore_meta: top-level meta.json keys left out of the comparison.
    """
    left, right = Path(a), Path(b)
    diffs: list[str] = []
    for name in (S.INTERACTIONS_FILE, S.SEQUENCES_FILE, S.ITEMS_FILE, S.USERS_FILE):
        x, y = pl.read_parquet(left / name), pl.read_parquet(right / name)
        if x.schema != y.schema:
            diffs.append(f"{name}: schema {dict(x.schema)} != {dict(y.schema)}")
        elif x.height != y.height:
            diffs.append(f"{name}: {x.height} rows != {y.height}")
        elif not x.equals(y, null_equal=True):
            first = next(i for i, (p, q) in enumerate(zip(x.iter_rows(), y.iter_rows(), strict=True)) if p != q)
            diffs.append(f"{name}: row {first} differs: {x.row(first)} != {y.row(first)}")
    meta_a, meta_b = (json.loads((d / S.META_FILE).read_text()) for d in (left, right))
    for key in sorted(set(meta_a) | set(meta_b)):
        if key not in ignore_meta and meta_a.get(key) != meta_b.get(key):
            diffs.append(f"{S.META_FILE}[{key!r}]: {meta_a.get(key)!r} != {meta_b.get(key)!r}")
    samples = [
        (d / S.REJECTED_SAMPLE_FILE).read_text() if (d / S.REJECTED_SAMPLE_FILE).is_file() else None
        for d in (left, right)
    ]
    if samples[0] != samples[1]:
        diffs.append(f"{S.REJECTED_SAMPLE_FILE} differs")
    return diffs
