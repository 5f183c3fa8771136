"""Typed ETL config: where the raw log is, how its columns map, and which filters to apply.

Load with `recsys.config.load_config(DataConfig, "configs/data/ml-1m.yaml", overrides)`.
Relative paths are resolved against the working directory (the repo root) at run time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from recsys.data import schema as S
from recsys.data.steps import ENGINES, EtlEngine

SourceFormat = Literal["movielens", "s3rec", "csv", "tsv", "parquet"]
ItemTableFormat = Literal["movielens", "csv", "tsv", "parquet"]
TextEncoding = Literal["auto", "utf8", "latin-1"]
DedupePolicy = Literal["keep_all", "first", "last"]


@dataclass(frozen=True)
class ColumnMapping:
    """Names of the raw columns for csv/tsv/parquet sources (ignored by movielens and s3rec)."""

    user: str = "user"
    item: str = "item"
    timestamp: str = "timestamp"
    rating: str | None = None  # None: the log has no rating column

    def __post_init__(self) -> None:
        for name in ("user", "item", "timestamp"):
            if not getattr(self, name):
                raise ValueError(f"columns.{name} must be a non-empty column name")
        names = [self.user, self.item, self.timestamp] + ([self.rating] if self.rating else [])
        if len(set(names)) != len(names):
            raise ValueError(f"columns must name distinct columns, got {names}")


@dataclass(frozen=True)
class ItemTableConfig:
    """Optional item table: one row per raw item id; its fields become feature columns of items.parquet.

    Formats: `movielens` (`id::Title (Year)::Genre|Genre`, latin-1 by default; gives `title` without the
    year, `year` and a `genres` list; the layout options below do not apply), `csv` / `tsv` (any
    one-character `separator`, a header row or `column_names`, utf8 or latin-1) and `parquet`.

    Each of `text_columns` is kept as a string column of its own; `genre_flags` names 0/1 columns that
    become one `genres` list (the names of the flags set to 1); `split_year` names a text column whose
    trailing ` (YYYY)` moves into a `year` column. Other columns are dropped. A joined `text` column (the
    kept fields as written, ' | '-separated, genres ', '-joined) is written too, for display.
    MovieLens-100K's u.item, for example::

        items: {path: u.item, format: csv, separator: "|", has_header: false, encoding: latin-1,
                column_names: [item, title, release date, video release date, IMDb URL, unknown, Action, ...],
                text_columns: [title, release date], split_year: title, genre_flags: [Action, ...]}
    """

    path: str
    format: ItemTableFormat = "csv"
    id_column: str = "item"
    text_columns: tuple[str, ...] = ("title",)
    separator: str | None = None  # csv/tsv; None: ',' for csv, tab for tsv
    has_header: bool = True  # False: `column_names` names the columns
    column_names: tuple[str, ...] | None = None  # every column in file order (replaces the header if any)
    encoding: TextEncoding = "auto"  # auto: latin-1 for movielens (as GroupLens ships it), else utf8; no sniffing
    genre_flags: tuple[str, ...] = ()
    split_year: str | None = None

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("items.path must be a non-empty path")
        if self.format == "movielens":
            # the MovieLens layout is fixed: refuse options that would be silently ignored
            options = {
                "separator": self.separator is not None,
                "has_header": not self.has_header,
                "column_names": self.column_names is not None,
                "genre_flags": bool(self.genre_flags),
                "split_year": self.split_year is not None,
            }
            set_options = [name for name, is_set in options.items() if is_set]
            if set_options:
                raise ValueError(f"items.{set_options[0]} does not apply to format 'movielens' (its layout is fixed)")
            return
        if not self.text_columns and not self.genre_flags:
            raise ValueError("items.text_columns (or items.genre_flags) must name at least one column")
        if self.format == "parquet" and (self.separator is not None or self.column_names or not self.has_header):
            raise ValueError("items.separator / has_header / column_names do not apply to format 'parquet'")
        if self.separator is not None and (len(self.separator) != 1 or not self.separator.isascii()):
            raise ValueError(f"items.separator must be one ASCII character, got {self.separator!r}")
        if not self.has_header and not self.column_names:
            raise ValueError("items.column_names is required when items.has_header is false")
        kept = [self.id_column, *self.text_columns, *self.genre_flags]
        if len(set(kept)) != len(kept):
            raise ValueError(f"items.id_column, text_columns and genre_flags must name distinct columns, got {kept}")
        if self.column_names is not None:
            if len(set(self.column_names)) != len(self.column_names):
                raise ValueError(f"items.column_names has duplicate names: {list(self.column_names)}")
            absent = [c for c in kept if c not in self.column_names]
            if absent:
                raise ValueError(f"items: columns {absent} are not in items.column_names {list(self.column_names)}")
        if self.split_year is not None and self.split_year not in self.text_columns:
            raise ValueError(f"items.split_year {self.split_year!r} must be one of items.text_columns")
        reserved = set(S.RESERVED_ITEM_COLUMNS) | ({S.YEAR} if self.split_year else set())
        clash = [c for c in self.text_columns if c in reserved]
        if clash:
            raise ValueError(f"items.text_columns {clash} clash with names items.parquet reserves: {sorted(reserved)}")


@dataclass(frozen=True)
class DownloadConfig:
    """Fetch a zip when the local interactions file is missing (e.g. the official GroupLens ml-1m.zip)."""

    url: str
    interactions_member: str  # path inside the zip, e.g. "ml-1m/ratings.dat"
    items_member: str | None = None  # e.g. "ml-1m/movies.dat"; used when items.path is missing
    sha256: str | None = None  # of the zip; checked when set
    cache_dir: str = "data/raw"
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if "://" not in self.url:
            raise ValueError(f"download.url must be a URL with a scheme, got {self.url!r}")
        if self.timeout_s <= 0:
            raise ValueError(f"download.timeout_s must be > 0, got {self.timeout_s}")
        if self.sha256 is not None and len(self.sha256) != 64:
            raise ValueError(f"download.sha256 must be 64 hex characters, got {self.sha256!r}")


@dataclass(frozen=True)
class SourceConfig:
    """The raw interaction log.

    Formats: `movielens` (`user::item::rating::timestamp`, no header), `s3rec` (`user item item ...`,
    one user a line, oldest first; timestamp = position in the line), `csv` / `tsv` (header row unless
    `has_header: false`, then `column_names` names the columns) and `parquet` (a file, directory or glob).
    Files ending in `.gz` are decompressed.
    """

    format: SourceFormat
    path: str
    columns: ColumnMapping = field(default_factory=ColumnMapping)
    id_type: Literal["int", "str"] = "int"  # int: non-integer ids are rejected rows
    timestamp_type: Literal["int", "datetime"] = "int"  # datetime: ISO-8601 text -> epoch seconds
    has_header: bool = True
    column_names: tuple[str, ...] | None = None
    items: ItemTableConfig | None = None
    # JSON object raw item id -> list of attribute ids (S3-Rec's `*_item2attributes.json`); gives `attributes`
    item_attributes: str | None = None
    download: DownloadConfig | None = None

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("source.path must be a non-empty path")
        if self.item_attributes is not None and not self.item_attributes:
            raise ValueError("source.item_attributes must be a non-empty path or null")
        if self.format == "s3rec" and self.id_type != "int":
            raise ValueError("source.id_type must be 'int' for format 's3rec' (dense ids equal the raw ids)")
        if self.format in ("csv", "tsv") and not self.has_header and not self.column_names:
            raise ValueError("source.column_names is required when source.has_header is false")


@dataclass(frozen=True)
class DataConfig:
    """One dataset's ETL: source, filters, output directory."""

    name: str
    source: SourceConfig
    output_dir: str
    min_rating: float | None = None  # keep rows with rating >= min_rating; None keeps all (implicit)
    dedupe: DedupePolicy = "keep_all"  # per (user, item): keep every row, the earliest or the latest
    min_user_interactions: int = 5  # k-core on users (1 disables)
    min_item_interactions: int = 5  # k-core on items (1 disables)
    max_reject_fraction: float = 0.01  # fail when more rows than this are rejected as bad
    reject_sample_size: int = 100  # rejected rows written to rejected_sample.csv
    streaming: bool = False  # polars streaming engine (for logs larger than memory)
    engine: EtlEngine = "polars"  # spark: the same steps on Apache Spark (recsys/data/spark_etl.py, extra `spark`)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"name must be a non-empty name without '/', got {self.name!r}")
        if not self.output_dir:
            raise ValueError("output_dir must be a non-empty path")
        if self.min_user_interactions < 1:
            raise ValueError(f"min_user_interactions must be >= 1, got {self.min_user_interactions}")
        if self.min_item_interactions < 1:
            raise ValueError(f"min_item_interactions must be >= 1, got {self.min_item_interactions}")
        if not 0.0 <= self.max_reject_fraction <= 1.0:
            raise ValueError(f"max_reject_fraction must be in [0, 1], got {self.max_reject_fraction}")
        if self.reject_sample_size < 0:
            raise ValueError(f"reject_sample_size must be >= 0, got {self.reject_sample_size}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {list(ENGINES)}, got {self.engine!r}")
        if self.engine == "spark" and self.streaming:
            raise ValueError("streaming applies to engine 'polars'; Spark spills to disk by itself")
        if self.engine == "spark" and self.source.timestamp_type == "datetime":
            raise ValueError(
                "source.timestamp_type 'datetime' (text dates) needs engine 'polars'; "
                "Spark reads integer or parquet timestamp columns"
            )
        if self.min_rating is not None and self.source.format == "s3rec":
            raise ValueError("min_rating must be null for format 's3rec' (the files have no ratings)")
        no_rating = self.source.format in ("csv", "tsv", "parquet") and self.source.columns.rating is None
        if self.min_rating is not None and no_rating:
            raise ValueError("min_rating needs source.columns.rating (the column holding ratings)")
