"""Per-user results of an evaluation: one row per evaluated user, stored with the run so analysis never
re-scores a model.

A table per stage (`val`, `test`) holds, for each user, the target's 1-based full-ranking rank, the
top max(ks) items, the history length, the target's popularity (training interactions) and whether
it was cold (never in training), and the target item's age at the moment of the target. A third
table, `items`, holds every item's training count and first timestamp (the popularity every
recommended item is measured against). MLflow keeps them under `per_user/<name>.parquet`; a results
record keeps them in the directory `<record stem>.per_user/` beside it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

import polars as pl
import torch

from recsys.data import schema as S
from recsys.data.split import TARGET, TARGET_TIMESTAMP, SequenceSplit
from recsys.eval.evaluate import EvalResult
from recsys.tracking.mlflow import RunRecorder, download_run_artifacts

ARTIFACT_DIR = "per_user"  # artifact path of the tables in an MLflow run
ITEMS_TABLE = "items"  # the item table's name beside the stages' tables

# per-user columns (besides user_idx)
HISTORY_LEN = "history_len"  # items in the user's history before the target (all of them, not the model window)
TARGET_POPULARITY = "target_popularity"  # training interactions of the target item
TARGET_COLD = "target_cold"  # the target never appears in training
ITEM_AGE = "item_age"  # target timestamp - the target item's first timestamp (the data's time unit)
RANK = "rank"  # 1-based rank of the target over the whole catalog (ties by item index)
TOPK = "topk"  # list[int]: the top max(ks) items, best first
# item columns (besides item_idx)
TRAIN_COUNT = "train_count"  # training interactions
FIRST_SEEN = "first_seen"  # earliest timestamp of the item in the split's data (train, histories, targets)


def item_stats(split: SequenceSplit, n_items: int) -> pl.DataFrame:
    """Training count and first timestamp of items 1..n_items in a split (count 0 for a cold item).

    Args:
        split: the split the model trained and was evaluated on.
        n_items: catalog size; every item 1..n_items gets a row.
    """
    train = split.train.select(pl.col(S.ITEMS).explode().alias(S.ITEM_IDX)).drop_nulls()
    counts = train.group_by(S.ITEM_IDX).agg(pl.len().cast(pl.Int64).alias(TRAIN_COUNT))
    frames = [split.train, split.validation, split.test]
    history = pl.concat([f.select(S.ITEMS, S.TIMESTAMPS) for f in frames]).explode(S.ITEMS, S.TIMESTAMPS)
    targets = pl.concat(
        [f.select(pl.col(TARGET).alias(S.ITEMS), pl.col(TARGET_TIMESTAMP).alias(S.TIMESTAMPS)) for f in frames[1:]]
    )
    seen = pl.concat([history, targets.cast(history.schema)]).drop_nulls()
    first = seen.group_by(pl.col(S.ITEMS).alias(S.ITEM_IDX)).agg(pl.col(S.TIMESTAMPS).min().alias(FIRST_SEEN))
    catalog = pl.DataFrame({S.ITEM_IDX: pl.int_range(1, n_items + 1, eager=True)}).cast(pl.Int64)
    return (
        catalog.join(counts.cast({S.ITEM_IDX: pl.Int64}), on=S.ITEM_IDX, how="left")
        .join(first.cast({S.ITEM_IDX: pl.Int64, FIRST_SEEN: pl.Int64}), on=S.ITEM_IDX, how="left")
        .with_columns(pl.col(TRAIN_COUNT).fill_null(0))
        .sort(S.ITEM_IDX)
    )


def per_user_results(result: EvalResult, holdout: pl.DataFrame, items: pl.DataFrame) -> pl.DataFrame:
    """One row per evaluated user of `result`, sorted by user_idx.

    Args:
        result: an evaluation whose batches carried their rows (`EvalBatch.rows`).
        holdout: the split's frame those rows index (`SequenceSplit.validation` or `.test`).
        items: `item_stats` of the same split.
    """
    if result.ranks is None or result.topk_ids is None or result.rows is None:
        raise ValueError("per-user results need an evaluation whose batches carry their rows (EvalBatch.rows)")
    if len(result.rows) != holdout.height or torch.unique(result.rows).numel() != holdout.height:
        raise ValueError(f"the evaluation ranked {len(result.rows)} rows; the split's frame has {holdout.height} users")
    ranked = pl.DataFrame(
        {
            "_row": result.rows.numpy(),
            RANK: result.ranks.numpy(),
            TOPK: result.topk_ids.numpy(),
        }
    ).with_columns(pl.col(TOPK).cast(pl.List(pl.Int64)), pl.col(RANK).cast(pl.Int64))
    users = holdout.with_row_index("_row").select(
        pl.col("_row").cast(pl.Int64),
        pl.col(S.USER_IDX).cast(pl.Int64),
        pl.col(S.ITEMS).list.len().cast(pl.Int64).alias(HISTORY_LEN),
        pl.col(TARGET).cast(pl.Int64),
        pl.col(TARGET_TIMESTAMP).cast(pl.Int64),
    )
    stats = items.select(pl.col(S.ITEM_IDX).alias(TARGET), TRAIN_COUNT, FIRST_SEEN)
    return (
        users.join(ranked.cast({"_row": pl.Int64}), on="_row", how="inner")
        .join(stats, on=TARGET, how="left")
        .select(
            S.USER_IDX,
            HISTORY_LEN,
            TARGET,
            pl.col(TRAIN_COUNT).fill_null(0).alias(TARGET_POPULARITY),
            (pl.col(TRAIN_COUNT).fill_null(0) == 0).alias(TARGET_COLD),
            (pl.col(TARGET_TIMESTAMP) - pl.col(FIRST_SEEN)).alias(ITEM_AGE),
            RANK,
            TOPK,
        )
        .sort(S.USER_IDX)
    )


def write_tables(directory: Path, tables: Mapping[str, pl.DataFrame]) -> list[Path]:
    """Write each table as `<directory>/<name>.parquet` (directory created); returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, table in tables.items():
        path = directory / f"{name}.parquet"
        table.write_parquet(path)
        paths.append(path)
    return paths


def log_tables(recorder: RunRecorder, tables: Mapping[str, pl.DataFrame]) -> None:
    """Log each table to the recorder's run as `per_user/<name>.parquet`."""
    with tempfile.TemporaryDirectory(prefix="recsys-per-user-") as tmp:
        write_tables(Path(tmp), tables)
        recorder.log_dir(Path(tmp), ARTIFACT_DIR)


def beside_record(record_path: str | Path) -> Path:
    """Where a results record's per-user tables go: `x.json` -> `x.per_user/`."""
    path = Path(record_path)
    return path.with_name(f"{path.stem}.{ARTIFACT_DIR}")


def read_run_table(tracking_uri: str, run_id: str, name: str = "test") -> pl.DataFrame:
    """One per-user table (`val`, `test`, `items`, ...) of an MLflow run.

    Raises:
        FileNotFoundError: the run has no such table (e.g. logged before per-user results existed).
    """
    artifact = f"{ARTIFACT_DIR}/{name}.parquet"
    with tempfile.TemporaryDirectory(prefix="recsys-per-user-") as tmp:
        try:
            local = download_run_artifacts(tracking_uri, run_id, artifact, Path(tmp))
        except Exception as err:  # mlflow raises its own types for a missing artifact
            raise FileNotFoundError(f"run {run_id} has no per-user table {artifact}: {err}") from err
        return pl.read_parquet(local)
