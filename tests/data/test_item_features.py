"""Item side information: item table layouts, attribute JSON, one-line reader errors, `load_item_features`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import torch

from recsys.config import ConfigError, from_dict, to_dict
from recsys.data import schema as S
from recsys.data.config import DataConfig, ItemTableConfig
from recsys.data.errors import DataError
from recsys.data.etl import run_etl
from recsys.data.item_features import load_item_features
from recsys.data.readers import read_item_attributes, read_item_table

# MovieLens-100K's u.item: id|title|release date|video release date|IMDb URL|19 genre flags (latin-1, no header)
GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
COLUMNS_100K = ("item", "title", "release date", "video release date", "IMDb URL", *GENRES_100K)


def _u_item_line(item: int, title: str, date: str, genres: set[str]) -> str:
    flags = "|".join("1" if g in genres else "0" for g in GENRES_100K)
    return f"{item}|{title}|{date}||http://us.imdb.com/M/title-exact?{item}|{flags}"


def _write_u_item(path: Path) -> Path:
    lines = [
        _u_item_line(1, "Toy Story (1995)", "01-Jan-1995", {"Animation", "Children's", "Comedy"}),
        _u_item_line(2, "Café au Lait (1993)", "01-Jan-1993", {"Comedy"}),  # non-ASCII, stored as latin-1
        _u_item_line(3, "American President, The (1995)", "01-Jan-1995", {"Comedy", "Drama", "Romance"}),
        _u_item_line(4, "unknown", "", {"unknown"}),  # u.item's item 267: no date, no year
    ]
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return path


def _u_item_cfg(path: Path, **over: Any) -> ItemTableConfig:
    cfg = {
        "path": str(path),
        "format": "csv",
        "separator": "|",
        "has_header": False,
        "encoding": "latin-1",
        "column_names": list(COLUMNS_100K),
        "text_columns": ["title", "release date"],
        "split_year": "title",
        "genre_flags": list(GENRES_100K[1:]),  # "unknown" is not a genre
    }
    return from_dict(ItemTableConfig, {**cfg, **over})


def _write_log(path: Path, items: tuple[int, ...] = (1, 2, 3, 4)) -> Path:
    rows = ["user,item,timestamp"] + [f"{u},{i},{10 * u + i}" for u in range(1, 4) for i in items]
    path.write_text("\n".join(rows) + "\n")
    return path


def _data_cfg(tmp: Path, **source: Any) -> DataConfig:
    return from_dict(
        DataConfig,
        {
            "name": "t",
            "output_dir": str(tmp / "out"),
            "min_user_interactions": 1,
            "min_item_interactions": 1,
            "source": {"format": "csv", "path": str(_write_log(tmp / "log.csv")), **source},
        },
    )


def _one_line(err: pytest.ExceptionInfo[BaseException], path: Path) -> str:
    message = str(err.value)
    assert "\n" not in message and str(path) in message, message
    return message


def test_movielens_100k_item_layout(tmp_path: Path) -> None:
    path = _write_u_item(tmp_path / "u.item")
    df = read_item_table(_u_item_cfg(path), path)
    assert df.columns == [S.RAW_ID, S.TEXT, "title", S.YEAR, "release date", S.GENRES]
    rows = {r[S.RAW_ID]: r for r in df.iter_rows(named=True)}
    assert rows["1"]["title"] == "Toy Story" and rows["1"][S.YEAR] == "1995"
    assert rows["1"][S.GENRES] == ["Animation", "Children's", "Comedy"]
    assert rows["1"][S.TEXT] == "Toy Story (1995) | 01-Jan-1995 | Animation, Children's, Comedy"
    assert rows["2"]["title"] == "Café au Lait" and rows["2"]["release date"] == "01-Jan-1993"
    assert rows["3"]["title"] == "American President, The" and rows["3"][S.GENRES] == ["Comedy", "Drama", "Romance"]
    assert rows["4"]["title"] == "unknown" and rows["4"][S.YEAR] is None and rows["4"]["release date"] is None
    assert rows["4"][S.GENRES] == []


def test_movielens_100k_through_etl_and_item_features(tmp_path: Path) -> None:
    path = _write_u_item(tmp_path / "u.item")
    res = run_etl(_data_cfg(tmp_path, items=to_dict(_u_item_cfg(path))))
    assert res.meta[S.ITEM_FEATURES]["columns"] == {
        "title": "str",
        S.YEAR: "str",
        "release date": "str",
        S.GENRES: "list[str]",
    }
    assert res.meta[S.ITEM_FEATURES]["items_with_value"] == {"title": 4, S.YEAR: 3, "release date": 3, S.GENRES: 3}
    feats = load_item_features(res.output_dir)
    assert feats.text_fields == ("title", S.YEAR, "release date", S.GENRES)
    assert feats.render(2) == "title: Café au Lait year: 1993 release date: 01-Jan-1993 genres: Comedy"
    assert feats.render(4) == "title: unknown"
    assert feats.attributes is None and feats.n_attributes == 0


def test_item_table_wrong_separator_is_one_line_error(tmp_path: Path) -> None:
    path = _write_u_item(tmp_path / "u.item")
    # read with ',': line 3's title holds a comma, so it has more fields than line 1 (polars' ragged-line error)
    with pytest.raises(DataError) as err:
        read_item_table(_u_item_cfg(path, separator=","), path)
    msg = _one_line(err, path)
    assert "separator ','" in msg and "found more fields" in msg and "first line: '1|Toy Story" in msg
    # a file without ragged lines: one column where column_names expects 24
    clean = tmp_path / "clean.item"
    clean.write_bytes(b"\n".join(line for line in path.read_bytes().splitlines() if b"," not in line) + b"\n")
    with pytest.raises(DataError) as err:
        read_item_table(_u_item_cfg(clean, separator=","), clean)
    assert "found 1 columns" in _one_line(err, clean) and "column_names has 24" in str(err.value)
    # with a header row and the wrong separator: the named columns are not found
    tsv = tmp_path / "items.tsv"
    tsv.write_text("item\ttitle\n1\tA B\n2\tC\n")
    with pytest.raises(DataError) as err:
        read_item_table(from_dict(ItemTableConfig, {"path": str(tsv), "format": "csv"}), tsv)
    assert "columns ['item', 'title'] not found" in _one_line(err, tsv) and "separator ','" in str(err.value)


def test_item_table_wrong_encoding_and_bad_flags(tmp_path: Path) -> None:
    path = _write_u_item(tmp_path / "u.item")
    with pytest.raises(DataError) as err:
        read_item_table(_u_item_cfg(path, encoding="utf8"), path)
    assert "not valid utf8" in _one_line(err, path) and "items.encoding" in str(err.value)
    shifted = ("item", "title", "IMDb URL", "release date", "video release date", *GENRES_100K)
    with pytest.raises(DataError) as err:  # columns named in the wrong order: a flag column holds text
        read_item_table(_u_item_cfg(path, column_names=list(shifted), genre_flags=["IMDb URL"]), path)
    assert "genre flag column 'IMDb URL'" in _one_line(err, path)


def test_wrong_item_separator_through_run_etl(tmp_path: Path) -> None:
    path = _write_u_item(tmp_path / "u.item")
    items = {"path": str(path), "format": "tsv", "encoding": "latin-1", "id_column": "item"}
    with pytest.raises(DataError) as err:
        run_etl(_data_cfg(tmp_path, items=items))
    assert "not found" in _one_line(err, path)


def test_generic_tables_tsv_parquet_and_header_rename(tmp_path: Path) -> None:
    tsv = tmp_path / "items.tsv"
    tsv.write_text("id\tname\tbrand\tis_toy\n1\tBall\tAcme\t1\n2\t \tZed\t0\n3\tKite\t\ttrue\n")
    cfg = {"path": str(tsv), "format": "tsv", "id_column": "id", "text_columns": ["name", "brand"]}
    df = read_item_table(from_dict(ItemTableConfig, {**cfg, "genre_flags": ["is_toy"]}), tsv)
    assert df.rows() == [
        ("1", "Ball | Acme | is_toy", "Ball", "Acme", ["is_toy"]),
        ("2", "Zed", None, "Zed", []),  # a blank value is null
        ("3", "Kite | is_toy", "Kite", None, ["is_toy"]),
    ]
    renamed = {**cfg, "column_names": ["item", "title", "maker", "toy"], "id_column": "item", "text_columns": ["title"]}
    assert read_item_table(from_dict(ItemTableConfig, renamed), tsv)["title"].to_list() == ["Ball", None, "Kite"]
    pq = tmp_path / "items.parquet"
    pl.DataFrame({"id": [1, 2], "name": ["Ball", None], "toy": [True, False]}).write_parquet(pq)
    pcfg = {"path": str(pq), "format": "parquet", "id_column": "id", "text_columns": ["name"], "genre_flags": ["toy"]}
    assert read_item_table(from_dict(ItemTableConfig, pcfg), pq).rows() == [
        ("1", "Ball | toy", "Ball", ["toy"]),
        ("2", None, None, []),
    ]


@pytest.mark.parametrize(
    ("items", "pattern"),
    [
        ({"format": "csv", "separator": "::"}, "separator must be one ASCII character"),
        ({"format": "movielens", "separator": "|"}, "does not apply to format 'movielens'"),
        ({"format": "csv", "has_header": False}, "column_names is required"),
        ({"format": "csv", "column_names": ["item", "name"]}, "columns ['title'] are not in items.column_names"),
        ({"format": "csv", "text_columns": ["text"]}, "clash with names items.parquet reserves"),
        ({"format": "csv", "split_year": "name"}, "split_year 'name' must be one of items.text_columns"),
        ({"format": "parquet", "separator": ";"}, "do not apply to format 'parquet'"),
        ({"format": "csv", "encoding": "cp1252"}, "expected one of ['auto', 'utf8', 'latin-1']"),
    ],
)
def test_item_table_config_errors(items: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_dict(ItemTableConfig, {"path": "x", **items})
    assert pattern in str(err.value)


def _write_attributes(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_attributes_json_and_item_features(tmp_path: Path) -> None:
    attrs = _write_attributes(tmp_path / "a.json", {"1": [0, 5], "2": [3], "3": [], "99": [7]})  # item 4 missing
    res = run_etl(_data_cfg(tmp_path, item_attributes=str(attrs)))
    items = pl.read_parquet(res.output_dir / S.ITEMS_FILE)
    assert items[S.ATTRIBUTES].to_list() == [[0, 5], [3], [], []]
    assert res.meta[S.ITEM_FEATURES] == {
        "columns": {S.ATTRIBUTES: "list[int]"},
        "items_with_value": {S.ATTRIBUTES: 2},
        "max_attribute_id": 5,
    }
    feats = load_item_features(res.output_dir)
    assert feats.n_items == 4 and feats.raw_ids == ["", "1", "2", "3", "4"] and feats.text == {}
    assert feats.n_attributes == 6  # raw ids 0..5 (99's 7 is not a kept item)
    assert feats.attributes is not None and feats.attributes.dtype == torch.long
    assert feats.attributes.tolist() == [[0, 0], [1, 6], [4, 0], [0, 0], [0, 0]]  # +1 shift, row 0 = padding
    short = load_item_features(res.output_dir, max_attributes=1).attributes
    assert short is not None and short.tolist() == [[0], [1], [4], [0], [0]]
    assert feats.render(1) == ""  # no text fields


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ('{"1": [1, 2],', "not valid JSON"),
        ("[[1, 2]]", "top level is a JSON list"),
        ('{"1": ["a"]}', "item '1' maps to ['a']"),
        ('{"1": [-1]}', "ids >= 0"),
    ],
)
def test_attributes_json_errors(tmp_path: Path, content: str, pattern: str) -> None:
    path = tmp_path / "a.json"
    path.write_text(content)
    with pytest.raises(DataError) as err:
        read_item_attributes(path)
    assert pattern in _one_line(err, path)


def test_side_table_matching_no_item_is_an_error(tmp_path: Path) -> None:
    attrs = _write_attributes(tmp_path / "a.json", {"sku-1": [1], "sku-2": [2]})
    with pytest.raises(DataError) as err:
        run_etl(_data_cfg(tmp_path, item_attributes=str(attrs)))
    assert "none of its 2 item ids matches" in _one_line(err, attrs)


def test_item_features_alignment_and_render(tmp_path: Path) -> None:
    table = tmp_path / "items.csv"
    table.write_text("item,title,blurb\n4,Four,a b c d e f\n2,Two,\n1,One,x\n")  # item 3 absent, rows unordered
    attrs = _write_attributes(tmp_path / "a.json", {"2": [1, 1, 2], "4": [9]})
    items = {"path": str(table), "text_columns": ["title", "blurb"]}
    res = run_etl(_data_cfg(tmp_path, items=items, item_attributes=str(attrs)))
    assert res.meta[S.ITEM_FEATURES]["columns"] == {"title": "str", "blurb": "str", S.ATTRIBUTES: "list[int]"}
    feats = load_item_features(res.output_dir)
    assert feats.text == {"title": [None, "One", "Two", None, "Four"], "blurb": [None, "x", None, None, "a b c d e f"]}
    assert feats.attributes is not None and feats.attributes.shape == (5, 3) and feats.n_attributes == 10
    assert feats.attributes[2].tolist() == [2, 2, 3] and feats.attributes[4].tolist() == [10, 0, 0]
    assert feats.render_all() == ["", "title: One blurb: x", "title: Two", "", "title: Four blurb: a b c d e f"]
    assert feats.render(4, max_words=2) == "title: Four blurb: a b"
    assert feats.render(4, max_chars=3, fields=["blurb"]) == "blurb: a b"
    with pytest.raises(KeyError, match="unknown item text fields"):
        feats.render(1, fields=["genres"])
    with pytest.raises(IndexError, match="out of range 0..4"):
        feats.render(5)


def test_load_item_features_needs_a_current_etl(tmp_path: Path) -> None:
    out = run_etl(_data_cfg(tmp_path)).output_dir
    assert load_item_features(out).text == {}  # no side information: an empty, aligned object
    meta = json.loads((out / S.META_FILE).read_text())
    del meta[S.ITEM_FEATURES]
    (out / S.META_FILE).write_text(json.dumps(meta))
    with pytest.raises(DataError, match="older ETL.*prepare_data"):
        load_item_features(out)
    with pytest.raises(FileNotFoundError, match="processed dataset directory"):
        load_item_features(tmp_path / "absent")


def test_interaction_log_reader_errors_are_one_line(tmp_path: Path) -> None:
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("user,item,timestamp\n1,2,3\n1,2,3,4,5\n")
    cfg = _data_cfg(tmp_path)
    with pytest.raises(DataError) as err:
        run_etl(from_dict(DataConfig, {**to_dict(cfg), "source": {"format": "csv", "path": str(ragged)}}))
    assert "delimiter ','" in _one_line(err, ragged)
    latin = tmp_path / "ratings.dat"
    latin.write_bytes("1::2::5::10\n1::3::5::\xe9\n".encode("latin-1"))
    with pytest.raises(DataError) as err:
        run_etl(from_dict(DataConfig, {**to_dict(cfg), "source": {"format": "movielens", "path": str(latin)}}))
    assert "utf8" in _one_line(err, latin)
