"""Bad data: a real log with 1% injected corruption is read with every bad row counted under its
kind (the counts equal what was injected), completes or fails as `max_reject_fraction` says; broken
inputs (truncated gzip, a parquet or zip that is not one, a download whose checksum differs) are one
clear error; and the processed directory is replaced whole or not at all."""

from __future__ import annotations

import gzip
import json
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.config import from_dict
from recsys.data import processed as processed_module
from recsys.data.config import DataConfig, DownloadConfig
from recsys.data.download import fetch_zip_members
from recsys.data.errors import DataError
from recsys.data.etl import run_etl
from recsys.data.processed import load_processed

ML1M = Path(__file__).resolve().parents[2] / "../shared/data/ml-1m/ratings.partial-users1-2999.dat.gz"
N_LINES = 42_000  # 1% = 420 = 70 of each of the six kinds
# (kind, how a good `user::item::rating::timestamp` line is broken), each applied to 1/6 of 1% of the lines
CORRUPTIONS = {
    "malformed_line": lambda f: "::".join(f[:3]).encode(),  # a field missing
    "not_utf8": lambda f: "::".join(f).encode()[:-3] + b"\xff\xfe" + "::".join(f).encode()[-3:],
    "bad_user_id": lambda f: "::".join(["9" * 25, *f[1:]]).encode(),  # beyond int64
    "bad_item_id": lambda f: "::".join([f[0], "9" * 25, *f[2:]]).encode(),
    "negative_timestamp": lambda f: "::".join([*f[:3], "-977000000"]).encode(),
    "future_timestamp": lambda f: "::".join([*f[:3], "4102444800"]).encode(),  # 2100-01-01
}


def _real_or_synthetic_lines() -> tuple[list[str], str]:
    """The first N_LINES of the ML-1M ratings (a real log) when ../shared/data has it, else a synthetic log."""
    if ML1M.is_file():
        with gzip.open(ML1M, "rt") as f:
            return [next(f).rstrip("\n") for _ in range(N_LINES)], "ml-1m"
    rng = np.random.default_rng(1)
    users, items = rng.integers(1, 800, N_LINES), rng.zipf(1.3, N_LINES) % 3000 + 1
    return [
        f"{u}::{i}::{rng.integers(1, 6)}::{978300000 + t}" for t, (u, i) in enumerate(zip(users, items, strict=True))
    ], "synthetic"


def _config(tmp_path: Path, path: Path, max_reject_fraction: float) -> DataConfig:
    return from_dict(
        DataConfig,
        {
            "name": "corrupted",
            "output_dir": str(tmp_path / "out"),
            "source": {"format": "movielens", "path": str(path)},
            "max_reject_fraction": max_reject_fraction,
        },
    )


@pytest.fixture(scope="module")
def corrupted_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Counter[str], int]:
    lines, _ = _real_or_synthetic_lines()
    rng = np.random.default_rng(7)
    per_kind = N_LINES // 100 // len(CORRUPTIONS)  # 1% in all
    chosen = rng.choice(N_LINES, size=per_kind * len(CORRUPTIONS), replace=False)
    raw = [line.encode() for line in lines]
    injected: Counter[str] = Counter()
    for n, row in enumerate(chosen.tolist()):
        kind = list(CORRUPTIONS)[n // per_kind]
        raw[row] = CORRUPTIONS[kind](lines[row].split("::"))
        injected[kind] += 1
    path = tmp_path_factory.mktemp("corrupted") / "ratings.dat.gz"
    path.write_bytes(gzip.compress(b"\n".join(raw) + b"\n"))
    return path, injected, N_LINES


def test_injected_corruption_is_counted_by_kind(corrupted_log: tuple[Path, Counter[str], int], tmp_path: Path) -> None:
    path, injected, n_lines = corrupted_log
    result = run_etl(_config(tmp_path, path, max_reject_fraction=0.02))
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["rejected"] == dict(injected)  # every kind, exactly as many as were injected
    assert meta["rows"]["read"] == n_lines and meta["rows"]["rejected"] == sum(injected.values())
    assert meta["reject_fraction"] == pytest.approx(0.01)
    sample = pl.read_csv(tmp_path / "out" / "rejected_sample.csv", infer_schema=False)
    assert set(sample["reject_reason"]) <= set(injected) and sample.height == 100
    assert load_processed(result.output_dir).n_items > 0


def test_injected_corruption_fails_when_configured_stricter(
    corrupted_log: tuple[Path, Counter[str], int], tmp_path: Path
) -> None:
    path, injected, _ = corrupted_log
    with pytest.raises(DataError) as err:
        run_etl(_config(tmp_path, path, max_reject_fraction=0.005))
    message = str(err.value)
    assert "\n" not in message and "1.00% > max_reject_fraction 0.50%" in message
    for kind, count in injected.items():
        assert f"'{kind}': {count}" in message
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_truncated_gzip_is_one_clear_error(corrupted_log: tuple[Path, Counter[str], int], tmp_path: Path) -> None:
    path, _, _ = corrupted_log
    truncated = tmp_path / "ratings.dat.gz"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="not a valid gzip file") as err:
        run_etl(_config(tmp_path, truncated, max_reject_fraction=0.02))
    assert str(truncated) in str(err.value) and "\n" not in str(err.value)


def test_a_file_that_is_not_parquet_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "log.parquet"
    bad.write_bytes(b"PAR1 but not really" * 10)
    cfg = from_dict(
        DataConfig,
        {"name": "p", "output_dir": str(tmp_path / "out"), "source": {"format": "parquet", "path": str(bad)}},
    )
    with pytest.raises(DataError, match="cannot read parquet") as err:
        run_etl(cfg)
    assert str(bad) in str(err.value)


def test_zip_download_faults_are_clear_and_leave_nothing_half_written(tmp_path: Path) -> None:
    archive = tmp_path / "src" / "ml.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ml/ratings.dat", "1::1::5::978300760\n" * 100)
    cfg = DownloadConfig(url=archive.as_uri(), interactions_member="ml/ratings.dat", cache_dir=str(tmp_path / "c"))
    got = fetch_zip_members(cfg, tmp_path)  # file:// (no network): the download path itself
    assert got["ml/ratings.dat"].read_text().count("\n") == 100
    wrong = DownloadConfig(**{**cfg.__dict__, "sha256": "0" * 64})
    with pytest.raises(DataError, match="does not match download.sha256"):
        fetch_zip_members(wrong, tmp_path)
    assert not (tmp_path / "c" / "ml.zip").exists()  # a mismatching download is not kept
    cached = tmp_path / "c" / "ml.zip"  # a cached archive that is not a zip
    cached.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match="not a valid zip file"):
        fetch_zip_members(DownloadConfig(**{**cfg.__dict__, "cache_dir": str(tmp_path / "c")}), tmp_path)


def test_a_crash_while_writing_keeps_the_old_processed_dataset(
    corrupted_log: tuple[Path, Counter[str], int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _, _ = corrupted_log
    cfg = _config(tmp_path, path, max_reject_fraction=0.02)
    run_etl(cfg)
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    real = pl.DataFrame.write_parquet
    calls = []

    def crash_on_third(self: pl.DataFrame, file: object, *args: object, **kwargs: object) -> None:
        calls.append(file)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real(self, file, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pl.DataFrame, "write_parquet", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_etl(cfg)
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary directory left
    assert processed_module.write_processed  # the code path under test
