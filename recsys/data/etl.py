"""ETL steps (`LazyFrame -> LazyFrame`) and `run_etl`, which chains them into a processed dataset.

Order: read -> validate (bad rows counted by reason) -> rating threshold -> dedupe -> iterative
k-core -> dense ids (item 0 = padding) -> chronological order (ties keep input order) -> sequences.
Item side information (an item table, an attributes JSON) is joined onto the kept items by raw id.
The validated log is collected once (rejections must be counted before filtering); k-core collects
only (user, item) pairs per round, since "until stable" needs the counts; the rest is one lazy plan.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import polars as pl

from recsys.config import to_dict
from recsys.data import schema as S
from recsys.data.config import DataConfig, DedupePolicy
from recsys.data.download import fetch_zip_members, sha256_file
from recsys.data.errors import DataError
from recsys.data.processed import write_processed
from recsys.data.readers import read_interactions, read_item_attributes, read_item_table, summarize_error
from recsys.data.steps import CHRONOLOGICAL_ORDER, DEDUPE_ORDER, FUTURE_SLACK_S, VALUE_REASONS

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

Engine = Literal["auto", "in-memory", "streaming"]
_RAW_PREFIX = "raw_"


def validate(
    lf: pl.LazyFrame,
    *,
    id_type: Literal["int", "str"] = "int",
    timestamp_type: Literal["int", "datetime"] = "int",
    max_timestamp: int | None = None,
) -> pl.LazyFrame:
    """Type `user, item, timestamp[, rating]` and set `reject_reason` on bad rows (kept, not dropped).

    Reasons, first match wins: the reader's own (`not_utf8`, `malformed_line`), `missing_value`,
    `bad_user_id`, `bad_item_id` (not an integer where `id_type` is int, or beyond int64),
    `bad_timestamp`, `negative_timestamp`, `future_timestamp` (after `max_timestamp`, epoch seconds;
    None: no bound), `bad_rating`. Text columns keep their raw value as `raw_<name>` for the
    rejected-row sample.
    """
    schema = lf.collect_schema()
    has_rating = S.RATING in schema
    typed: dict[str, pl.Expr] = {
        S.USER: _cast_id(S.USER, schema[S.USER], id_type),
        S.ITEM: _cast_id(S.ITEM, schema[S.ITEM], id_type),
        S.TIMESTAMP: _cast_timestamp(schema[S.TIMESTAMP], timestamp_type),
    }
    if has_rating:
        typed[S.RATING] = _cast_number(S.RATING, schema[S.RATING], pl.Float64)
    raw_cols = [c for c in typed if schema[c] == pl.String]
    missing = pl.any_horizontal([_is_blank(c, schema[c]) for c in (S.USER, S.ITEM, S.TIMESTAMP)])
    checks: dict[str, pl.Expr | None] = {
        "missing_value": pl.col("_missing"),
        "bad_user_id": pl.col(S.USER).is_null(),
        "bad_item_id": pl.col(S.ITEM).is_null(),
        "bad_timestamp": pl.col(S.TIMESTAMP).is_null(),
        "negative_timestamp": pl.col(S.TIMESTAMP) < 0,
        "future_timestamp": None if max_timestamp is None else pl.col(S.TIMESTAMP) > max_timestamp,
        "bad_rating": (pl.col(S.RATING).is_null() | pl.col(S.RATING).is_nan()) if has_rating else None,
    }
    assert tuple(checks) == VALUE_REASONS  # the shared order (recsys/data/steps.py), first match wins
    # the reader's reason, else the first check that applies (a `when` without `otherwise` is null)
    reason = pl.coalesce(
        pl.col(S.REJECT), *[pl.when(check).then(pl.lit(name)) for name, check in checks.items() if check is not None]
    )
    return (
        lf.with_columns(missing.alias("_missing"), *[pl.col(c).alias(_RAW_PREFIX + c) for c in raw_cols])
        .with_columns(*[expr.alias(name) for name, expr in typed.items()])
        .with_columns(reason.alias(S.REJECT))
        .drop("_missing")
    )


def _is_blank(name: str, dtype: pl.DataType) -> pl.Expr:
    col = pl.col(name)
    if dtype == pl.String:
        return col.is_null() | (col.str.strip_chars() == "")
    return col.is_null()


def _cast_id(name: str, dtype: pl.DataType, id_type: str) -> pl.Expr:
    col = pl.col(name)
    if id_type == "str":
        return col.cast(pl.String).str.strip_chars()
    return _cast_number(name, dtype, pl.Int64)


def _cast_number(name: str, dtype: pl.DataType, target: type[pl.DataType]) -> pl.Expr:
    col = pl.col(name)
    if dtype == pl.String:
        return col.str.strip_chars().cast(target, strict=False)
    if dtype.is_integer() or (dtype.is_float() and target == pl.Float64):
        return col.cast(target)
    if dtype.is_float():  # integers stored as floats: keep integral values, reject the rest
        return pl.when(col == col.floor()).then(col).cast(target, strict=False)
    raise DataError(f"column {name!r} has dtype {dtype}; expected {target.__name__} values")


def _cast_timestamp(dtype: pl.DataType, timestamp_type: str) -> pl.Expr:
    col = pl.col(S.TIMESTAMP)
    if isinstance(dtype, pl.Datetime):
        return col.dt.epoch("s")
    if isinstance(dtype, pl.Date):
        return col.cast(pl.Datetime("ms")).dt.epoch("s")
    if dtype == pl.String and timestamp_type == "datetime":
        return col.str.strip_chars().str.to_datetime(strict=False, time_unit="ms").dt.epoch("s")
    return _cast_number(S.TIMESTAMP, dtype, pl.Int64)


def filter_min_rating(lf: pl.LazyFrame, min_rating: float | None) -> pl.LazyFrame:
    """Keep rows with `rating >= min_rating`; `None` keeps every row (implicit feedback)."""
    if min_rating is None:
        return lf
    return lf.filter(pl.col(S.RATING) >= min_rating)


def dedupe(lf: pl.LazyFrame, policy: DedupePolicy) -> pl.LazyFrame:
    """Per (user, item): keep all rows, the earliest (`first`) or the latest (`last`); ties by input order."""
    if policy == "keep_all":
        return lf
    return lf.sort(list(DEDUPE_ORDER)).unique([S.USER, S.ITEM], keep=policy, maintain_order=False)


@dataclass(frozen=True)
class KCoreResult:
    """Users and items that survive the k-core, and how many rounds it took to be stable."""

    users: pl.DataFrame  # one column `user`
    items: pl.DataFrame  # one column `item`
    rounds: int
    rows_in: int
    rows_out: int


def k_core_survivors(pairs: pl.DataFrame, min_user: int, min_item: int, *, engine: Engine = "auto") -> KCoreResult:
    """Iteratively drop users with < `min_user` rows and items with < `min_item` rows until stable.

    Args:
        pairs: one row per interaction, columns `user` and `item` (other columns are ignored).
        min_user: minimum rows per user (1 disables the user side).
        min_item: minimum rows per item (1 disables the item side).
        engine: polars engine for the per-round counts.
    """
    cur = pairs.select(S.USER, S.ITEM)
    rows_in = cur.height
    rounds = 0
    while True:
        rounds += 1
        before = cur.height
        for key, k in ((S.USER, min_user), (S.ITEM, min_item)):
            if k <= 1:
                continue
            keep = cur.lazy().group_by(key).len().filter(pl.col("len") >= k).select(key)
            cur = cur.lazy().join(keep, on=key, how="semi").collect(engine=engine)
        if cur.height == before or cur.height == 0:
            break
    return KCoreResult(
        users=cur.select(pl.col(S.USER).unique()),
        items=cur.select(pl.col(S.ITEM).unique()),
        rounds=rounds,
        rows_in=rows_in,
        rows_out=cur.height,
    )


def k_core(lf: pl.LazyFrame, min_user: int, min_item: int, *, engine: Engine = "auto") -> pl.LazyFrame:
    """The k-core step: rows whose user and item both survive `k_core_survivors`."""
    res = k_core_survivors(lf.select(S.USER, S.ITEM).collect(engine=engine), min_user, min_item, engine=engine)
    return apply_k_core(lf, res)


def apply_k_core(lf: pl.LazyFrame, res: KCoreResult) -> pl.LazyFrame:
    """Keep the rows of `lf` whose user and item are in `res` (the k-core is closed under this filter)."""
    return lf.join(res.users.lazy(), on=S.USER, how="semi").join(res.items.lazy(), on=S.ITEM, how="semi")


def user_vocab(lf: pl.LazyFrame) -> pl.LazyFrame:
    """Raw user ids in sorted order -> `user_idx` 0..n_users-1."""
    return (
        lf.select(pl.col(S.USER).unique())
        .sort(S.USER)
        .with_row_index(S.USER_IDX, offset=S.FIRST_USER_IDX)
        .with_columns(pl.col(S.USER_IDX).cast(pl.Int64))
    )


def item_vocab(lf: pl.LazyFrame) -> pl.LazyFrame:
    """Raw item ids in sorted order -> `item_idx` 1..n_items (0 is padding)."""
    return (
        lf.select(pl.col(S.ITEM).unique())
        .sort(S.ITEM)
        .with_row_index(S.ITEM_IDX, offset=S.FIRST_ITEM_IDX)
        .with_columns(pl.col(S.ITEM_IDX).cast(pl.Int64))
    )


def assign_dense_ids(lf: pl.LazyFrame, users: pl.LazyFrame, items: pl.LazyFrame) -> pl.LazyFrame:
    """Add `user_idx` and `item_idx` from the vocabularies (`user_vocab`, `item_vocab`)."""
    return lf.join(users, on=S.USER, how="inner").join(items, on=S.ITEM, how="inner")


def order_chronologically(lf: pl.LazyFrame) -> pl.LazyFrame:
    """Sort by user, then time; equal timestamps keep input order (the `row` column)."""
    return lf.sort(list(CHRONOLOGICAL_ORDER))


def build_sequences(lf: pl.LazyFrame) -> pl.LazyFrame:
    """One row per user: `items` and `timestamps` lists, oldest first (input must be chronological)."""
    # group_by keeps the row order within each group, so the lists follow `order_chronologically`
    return (
        lf.group_by(S.USER_IDX, maintain_order=True)
        .agg(pl.col(S.ITEM_IDX).alias(S.ITEMS), pl.col(S.TIMESTAMP).alias(S.TIMESTAMPS))
        .sort(S.USER_IDX)
    )


@dataclass(frozen=True)
class EtlResult:
    """Where the processed dataset went and its headline numbers."""

    output_dir: Path
    meta: dict[str, Any]
    wall_s: float


def _resolve(path: str, base_dir: Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else base_dir / p


def _source_paths(cfg: DataConfig, base_dir: Path) -> tuple[Path, Path | None]:
    """Local interactions and item-table paths, downloading the configured zip when the log is missing."""
    src = cfg.source
    path = _resolve(src.path, base_dir)
    items_path = _resolve(src.items.path, base_dir) if src.items else None
    # the attributes JSON is never downloaded: it is resolved where item features are built
    if path.exists() or src.download is None or any(ch in src.path for ch in "*?["):
        return path, items_path
    fetched = fetch_zip_members(src.download, base_dir)
    path = fetched[src.download.interactions_member]
    if items_path is not None and not items_path.exists() and src.download.items_member:
        items_path = fetched[src.download.items_member]
    return path, items_path


def _checksums(path: Path) -> list[dict[str, Any]]:
    files = sorted(path.glob("*.parquet")) if path.is_dir() else sorted(path.parent.glob(path.name))
    return [{"path": str(f), "bytes": f.stat().st_size, "sha256": sha256_file(f)} for f in files]


def _now_s() -> int:
    return int(time.time())


def _count_rejects(checked: pl.DataFrame) -> dict[str, int]:
    counts = checked.filter(pl.col(S.REJECT).is_not_null()).group_by(S.REJECT).len().sort(S.REJECT)
    return dict(zip(counts[S.REJECT].to_list(), counts["len"].to_list(), strict=True))


def _rejected_sample(checked: pl.DataFrame, n: int) -> pl.DataFrame:
    bad = checked.filter(pl.col(S.REJECT).is_not_null()).sort(S.ROW).head(n)
    cols = [S.USER, S.ITEM, S.TIMESTAMP, S.RATING]
    out = [pl.col(S.ROW), pl.col(S.REJECT)]
    for c in cols:
        if _RAW_PREFIX + c in bad.columns:
            out.append(pl.col(_RAW_PREFIX + c).alias(c))
        elif c in bad.columns:
            out.append(pl.col(c).cast(pl.String))
    return bad.select(out)


def run_etl(cfg: DataConfig, *, base_dir: Path | None = None, spark: SparkSession | None = None) -> EtlResult:
    """Run the whole ETL for `cfg` and write the processed dataset directory.

    Args:
        cfg: the data config; `engine: spark` runs the same steps on Spark (`recsys.data.spark_etl`).
        base_dir: directory relative paths are resolved against (default: the working directory).
        spark: the Spark session of `engine: spark` (default: the running one, or a new local one).
    """
    if cfg.engine == "spark":
        from recsys.data.spark_etl import run_etl_spark

        out_dir, meta, wall = run_etl_spark(cfg, base_dir=base_dir, spark=spark)
        return EtlResult(output_dir=out_dir, meta=meta, wall_s=wall)
    start = time.perf_counter()
    base = base_dir if base_dir is not None else Path.cwd()
    engine: Engine = "streaming" if cfg.streaming else "auto"
    path, items_path = _source_paths(cfg, base)
    src = cfg.source

    # 1. parse + validate, collected once: rejected rows are counted before anything is filtered
    try:
        checked = (
            read_interactions(src, path)
            .pipe(
                validate,
                id_type=src.id_type,
                timestamp_type=src.timestamp_type,
                max_timestamp=_now_s() + FUTURE_SLACK_S,
            )
            .collect(engine=engine)
        )
    except pl.exceptions.PolarsError as err:  # lazy readers (parquet) fail here, not when scanned
        raise DataError(f"{path}: cannot read the {src.format} log: {summarize_error(err)}") from err
    n_raw = checked.height
    if n_raw == 0:
        raise DataError(f"{path}: no rows")
    rejects = _count_rejects(checked)
    n_rejected = sum(rejects.values())
    frac = n_rejected / n_raw
    sample = _rejected_sample(checked, cfg.reject_sample_size) if n_rejected else None
    if frac > cfg.max_reject_fraction:
        raise DataError(
            f"{path}: {n_rejected} of {n_raw} rows rejected ({frac:.2%} > max_reject_fraction "
            f"{cfg.max_reject_fraction:.2%}); by reason: {rejects}; first: {_first_reject(sample)}"
        )
    keep = [c for c in (S.USER, S.ITEM, S.TIMESTAMP, S.RATING, S.ROW) if c in checked.columns]
    good = checked.lazy().filter(pl.col(S.REJECT).is_null()).select(keep)
    del checked

    # 2. rating threshold + dedupe, materialised as the k-core input
    rated = good.pipe(filter_min_rating, cfg.min_rating)
    n_rated = rated.select(pl.len()).collect().item()
    deduped = rated.pipe(dedupe, cfg.dedupe).collect(engine=engine)
    n_deduped = deduped.height
    del good, rated  # they hold the validated frame; free it before the k-core
    core = k_core_survivors(deduped, cfg.min_user_interactions, cfg.min_item_interactions, engine=engine)
    if core.rows_out == 0:
        raise DataError(
            f"{path}: nothing left after the k-core filter (min_user_interactions="
            f"{cfg.min_user_interactions}, min_item_interactions={cfg.min_item_interactions}; "
            f"{core.rows_in} rows in)"
        )

    # 3. dense ids + chronological order: one lazy plan, collected once
    kept = deduped.lazy().pipe(apply_k_core, core)
    users = user_vocab(kept).collect()
    items = item_vocab(kept).collect()
    keep_cols = [S.USER_IDX, S.ITEM_IDX, S.TIMESTAMP, S.ROW] + ([S.RATING] if S.RATING in keep else [])
    interactions = (
        kept.pipe(assign_dense_ids, users.lazy(), items.lazy())
        .select(keep_cols)  # raw ids live in the vocabularies; dropping them halves the sort's payload
        .pipe(order_chronologically)
        .collect(engine=engine)
    )
    del kept, deduped
    sequences = interactions.lazy().pipe(build_sequences).collect(engine=engine)

    attributes_path = _resolve(src.item_attributes, base) if src.item_attributes else None
    item_table, item_features = _item_table(items, cfg, items_path, attributes_path)
    user_table = users.select(S.USER_IDX, pl.col(S.USER).cast(pl.String).alias(S.RAW_ID))
    meta = etl_meta(
        cfg,
        n_users=users.height,
        n_items=items.height,
        rows={
            "read": n_raw,
            "rejected": n_rejected,
            "after_validation": n_raw - n_rejected,
            "after_min_rating": n_rated,
            "after_dedupe": n_deduped,
            "after_k_core": core.rows_out,
        },
        rejects=rejects,
        k_core_rounds=core.rounds,
        source_files={
            "files": _checksums(path),
            "items_files": _checksums(items_path) if items_path is not None else [],
            "attributes_files": _checksums(attributes_path) if attributes_path is not None else [],
        },
        item_features=item_features,
    )
    out_cols = [S.USER_IDX, S.ITEM_IDX, S.TIMESTAMP] + ([S.RATING] if S.RATING in interactions.columns else [])
    out_dir = _resolve(cfg.output_dir, base)
    write_processed(
        out_dir,
        interactions=interactions.select(out_cols),
        sequences=sequences,
        items=item_table,
        users=user_table,
        meta=meta,
        rejected_sample=sample,
    )
    wall = time.perf_counter() - start
    log.info(
        "processed %s: %d users, %d items, %d rows in %.2fs",
        cfg.name,
        users.height,
        items.height,
        interactions.height,
        wall,
    )
    return EtlResult(output_dir=out_dir, meta=meta, wall_s=wall)


def etl_meta(
    cfg: DataConfig,
    *,
    n_users: int,
    n_items: int,
    rows: dict[str, int],
    rejects: dict[str, int],
    k_core_rounds: int,
    source_files: dict[str, list[dict[str, Any]]],
    item_features: dict[str, Any],
) -> dict[str, Any]:
    """meta.json of a processed dataset (both engines write this one layout)."""
    return {
        "schema_version": S.SCHEMA_VERSION,
        "name": cfg.name,
        "n_users": n_users,
        "n_items": n_items,
        "n_interactions": rows["after_k_core"],
        "id_policy": "item_idx 1..n_items in raw-id order (0 = padding); user_idx 0..n_users-1 in raw-id order",
        "rows": rows,
        "rejected": rejects,
        "reject_fraction": rows["rejected"] / rows["read"],
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


def _first_reject(sample: pl.DataFrame | None) -> dict[str, Any] | None:
    return sample.row(0, named=True) if sample is not None and sample.height else None


def _item_table(
    items: pl.DataFrame, cfg: DataConfig, items_path: Path | None, attributes_path: Path | None
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """items.parquet (item_idx, raw_id, text, feature columns) and its meta.json description.

    Items missing from the item table get null text fields and an empty `genres`; items missing from
    the attributes JSON get an empty `attributes`. A table that matches none of the kept items is an error.
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
