"""A registered version as a standard MLflow model: the `python_function` flavor beside the bundle files.

`mlflow.pyfunc.load_model("models:/<name>@<alias>").predict(frame)` then answers a frame of queries
(a `user_id` and/or a `history` column, as `python -m pipelines.recommend` reads them) with the
service's own top-k, so MLflow's serving and deployment tools (`mlflow models serve`) work on a
version. The flavor's one artifact, `bundle`, is the version directory itself (path `.`): the bundle
files stay where the service reads them and are not copied. The model needs `recsys` importable
where it is loaded (its pip requirements list the third-party packages only).

The one import upward, with a reason: serve sits above tracking, and this class answers through the
service's query path, so it imports `recsys.serve` when MLflow loads a version, never at import time.
"""

from __future__ import annotations

import importlib.metadata
import math
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow.pyfunc
import pandas as pd
from mlflow.models import Model, ModelSignature
from mlflow.pyfunc.model import PythonModel, PythonModelContext
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
from mlflow.types.schema import Array

if TYPE_CHECKING:
    from recsys.serve.state import LoadedModel

ARTIFACT = "bundle"
DEFAULT_K = 10
MODEL_CONFIG = ("ranker_uri", "ranker_top_n", "tracking_uri")  # service settings `load_model(model_config=)` takes
# the service's third-party runtime; recsys itself is not on PyPI
REQUIREMENTS = ("torch", "faiss-cpu", "numpy", "polars", "pyarrow", "pandas", "pydantic", "mlflow")
SIGNATURE = ModelSignature(
    inputs=Schema(
        [
            ColSpec(DataType.string, "user_id", required=False),
            ColSpec(Array(DataType.string), "history", required=False),
            ColSpec(DataType.long, "k", required=False),
        ]
    ),
    params=ParamSchema([ParamSpec("k", DataType.long, DEFAULT_K)]),
)


class BundlePyfunc(PythonModel):
    """Top-k for a frame of queries from the version's bundle, through the service's query path.

    `mlflow.pyfunc.load_model(uri, model_config={"ranker_uri": ...})` adds a ranking stage as the
    service's settings do (`MODEL_CONFIG`; the tracking URI defaults to MLflow's current one).
    """

    def load_context(self, context: PythonModelContext) -> None:
        from recsys.serve.settings import ServeSettings
        from recsys.serve.state import load_model_version

        config = {key: value for key, value in (context.model_config or {}).items() if value is not None}
        config.setdefault("tracking_uri", mlflow.get_tracking_uri())  # where the version itself came from
        self._model: LoadedModel = load_model_version(ServeSettings(model_uri=context.artifacts[ARTIFACT], **config))

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """The top-k of each row: columns row and/or user_id, rank, item_id, score (`recsys.serve.offline`).

        Args:
            context: MLflow's context (unused: `load_context` read it).
            model_input: one query per row: `user_id` and/or `history` (a list of raw item ids).
            params: `k`, items per query (default 10); a `k` column holding one value wins.
        """
        del context
        import polars as pl

        from recsys.serve.offline import check_queries, recommend_chunks

        k = int((params or {}).get("k") or DEFAULT_K)
        if "k" in model_input.columns:
            ks = model_input["k"].dropna().unique()
            if len(ks) > 1:
                raise ValueError(f"the k column holds several values {sorted(ks.tolist())[:5]}; give one k per call")
            if len(ks):
                k = int(ks[0])
        series = []
        if "user_id" in model_input.columns:
            series.append(pl.Series("user_id", [_text_or_none(v) for v in model_input["user_id"]], dtype=pl.String))
        if "history" in model_input.columns:
            lists = [None if _missing(v) else [str(i) for i in v] for v in model_input["history"]]
            series.append(pl.Series("history", lists, dtype=pl.List(pl.String)))
        frame = pl.DataFrame(series)
        queries = check_queries(frame, self._model.recommender.bundle)
        chunks = list(recommend_chunks(self._model, queries, k=k, chunk_size=1024))
        return pl.concat(chunks).to_pandas()


def add_pyfunc_flavor(directory: Path) -> None:
    """Write MLflow's model files (MLmodel, the pickled `BundlePyfunc`, requirements) into a bundle
    directory, so the version registered from it loads with `mlflow.pyfunc.load_model`."""
    with tempfile.TemporaryDirectory(prefix="recsys-pyfunc-") as tmp:
        staged = Path(tmp) / "model"
        with warnings.catch_warnings():
            # an input example would make MLflow load the model here, before its bundle sits beside it
            warnings.filterwarnings("ignore", message=".*An input example was not provided")
            mlflow.pyfunc.save_model(
                str(staged),
                python_model=BundlePyfunc(),
                signature=SIGNATURE,
                pip_requirements=_requirements(),
                model_config=dict.fromkeys(MODEL_CONFIG),  # the keys a load may set; None = the service's default
            )
        model = Model.load(str(staged / "MLmodel"))
        # the artifact is the directory the MLmodel file sits in: MLflow joins the model path with it
        model.flavors[mlflow.pyfunc.FLAVOR_NAME]["artifacts"] = {ARTIFACT: {"path": ".", "uri": "."}}
        model.save(str(staged / "MLmodel"))
        for path in staged.iterdir():
            target = directory / path.name
            if target.exists():
                raise FileExistsError(f"{target} exists: the bundle already holds an MLflow model file")
            path.rename(target)


def _requirements() -> list[str]:
    """`name==version` of each installed package of `REQUIREMENTS`."""
    pinned = []
    for name in REQUIREMENTS:
        try:
            pinned.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return pinned


def _missing(value: object) -> bool:
    """None or pandas' NaN (a missing cell of an object column)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _text_or_none(value: object) -> str | None:
    return None if _missing(value) else str(value)
