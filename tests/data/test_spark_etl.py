"""The Spark ETL (`engine: spark`) against the polars one: identical processed datasets on a generated log
with ties, duplicates, bad rows of every value reason and a k-core that needs several rounds.

One local[2] Spark session serves the whole module (starting one takes most of the time).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import pytest

from recsys.data import schema as S
from recsys.data.config import ColumnMapping, DataConfig, SourceConfig
from recsys.data.errors import DataError
from recsys.data.etl import run_etl
from recsys.data.processed import diff_processed, load_processed
from recsys.data.steps import VALUE_REASONS

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

_JAVA_HOME = os.environ.get("JAVA_HOME", "")
needs_java = pytest.mark.skipif(
    shutil.which("java") is None and not (_JAVA_HOME and (Path(_JAVA_HOME) / "bin" / "java").is_file()),
    reason="Spark needs Java 17 (`make java-deps`, or Debian: apt-get install openjdk-17-jre-headless): "
    "no java on PATH or in $JAVA_HOME",
)


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    from recsys.data.spark_etl import spark_session

    session = spark_session(
        {
            "spark.master": "local[2]",
            "spark.sql.shuffle.partitions": "2",
            "spark.default.parallelism": "2",
            "spark.ui.enabled": "false",
            "spark.sql.adaptive.enabled": "false",  # fixed partitions: what the test runs is what it checks
        },
        app_name="recsys-test",
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _generated_log(seed: int = 0) -> pl.DataFrame:
    """Raw text rows: a dense core, a chain of sparse users and items that the k-core removes one round at a
    time, exact and near duplicates, timestamp ties, and one bad row per value reason."""
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, str, str, str]] = []
    for u in range(1, 31):  # core: 30 users x ~8 of 15 items, timestamps from a small range (many ties)
        for i in rng.choice(15, size=8, replace=False):
            rows.append((str(u), str(100 + i), str(int(rng.integers(1_000, 1_010))), str(int(rng.integers(1, 6)))))
    # a chain for min 3: user 900 has 3 rows, one on item 950 (2 rows) -> round 1 drops item 950,
    # round 2 drops user 900 (2 rows left), which takes item 951 below 3, round 3 drops it ...
    rows += [("900", "950", "5", "4"), ("900", "951", "6", "4"), ("900", "100", "7", "4"), ("901", "950", "5", "4")]
    rows += [("902", "951", "1", "4"), ("903", "951", "2", "4"), ("902", "101", "3", "4"), ("902", "102", "3", "4")]
    rows += [("903", "101", "3", "4"), ("903", "103", "3", "4")]
    # duplicates: the same (user, item) at the same and at other times, and the same row twice
    rows += [("1", "100", "1003", "5"), ("1", "100", "1003", "2"), ("1", "100", "999", "1"), ("2", "101", "1001", "3")]
    rows += [("2", "101", "1001", "3"), ("3", "102", "1005", "4")]
    # values that are valid after the shared rules: padded, signed
    rows += [(" 4 ", "+103", "1002", " 5 "), ("5", "104", "+1004", "4.5")]
    bad = {
        "missing_value": ("6", "  ", "1000", "3"),
        "bad_user_id": ("u7", "105", "1000", "3"),
        "bad_item_id": ("8", "1.5", "1000", "3"),
        "bad_timestamp": ("9", "106", "12:00", "3"),
        "negative_timestamp": ("10", "107", "-5", "3"),
        "future_timestamp": ("11", "108", "99999999999", "3"),
        "bad_rating": ("12", "109", "1000", "nan"),
    }
    assert tuple(bad) == VALUE_REASONS  # one row for every reason the engines share
    rows[40:40] = list(bad.values())
    rows += [("13", "99999999999999999999", "1000", "3"), ("14", "110", "1000", "five")]
    return pl.DataFrame(rows, schema=["uid", "iid", "ts", "stars"], orient="row")


def _config(source: SourceConfig, out: Path | str, **over: Any) -> DataConfig:
    params: dict[str, Any] = {
        "name": "generated",
        "source": source,
        "output_dir": str(out),
        "min_user_interactions": 3,
        "min_item_interactions": 3,
        "max_reject_fraction": 0.2,
        "reject_sample_size": 5,
    }
    return DataConfig(**(params | over))


_COLUMNS = ColumnMapping(user="uid", item="iid", timestamp="ts", rating="stars")


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SourceConfig]:
    root = tmp_path_factory.mktemp("logs")
    raw = _generated_log()
    raw.write_csv(root / "log.csv")
    # MovieLens text, read by Spark itself: plus a blank line (skipped) and a line of 3 fields (malformed)
    lines = [f"{u}::{i}::{r}::{t}" for u, i, t, r in raw.iter_rows()]
    lines[10:10] = ["", "7::101::1000"]
    (root / "ratings.dat").write_text("\n".join(lines) + "\n")
    # parquet as two files with typed columns: the order ties fall back on spans files
    typed = raw.with_columns(pl.col(c).str.strip_chars().cast(pl.Int64, strict=False) for c in ("uid", "iid", "ts"))
    typed = typed.with_columns(pl.col("stars").cast(pl.Float64, strict=False))
    (root / "pq").mkdir()
    typed.head(60).write_parquet(root / "pq" / "part-0.parquet")
    typed.slice(60).write_parquet(root / "pq" / "part-1.parquet")
    return {
        "csv": SourceConfig(format="csv", path=str(root / "log.csv"), columns=_COLUMNS),
        "movielens": SourceConfig(format="movielens", path=str(root / "ratings.dat")),
        "parquet": SourceConfig(format="parquet", path=str(root / "pq"), columns=_COLUMNS),
    }


@needs_java
@pytest.mark.parametrize(
    ("fmt", "over"),
    [
        ("movielens", {"dedupe": "first", "min_rating": 2.0}),
        ("parquet", {"dedupe": "last"}),
    ],
)
def test_spark_and_polars_write_the_same_dataset(
    spark: SparkSession, logs: dict[str, SourceConfig], tmp_path: Path, fmt: str, over: dict[str, Any]
) -> None:
    polars_cfg = _config(logs[fmt], tmp_path / "polars", **over)
    spark_source, spark_out = logs[fmt], str(tmp_path / "spark")
    if fmt == "parquet":  # Spark's own paths: URIs in, URI out (hdfs:// and s3a:// take the same route)
        spark_source = replace(spark_source, path=Path(spark_source.path).as_uri())
        spark_out = (tmp_path / "spark").as_uri()
    spark_cfg = _config(spark_source, spark_out, engine="spark", **over)
    want = run_etl(polars_cfg).meta
    got = run_etl(spark_cfg, spark=spark).meta

    # the case is what it claims: every value reason, duplicates, a k-core of several rounds
    if fmt == "movielens":
        assert set(want["rejected"]) == {*VALUE_REASONS, "malformed_line"}, want["rejected"]
    assert want["filters"]["k_core"]["rounds"] >= 3, want["filters"]["k_core"]
    assert want["rows"]["after_k_core"] < want["rows"]["after_dedupe"]
    if over["dedupe"] != "keep_all":
        assert want["rows"]["after_dedupe"] < want["rows"]["after_min_rating"]

    assert diff_processed(tmp_path / "polars", tmp_path / "spark") == []
    assert got["config"]["engine"] == "spark" and want["config"]["engine"] == "polars"
    loaded = load_processed(tmp_path / "spark")  # what training reads
    assert loaded.items[S.ITEM_IDX].to_list() == list(range(1, loaded.n_items + 1))  # 0 stays padding
    assert (tmp_path / "spark" / S.REJECTED_SAMPLE_FILE).is_file()
    assert sorted(p.name for p in (tmp_path / "spark").iterdir()) == sorted(
        p.name for p in (tmp_path / "polars").iterdir()
    )


@needs_java
def test_spark_and_polars_refuse_too_many_rejects_with_one_message(
    spark: SparkSession, logs: dict[str, SourceConfig], tmp_path: Path
) -> None:
    """The max_reject_fraction rule is written once: both engines stop on the same log with the same words."""
    messages = []
    for engine in ("polars", "spark"):
        cfg = _config(logs["movielens"], tmp_path / engine, engine=engine, max_reject_fraction=0.01)
        with pytest.raises(DataError, match="max_reject_fraction 1.00%") as err:
            run_etl(cfg, spark=spark)
        messages.append(str(err.value))
        assert not (tmp_path / engine).exists()
    assert messages[0] == messages[1]
    assert "'malformed_line': 1" in messages[0] and "first: {'row': " in messages[0], messages[0]


def test_diff_processed_finds_a_changed_sequence(tmp_path: Path, logs: dict[str, SourceConfig]) -> None:
    """The parity check can fail: one sequence in reverse order is reported."""
    for name in ("a", "b"):
        run_etl(_config(logs["csv"], tmp_path / name))
    seq = pl.read_parquet(tmp_path / "b" / S.SEQUENCES_FILE)
    first = seq[S.ITEMS][0].to_list()
    swapped = first[::-1]
    assert swapped != first
    seq = seq.with_columns(
        pl.when(pl.col(S.USER_IDX) == seq[S.USER_IDX][0])
        .then(pl.lit(swapped))
        .otherwise(pl.col(S.ITEMS))
        .alias(S.ITEMS)
    )
    seq.write_parquet(tmp_path / "b" / S.SEQUENCES_FILE)
    assert diff_processed(tmp_path / "a", tmp_path / "a") == []
    (diff,) = diff_processed(tmp_path / "a", tmp_path / "b")
    assert diff.startswith(f"{S.SEQUENCES_FILE}: row 0 differs")


def test_spark_engine_refuses_what_it_does_not_run(tmp_path: Path, logs: dict[str, SourceConfig]) -> None:
    with pytest.raises(ValueError, match="streaming applies to engine 'polars'"):
        _config(logs["csv"], tmp_path, engine="spark", streaming=True)
    with pytest.raises(ValueError, match="engine must be one of"):
        _config(logs["csv"], tmp_path, engine="dask")
