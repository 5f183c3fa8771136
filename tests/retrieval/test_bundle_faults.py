"""Every bundle fault is one `BundleError` naming the file: checksums (format 2) catch a corrupted or
truncated file before anything is parsed; without them (format 1) each parser's error is attributed
to its file; and a bundle is written under a temporary name, so a crash leaves none half-written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from retrieval_support import N_ITEMS

from recsys.model_io import load_model
from recsys.retrieval import bundle as bundle_module
from recsys.retrieval.bundle import BUNDLE_FILE, EMBEDDINGS_FILE, BundleError, load_bundle, write_bundle
from recsys.retrieval.index import IndexConfig

PAYLOAD = bundle_module._payload_files()


@pytest.fixture(scope="module")
def good_bundle(tmp_path_factory: pytest.TempPathFactory, model_dir: Path, processed_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("faults") / "bundle"
    emb = load_model(model_dir).item_embeddings().detach().numpy()
    meta = write_bundle(
        out,
        model_dir=model_dir,
        item_emb=emb,
        data_dir=processed_dir,
        index_config=IndexConfig(kind="flat"),
        name="faults",
        source_run_id=None,
    )
    assert set(meta.files) == set(PAYLOAD) and meta.format == 2
    return out


def _copy(src: Path, dst: Path, *, format_1: bool = False) -> Path:
    shutil.copytree(src, dst)
    if format_1:  # an older bundle: no checksums in bundle.json
        meta = json.loads((dst / BUNDLE_FILE).read_text())
        meta.pop("files")
        meta["format"] = 1
        (dst / BUNDLE_FILE).write_text(json.dumps(meta))
    return dst


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:  # random bytes over the middle, same size
        rng = np.random.default_rng(0)
        mid = len(data) // 4
        noise = rng.integers(0, 256, size=max(len(data) // 2, 1), dtype=np.uint8).tobytes()
        path.write_bytes(data[:mid] + noise + data[mid + len(noise) :])


@pytest.mark.parametrize("how", ["corrupted", "truncated"])
@pytest.mark.parametrize("file", PAYLOAD)
def test_checksums_name_the_damaged_file(good_bundle: Path, tmp_path: Path, file: str, how: str) -> None:
    bundle = _copy(good_bundle, tmp_path / "b")
    _damage(bundle / file, how)
    with pytest.raises(BundleError) as caught:
        load_bundle(bundle)
    err = caught.value
    assert err.file == file
    expected = "checksum mismatch" if how == "corrupted" else "(truncated or replaced)"
    assert expected in str(err) and str(err).startswith(f"bundle file {file}: ")
    assert str(tmp_path) not in err.public  # no path: the service may show it to clients


@pytest.mark.parametrize("file", [f for f in PAYLOAD if f != EMBEDDINGS_FILE])  # embeddings are not loaded
def test_without_checksums_parse_errors_name_the_file(good_bundle: Path, tmp_path: Path, file: str) -> None:
    bundle = _copy(good_bundle, tmp_path / "b", format_1=True)
    (bundle / file).write_bytes(b"\x00garbage\xff" * 7)
    with pytest.raises(BundleError) as caught:
        load_bundle(bundle)
    assert caught.value.file == file and "cannot be read" in str(caught.value), str(caught.value)


def test_a_missing_or_broken_bundle_json_and_missing_files(good_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(good_bundle, tmp_path / "b")
    (bundle / "items.parquet").unlink()
    with pytest.raises(BundleError, match="bundle file items.parquet: is missing"):
        load_bundle(bundle)
    (bundle / BUNDLE_FILE).write_text('{"name": ')
    with pytest.raises(BundleError, match="bundle file bundle.json: is not valid JSON"):
        load_bundle(bundle)
    (bundle / BUNDLE_FILE).unlink()
    with pytest.raises(BundleError, match="bundle file bundle.json: is missing"):
        load_bundle(bundle)


def test_consistent_checksums_over_inconsistent_files_are_still_refused(good_bundle: Path, tmp_path: Path) -> None:
    """A bundle whose manifest was rewritten to match: the cross-file checks name what does not fit."""
    import polars as pl

    bundle = _copy(good_bundle, tmp_path / "b")
    histories = pl.read_parquet(bundle / "histories.parquet")
    histories.with_columns(pl.col("items").list.eval(pl.element() + N_ITEMS)).write_parquet(
        bundle / "histories.parquet"
    )
    meta = json.loads((bundle / BUNDLE_FILE).read_text())
    digest = bundle_module.file_digest(bundle / "histories.parquet")
    meta["files"]["histories.parquet"] = {"bytes": digest.bytes, "sha256": digest.sha256}
    (bundle / BUNDLE_FILE).write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=f"histories.parquet: holds item indices outside 1..{N_ITEMS}"):
        load_bundle(bundle)


def test_a_crash_while_writing_leaves_no_bundle(
    model_dir: Path, processed_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emb = load_model(model_dir).item_embeddings().detach().numpy()

    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # as a SIGINT mid-write would

    monkeypatch.setattr(bundle_module, "save_index", crash)
    with pytest.raises(KeyboardInterrupt):
        write_bundle(
            tmp_path / "out",
            model_dir=model_dir,
            item_emb=emb,
            data_dir=processed_dir,
            index_config=IndexConfig(kind="flat"),
            name="x",
            source_run_id=None,
        )
    assert list(tmp_path.iterdir()) == []  # neither the bundle nor its temporary directory
