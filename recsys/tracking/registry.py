"""MLflow model registry: register a serving bundle as a model version, move aliases, fetch versions.

A registered version's artifacts are the bundle directory itself (logged to a small `export` run in
the training run's experiment), so any MLflow client can download and inspect it. Every function
takes the tracking URI explicitly: nothing here touches MLflow's process-wide settings, so the
serving process can resolve and download from a background thread.

MLflow is imported inside the functions that use it (a second of start-up): the service resolves a
version in a local SQLite store and reads a `file://` version in place without it (`_resolve_sqlite`,
`local_version_dir`), and falls back to the MLflow client for anything else. A test holds the fast
path to the client's answers.
"""

from __future__ import annotations

import logging
import re
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar
from urllib.parse import quote, unquote, urlparse

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)
T = TypeVar("T")

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


class RegistryError(RuntimeError):
    """A model URI that cannot be resolved, or a registry that cannot be reached.

    The message names URIs for logs and the command line; `public` says what went wrong without
    them, for a service's clients.
    """

    def __init__(self, message: str, public: str = "the model registry failed (details in the server log)") -> None:
        super().__init__(message)
        self.public = public


@dataclass(frozen=True)
class ModelVersionRef:
    """One registered model version."""

    name: str
    version: str
    source: str  # artifact URI of the version's files
    run_id: str | None = None  # the run that logged those files

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def registered_line(ref: ModelVersionRef, alias: str | None, detail: str = "") -> str:
    """What a registry CLI prints for a new version: its URI, `detail`, and the alias URI when one moved."""
    moved = f" (alias {alias}: models:/{ref.name}@{alias})" if alias else ""
    return f"registered {ref.uri}{detail}{moved}"


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """Split `models:/name@alias` or `models:/name/3` into (name, alias, version)."""
    match = _MODELS_URI.match(uri)
    if match is None:
        raise RegistryError(
            f"model URI {uri!r} must look like models:/<name>@<alias> or models:/<name>/<version>",
            public="the model URI is malformed",
        )
    return match["name"], match["alias"], match["version"]


def resolve_model_uri(tracking_uri: str, uri: str) -> ModelVersionRef:
    """The model version that `uri` (`models:/name@alias` or `models:/name/3`) points to now."""
    name, alias, version = parse_model_uri(uri)
    fast = _resolve_sqlite(tracking_uri, name, alias, version)
    if fast is not None:
        return fast
    from mlflow.exceptions import MlflowException

    client = _reader_client(tracking_uri)
    unreachable = "the model registry cannot be reached"
    try:
        if alias is not None:
            mv = client.get_model_version_by_alias(name, alias)
        else:
            mv = client.get_model_version(name, str(version))
    except MlflowException as err:
        text = _first_line(err)
        if text.startswith("API request to"):  # MLflow's wrapper around a transport failure
            raise RegistryError(
                f"registry at {tracking_uri} cannot be reached: {_transport_reason(text)}", public=unreachable
            ) from err
        raise RegistryError(
            f"cannot resolve {uri} in the registry at {tracking_uri}: {text}",
            public="the model alias or version is not in the registry",
        ) from err
    except Exception as err:  # transport failures outside MLflow's wrapper: DNS, timeouts
        raise RegistryError(
            f"registry at {tracking_uri} cannot be reached: {type(err).__name__}: {err}", public=unreachable
        ) from err
    return ModelVersionRef(name=mv.name, version=str(mv.version), source=str(mv.source), run_id=mv.run_id)


def local_version_dir(ref: ModelVersionRef) -> Path | None:
    """The directory of a version whose files sit in a local artifact store (`file://`), or None."""
    parsed = urlparse(ref.source)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        return None
    path = Path(unquote(parsed.path))
    return path if path.is_dir() else None


def download_model_version(tracking_uri: str, ref: ModelVersionRef, dst: Path) -> Path:
    """Download the files of a model version into `dst` and return the local directory."""
    import mlflow.artifacts

    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=ref.source, dst_path=str(dst), tracking_uri=tracking_uri
        )
    except Exception as err:  # any store failure: the caller keeps what it had
        raise RegistryError(
            f"cannot download {ref.uri} from {ref.source}: {type(err).__name__}: {err}",
            public=f"the files of model version {ref.version} cannot be downloaded",
        ) from err
    return Path(local)


def load_version(
    tracking_uri: str, ref: ModelVersionRef, load: Callable[[Path], T], *, cache_dir: Path | None = None
) -> T:
    """`load` applied to a version's directory: in place in a local artifact store, else on a download
    into a temporary directory under `cache_dir`, removed once loaded."""
    in_place = local_version_dir(ref)
    if in_place is not None:
        return load(in_place)
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="recsys-version-", dir=cache_dir))
    try:
        return load(download_model_version(tracking_uri, ref, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_experiment_and_tags(tracking_uri: str, run_id: str) -> tuple[str, dict[str, str]]:
    """(experiment id, tags) of a run; raises `RegistryError` for an unknown run."""
    from mlflow.exceptions import MlflowException

    try:
        run = _reader_client(tracking_uri).get_run(run_id)
    except MlflowException as err:
        raise RegistryError(f"run {run_id!r} not found in {tracking_uri}: {_first_line(err)}") from err
    return run.info.experiment_id, dict(run.data.tags)


def register_directory(
    tracking_uri: str,
    directory: Path,
    name: str,
    *,
    experiment_id: str,
    alias: str | None = None,
    run_name: str = "export",
    tags: Mapping[str, str] | None = None,
    description: str = "",
) -> ModelVersionRef:
    """Log `directory` to a new run and register it as the next version of model `name`.

    Args:
        tracking_uri: the MLflow store (tracking and registry).
        directory: the files the version holds (logged under the run's `bundle/` artifact path).
        name: registered model name (created when missing).
        experiment_id: experiment of the export run (the training run's).
        alias: moved to the new version when given (e.g. `champion`).
        run_name: name of the export run.
        tags: set on the export run and on the model version.
        description: model version description.
    """
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    tags = dict(tags or {})
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    try:
        client.log_artifacts(run.info.run_id, str(directory), "bundle")
    except Exception:
        client.set_terminated(run.info.run_id, status="FAILED")
        raise
    client.set_terminated(run.info.run_id)
    try:
        client.create_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    mv = client.create_model_version(
        name, source=f"{run.info.artifact_uri}/bundle", run_id=run.info.run_id, tags=tags, description=description
    )
    mv = _wait_ready(client, name, str(mv.version))
    if alias:
        client.set_registered_model_alias(name, alias, str(mv.version))
    log.info("registered %s version %s (alias %s)", name, mv.version, alias)
    return ModelVersionRef(name=name, version=str(mv.version), source=str(mv.source), run_id=run.info.run_id)


def experiment_id_named(tracking_uri: str, name: str) -> str:
    """Id of the experiment `name`, created when missing."""
    client = _client(tracking_uri)
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found is not None else client.create_experiment(name)


def find_latest_run(tracking_uri: str, tags: Mapping[str, str]) -> str | None:
    """Id of the most recent FINISHED run carrying all `tags`, or None (e.g. for benchmarks)."""
    client = _client(tracking_uri)
    filters = [f"tags.`{k}` = '{v}'" for k, v in tags.items()] + ["attributes.status = 'FINISHED'"]
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return None
    runs = client.search_runs(
        experiments, " and ".join(filters), order_by=["attributes.start_time DESC"], max_results=1
    )
    return runs[0].info.run_id if runs else None


def set_alias(tracking_uri: str, name: str, alias: str, version: str) -> None:
    """Point `models:/name@alias` at `version`."""
    _client(tracking_uri).set_registered_model_alias(name, alias, version)


def _wait_ready(client: MlflowClient, name: str, version: str, timeout_s: float = 300.0) -> ModelVersion:
    deadline = time.monotonic() + timeout_s
    while True:
        mv = client.get_model_version(name, version)
        if mv.status == "READY":
            return mv
        if mv.status == "FAILED_REGISTRATION" or time.monotonic() > deadline:
            raise RegistryError(f"model {name} version {version} did not become ready: {mv.status_message}")
        time.sleep(0.5)


def _client(tracking_uri: str) -> MlflowClient:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _reader_client(tracking_uri: str) -> MlflowClient:
    """A client for reading only. A SQLite store must exist already (MLflow would create an empty one
    for a mistyped path) and is opened read-only, so readers such as the service never write to it."""
    return _client(read_only_uri(tracking_uri))


def read_only_uri(tracking_uri: str) -> str:
    """`sqlite:///path` as a read-only SQLite URI (raises `RegistryError` when the file is missing);
    any other store unchanged. Spelled `sqlite+pysqlite://`: MLflow creates the parent directory of a
    `sqlite:///` path, which for `file:/abs/path?mode=ro` is a stray `file:` folder in the working
    directory."""
    db = _sqlite_path(tracking_uri)
    return tracking_uri if db is None else f"sqlite+pysqlite:///file:{quote(str(db))}?mode=ro&uri=true"


def _sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///path` URI (which must exist), None for other stores."""
    if not tracking_uri.startswith("sqlite:///") or tracking_uri.startswith("sqlite:///file:"):
        return None
    db = Path(tracking_uri.removeprefix("sqlite:///"))
    if not db.is_file():
        raise RegistryError(
            f"tracking URI {tracking_uri!r}: no database at {db} (a typo? readers never create one)",
            public="the tracking database does not exist",
        )
    return db.resolve()


# MLflow's registry tables (mlflow/store/model_registry/dbmodels); a store laid out otherwise is read
# through the MLflow client instead. Versions MLflow has deleted keep a row with this stage.
_VERSION_QUERY = """
SELECT v.name, v.version, v.source, v.run_id, v.status FROM model_versions v
WHERE v.name = ? AND v.version = ? AND (v.current_stage IS NULL OR v.current_stage != 'Deleted_Internal')
"""
_ALIAS_QUERY = "SELECT version FROM registered_model_aliases WHERE name = ? AND alias = ?"


def _resolve_sqlite(tracking_uri: str, name: str, alias: str | None, version: str | None) -> ModelVersionRef | None:
    """Resolve a version straight from a local SQLite store, read-only, without importing MLflow
    (about a second of the service's start-up). None (ask the MLflow client) for other stores, an
    unexpected layout, several workspaces or a version that is not READY."""
    db = _sqlite_path(tracking_uri)
    if db is None:
        return None
    try:
        with sqlite3.connect(f"file:{quote(str(db))}?mode=ro", uri=True, timeout=10.0) as conn:
            if alias is not None:
                rows = conn.execute(_ALIAS_QUERY, (name, alias)).fetchall()
                if len(rows) != 1:
                    return None if rows else _not_found(tracking_uri, f"models:/{name}@{alias}")
                version = str(rows[0][0])
            found = conn.execute(_VERSION_QUERY, (name, int(str(version)))).fetchall()
    except sqlite3.Error as err:
        log.debug("reading %s directly failed (%s); asking the MLflow client", tracking_uri, err)
        return None
    if len(found) != 1 or found[0][4] != "READY":
        return None
    row_name, row_version, source, run_id, _ = found[0]
    return ModelVersionRef(name=row_name, version=str(row_version), source=str(source), run_id=run_id)


def _not_found(tracking_uri: str, uri: str) -> NoReturn:
    raise RegistryError(
        f"cannot resolve {uri} in the registry at {tracking_uri}: no such alias",
        public="the model alias or version is not in the registry",
    )


def _transport_reason(text: str) -> str:
    """'[Errno 111] Connection refused' out of urllib3's nested retry message, else the message."""
    match = re.search(r"\[Errno -?\d+\][^\"')]*", text)
    return match.group(0).strip() if match else text


def _first_line(err: Exception) -> str:
    text = getattr(err, "message", None) or str(err)
    return text.strip().splitlines()[0] if text.strip() else type(err).__name__
