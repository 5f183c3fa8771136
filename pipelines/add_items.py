"""Add new items by their text to a text model's serving bundle, as a new registered version.

python -m pipelines.add_items --model models:/recsys@champion --items new_items.csv
                              [--id-column id] [--name NAME] [--alias ''] [--tracking-uri URI]

The items file (.csv, .tsv, .jsonl / .ndjson or .parquet) holds one row per new item: its raw id
(`--id-column`) and the text fields the model reads (e.g. title, year, genres; a missing field is
empty). The model (Recformer) embeds them with its own text encoder, without retraining; the new
version serves the old catalog plus these items. `--alias champion` moves the alias to it, so a
polling service picks it up without downtime. Prints the new version's URI.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from recsys.retrieval.bundle import BundleError
from recsys.retrieval.export import add_items_version
from recsys.retrieval.recommender import CatalogError
from recsys.tracking.config import registry_cli_setup
from recsys.tracking.registry import RegistryError, registered_line

READERS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "ndjson", ".ndjson": "ndjson", ".parquet": "parquet"}


class ItemsFileError(ValueError):
    """An items file that cannot be read as new items; the message names the file and the problem."""


def read_items(path: Path, id_column: str) -> dict[str, dict[str, str | None]]:
    """raw id -> text fields of every row of an items file (values as strings, nulls as None)."""
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise ItemsFileError(f"{path}: unknown file type {path.suffix!r}; expected one of {sorted(READERS)}")
    if not path.is_file():
        raise ItemsFileError(f"{path}: no such file")
    try:
        if kind == "parquet":
            frame = pl.read_parquet(path)
        elif kind == "ndjson":
            frame = pl.read_ndjson(path)
        else:
            frame = pl.read_csv(path, separator="\t" if kind == "tsv" else ",", infer_schema=False)
    except Exception as err:  # polars raises its own kinds for malformed files
        raise ItemsFileError(f"{path}: cannot be read as {kind}: {str(err).splitlines()[0]}") from err
    if id_column not in frame.columns:
        raise ItemsFileError(f"{path}: no id column {id_column!r} (columns: {frame.columns})")
    if frame.height == 0:
        raise ItemsFileError(f"{path}: holds no items")
    frame = frame.with_columns(pl.all().cast(pl.String))
    ids = frame[id_column]
    if ids.null_count() or (ids.str.strip_chars() == "").any():
        raise ItemsFileError(f"{path}: {id_column!r} is empty on some rows")
    duplicates = ids.filter(ids.is_duplicated()).unique().sort().to_list()
    if duplicates:
        raise ItemsFileError(f"{path}: item ids listed more than once: {duplicates[:10]}")
    fields = [c for c in frame.columns if c != id_column]
    if not fields:
        raise ItemsFileError(f"{path}: no text columns besides {id_column!r}")
    return {row[id_column]: {f: row[f] for f in fields} for row in frame.iter_rows(named=True)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="models:/<name>@<alias>, models:/<name>/<version> or a bundle")
    parser.add_argument("--items", type=Path, required=True, help="the new items' file")
    parser.add_argument("--id-column", default="id")
    parser.add_argument("--name", default=None, help="registered model name (default: the source's)")
    parser.add_argument("--alias", default="", help="alias moved to the new version (default: none)")
    parser.add_argument("--tracking-uri", default=None)
    args = parser.parse_args(argv)
    tracking_uri = registry_cli_setup(args.tracking_uri)
    try:
        items = read_items(args.items, args.id_column)
        ref = add_items_version(args.model, items, tracking_uri=tracking_uri, name=args.name, alias=args.alias or None)
    except (ItemsFileError, CatalogError, RegistryError, BundleError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(registered_line(ref, args.alias or None, f" with {len(items)} new items"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
