"""What both ETL engines (polars `polars_etl.py`, Spark `spark_etl.py`) share around the steps of a run.

The run's inputs (where the log and the side tables are, their checksums, the latest plausible
timestamp), its rules on what it keeps (rejected rows counted by reason against `max_reject_fraction`,
a k-core that keeps nothing), and the small outputs built on one machine (items.parquet's table,
meta.json). Each engine imports this module; neither engine imports the other (`etl.run_etl` picks one).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from recsys.config import to_dict
from recsys.data import schema as S
from recsys.data.config import DataConfig
from recsys.data.download import fetch_zip_members, sha256_file
from recsys.data.errors import DataError
from recsys.data.readers import read_item_attributes, read_item_table
from recsys.data.steps import FUTURE_SLACK_S, RAW_PREFIX

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EtlResult:
    """Where the processed dataset went and its headline numbers."""

    output_dir: Path
    meta: dict[str, Any]
    wall_s: float


# ---------------------------------------------------------------- inputs


def resolve_path(path: str, base_dir: Path) -> Path:
    """`path` as given when absolute, else relative to `base_dir`."""
    p = Path(path)
    return p if p.is_absolute() else base_dir / p


def source_paths(cfg: DataConfig, base_dir: Path) -> tuple[Path, Path | None]:
    """Local interactions and item-table paths, downloading the configured zip when the log is missing.

    Args:
        cfg: the data config (`source.path`, `source.items`, `source.download`).
        base_dir: directory relative paths are resolved against.
    """
    src = cfg.source
    path = resolve_path(src.path, base_dir)
    items_path = resolve_path(src.items.path, base_dir) if src.items else None
    # the attributes JSON is never downloaded: it is resolved where item features are built
    if path.exists() or src.download is None or any(ch in src.path for ch in "*?["):
        return path, items_path
    fetched = fetch_zip_members(src.download, base_dir)
    path = fetched[src.download.interactions_member]
    if items_path is not None and not items_path.exists() and src.download.items_member:
        items_path = fetched[src.download.items_member]
    return path, items_path


def file_checksums(path: Path) -> list[dict[str, Any]]:
    """Path, size and sha256 of each file `path` names (a file, a glob, or a directory of parquet files)."""
    files = sorted(path.glob("*.parquet")) if path.is_dir() else sorted(path.parent.glob(path.name))
    return [{"path": str(f), "bytes": f.stat().st_size, "sha256": sha256_file(f)} for f in files]


def latest_timestamp() -> int:
    """The latest timestamp a log may hold, epoch seconds: now plus `FUTURE_SLACK_S` (`future_timestamp`)."""
    return int(time.time()) + FUTURE_SLACK_S


# ---------------------------------------------------------------- rules on what a run keeps


@dataclass(frozen=True)
class Rejects:
    """The validated log's rejected rows: counted by reason, and the first ones (raw values as text)."""

    n_read: int
    by_reason: dict[str, int]  # reason -> rows, reasons in sorted order
    sample: pl.DataFrame | None  # `rejected_sample.csv`: row, reject_reason, values as in the file

    @property
    def n_rejected(self) -> int:
        """Rows rejected for any reason."""
        return sum(self.by_reason.values())

    @property
    def fraction(self) -> float:
        """Share of the rows read that were rejected."""
        return self.n_rejected / self.n_read


def count_rejects(n_read: int, counts: Iterable[tuple[str, int]], sample: pl.DataFrame | None) -> Rejects:
    """The `Rejects` of a validated log, reasons in sorted order (the order meta.json lists them in).

    Args:
        n_read: rows read, rejected ones included.
        counts: (reason, rows) for each reason that rejected a row.
        sample: the first rejected rows by input order (`rejected_sample_columns`), None when not taken.
    """
    return Rejects(n_read=n_read, by_reason={r: int(n) for r, n in sorted(counts)}, sample=sample)


def check_rejects(rejects: Rejects, max_reject_fraction: float, path: str | Path) -> None:
    """Raise `DataError` when the log has no rows or rejects more than `max_reject_fraction` of them.

    Args:
        rejects: the validated log's rejected rows.
        max_reject_fraction: the config's bound on the rejected share.
        path: the log, named in the error.
    """
    if rejects.n_read == 0:
        raise DataError(f"{path}: no rows")
    if rejects.fraction > max_reject_fraction:
        sample = rejects.sample
        first = sample.row(0, named=True) if sample is not None and sample.height else None
        raise DataError(
            f"{path}: {rejects.n_rejected} of {rejects.n_read} rows rejected ({rejects.fraction:.2%} > "
            f"max_reject_fraction {max_reject_fraction:.2%}); by reason: {rejects.by_reason}; first: {first}"
        )


def rejected_sample_columns(columns: Collection[str]) -> list[tuple[str, str]]:
    """(source column, name) of each value column of `rejected_sample.csv`, after `row` and `reject_reason`.

    A column read as text shows its raw value (`raw_<name>`), any other its typed value (cast to text).

    Args:
        columns: the validated log's columns.
    """
    out = []
    for name in (S.USER, S.ITEM, S.TIMESTAMP, S.RATING):
        if RAW_PREFIX + name in columns:
            out.append((RAW_PREFIX + name, name))
        elif name in columns:
            out.append((name, name))
    return out


def check_k_core_kept(cfg: DataConfig, n_kept: int, n_in: int, path: str | Path) -> None:
    """Raise `DataError` when the k-core filter kept no rows.

    Args:
        cfg: the data config (its k-core bounds are named in the error).
        n_kept: rows the k-core kept.
        n_in: rows it started from.
        path: the log, named in the error.
    """
    if n_kept == 0:
        raise DataError(
            f"{path}: nothing left after the k-core filter (min_user_interactions="
            f"{cfg.min_user_interactions}, min_item_interactions={cfg.min_item_interactions}; {n_in} rows in)"
        )


# ---------------------------------------------------------------- outputs built on one machine


def etl_meta(
    cfg: DataConfig,
    *,
    n_users: int,
    n_items: int,
    rejects: Rejects,
    n_after_min_rating: int,
    n_after_dedupe: int,
    n_after_k_core: int,
    k_core_rounds: int,
    source_files: dict[str, list[dict[str, Any]]],
    item_features: dict[str, Any],
) -> dict[str, Any]:
    """meta.json of a processed dataset (both engines write this one layout).

    Args:
        cfg: the data config (stored whole under `config`).
        n_users: users kept.
        n_items: items kept (item_idx 1..n_items).
        rejects: the validated log's rejected rows.
        n_after_min_rating: rows left after the rating threshold.
        n_after_dedupe: rows left after the dedupe policy.
        n_after_k_core: rows left after the k-core (the interactions written).
        k_core_rounds: rounds the k-core took to be stable.
        source_files: `files`, `items_files`, `attributes_files`: what was read (`file_checksums`).
        item_features: items.parquet's feature columns (`item_table`).
    """
    rows = {
        "read": rejects.n_read,
        "rejected": rejects.n_rejected,
        "after_validation": rejects.n_read - rejects.n_rejected,
        "after_min_rating": n_after_min_rating,
        "after_dedupe": n_after_dedupe,
        "after_k_core": n_after_k_core,
    }
    return {
        "schema_version": S.SCHEMA_VERSION,
        "name": cfg.name,
        "n_users": n_users,
        "n_items": n_items,
        "n_interactions": n_after_k_core,
        "id_policy": "item_idx 1..n_items in raw-id order (0 = padding); user_idx 0..n_users-1 in raw-id order",
        "rows": rows,
        "rejected": rejects.by_reason,
        "reject_fraction": rejects.fraction,
        "filters": {
            "min_rating": cfg.min_rating,
            "dedupe": cfg.dedupe,
            "k_core": {
                "min_user_interactions": cfg.min_user_interactions,
                "min_item_interactions": cfg.min_item_interactions,
                "rounds": k_core_rounds,
            },
        },
        "source": {"format": cfg.source.format, **source_files},
        S.ITEM_FEATURES: item_features,
        "config": to_dict(cfg),
    }


def item_table(
    items: pl.DataFrame, cfg: DataConfig, items_path: Path | None, attributes_path: Path | None
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """items.parquet (item_idx, raw_id, text, feature columns) and its meta.json description.

    Items missing from the item table get null text fields and an empty `genres`; items missing from
    the attributes JSON get an empty `attributes`. A table that matches none of the kept items is an error.

    Args:
        items: the item vocabulary (`item`, `item_idx`), in item_idx order.
        cfg: the data config (`source.items` says how to read the item table).
        items_path: the item table, None when there is none.
        attributes_path: the attributes JSON, None when there is none.
    """
    table = items.select(S.ITEM_IDX, pl.col(S.ITEM).cast(pl.String).alias(S.RAW_ID))
    if cfg.source.items is not None and items_path is not None:
        side = read_item_table(cfg.source.items, items_path)
        table = _join_side_table(table, side, items_path, "items.id_column")
    else:
        table = table.with_columns(pl.lit(None, pl.String).alias(S.TEXT))
    if attributes_path is not None:
        side = read_item_attributes(attributes_path)
        table = _join_side_table(table, side, attributes_path, "the JSON keys")
    columns: dict[str, str] = {}  # feature column -> "str" | "list[str]" | "list[int]"
    filled: dict[str, int] = {}  # feature column -> items with a value (non-null, non-empty)
    for name, dtype in table.schema.items():
        if name in (S.ITEM_IDX, S.RAW_ID, S.TEXT):
            continue
        if isinstance(dtype, pl.List):
            table = table.with_columns(pl.col(name).fill_null([]))
            columns[name] = f"list[{'int' if dtype.inner.is_integer() else 'str'}]"
            filled[name] = int((table[name].list.len() > 0).sum())
        else:
            columns[name] = "str"
            filled[name] = table.height - table[name].null_count()
    features: dict[str, Any] = {"columns": columns, "items_with_value": filled}
    if S.ATTRIBUTES in columns:
        top = table[S.ATTRIBUTES].explode().max()
        features["max_attribute_id"] = int(top) if isinstance(top, int) else None
    return table, features


def _join_side_table(table: pl.DataFrame, side: pl.DataFrame, path: Path, id_hint: str) -> pl.DataFrame:
    """Left-join item side information on raw_id; fail when none of its ids is a kept item id."""
    joined = table.join(side, on=S.RAW_ID, how="left", maintain_order="left")
    matched = table.join(side.select(S.RAW_ID), on=S.RAW_ID, how="semi").height
    if side.height and matched == 0:
        raise DataError(
            f"{path}: none of its {side.height} item ids matches an item id of the log (log ids look like "
            f"{table[S.RAW_ID].head(3).to_list()}, this file's like {side[S.RAW_ID].head(3).to_list()}); "
            f"check {id_hint}"
        )
    log.info("%s: item side information for %d of %d items", path.name, matched, table.height)
    return joined
