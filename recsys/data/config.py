"""Typed ETL config: where the raw log is, how its columns map, and which filters to apply.

Load with `recsys.config.load_config(DataConfig, "configs/data/ml-1m.yaml", overrides)`.
Relative paths are resolved against the working directory (the repo root) at run time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

SourceFormat = Literal["movielens", "s3rec", "csv", "tsv", "parquet"]
ItemTableFormat = Literal["movielens", "csv", "tsv", "parquet"]
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
    """Optional item text table: one row per raw item id; text columns are joined with ' | '."""

    path: str
    format: ItemTableFormat = "csv"
    id_column: str = "item"
    text_columns: tuple[str, ...] = ("title",)

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("items.path must be a non-empty path")
        if self.format != "movielens" and not self.text_columns:
            raise ValueError("items.text_columns must name at least one column")


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
    download: DownloadConfig | None = None

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("source.path must be a non-empty path")
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
        if self.min_rating is not None and self.source.format == "s3rec":
            raise ValueError("min_rating must be null for format 's3rec' (the files have no ratings)")
        no_rating = self.source.format in ("csv", "tsv", "parquet") and self.source.columns.rating is None
        if self.min_rating is not None and no_rating:
            raise ValueError("min_rating needs source.columns.rating (the column holding ratings)")
