"""run_etl end to end on tiny files: outputs, rejections, errors, determinism, download."""

from __future__ import annotations

import csv
import gzip
import json
import zipfile
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from recsys.config import ConfigError, from_dict
from recsys.data import schema as S
from recsys.data.config import DataConfig
from recsys.data.errors import DataError
from recsys.data.etl import run_etl
from recsys.data.processed import load_processed

MOVIES = "1::Toy Story (1995)::Animation|Comedy\n2::Heat (1995)::Action\n3::Caf\xe9 (1999)::Drama\n"


def _ml_lines(n_users: int = 3, items: tuple[int, ...] = (1, 2, 3)) -> list[str]:
    # every user rates every item, timestamps descending in the file so sorting matters
    return [f"{u}::{i}::{(u + i) % 5 + 1}::{1000 - 10 * i}" for u in range(1, n_users + 1) for i in items]


def _write_ml(tmp: Path, lines: list[str], *, gz: bool = False) -> dict[str, Any]:
    ratings = tmp / ("ratings.dat.gz" if gz else "ratings.dat")
    text = "\n".join(lines) + "\n"
    if gz:
        with gzip.open(ratings, "wt") as f:
            f.write(text)
    else:
        ratings.write_text(text)
    (tmp / "movies.dat").write_bytes(MOVIES.encode("latin-1"))
    return {
        "name": "tiny",
        "output_dir": str(tmp / "out"),
        "source": {
            "format": "movielens",
            "path": str(ratings),
            "items": {"format": "movielens", "path": str(tmp / "movies.dat")},
        },
        "min_user_interactions": 2,
        "min_item_interactions": 2,
    }


def _cfg(d: dict[str, Any], **top: Any) -> DataConfig:
    return from_dict(DataConfig, {**d, **top})


def test_movielens_outputs(tmp_path: Path) -> None:
    res = run_etl(_cfg(_write_ml(tmp_path, _ml_lines(), gz=True)))
    ds = load_processed(res.output_dir)
    assert (ds.n_users, ds.n_items, ds.meta["n_interactions"]) == (3, 3, 9)
    assert ds.items.columns == [S.ITEM_IDX, S.RAW_ID, S.TEXT, S.TITLE, S.YEAR, S.GENRES]
    assert ds.items.rows() == [
        (1, "1", "Toy Story (1995) | Animation, Comedy", "Toy Story", "1995", ["Animation", "Comedy"]),
        (2, "2", "Heat (1995) | Action", "Heat", "1995", ["Action"]),
        (3, "3", "Caf\xe9 (1999) | Drama", "Caf\xe9", "1999", ["Drama"]),  # ISO-8859-1 decoded
    ]
    assert ds.users.rows() == [(0, "1"), (1, "2"), (2, "3")]
    # oldest first: item 3 has the smallest timestamp
    assert ds.sequences.row(0) == (0, [3, 2, 1], [970, 980, 990])
    inter = ds.interactions().collect()
    assert inter.columns == [S.USER_IDX, S.ITEM_IDX, S.TIMESTAMP, S.RATING]
    meta = json.loads((res.output_dir / S.META_FILE).read_text())
    assert meta["schema_version"] == S.SCHEMA_VERSION and len(meta["source"]["files"][0]["sha256"]) == 64
    assert meta["config"]["name"] == "tiny" and meta["rejected"] == {}
    assert meta[S.ITEM_FEATURES]["columns"] == {S.TITLE: "str", S.YEAR: "str", S.GENRES: "list[str]"}


def test_min_rating_and_dedupe(tmp_path: Path) -> None:
    lines = _ml_lines() + ["1::1::5::2000"]  # a repeat of (1, 1), later
    cfg = _write_ml(tmp_path, lines)
    meta = run_etl(_cfg(cfg, dedupe="last", min_user_interactions=1, min_item_interactions=1)).meta
    assert meta["rows"]["after_dedupe"] == 9
    meta = run_etl(_cfg(cfg, min_rating=4.0, min_user_interactions=1, min_item_interactions=1)).meta
    assert meta["rows"]["after_min_rating"] == sum(int(x.split("::")[2]) >= 4 for x in lines)


def test_bad_rows_counted_and_sampled(tmp_path: Path) -> None:
    lines = _ml_lines(n_users=10) + ["x::1::3::5", "1::2::3", "2::1::3::-1", "3::1::3::t", "4::z::3::5"]
    res = run_etl(_cfg(_write_ml(tmp_path, lines), max_reject_fraction=0.5))
    assert res.meta["rejected"] == {
        "bad_item_id": 1,
        "bad_timestamp": 1,
        "bad_user_id": 1,
        "malformed_line": 1,
        "negative_timestamp": 1,
    }
    assert res.meta["rows"]["read"] == 35 and res.meta["n_interactions"] == 30
    with (res.output_dir / S.REJECTED_SAMPLE_FILE).open() as f:
        sample = list(csv.DictReader(f))
    assert [r[S.REJECT] for r in sample][:2] == ["bad_user_id", "malformed_line"]
    assert sample[0][S.USER] == "x"


def test_reject_fraction_fails_with_fraction(tmp_path: Path) -> None:
    lines = _ml_lines() + ["x::1::3::5"]
    with pytest.raises(DataError, match=r"1 of 10 rows rejected \(10\.00% > max_reject_fraction 1\.00%\)"):
        run_etl(_cfg(_write_ml(tmp_path, lines)))


def test_missing_and_empty_files(tmp_path: Path) -> None:
    cfg = _write_ml(tmp_path, _ml_lines())
    with pytest.raises(DataError, match="file not found"):
        run_etl(_cfg(cfg, source={**cfg["source"], "path": str(tmp_path / "nope.dat")}))
    (tmp_path / "empty.dat").write_text("")
    with pytest.raises(DataError, match="empty file"):
        run_etl(_cfg(cfg, source={**cfg["source"], "path": str(tmp_path / "empty.dat")}))


def test_wrong_delimiter(tmp_path: Path) -> None:
    cfg = _write_ml(tmp_path, _ml_lines())
    as_csv = {"format": "csv", "path": cfg["source"]["path"], "has_header": False, "column_names": ["u", "i", "t"]}
    with pytest.raises(DataError, match="delimiter/columns did not match"):
        run_etl(_cfg(cfg, source=as_csv))
    (tmp_path / "log.csv").write_text("user,item,timestamp\n1,2,3\n")
    with pytest.raises(DataError, match="delimiter/columns do not match"):
        run_etl(_cfg(cfg, source={"format": "movielens", "path": str(tmp_path / "log.csv")}))


def test_everything_filtered_by_k_core(tmp_path: Path) -> None:
    cfg = _write_ml(tmp_path, _ml_lines())
    with pytest.raises(DataError, match="nothing left after the k-core"):
        run_etl(_cfg(cfg, min_user_interactions=50))


def test_unknown_config_key() -> None:
    with pytest.raises(ConfigError, match="unknown config key 'source.delimiter'"):
        from_dict(
            DataConfig, {"name": "x", "output_dir": "o", "source": {"format": "csv", "path": "p", "delimiter": ";"}}
        )
    with pytest.raises(ConfigError, match="max_reject_fraction"):
        from_dict(
            DataConfig,
            {"name": "x", "output_dir": "o", "max_reject_fraction": 2.0, "source": {"format": "csv", "path": "p"}},
        )


def test_csv_and_parquet_sources_with_mapping(tmp_path: Path) -> None:
    df = pl.DataFrame({"uid": ["b", "a", "a", "b"], "iid": ["y", "x", "y", "x"], "when": [4, 3, 2, 1]})
    df.write_csv(tmp_path / "log.csv")
    df.write_parquet(tmp_path / "log.parquet")
    pl.DataFrame({"iid": ["x", "y"], "title": ["X!", None], "brand": ["bx", "by"]}).write_csv(tmp_path / "it.csv")
    base = {"output_dir": str(tmp_path / "out"), "min_user_interactions": 1, "min_item_interactions": 1}
    src = {
        "columns": {"user": "uid", "item": "iid", "timestamp": "when"},
        "id_type": "str",
        "items": {"path": str(tmp_path / "it.csv"), "id_column": "iid", "text_columns": ["title", "brand"]},
    }
    outs = []
    for fmt in ("csv", "parquet"):
        cfg = from_dict(
            DataConfig, {**base, "name": fmt, "source": {**src, "format": fmt, "path": str(tmp_path / f"log.{fmt}")}}
        )
        ds = load_processed(run_etl(cfg).output_dir)
        outs.append(ds.sequences)
        assert ds.items.rows() == [(1, "x", "X! | bx", "X!", "bx"), (2, "y", "by", None, "by")]
        assert ds.meta[S.ITEM_FEATURES]["columns"] == {"title": "str", "brand": "str"}
    assert outs[0].equals(outs[1])
    assert outs[0].rows() == [(0, [2, 1], [2, 3]), (1, [1, 2], [1, 4])]


def test_s3rec_ids_equal_raw_ids(tmp_path: Path) -> None:
    (tmp_path / "seq.txt").write_text("1 3 1 2\n2 2 3\n\n3 1 3 2 3\n")
    cfg = from_dict(
        DataConfig,
        {
            "name": "s",
            "output_dir": str(tmp_path / "o"),
            "min_user_interactions": 1,
            "min_item_interactions": 1,
            "source": {"format": "s3rec", "path": str(tmp_path / "seq.txt")},
        },
    )
    ds = load_processed(run_etl(cfg).output_dir)
    assert ds.sequences[S.ITEMS].to_list() == [[3, 1, 2], [2, 3], [1, 3, 2, 3]]
    assert ds.sequences[S.TIMESTAMPS].to_list()[2] == [0, 1, 2, 3]


def test_deterministic_bytes(tmp_path: Path) -> None:
    cfg = _write_ml(tmp_path, _ml_lines(n_users=6, items=(5, 1, 9, 3)))
    digests = []
    for run in ("a", "b"):
        out = run_etl(_cfg(cfg, output_dir=str(tmp_path / run))).output_dir
        digests.append(
            {f: (out / f).read_bytes() for f in (S.INTERACTIONS_FILE, S.SEQUENCES_FILE, S.ITEMS_FILE, S.USERS_FILE)}
        )
    assert digests[0] == digests[1]


def test_download_zip_when_local_file_missing(tmp_path: Path) -> None:
    zpath = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("ml-1m/ratings.dat", "\n".join(_ml_lines()) + "\n")
        zf.writestr("ml-1m/movies.dat", MOVIES.encode("latin-1"))
    cfg = from_dict(
        DataConfig,
        {
            "name": "dl",
            "output_dir": str(tmp_path / "out"),
            "min_user_interactions": 2,
            "min_item_interactions": 2,
            "source": {
                "format": "movielens",
                "path": str(tmp_path / "absent.dat.gz"),
                "items": {"format": "movielens", "path": str(tmp_path / "absent_movies.dat")},
                "download": {
                    "url": zpath.as_uri(),
                    "interactions_member": "ml-1m/ratings.dat",
                    "items_member": "ml-1m/movies.dat",
                    "cache_dir": str(tmp_path / "cache"),
                },
            },
        },
    )
    ds = load_processed(run_etl(cfg).output_dir)
    assert ds.meta["n_interactions"] == 9 and ds.items[S.TEXT][1] == "Heat (1995) | Action"
    assert (tmp_path / "cache" / "ml-1m.zip").is_file()
    bad = from_dict(
        DataConfig,
        {
            **{"name": "dl", "output_dir": str(tmp_path / "o2")},
            "source": {
                "format": "movielens",
                "path": str(tmp_path / "absent.dat"),
                "download": {
                    "url": (tmp_path / "nozip.zip").as_uri(),
                    "interactions_member": "r.dat",
                    "cache_dir": str(tmp_path / "cache2"),
                },
            },
        },
    )
    with pytest.raises(DataError, match="download of .* failed"):
        run_etl(bad)


def test_load_processed_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_processed(tmp_path / "missing")
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / S.META_FILE).write_text("{}")
    with pytest.raises(FileNotFoundError, match="sequences.parquet"):
        load_processed(tmp_path / "partial")
