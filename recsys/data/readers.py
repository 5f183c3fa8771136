"""Readers: raw files -> a LazyFrame with the raw columns `user, item, timestamp[, rating], row`.

Readers only parse structure (lines, fields, columns); values stay as they are in the file (text for
text formats) and are typed and checked by `polars_etl.validate`. A structural problem of a single line
(wrong field count) sets `reject_reason`; a structural problem of the whole file (missing, empty,
wrong delimiter or encoding, missing columns) raises `DataError` with a one-line message naming the
file, how it was read and what was found (polars' multi-line messages are cut to their first line).

Item side information: `read_item_table` (MovieLens movies.dat, csv/tsv/parquet tables) and
`read_item_attributes` (S3-Rec's `*_item2attributes.json`).
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import polars as pl

from recsys.data import schema as S
from recsys.data.config import ItemTableConfig, SourceConfig
from recsys.data.errors import DataError

_LINE = "line"
_REPLACEMENT = "\ufffd"  # what a byte that is not UTF-8 decodes to
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
            _line_reason(ok).alias(S.REJECT),
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
            _line_reason(ok).alias(S.REJECT),
        )
        .with_columns(pl.int_ranges(0, pl.col(S.ITEM).list.len(), dtype=pl.Int64).alias(S.TIMESTAMP))
        .explode([S.ITEM, S.TIMESTAMP])
        .with_row_index(S.ROW)
    )
    return rows.select(S.USER, S.ITEM, S.TIMESTAMP, S.ROW, S.REJECT)


def _line_reason(ok: pl.Expr) -> pl.Expr:
    """A line's own reject reason: bytes that are not UTF-8 (decoded as U+FFFD), else the wrong fields."""
    return (
        pl.when(pl.col(_LINE).str.contains(_REPLACEMENT, literal=True))
        .then(pl.lit("not_utf8"))
        .when(ok)
        .then(pl.lit(None, pl.String))
        .otherwise(pl.lit("malformed_line"))
    )


def _read_lines(path: Path) -> pl.DataFrame:
    """Every non-blank line of a (possibly gzipped) text file as column `line`, with its row number.

    Bytes that are not UTF-8 become U+FFFD, so such a line is a counted rejection (`not_utf8`),
    not the end of the whole file."""
    data = _read_bytes(path)
    if not data.strip():
        raise DataError(f"{path}: empty file")
    try:
        df = pl.read_csv(
            io.BytesIO(data),
            has_header=False,
            separator=_NO_SEPARATOR,
            quote_char=None,
            new_columns=[_LINE],
            infer_schema=False,
            encoding="utf8-lossy",
        )
    except pl.exceptions.PolarsError as err:
        raise DataError(f"{path}: cannot read as utf8 text lines: {summarize_error(err)}") from err
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
        header = "a header row" if source.has_header else f"no header, column_names {list(source.column_names or ())}"
        raise DataError(
            f"{path}: cannot parse as {source.format} (delimiter {sep!r}, {header}): {summarize_error(err)}; "
            "the delimiter/columns did not match"
        ) from err
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
        raise DataError(f"{path}: cannot read parquet: {summarize_error(err)}") from err
    return _select_mapped(lf, source, path, None)


def read_item_table(cfg: ItemTableConfig, path: Path) -> pl.DataFrame:
    """Item table -> DataFrame(raw_id, text, <feature columns>), one row per raw item id.

    Feature columns: `movielens` gives `title` (without the year), `year` (str or null) and `genres`
    (list[str]); other formats give each of `cfg.text_columns` as a string column, `year` when
    `cfg.split_year` is set and `genres` when `cfg.genre_flags` is set. `text` joins the kept fields as
    written (MovieLens: 'Title (Year) | Genre, Genre').

    Args:
        cfg: the item table config (format, layout, encoding, fields to keep).
        path: the resolved file to read.
    """
    if cfg.format == "movielens":
        df = _read_movielens_items(path, "latin-1" if cfg.encoding == "auto" else cfg.encoding)
    else:
        raw = _read_parquet_table(path) if cfg.format == "parquet" else _read_delimited_table(cfg, path)
        df = _item_columns(cfg, raw, path)
    dup = df.filter(pl.col(S.RAW_ID).is_duplicated())
    if dup.height:
        raise DataError(f"{path}: item id {dup[S.RAW_ID][0]!r} appears more than once in the item table")
    return df


def read_item_attributes(path: Path) -> pl.DataFrame:
    """`*_item2attributes.json` (a JSON object raw item id -> list of attribute ids) -> DataFrame(raw_id, attributes).

    Args:
        path: the JSON file; attribute ids must be integers >= 0.
    """
    expected = "a JSON object mapping raw item id -> list of integer attribute ids"
    text = _decode(_read_bytes(path), "utf8", path, "JSON files must be utf8")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        where = f"{err.msg} at line {err.lineno} column {err.colno}"
        raise DataError(f"{path}: not valid JSON ({where}); expected {expected}") from err
    if not isinstance(obj, dict):
        raise DataError(f"{path}: top level is a JSON {type(obj).__name__}; expected {expected}")
    for key, ids in obj.items():
        if not isinstance(ids, list) or not all(isinstance(a, int) and not isinstance(a, bool) and a >= 0 for a in ids):
            raise DataError(f"{path}: item {key!r} maps to {str(ids)[:80]}; expected {expected} (ids >= 0)")
    return pl.DataFrame(
        {S.RAW_ID: [str(k).strip() for k in obj], S.ATTRIBUTES: list(obj.values())},
        schema={S.RAW_ID: pl.String, S.ATTRIBUTES: pl.List(pl.Int64)},
    )


def summarize_error(err: BaseException, max_chars: int = 200) -> str:
    """The first line of an error message (polars adds hints on further lines), at most `max_chars` long."""
    first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
    return first if len(first) <= max_chars else first[: max_chars - 3] + "..."


_YEAR_SUFFIX = r"\s*\((\d{4})\)\s*$"  # "Toy Story (1995)", also "Associate, The (L'Associe)(1982)"
_ENCODINGS = {"utf8": "utf-8-sig", "latin-1": "latin-1"}  # utf8 drops a byte-order mark
_ENCODING_HINT = "set items.encoding (utf8 or latin-1)"


def _decode(data: bytes, encoding: str, path: Path, hint: str) -> str:
    try:
        return data.decode(_ENCODINGS[encoding])
    except UnicodeDecodeError as err:
        bad = err.object[err.start : err.start + 4]
        raise DataError(f"{path}: not valid {encoding} (byte {err.start}: {bad!r}); {hint}") from err


def _read_movielens_items(path: Path, encoding: str) -> pl.DataFrame:
    # movies.dat is ISO-8859-1; polars reads only UTF-8, so decode here (the file is small)
    text = _decode(_read_bytes(path), encoding, path, _ENCODING_HINT)
    rows = [line.split(_MOVIELENS_SEP) for line in text.splitlines() if line.strip()]
    if not rows:
        raise DataError(f"{path}: empty file")
    bad = next((i for i, r in enumerate(rows) if len(r) != 3), None)
    if bad is not None:
        raise DataError(
            f"{path}: line {bad + 1} does not split into 3 '::' fields (id::Title (Year)::Genre|Genre): "
            f"{_MOVIELENS_SEP.join(rows[bad])[:80]!r}"
        )
    ids, titles, genre_text = zip(*((r[0].strip(), r[1].strip(), r[2].strip()) for r in rows), strict=True)
    df = pl.DataFrame({S.RAW_ID: ids, "_title": titles, "_genres": genre_text})
    genres = pl.col("_genres").str.split("|").list.eval(pl.element().filter(pl.element() != ""))
    display_genres = pl.col("_genres").str.replace_all("|", ", ", literal=True)
    return df.select(
        S.RAW_ID,
        pl.concat_str(pl.col("_title"), display_genres, separator=" | ").alias(S.TEXT),
        pl.col("_title").str.replace(_YEAR_SUFFIX, "").alias(S.TITLE),
        pl.col("_title").str.extract(_YEAR_SUFFIX, 1).alias(S.YEAR),
        genres.alias(S.GENRES),
    )


def _separator(cfg: ItemTableConfig) -> str:
    return cfg.separator or ("," if cfg.format == "csv" else "\t")


def _encoding(cfg: ItemTableConfig) -> str:
    return "utf8" if cfg.encoding == "auto" else cfg.encoding


def _layout(cfg: ItemTableConfig) -> str:
    """How an item table was read, for error messages: 'csv with separator '|', no header, ...'."""
    sep = _separator(cfg)
    header = "a header row" if cfg.has_header else "no header"
    names = f", {len(cfg.column_names)} column_names" if cfg.column_names else ""
    return f"{cfg.format} with separator {sep!r}, {header}{names}, encoding {_encoding(cfg)}"


def _read_delimited_table(cfg: ItemTableConfig, path: Path) -> pl.DataFrame:
    text = _decode(_read_bytes(path), _encoding(cfg), path, _ENCODING_HINT)
    if not text.strip():
        raise DataError(f"{path}: empty file")
    first = text.lstrip().splitlines()[0]
    try:
        data = io.BytesIO(text.encode())
        df = pl.read_csv(data, separator=_separator(cfg), has_header=cfg.has_header, infer_schema=False)
    except pl.exceptions.PolarsError as err:
        raise DataError(
            f"{path}: cannot read the item table as {_layout(cfg)}: {summarize_error(err)} "
            f"(first line: {first[:80]!r}); check items.separator / items.column_names"
        ) from err
    if cfg.column_names is not None:
        if df.width != len(cfg.column_names):
            raise DataError(
                f"{path}: found {df.width} columns reading as {_layout(cfg)} but items.column_names has "
                f"{len(cfg.column_names)} (first line: {first[:80]!r}); check items.separator / items.column_names"
            )
        df.columns = list(cfg.column_names)
    return df


def _read_parquet_table(path: Path) -> pl.DataFrame:
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    try:
        return pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as err:
        raise DataError(f"{path}: cannot read the item table as parquet: {summarize_error(err)}") from err


def _item_columns(cfg: ItemTableConfig, raw: pl.DataFrame, path: Path) -> pl.DataFrame:
    """Select and type the configured item table columns (see `read_item_table`)."""
    missing = [c for c in (cfg.id_column, *cfg.text_columns, *cfg.genre_flags) if c not in raw.columns]
    if missing:
        hint = "" if cfg.format == "parquet" else f"; read as {_layout(cfg)}: check items.separator / has_header"
        raise DataError(f"{path}: item table columns {missing} not found (file has {raw.columns[:8]}){hint}")
    as_text = {c: pl.col(c).cast(pl.String).str.strip_chars() for c in cfg.text_columns}
    fields: list[pl.Expr] = []
    for c, expr in as_text.items():
        value = pl.when(expr != "").then(expr)  # blank -> null
        if c == cfg.split_year:
            fields += [value.str.replace(_YEAR_SUFFIX, "").alias(c), value.str.extract(_YEAR_SUFFIX, 1).alias(S.YEAR)]
        else:
            fields.append(value.alias(c))
    joined = [pl.when(e != "").then(e) for e in as_text.values()]
    if cfg.genre_flags:
        flags = {f: pl.col(f).cast(pl.String).str.strip_chars().str.to_lowercase() for f in cfg.genre_flags}
        for f, expr in flags.items():
            odd = raw.select(expr.alias(f)).filter(~pl.col(f).is_in(["0", "1", "true", "false", ""]))
            if odd.height:
                raise DataError(
                    f"{path}: genre flag column {f!r} holds {odd[f][0][:40]!r}; expected 0 or 1 "
                    "(check items.column_names / items.separator)"
                )
        genres = pl.concat_list([pl.when(e.is_in(["1", "true"])).then(pl.lit(f)) for f, e in flags.items()])
        genres = genres.list.drop_nulls()
        fields.append(genres.alias(S.GENRES))
        joined.append(pl.when(genres.list.len() > 0).then(genres.list.join(", ")))
    text = pl.concat_str(joined, separator=" | ", ignore_nulls=True)
    return raw.select(
        pl.col(cfg.id_column).cast(pl.String).str.strip_chars().alias(S.RAW_ID),
        pl.when(text != "").then(text).alias(S.TEXT),
        *fields,
    )
