"""The ETL on polars (`engine: polars`): steps (`LazyFrame -> LazyFrame`) and `run_etl_polars`, which
chains them into a processed dataset.

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
from typing import Literal

import polars as pl

from recsys.data import schema as S
from recsys.data.config import DataConfig, DedupePolicy
from recsys.data.errors import DataError
from recsys.data.etl_common import (
    EtlResult,
    Rejects,
    check_k_core_kept,
    check_rejects,
    count_rejects,
    etl_meta,
    file_checksums,
    item_table,
    latest_timestamp,
    rejected_sample_columns,
    resolve_path,
    source_paths,
)
from recsys.data.processed import write_processed
from recsys.data.readers import read_interactions, summarize_error
from recsys.data.steps import CHRONOLOGICAL_ORDER, DEDUPE_ORDER, MISSING_FLAG, RAW_PREFIX, ValueCheck, value_checks

log = logging.getLogger(__name__)

Engine = Literal["auto", "in-memory", "streaming"]


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
    None: no bound), `bad_rating` (`steps.value_checks`). Text columns keep their raw value as
    `raw_<name>` for the rejected-row sample.
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
    checks = value_checks(has_rating=has_rating, max_timestamp=max_timestamp)
    # the reader's reason, else the first check that applies (a `when` without `otherwise` is null)
    reason = pl.coalesce(pl.col(S.REJECT), *[pl.when(_fails(check)).then(pl.lit(check.reason)) for check in checks])
    return (
        lf.with_columns(missing.alias(MISSING_FLAG), *[pl.col(c).alias(RAW_PREFIX + c) for c in raw_cols])
        .with_columns(*[expr.alias(name) for name, expr in typed.items()])
        .with_columns(reason.alias(S.REJECT))
        .drop(MISSING_FLAG)
    )


def _fails(check: ValueCheck) -> pl.Expr:
    """True where a row fails `check` (a typed column, or the missing-value flag)."""
    col = pl.col(check.column)
    if check.test == "flag":
        return col
    if check.test == "null":
        return col.is_null()
    if check.test == "null_or_nan":
        return col.is_null() | col.is_nan()
    return col < check.bound if check.test == "below" else col > check.bound


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


def _rejects(checked: pl.DataFrame, sample_size: int) -> Rejects:
    """The rejected rows of the validated log: counts by reason and the first `sample_size` by input order."""
    bad = checked.filter(pl.col(S.REJECT).is_not_null())
    counts = bad.group_by(S.REJECT).len()
    sample: pl.DataFrame | None = None
    if bad.height and sample_size:
        values = [pl.col(src).cast(pl.String).alias(name) for src, name in rejected_sample_columns(bad.columns)]
        sample = bad.sort(S.ROW).head(sample_size).select(pl.col(S.ROW), pl.col(S.REJECT), *values)
    return count_rejects(checked.height, counts.iter_rows(), sample)


def run_etl_polars(cfg: DataConfig, *, base_dir: Path | None = None) -> EtlResult:
    """Run the whole ETL for `cfg` on polars and write the processed dataset directory.

    Args:
        cfg: the data config.
        base_dir: directory relative paths are resolved against (default: the working directory).
    """
    start = time.perf_counter()
    base = base_dir if base_dir is not None else Path.cwd()
    engine: Engine = "streaming" if cfg.streaming else "auto"
    path, items_path = source_paths(cfg, base)
    src = cfg.source

    # 1. parse + validate, collected once: rejected rows are counted before anything is filtered
    try:
        checked = (
            read_interactions(src, path)
            .pipe(
                validate,
                id_type=src.id_type,
                timestamp_type=src.timestamp_type,
                max_timestamp=latest_timestamp(),
            )
            .collect(engine=engine)
        )
    except pl.exceptions.PolarsError as err:  # lazy readers (parquet) fail here, not when scanned
        raise DataError(f"{path}: cannot read the {src.format} log: {summarize_error(err)}") from err
    rejects = _rejects(checked, cfg.reject_sample_size)
    check_rejects(rejects, cfg.max_reject_fraction, path)
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
    check_k_core_kept(cfg, core.rows_out, core.rows_in, path)

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

    attributes_path = resolve_path(src.item_attributes, base) if src.item_attributes else None
    items_out, item_features = item_table(items, cfg, items_path, attributes_path)
    user_table = users.select(S.USER_IDX, pl.col(S.USER).cast(pl.String).alias(S.RAW_ID))
    meta = etl_meta(
        cfg,
        n_users=users.height,
        n_items=items.height,
        rejects=rejects,
        n_after_min_rating=n_rated,
        n_after_dedupe=n_deduped,
        n_after_k_core=core.rows_out,
        k_core_rounds=core.rounds,
        source_files={
            "files": file_checksums(path),
            "items_files": file_checksums(items_path) if items_path is not None else [],
            "attributes_files": file_checksums(attributes_path) if attributes_path is not None else [],
        },
        item_features=item_features,
    )
    out_cols = [S.USER_IDX, S.ITEM_IDX, S.TIMESTAMP] + ([S.RATING] if S.RATING in interactions.columns else [])
    out_dir = resolve_path(cfg.output_dir, base)
    write_processed(
        out_dir,
        interactions=interactions.select(out_cols),
        sequences=sequences,
        items=items_out,
        users=user_table,
        meta=meta,
        rejected_sample=rejects.sample,
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
