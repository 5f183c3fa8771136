"""The ETL on Apache Spark (`engine: spark`): the steps of `recsys.data.polars_etl`, as Spark DataFrame plans.

Same order, reasons and tie rules (`recsys.data.steps`), same processed layout and meta.json; tested for
identical outputs against the polars engine (tests/data/test_spark_etl.py, bench/etl_spark.py).

- Parquet logs and MovieLens ratings files are read by Spark itself from any path it understands
  (local, file://, hdfs://, s3a://); the input order that ties fall back on is (file path, row in
  file) for parquet, as polars reads a directory, and the line order for MovieLens. The other text
  formats (s3rec, csv, tsv) are parsed by the shared readers on the driver and handed to Spark:
  convert large text logs to parquet first.
- Each output table is one parquet file, as the training side reads it: the sort runs in parallel,
  the final write of each file is one task. Files go to a temporary directory beside `output_dir`,
  renamed onto it when complete (Hadoop FileSystem calls, so any path works).
- The item side tables (movies.dat, attributes JSON) are joined on the driver (`etl_common.item_table`).

pyspark is imported here only (the `spark` extra), so `import recsys` stays light.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

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
from recsys.data.readers import read_interactions, summarize_error
from recsys.data.steps import (
    CHRONOLOGICAL_ORDER,
    DEDUPE_ORDER,
    FLOAT_TEXT,
    INTEGER_TEXT,
    MISSING_FLAG,
    RAW_PREFIX,
    ValueCheck,
    value_checks,
)

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger(__name__)

_STRIP = r"(?U)^\s+|\s+$"  # Unicode whitespace at either end, as polars' strip_chars


def spark_session(conf: dict[str, str] | None = None, app_name: str = "recsys-etl") -> SparkSession:
    """The running Spark session, or a new one (spark-submit's master, else pyspark's local default).

    Args:
        conf: Spark settings for a new session, e.g. {"spark.master": "local[2]", "spark.driver.memory": "8g"}.
        app_name: the application name a new session gets.
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError as err:
        raise ImportError("engine 'spark' needs pyspark: pip install -e '.[spark]' (and Java 17)") from err
    builder = SparkSession.builder.appName(app_name)
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


# ---------------------------------------------------------------- read


def read_log(spark: SparkSession, cfg: DataConfig, path: str) -> DataFrame:
    """The raw log as `user, item, timestamp[, rating], row, reject_reason` (values as in the file)."""
    src = cfg.source
    if src.format == "movielens":
        return _read_movielens(spark, path)
    if src.format != "parquet":
        try:
            local = read_interactions(src, Path(path)).with_columns(pl.col(S.ROW).cast(pl.Int64)).collect()
        except pl.exceptions.PolarsError as err:
            raise DataError(f"{path}: cannot read the {src.format} log: {summarize_error(err)}") from err
        return spark.createDataFrame(local.to_arrow(compat_level=pl.CompatLevel.oldest()))
    return _read_parquet(spark, cfg, path)


def _read_movielens(spark: SparkSession, path: str) -> DataFrame:
    """`UserID::MovieID::Rating::Timestamp` lines read by Spark (`readers.read_movielens_ratings`'s rules):
    blank lines skipped, `row` numbers the other lines in file order, a line without 4 fields is
    `malformed_line`, one with bytes that are not UTF-8 `not_utf8` (those bytes become U+FFFD)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    try:
        raw = spark.read.text(path)  # one file (gz too): its splits come in file order
    except Exception as err:  # AnalysisException: missing path
        raise DataError(f"{path}: cannot read the movielens log: {summarize_error(err)}") from err
    lines = (
        raw.select(F.make_valid_utf8("value").alias("_line"), F.is_valid_utf8("value").alias("_utf8"))
        .filter(F.col("_line").isNotNull() & (F.regexp_replace("_line", _STRIP, "") != ""))
        .withColumn("_part", F.spark_partition_id())
        .withColumn("_id", F.monotonically_increasing_id())
        .localCheckpoint()
    )
    sizes = sorted((r["_part"], r["count"]) for r in lines.groupBy("_part").count().collect())
    offsets, start = [], 0
    for part, count in sizes:
        offsets.append((part, start))
        start += count
    before = spark.createDataFrame(offsets, "_part int, _offset long")
    row = F.col("_offset") + F.row_number().over(Window.partitionBy("_part").orderBy("_id")) - 1
    fields = F.split(F.col("_line"), "::", -1)
    ok = F.size(fields) == 4
    reason = (
        F.when(~F.col("_utf8") | F.col("_line").contains("\ufffd"), F.lit("not_utf8"))
        .when(ok, F.lit(None).cast("string"))
        .otherwise(F.lit("malformed_line"))
    )
    names = [S.USER, S.ITEM, S.RATING, S.TIMESTAMP]
    return (
        lines.join(F.broadcast(before), on="_part")
        .select(
            *[F.when(ok, fields[i]).alias(n) for i, n in enumerate(names)],
            row.cast("bigint").alias(S.ROW),
            reason.alias(S.REJECT),
        )
        .select(S.USER, S.ITEM, S.TIMESTAMP, S.RATING, S.ROW, S.REJECT)
    )


def _read_parquet(spark: SparkSession, cfg: DataConfig, path: str) -> DataFrame:
    from pyspark.sql import functions as F

    c = cfg.source.columns
    mapping = {c.user: S.USER, c.item: S.ITEM, c.timestamp: S.TIMESTAMP} | ({c.rating: S.RATING} if c.rating else {})
    try:
        raw = spark.read.parquet(path)
    except Exception as err:  # AnalysisException: missing path, not parquet
        raise DataError(f"{path}: cannot read parquet: {summarize_error(err)}") from err
    missing = [name for name in mapping if name not in raw.columns]
    if missing:
        raise DataError(f"{path}: columns {missing} not found (file has {raw.columns[:8]}); check source.columns")
    df = raw.select(
        *[F.col(name).alias(std) for name, std in mapping.items()],
        F.col("_metadata.file_path").alias("_file"),
        F.col("_metadata.row_index").alias("_in_file"),
    )
    # input order = files in path order, rows in file order (polars reads a directory's files sorted)
    sizes = sorted((r["_file"], r["count"]) for r in df.groupBy("_file").count().collect())
    offsets, start = [], 0
    for name, count in sizes:
        offsets.append((name, start))
        start += count
    first_row = spark.createDataFrame(offsets, "_file string, _offset long")
    return (
        df.join(F.broadcast(first_row), on="_file")
        .withColumn(S.ROW, F.col("_offset") + F.col("_in_file"))
        .withColumn(S.REJECT, F.lit(None).cast("string"))
        .drop("_file", "_in_file", "_offset")
    )


# ---------------------------------------------------------------- steps (DataFrame -> DataFrame)


def validate(df: DataFrame, *, id_type: str = "int", max_timestamp: int | None = None) -> DataFrame:
    """Type `user, item, timestamp[, rating]` and set `reject_reason` (the rules of `polars_etl.validate`)."""
    from pyspark.sql import functions as F

    types = dict(df.dtypes)
    has_rating = S.RATING in types
    text = [c for c in (S.USER, S.ITEM, S.TIMESTAMP, S.RATING) if types.get(c) == "string"]
    typed = {
        S.USER: _cast_id(S.USER, types[S.USER], id_type),
        S.ITEM: _cast_id(S.ITEM, types[S.ITEM], id_type),
        S.TIMESTAMP: _cast_integer(S.TIMESTAMP, types[S.TIMESTAMP]),
    }
    if has_rating:
        typed[S.RATING] = _cast_float(S.RATING, types[S.RATING])
    blank = [_is_blank(c, types[c]) for c in (S.USER, S.ITEM, S.TIMESTAMP)]
    checks = value_checks(has_rating=has_rating, max_timestamp=max_timestamp)
    # the reader's reason, else the first check that applies (a `when` without `otherwise` is null)
    reason = F.coalesce(F.col(S.REJECT), *[F.when(_fails(check), F.lit(check.reason)) for check in checks])
    return (
        df.withColumn(MISSING_FLAG, blank[0] | blank[1] | blank[2])
        .select("*", *[F.col(c).alias(RAW_PREFIX + c) for c in text])
        .withColumns(typed)
        .withColumn(S.REJECT, reason)
        .drop(MISSING_FLAG)
    )


def _fails(check: ValueCheck) -> Column:
    """True where a row fails `check` (a typed column, or the missing-value flag)."""
    from pyspark.sql import functions as F

    col = F.col(check.column)
    if check.test == "flag":
        return col
    if check.test == "null":
        return col.isNull()
    if check.test == "null_or_nan":
        return col.isNull() | F.isnan(col)
    return col < check.bound if check.test == "below" else col > check.bound


def _stripped(name: str) -> Column:
    from pyspark.sql import functions as F

    return F.regexp_replace(F.col(name), _STRIP, "")


def _is_blank(name: str, dtype: str) -> Column:
    from pyspark.sql import functions as F

    col = F.col(name)
    return (col.isNull() | (_stripped(name) == "")) if dtype == "string" else col.isNull()


def _cast_id(name: str, dtype: str, id_type: str) -> Column:
    if id_type == "str":
        from pyspark.sql import functions as F

        return _stripped(name) if dtype == "string" else F.col(name).cast("string")
    return _cast_integer(name, dtype)


def _cast_integer(name: str, dtype: str) -> Column:
    from pyspark.sql import functions as F

    col = F.col(name)
    if dtype == "string":
        text = _stripped(name)
        return F.when(text.rlike(INTEGER_TEXT), text.try_cast("bigint"))
    if dtype in ("tinyint", "smallint", "int", "bigint"):
        return col.cast("bigint")
    if dtype in ("float", "double"):  # integers stored as floats: keep integral values, reject the rest
        return F.when(~F.isnan(col) & (col == F.floor(col)), col.try_cast("bigint"))
    if dtype.startswith("timestamp"):
        return F.unix_timestamp(col)
    if dtype == "date":
        return F.unix_timestamp(col.cast("timestamp"))
    raise DataError(f"column {name!r} has Spark type {dtype}; expected integer values")


def _cast_float(name: str, dtype: str) -> Column:
    from pyspark.sql import functions as F

    if dtype == "string":
        text = _stripped(name)
        return F.when(text.rlike(FLOAT_TEXT), text.try_cast("double"))
    if dtype in ("tinyint", "smallint", "int", "bigint", "float", "double") or dtype.startswith("decimal"):
        return F.col(name).cast("double")
    raise DataError(f"column {name!r} has Spark type {dtype}; expected numbers")


def filter_min_rating(df: DataFrame, min_rating: float | None) -> DataFrame:
    """Keep rows with `rating >= min_rating`; `None` keeps every row."""
    from pyspark.sql import functions as F

    return df if min_rating is None else df.filter(F.col(S.RATING) >= min_rating)


def dedupe(df: DataFrame, policy: DedupePolicy) -> DataFrame:
    """Per (user, item): keep all rows, the earliest (`first`) or the latest (`last`) by `DEDUPE_ORDER`."""
    if policy == "keep_all":
        return df
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = [F.col(c).asc() if policy == "first" else F.col(c).desc() for c in DEDUPE_ORDER]
    w = Window.partitionBy(S.USER, S.ITEM).orderBy(*order)
    return df.withColumn("_rank", F.row_number().over(w)).filter(F.col("_rank") == 1).drop("_rank")


def k_core(df: DataFrame, min_user: int, min_item: int, *, rows: int | None = None) -> tuple[DataFrame, int, int]:
    """Iteratively drop users with < `min_user` rows and items with < `min_item` rows until stable.

    Args:
        df: the interactions (`user`, `item`, ...).
        min_user: minimum rows per user (1 disables the user side).
        min_item: minimum rows per item (1 disables the item side).
        rows: the row count of `df` when known (saves a pass).

    Returns the surviving rows (materialised), their count and the number of rounds, counted as
    `polars_etl.k_core_survivors` counts them."""
    from pyspark.sql import functions as F

    cur = df
    before = df.count() if rows is None else rows
    rounds = 0
    while True:
        rounds += 1
        for key, k in ((S.USER, min_user), (S.ITEM, min_item)):
            if k <= 1:
                continue
            keep = cur.groupBy(key).count().filter(F.col("count") >= k).select(key)
            cur = cur.join(keep, on=key, how="left_semi")
        cur = cur.localCheckpoint()  # cuts the lineage: each round reads the previous one's rows
        after = cur.count()
        if after == before or after == 0:
            return cur, after, rounds
        before = after


def vocabulary(df: DataFrame, raw: str, idx: str, first: int) -> DataFrame:
    """Raw ids in sorted order -> dense `idx` from `first` (`polars_etl.user_vocab` / `polars_etl.item_vocab`).

    Range-partitioned sort, then each id's rank inside its partition plus the ids of the partitions
    before it: no step moves all ids to one partition."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    ids = df.select(raw).distinct().orderBy(raw).withColumn("_part", F.spark_partition_id()).localCheckpoint()
    sizes = sorted((r["_part"], r["count"]) for r in ids.groupBy("_part").count().collect())
    offsets, start = [], first
    for part, count in sizes:
        offsets.append((part, start))
        start += count
    before = ids.sparkSession.createDataFrame(offsets, "_part int, _offset long")
    rank = F.row_number().over(Window.partitionBy("_part").orderBy(raw)) - 1
    return (
        ids.join(F.broadcast(before), on="_part")
        .select(raw, (F.col("_offset") + rank).cast("bigint").alias(idx))
        .localCheckpoint()
    )


def build_sequences(df: DataFrame) -> DataFrame:
    """One row per user: `items` and `timestamps` lists in `CHRONOLOGICAL_ORDER`, sorted by user."""
    from pyspark.sql import functions as F

    events = F.array_sort(F.collect_list(F.struct(*[F.col(c) for c in CHRONOLOGICAL_ORDER[1:]], S.ITEM_IDX)))
    return (
        df.groupBy(S.USER_IDX)
        .agg(events.alias("_events"))
        .select(
            S.USER_IDX,
            F.transform("_events", lambda e: e[S.ITEM_IDX]).alias(S.ITEMS),
            F.transform("_events", lambda e: e[S.TIMESTAMP]).alias(S.TIMESTAMPS),
        )
    )


# ---------------------------------------------------------------- output (Hadoop FileSystem, any path)


class _Files:
    """Hadoop FileSystem calls through the JVM: the same code writes local, HDFS and S3 paths."""

    def __init__(self, spark: SparkSession, root: str) -> None:
        self.spark = spark
        jvm = spark._jvm  # py4j gateway; no Python API covers FileSystem
        assert jvm is not None
        self._path = jvm.org.apache.hadoop.fs.Path
        self.fs = self._path(root).getFileSystem(spark._jsc.hadoopConfiguration())
        self.fs.setWriteChecksum(False)  # no .crc files beside ours on the local filesystem

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(self._path(path)))

    def rename(self, src: str, dst: str) -> None:
        if not self.fs.rename(self._path(src), self._path(dst)):
            raise OSError(f"cannot rename {src} to {dst}")

    def delete(self, path: str) -> None:
        self.fs.delete(self._path(path), True)

    def write_text(self, path: str, text: str) -> None:
        out = self.fs.create(self._path(path), True)
        try:
            out.write(bytearray(text.encode()))
        finally:
            out.close()

    def single_part(self, directory: str) -> str:
        parts = [str(s.getPath()) for s in self.fs.listStatus(self._path(directory))]
        files = [p for p in parts if p.rsplit("/", 1)[-1].startswith("part-")]
        if len(files) != 1:
            raise OSError(f"{directory}: expected one part file, found {files}")
        return files[0]


def _write_single_parquet(files: _Files, df: DataFrame, target: str) -> None:
    """`df` (already in its final order) as one parquet file at `target`."""
    staging = f"{target}.parts"
    df.coalesce(1).write.mode("overwrite").parquet(staging)
    files.rename(files.single_part(staging), target)
    files.delete(staging)


def _sorted(df: DataFrame, cols: Sequence[str]) -> DataFrame:
    """`df` sorted on `cols` in parallel and materialised: coalesce(1) then reads the partitions in order
    instead of sorting everything in its one task."""
    return df.orderBy(*cols).localCheckpoint()


def _has_scheme(path: str) -> bool:
    return "://" in path or path.startswith("file:")


def _local_path(path: str, base: Path) -> Path | None:
    """The local file of `path` (a plain path, relative to `base`, or a file: URI); None for other
    schemes (hdfs://, s3a://), which only Spark reads."""
    if path.startswith("file:"):
        return Path(urlparse(path).path)
    if "://" in path:
        return None
    p = Path(path)
    return p if p.is_absolute() else base / p


# ---------------------------------------------------------------- the whole ETL


def run_etl_spark(cfg: DataConfig, *, base_dir: Path | None = None, spark: SparkSession | None = None) -> EtlResult:
    """Run the whole ETL for `cfg` on Spark and write the processed dataset directory.

    Args:
        cfg: the data config (`engine: spark`).
        base_dir: directory relative paths are resolved against (default: the working directory).
        spark: the session to run on (default: `spark_session()`).
    """
    start = time.perf_counter()
    from pyspark.sql import functions as F

    base = base_dir if base_dir is not None else Path.cwd()
    session = spark if spark is not None else spark_session()
    src = cfg.source
    local = _local_path(src.path, base)
    if local is None and src.format not in ("parquet", "movielens"):
        raise DataError(
            f"{src.path}: {src.format} logs are parsed on the driver; engine spark reads only parquet there"
        )
    items_path: Path | None = None
    if local is not None:  # the configured download, when the file is missing, as the polars engine does
        local, items_path = source_paths(replace(cfg, source=replace(src, path=str(local))), base)
    elif src.items is not None:
        items_path = _local_path(src.items.path, base)
        if items_path is None:
            raise DataError(f"{src.items.path}: item tables are read on the driver; give a local path")
    # Spark reads what was configured (a URI keeps its scheme); the driver's readers read the local file
    driver_reads = src.format not in ("parquet", "movielens")
    path = str(local) if local is not None and (driver_reads or not _has_scheme(src.path)) else src.path

    # 1. parse + validate, materialised once: rejected rows are counted before anything is filtered
    log_df = read_log(session, cfg, str(path))
    checked = validate(log_df, id_type=src.id_type, max_timestamp=latest_timestamp()).localCheckpoint()
    rejects = _rejects(checked, cfg.reject_sample_size)
    check_rejects(rejects, cfg.max_reject_fraction, path)
    keep = [c for c in (S.USER, S.ITEM, S.TIMESTAMP, S.RATING, S.ROW) if c in checked.columns]
    good = checked.filter(F.col(S.REJECT).isNull()).select(keep)

    # 2. rating threshold -> dedupe -> k-core
    rated = filter_min_rating(good, cfg.min_rating).localCheckpoint()
    n_rated = rated.count()
    deduped = dedupe(rated, cfg.dedupe).localCheckpoint()
    n_deduped = deduped.count()
    kept, n_kept, rounds = k_core(deduped, cfg.min_user_interactions, cfg.min_item_interactions, rows=n_deduped)
    check_k_core_kept(cfg, n_kept, n_deduped, path)

    # 3. dense ids -> chronological order -> sequences
    users = vocabulary(kept, S.USER, S.USER_IDX, S.FIRST_USER_IDX)
    items = vocabulary(kept, S.ITEM, S.ITEM_IDX, S.FIRST_ITEM_IDX)
    out_cols = [S.USER_IDX, S.ITEM_IDX, S.TIMESTAMP] + ([S.RATING] if S.RATING in keep else [])
    dense = kept.join(users, on=S.USER).join(items, on=S.ITEM).select(*out_cols, S.ROW)
    interactions = _sorted(dense, CHRONOLOGICAL_ORDER)
    sequences = _sorted(build_sequences(interactions), [S.USER_IDX])
    n_users, n_items = users.count(), items.count()

    # items.parquet: the kept item ids (small beside the log) joined with side tables on the driver
    item_ids = pl.from_arrow(items.orderBy(S.ITEM_IDX).toArrow())
    assert isinstance(item_ids, pl.DataFrame)
    attributes_path = resolve_path(src.item_attributes, base) if src.item_attributes else None
    items_out, item_features = item_table(item_ids, cfg, items_path, attributes_path)
    user_table = users.select(S.USER_IDX, F.col(S.USER).cast("string").alias(S.RAW_ID)).orderBy(S.USER_IDX)
    meta = etl_meta(
        cfg,
        n_users=n_users,
        n_items=n_items,
        rejects=rejects,
        n_after_min_rating=n_rated,
        n_after_dedupe=n_deduped,
        n_after_k_core=n_kept,
        k_core_rounds=rounds,
        source_files={
            "files": [{"path": src.path}] if local is None else file_checksums(local),
            "items_files": file_checksums(items_path) if items_path is not None else [],
            "attributes_files": file_checksums(attributes_path) if attributes_path is not None else [],
        },
        item_features=item_features,
    )
    local_out = _local_path(cfg.output_dir, base)
    out_dir = cfg.output_dir if _has_scheme(cfg.output_dir) or local_out is None else str(local_out)
    _write_processed(
        session,
        out_dir,
        tables={
            S.INTERACTIONS_FILE: interactions.drop(S.ROW),
            S.SEQUENCES_FILE: sequences,
            S.ITEMS_FILE: session.createDataFrame(items_out.to_arrow(compat_level=pl.CompatLevel.oldest())),
            S.USERS_FILE: user_table,
        },
        meta=meta,
        rejected_sample=rejects.sample,
    )
    wall = time.perf_counter() - start
    log.info("processed %s on Spark: %d users, %d items, %d rows in %.2fs", cfg.name, n_users, n_items, n_kept, wall)
    return EtlResult(output_dir=local_out if local_out is not None else Path(out_dir), meta=meta, wall_s=wall)


def _rejects(checked: DataFrame, sample_size: int) -> Rejects:
    """The rejected rows of the validated log: counts by reason and the first `sample_size` by input order."""
    from pyspark.sql import functions as F

    bad = checked.filter(F.col(S.REJECT).isNotNull())
    counts = [(r[S.REJECT], r["count"]) for r in bad.groupBy(S.REJECT).count().collect()]
    sample: pl.DataFrame | None = None
    if counts and sample_size:
        values = [F.col(src).cast("string").alias(name) for src, name in rejected_sample_columns(bad.columns)]
        rows = bad.orderBy(S.ROW).limit(sample_size).select(F.col(S.ROW), F.col(S.REJECT), *values)
        got = pl.from_arrow(rows.toArrow())
        assert isinstance(got, pl.DataFrame)
        sample = got
    return count_rejects(checked.count(), counts, sample)


def _write_processed(
    spark: SparkSession,
    out_dir: str,
    *,
    tables: dict[str, DataFrame],
    meta: dict[str, Any],
    rejected_sample: pl.DataFrame | None,
) -> None:
    """The processed layout of `processed.write_processed`, written through Spark: a temporary directory
    beside `out_dir` takes its place when complete."""
    files = _Files(spark, out_dir)
    tmp = f"{out_dir.rstrip('/')}.tmp-{uuid.uuid4().hex[:8]}"
    old = f"{out_dir.rstrip('/')}.old-{uuid.uuid4().hex[:8]}"
    try:
        for name, df in tables.items():
            _write_single_parquet(files, df, f"{tmp}/{name}")
        if rejected_sample is not None and rejected_sample.height:
            files.write_text(f"{tmp}/{S.REJECTED_SAMPLE_FILE}", rejected_sample.write_csv())
        files.write_text(f"{tmp}/{S.META_FILE}", json.dumps(meta, indent=2, sort_keys=False) + "\n")
        if files.exists(out_dir):
            files.rename(out_dir, old)
        files.rename(tmp, out_dir)
    except BaseException:
        files.delete(tmp)
        raise
    files.delete(old)
