"""Readers: raw files -> a LazyFrame with the raw columns `user, item, timestamp[, rating], row`.

Readers only parse structure (lines, fields, columns); values stay as they are in the file (text for
text formats) and are typed and checked by `etl.validate`. A structural problem of a single line
(wrong field count) sets `reject_reason`; a structural problem of the whole file (missing, empty,
wrong delimiter, missing columns) raises `DataError`.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import polars as pl

from recsys.data import schema as S
from recsys.data.config import ItemTableConfig, SourceConfig
from recsys.data.errors import DataError

_LINE = "line"
_NO_SEPARATOR = "\x1f"  # a byte that does not occur in text logs: read each line as one field
_MOVIELENS_SEP = "::"


def read_interactions(source: SourceConfig, path: Path) -> pl.LazyFrame:
    """Read the interaction log at `path` in `source.format`.

    Args:
        source: the source config (format, column mapping, header).
        path: the resolved file (or, for parquet, directory / glob) to read.
    """
    if source.format == "movielens":
        return read_movielens_ratings(path)
    if source.format == "s3rec":
        return read_s3rec_sequences(path)
    if source.format == "parquet":
        return _read_parquet(source, path)
    return _read_delimited(source, path)


def read_movielens_ratings(path: Path) -> pl.LazyFrame:
    """MovieLens `UserID::MovieID::Rating::Timestamp` lines (no header) as text columns."""
    lines = _read_lines(path)
    fields = pl.col(_LINE).str.split(_MOVIELENS_SEP)
    df = lines.with_columns(fields.alias("_f"))
    n_ok = df.select((pl.col("_f").list.len() == 4).sum()).item()
    if n_ok == 0:
        first = df[_LINE][0]
        raise DataError(
            f"{path}: no line splits into 4 fields on {_MOVIELENS_SEP!r} (first line: {first[:80]!r}); "
            "the delimiter/columns do not match a MovieLens ratings file"
        )
    ok = pl.col("_f").list.len() == 4
    names = [S.USER, S.ITEM, S.RATING, S.TIMESTAMP]
    return (
        df.lazy()
        .with_columns(
            *[pl.when(ok).then(pl.col("_f").list.get(i, null_on_oob=True)).alias(n) for i, n in enumerate(names)],
            pl.when(ok).then(pl.lit(None, pl.String)).otherwise(pl.lit("malformed_line")).alias(S.REJECT),
        )
        .select(S.USER, S.ITEM, S.TIMESTAMP, S.RATING, S.ROW, S.REJECT)
    )


def read_s3rec_sequences(path: Path) -> pl.LazyFrame:
    """S3-Rec `user item item ...` lines (oldest first) as one row per item; timestamp = position in line."""
    lines = _read_lines(path)
    tokens = lines.with_columns(pl.col(_LINE).str.strip_chars().str.replace_all(r"\s+", " ").str.split(" ").alias("_t"))
    if tokens.select((pl.col("_t").list.len() >= 2).sum()).item() == 0:
        first = tokens[_LINE][0]
        raise DataError(
            f"{path}: no line has whitespace-separated 'user item ...' fields (first line: {first[:80]!r}); "
            "the delimiter/columns do not match the S3-Rec sequence format"
        )
    ok = pl.col("_t").list.len() >= 2
    rows = (
        tokens.lazy()
        .select(
            pl.col("_t").list.first().alias(S.USER),
            # a line with a user and no items becomes one rejected row (null item), not a silent drop
            pl.when(ok).then(pl.col("_t").list.slice(1)).otherwise(pl.lit([None], pl.List(pl.String))).alias(S.ITEM),
            pl.when(ok).then(pl.lit(None, pl.String)).otherwise(pl.lit("malformed_line")).alias(S.REJECT),
        )
        .with_columns(pl.int_ranges(0, pl.col(S.ITEM).list.len(), dtype=pl.Int64).alias(S.TIMESTAMP))
        .explode([S.ITEM, S.TIMESTAMP])
        .with_row_index(S.ROW)
    )
    return rows.select(S.USER, S.ITEM, S.TIMESTAMP, S.ROW, S.REJECT)


def _read_lines(path: Path) -> pl.DataFrame:
    """Every non-blank line of a (possibly gzipped) text file as column `line`, with its row number."""
    data = _read_bytes(path)
    if not data.strip():
        raise DataError(f"{path}: empty file")
    df = pl.read_csv(
        io.BytesIO(data),
        has_header=False,
        separator=_NO_SEPARATOR,
        quote_char=None,
        new_columns=[_LINE],
        infer_schema=False,
    )
    # blank lines hold no interaction; they are skipped, not counted as rejected
    df = df.filter(pl.col(_LINE).is_not_null() & (pl.col(_LINE).str.strip_chars() != ""))
    return df.with_row_index(S.ROW)


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    if path.suffix == ".gz":
        try:
            with gzip.open(path, "rb") as f:
                return f.read()
        except (OSError, EOFError) as err:
            raise DataError(f"{path}: not a valid gzip file ({err})") from err
    return path.read_bytes()


def _mapped_columns(source: SourceConfig) -> dict[str, str]:
    """Raw column name -> standard column name."""
    c = source.columns
    mapping = {c.user: S.USER, c.item: S.ITEM, c.timestamp: S.TIMESTAMP}
    if c.rating is not None:
        mapping[c.rating] = S.RATING
    return mapping


def _select_mapped(lf: pl.LazyFrame, source: SourceConfig, path: Path, sep: str | None) -> pl.LazyFrame:
    mapping = _mapped_columns(source)
    found = lf.collect_schema().names()
    missing = [name for name in mapping if name not in found]
    if missing:
        hint = f"; check the delimiter (configured {sep!r})" if sep is not None else ""
        raise DataError(
            f"{path}: columns {missing} not found (file has {found[:8]}){hint} and source.columns; "
            "the delimiter/columns did not match"
        )
    return (
        lf.select([pl.col(raw).alias(std) for raw, std in mapping.items()])
        .with_row_index(S.ROW)
        .with_columns(pl.lit(None, pl.String).alias(S.REJECT))
    )


def _read_delimited(source: SourceConfig, path: Path) -> pl.LazyFrame:
    sep = "," if source.format == "csv" else "\t"
    data = _read_bytes(path)
    if not data.strip():
        raise DataError(f"{path}: empty file")
    try:
        # all columns as text: bad values become counted rejections in `validate`, not parse errors
        df = pl.read_csv(io.BytesIO(data), separator=sep, has_header=source.has_header, infer_schema=False)
    except pl.exceptions.PolarsError as err:
        raise DataError(f"{path}: cannot parse as {source.format} (delimiter {sep!r}): {err}") from err
    if not source.has_header:
        names = list(source.column_names or ())
        if df.width != len(names):
            raise DataError(
                f"{path}: found {df.width} columns with delimiter {sep!r} but source.column_names has "
                f"{len(names)} ({names}); the delimiter/columns did not match"
            )
        df.columns = names
    return _select_mapped(df.lazy(), source, path, sep)


def _read_parquet(source: SourceConfig, path: Path) -> pl.LazyFrame:
    target = path / "*.parquet" if path.is_dir() else path
    if not path.is_dir() and not any(ch in str(path) for ch in "*?[") and not path.is_file():
        raise DataError(f"file not found: {path}")
    try:
        lf = pl.scan_parquet(target)
        lf.collect_schema()
    except (pl.exceptions.PolarsError, OSError) as err:
        raise DataError(f"{path}: cannot read parquet: {err}") from err
    return _select_mapped(lf, source, path, None)


def read_item_table(cfg: ItemTableConfig, path: Path) -> pl.DataFrame:
    """Item text table -> DataFrame(raw_id: str, text: str); MovieLens text = 'Title (Year) | Genre, Genre'."""
    if cfg.format == "movielens":
        # movies.dat is ISO-8859-1; polars reads only UTF-8, so decode here (the file is small)
        text = _read_bytes(path).decode("latin-1")
        rows = [line.split(_MOVIELENS_SEP) for line in text.splitlines() if line.strip()]
        bad = next((i for i, r in enumerate(rows) if len(r) != 3), None)
        if bad is not None:
            raise DataError(f"{path}: line {bad + 1} does not have 3 '::' fields: {rows[bad]!r}")
        df = pl.DataFrame(
            {
                S.RAW_ID: [r[0].strip() for r in rows],
                S.TEXT: [f"{r[1]} | {r[2].replace('|', ', ')}" for r in rows],
            }
        )
    else:
        if cfg.format == "parquet":
            if not path.is_file():
                raise DataError(f"file not found: {path}")
            raw = pl.read_parquet(path)
        else:
            sep = "," if cfg.format == "csv" else "\t"
            raw = pl.read_csv(io.BytesIO(_read_bytes(path)), separator=sep, infer_schema=False)
        missing = [c for c in (cfg.id_column, *cfg.text_columns) if c not in raw.columns]
        if missing:
            raise DataError(f"{path}: item table columns {missing} not found (file has {raw.columns[:8]})")
        df = raw.select(
            pl.col(cfg.id_column).cast(pl.String).str.strip_chars().alias(S.RAW_ID),
            pl.concat_str(
                [pl.col(c).cast(pl.String) for c in cfg.text_columns], separator=" | ", ignore_nulls=True
            ).alias(S.TEXT),
        )
    dup = df.filter(pl.col(S.RAW_ID).is_duplicated())
    if dup.height:
        raise DataError(f"{path}: item id {dup[S.RAW_ID][0]!r} appears more than once in the item table")
    return df
