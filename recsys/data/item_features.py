"""Item side information of a processed dataset as one typed object, aligned with item_idx (row 0 = padding).

Only models that declare they need item features load it (the DataModule calls `load_item_features`);
ID-only models never read the feature columns of items.parquet.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from recsys.data import schema as S
from recsys.data.errors import DataError


@dataclass(frozen=True)
class ItemFeatures:
    """Text fields and attribute ids of items 0..n_items; row 0 is padding (no text, no attributes).

    `text` maps a field name (items.parquet column order, e.g. title, year, genres) to one value per
    row, `None` where an item has none; list fields (genres) are joined with ', '. `attributes` is
    [n_items + 1, A] long holding each item's attribute ids **shifted by +1** (raw id a -> a + 1), so
    that 0 means "no attribute" and pads every row to the longest list A; `None` when the dataset has
    no attributes. Raw ids are 0..n_attributes-1, so an embedding table needs n_attributes + 1 rows.
    """

    n_items: int
    raw_ids: list[str]  # [n_items + 1], row 0 = ""
    text: dict[str, list[str | None]]  # field -> [n_items + 1] values
    attributes: torch.Tensor | None  # [n_items + 1, A] long, raw attribute id + 1, 0 = none / padding
    n_attributes: int  # max raw attribute id + 1; 0 without attributes

    @property
    def text_fields(self) -> tuple[str, ...]:
        """The text field names, in the order `render` writes them."""
        return tuple(self.text)

    def render(
        self,
        item_idx: int,
        *,
        fields: Sequence[str] | None = None,
        max_words: int | None = None,
        max_chars: int | None = None,
    ) -> str:
        """One item as key-value text, e.g. `title: Toy Story year: 1995 genres: Animation, Comedy`.

        Args:
            item_idx: 1..n_items (0, the padding row, renders as "").
            fields: the fields to write, in this order (default: all of `text_fields`).
            max_words: keep at most this many whitespace-separated words of each value.
            max_chars: then keep at most this many characters of each value.
        """
        if not 0 <= item_idx <= self.n_items:
            raise IndexError(f"item_idx {item_idx} is out of range 0..{self.n_items}")
        names = self.text_fields if fields is None else tuple(fields)
        unknown = [f for f in names if f not in self.text]
        if unknown:
            raise KeyError(f"unknown item text fields {unknown}; this dataset has {list(self.text_fields)}")
        parts = []
        for name in names:
            value = self.text[name][item_idx]
            if value is None:
                continue
            if max_words is not None:
                value = " ".join(value.split()[:max_words])
            if max_chars is not None:
                value = value[:max_chars]
            value = value.rstrip(" ,;|")  # a cut can end on a list separator
            if value:
                parts.append(f"{name}: {value}")
        return " ".join(parts)

    def render_all(
        self,
        *,
        fields: Sequence[str] | None = None,
        max_words: int | None = None,
        max_chars: int | None = None,
    ) -> list[str]:
        """`render` of every row 0..n_items (row 0 = "")."""
        return [
            self.render(i, fields=fields, max_words=max_words, max_chars=max_chars) for i in range(self.n_items + 1)
        ]


def load_item_features(data_dir: str | Path, *, max_attributes: int | None = None) -> ItemFeatures:
    """Read the item features of a processed dataset directory (items.parquet + meta.json).

    Args:
        data_dir: the processed dataset directory written by the ETL.
        max_attributes: keep at most this many attribute ids per item (the first ones in the source).
    """
    root = Path(data_dir)
    meta_path, items_path = root / S.META_FILE, root / S.ITEMS_FILE
    for path in (meta_path, items_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: is {root} a processed dataset directory?")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{meta_path}: not valid JSON ({err})") from err
    if meta.get("schema_version") != S.SCHEMA_VERSION or S.ITEM_FEATURES not in meta:
        raise DataError(
            f"{root}: written by an older ETL (no '{S.ITEM_FEATURES}' in meta.json); re-run "
            "`python -m pipelines.prepare_data` for this dataset"
        )
    if max_attributes is not None and max_attributes < 1:
        raise ValueError(f"max_attributes must be >= 1 or None, got {max_attributes}")
    columns: dict[str, str] = meta[S.ITEM_FEATURES]["columns"]
    n_items = int(meta["n_items"])
    items = pl.read_parquet(items_path).sort(S.ITEM_IDX)
    if items[S.ITEM_IDX].to_list() != list(range(S.FIRST_ITEM_IDX, n_items + 1)):
        raise DataError(f"{items_path}: item_idx is not 1..{n_items} (n_items in meta.json)")
    missing = [c for c in columns if c not in items.columns]
    if missing:
        raise DataError(f"{items_path}: feature columns {missing} listed in meta.json are missing; re-run the ETL")

    text: dict[str, list[str | None]] = {}
    for name, kind in columns.items():
        if kind == "str":
            text[name] = [None, *items[name].to_list()]
        elif kind == "list[str]":
            joined = items.select(pl.when(pl.col(name).list.len() > 0).then(pl.col(name).list.join(", ")))
            text[name] = [None, *joined.to_series().to_list()]
    attributes, n_attributes = None, 0
    if columns.get(S.ATTRIBUTES) == "list[int]":
        attributes, n_attributes = _pad_attributes(items[S.ATTRIBUTES], max_attributes)
    return ItemFeatures(
        n_items=n_items,
        raw_ids=["", *items[S.RAW_ID].cast(pl.String).to_list()],
        text=text,
        attributes=attributes,
        n_attributes=n_attributes,
    )


def _pad_attributes(lists: pl.Series, max_attributes: int | None) -> tuple[torch.Tensor, int]:
    """list[int] per item (rows 1..N) -> ([N + 1, A] long of id + 1, right-padded with 0; n_attributes)."""
    top = lists.explode().max()  # over all ids, so n_attributes does not depend on `max_attributes`
    n_attributes = int(top) + 1 if isinstance(top, int) else 0
    if max_attributes is not None:
        lists = lists.list.head(max_attributes)
    lengths = lists.list.len().fill_null(0).to_numpy().astype(np.int64)  # [N]
    flat = lists.explode().drop_nulls().to_numpy().astype(np.int64)  # [sum(lengths)]
    width = int(lengths.max()) if len(lengths) else 0
    out = np.zeros((len(lengths) + 1, width), dtype=np.int64)  # [N + 1, A]
    rows = np.repeat(np.arange(1, len(lengths) + 1), lengths)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    cols = np.arange(len(flat)) - starts  # position of each id within its item's list
    out[rows, cols] = flat + 1  # +1: 0 stays "none"
    return torch.from_numpy(out), n_attributes
