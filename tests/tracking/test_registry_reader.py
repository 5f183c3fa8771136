"""The service's registry fast path (a local SQLite store read directly, no MLflow import) against its
slow twin, the MLflow client: same version, source and run for every alias and version; anything it
does not recognise is left to the client."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from recsys.tracking.registry import (
    ModelVersionRef,
    RegistryError,
    _resolve_sqlite,
    local_version_dir,
    register_directory,
    resolve_model_uri,
)


def _client_answer(uri: str, name: str, alias: str | None, version: str | None) -> ModelVersionRef:
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, str(version))
    return ModelVersionRef(name=mv.name, version=str(mv.version), source=str(mv.source), run_id=mv.run_id)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("e", artifact_location=(root / "artifacts").as_uri())
    for n in range(3):
        files = root / f"files{n}"
        files.mkdir()
        (files / "x.txt").write_text(str(n))
        register_directory(uri, files, "m", experiment_id=experiment, alias="champion" if n < 2 else "next")
    client.delete_model_version("m", "1")  # version 1 is gone; champion points at 2
    return uri


@pytest.mark.parametrize(("alias", "version"), [("champion", None), ("next", None), (None, "2"), (None, "3")])
def test_the_fast_path_answers_what_the_mlflow_client_answers(
    store: str, alias: str | None, version: str | None
) -> None:
    fast = _resolve_sqlite(store, "m", alias, version)
    assert fast is not None and fast == _client_answer(store, "m", alias, version)
    assert resolve_model_uri(store, f"models:/m@{alias}" if alias else f"models:/m/{version}") == fast
    folder = local_version_dir(fast)
    assert folder is not None and (folder / "x.txt").read_text() == str(int(fast.version) - 1)


def test_unknown_or_deleted_versions_and_other_stores(store: str, tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="no such alias"):
        _resolve_sqlite(store, "m", "nope", None)
    assert _resolve_sqlite(store, "m", None, "1") is None  # deleted: the client says why
    with pytest.raises(RegistryError):
        resolve_model_uri(store, "models:/m/1")
    assert _resolve_sqlite("http://127.0.0.1:1", "m", "champion", None) is None
    odd = tmp_path / "odd.db"
    sqlite3.connect(odd).execute("create table t (x int)").connection.commit()
    assert _resolve_sqlite(f"sqlite:///{odd}", "m", "champion", None) is None  # not MLflow's layout
    assert local_version_dir(ModelVersionRef("m", "1", "mlflow-artifacts:/x", None)) is None


def test_resolving_in_a_local_store_imports_no_mlflow(store: str) -> None:
    code = f"""
import sys
from recsys.tracking.registry import local_version_dir, resolve_model_uri
ref = resolve_model_uri({store!r}, "models:/m@champion")
assert ref.version == "2" and local_version_dir(ref) is not None
assert "mlflow" not in sys.modules
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_read_only_client_reads_refuses_writes_and_leaves_the_working_directory_alone(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.exceptions import MlflowException

    from recsys.tracking.registry import _reader_client

    monkeypatch.chdir(tmp_path)
    reader = _reader_client(store)
    assert str(reader.get_model_version_by_alias("m", "champion").version) == "2"
    with pytest.raises(MlflowException, match="readonly"):
        reader.create_experiment("not-allowed")
    assert list(tmp_path.iterdir()) == []  # a `sqlite:///file:...` spelling made a stray `file:` folder here
