"""Export a training run as a serving bundle registered in MLflow, and fetch it back for serving.

A registered version's directory is the bundle plus MLflow's model files (`recsys.tracking.pyfunc`):
the service reads the bundle files, MLflow's tools load it as a `python_function` model.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.model_io import load_model
from recsys.retrieval.bundle import ServingBundle, load_bundle, save_bundle, write_bundle
from recsys.retrieval.index import IndexConfig
from recsys.retrieval.recommender import Recommender
from recsys.tracking.registry import (
    ModelVersionRef,
    RegistryError,
    experiment_id_named,
    load_version,
    register_directory,
    resolve_model_uri,
    run_experiment_and_tags,
)

log = logging.getLogger(__name__)

DATA_DIR_TAG = "data_dir"  # run tag written by training: the processed dataset directory


@dataclass(frozen=True)
class FetchedBundle:
    """A bundle loaded for serving, and the registry version it came from."""

    bundle: ServingBundle
    version: str  # registered version number, or "local" for a bundle directory
    ref: ModelVersionRef | None


def export_run(
    run_id: str,
    *,
    tracking_uri: str,
    name: str,
    alias: str | None,
    index_config: IndexConfig,
    data_dir: Path | None = None,
) -> ModelVersionRef:
    """Build the serving bundle of a training run and register it as a new version of `name`.

    Args:
        run_id: the MLflow training run (artifacts `model/`, `embeddings/item_embeddings.npy`).
        tracking_uri: the MLflow store (tracking and registry).
        name: registered model name.
        alias: alias moved to the new version (e.g. `champion`); None leaves aliases alone.
        index_config: which FAISS index to build.
        data_dir: processed dataset directory; None = the run's `data_dir` tag.
    """
    from recsys.tracking.mlflow import download_run_artifacts  # MLflow: the service never needs it
    from recsys.tracking.pyfunc import add_pyfunc_flavor

    experiment_id, tags = run_experiment_and_tags(tracking_uri, run_id)
    if data_dir is None:
        if DATA_DIR_TAG not in tags:
            raise ValueError(f"run {run_id} has no {DATA_DIR_TAG!r} tag; pass the processed dataset directory")
        data_dir = Path(tags[DATA_DIR_TAG])
    with tempfile.TemporaryDirectory(prefix="recsys-export-") as tmp:
        root = Path(tmp)
        model_dir = download_run_artifacts(tracking_uri, run_id, "model", root / "run")
        item_emb = _run_item_embeddings(tracking_uri, run_id, model_dir, root / "run")
        bundle_dir = root / "bundle"
        meta = write_bundle(
            bundle_dir,
            model_dir=model_dir,
            item_emb=item_emb,
            data_dir=data_dir,
            index_config=index_config,
            name=name,
            source_run_id=run_id,
        )
        add_pyfunc_flavor(bundle_dir)
        return register_directory(
            tracking_uri,
            bundle_dir,
            name,
            experiment_id=experiment_id,
            alias=alias,
            run_name=f"export-{name}",
            tags={"source_run_id": run_id, "model": meta.model, "index": index_config.kind},
            description=f"serving bundle of run {run_id} ({meta.model}, {meta.n_items} items, {index_config.kind})",
        )


def add_items_version(
    model_uri: str,
    items: Mapping[str, Mapping[str, str | None]],
    *,
    tracking_uri: str,
    name: str | None = None,
    alias: str | None = None,
) -> ModelVersionRef:
    """Register a new version of a text model's bundle with `items` (raw id -> text fields) added.

    The items are embedded by the model's own text encoder (no retraining) and appended to its
    vocabulary and index, as the live `POST /admin/items` does; the source version is left as it
    was. `name` defaults to the source version's registered name (the bundle's for a directory).

    Raises:
        CatalogError: the model reads no text, or an id is already in the catalog.
    """
    from recsys.tracking.pyfunc import add_pyfunc_flavor  # MLflow: the service never needs it

    fetched = fetch_bundle(model_uri, tracking_uri)
    grown = Recommender(fetched.bundle).with_new_items(items)
    target = name or (fetched.ref.name if fetched.ref is not None else fetched.bundle.meta.name)
    if fetched.ref is not None and fetched.ref.run_id is not None:
        experiment_id, _ = run_experiment_and_tags(tracking_uri, fetched.ref.run_id)
    else:
        experiment_id = experiment_id_named(tracking_uri, "recsys")
    source = fetched.ref.uri if fetched.ref is not None else model_uri
    with tempfile.TemporaryDirectory(prefix="recsys-add-items-") as tmp:
        meta = save_bundle(Path(tmp) / "bundle", grown.bundle, source_run_id=fetched.bundle.meta.source_run_id)
        add_pyfunc_flavor(Path(tmp) / "bundle")
        return register_directory(
            tracking_uri,
            Path(tmp) / "bundle",
            target,
            experiment_id=experiment_id,
            alias=alias,
            run_name=f"add-items-{target}",
            tags={"source_version": source, "model": meta.model, "added_items": str(len(items))},
            description=f"{source} with {len(items)} items added by text ({meta.n_items} items)",
        )


def fetch_bundle(model_uri: str, tracking_uri: str, *, cache_dir: Path | None = None) -> FetchedBundle:
    """Load the bundle a model URI points to now: `models:/name@alias`, `models:/name/3` or a local dir.

    Registry versions are downloaded into a temporary directory under `cache_dir`, loaded into
    memory and the files removed; a version in a local artifact store (`file://`) is read in place.
    """
    local = Path(model_uri)
    if not model_uri.startswith("models:/"):
        if not local.is_dir():
            raise RegistryError(
                f"model URI {model_uri!r} is neither models:/<name>@<alias> nor a bundle directory",
                public="the model URI is neither a registry URI nor a bundle directory",
            )
        return FetchedBundle(bundle=load_bundle(local), version="local", ref=None)
    ref = resolve_model_uri(tracking_uri, model_uri)
    bundle = load_version(tracking_uri, ref, load_bundle, cache_dir=cache_dir)
    return FetchedBundle(bundle=bundle, version=ref.version, ref=ref)


def current_version(model_uri: str, tracking_uri: str) -> str:
    """The registry version `model_uri` points to now ("local" for a bundle directory); cheap, no download."""
    if not model_uri.startswith("models:/"):
        return "local"
    return resolve_model_uri(tracking_uri, model_uri).version


def _run_item_embeddings(tracking_uri: str, run_id: str, model_dir: Path, dst: Path) -> np.ndarray:
    """The run's logged item embeddings, checked against the model's; recomputed when not logged."""
    from recsys.tracking.mlflow import download_run_artifacts

    model = load_model(model_dir)
    expected = model.item_embeddings().detach().float().numpy()
    try:
        path = download_run_artifacts(tracking_uri, run_id, "embeddings/item_embeddings.npy", dst)
    except Exception as err:  # an older run without the artifact: the model has the same matrix
        log.warning("run %s has no embeddings/item_embeddings.npy (%s); using the model's", run_id, err)
        return expected
    emb: np.ndarray = np.load(path)
    if emb.shape != expected.shape or not np.allclose(emb, expected, atol=1e-5):
        raise ValueError(f"run {run_id}: embeddings/item_embeddings.npy does not match the model's item_embeddings()")
    return emb
