"""The shipped data configs on the real files in ../shared/data: published counts, titles kept."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pytest

from recsys.config import load_config
from recsys.data import schema as S
from recsys.data.config import DataConfig
from recsys.data.etl import run_etl
from recsys.data.item_features import load_item_features
from recsys.data.processed import load_processed

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.shared_data


def _run(name: str, tmp: Path) -> Path:
    cfg = load_config(DataConfig, REPO / f"configs/data/{name}.yaml", [f"output_dir={tmp / name}"])
    source = Path(cfg.source.path)
    source = source if source.is_absolute() else REPO / source
    if not source.exists():  # each file on its own; and never the config's download (no internet in tests)
        pytest.skip(f"{source} not found")
    return run_etl(cfg, base_dir=REPO).output_dir


def test_beauty_exact_counts_and_ids(shared_data_dir: Path, tmp_path: Path) -> None:
    ds = load_processed(_run("beauty", tmp_path))
    assert (ds.n_users, ds.n_items, ds.meta["n_interactions"]) == (22_363, 12_101, 198_502)
    assert ds.meta["filters"]["k_core"]["rounds"] == 1  # 5-core is stable on the S3-Rec file
    assert (ds.items[S.RAW_ID].cast(pl.Int64) == ds.items[S.ITEM_IDX]).all()
    with gzip.open(shared_data_dir / "amazon-beauty/Beauty.txt.gz", "rt") as f:
        first = [int(x) for x in f.readline().split()[1:]]
    assert ds.sequences[S.ITEMS][0].to_list() == first
    # attributes: the JSON's lists, per raw id; ItemFeatures shifts them by +1 (0 = none)
    with (shared_data_dir / "amazon-beauty/Beauty_item2attributes.json").open() as f:
        attrs = json.load(f)
    items = ds.items.filter(pl.col(S.RAW_ID).is_in(["4", "83", "12101"]))
    assert {r[S.RAW_ID]: r[S.ATTRIBUTES] for r in items.iter_rows(named=True)} == {
        k: attrs[k] for k in ("4", "83", "12101")
    }
    assert attrs["4"] == [1, 2, 3]
    feats = load_item_features(ds.path)
    assert feats.attributes is not None and feats.attributes.shape == (12_102, 6) and feats.n_attributes == 638
    assert feats.attributes[4, :3].tolist() == [2, 3, 4] and not feats.attributes[0].any()


@pytest.mark.parametrize(
    ("name", "counts"),
    [("sports", (35_598, 18_357, 296_337)), ("yelp", (30_431, 20_033, 316_354)), ("lastfm", (1_090, 3_646, 52_551))],
)
def test_s3rec_published_counts(shared_data_dir: Path, tmp_path: Path, name: str, counts: tuple[int, int, int]) -> None:
    ds = load_processed(_run(name, tmp_path))
    assert (ds.n_users, ds.n_items, ds.meta["n_interactions"]) == counts
    assert ds.meta[S.ITEM_FEATURES]["columns"] == {S.ATTRIBUTES: "list[int]"}
    assert ds.meta[S.ITEM_FEATURES]["items_with_value"][S.ATTRIBUTES] >= ds.n_items - 1  # Yelp has one empty list


def test_ml1m_partial_counts_with_titles(shared_data_dir: Path, tmp_path: Path) -> None:
    ds = load_processed(_run("ml-1m", tmp_path))
    assert ds.meta["rows"]["read"] == 487_650 and ds.meta["rejected"] == {}
    assert (ds.n_users, ds.n_items, ds.meta["n_interactions"]) == (2_999, 3_266, 486_907)
    assert ds.items[S.TEXT].null_count() == 0
    toy_story = ds.items.row(0, named=True)
    assert toy_story[S.TEXT] == "Toy Story (1995) | Animation, Children's, Comedy"  # what the demo prints
    assert (toy_story[S.TITLE], toy_story[S.YEAR]) == ("Toy Story", "1995")
    assert toy_story[S.GENRES] == ["Animation", "Children's", "Comedy"]
    assert ds.items[S.YEAR].null_count() == 0 and ds.items[S.GENRES].list.len().min() >= 1
    feats = load_item_features(ds.path)
    assert feats.render(1) == "title: Toy Story year: 1995 genres: Animation, Children's, Comedy"
    assert feats.attributes is None and len(feats.text[S.TITLE]) == ds.n_items + 1
    ts = ds.sequences[S.TIMESTAMPS].to_list()
    assert all(a <= b for seq in ts for a, b in zip(seq, seq[1:], strict=False))
