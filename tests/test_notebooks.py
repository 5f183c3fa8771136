"""Every notebook executes top to bottom against real tracked runs and renders its figures.

The runs: a MovieLens-shaped planted log (items walk i -> i + 1; a movies.dat with titles and genres),
trained through `pipelines.train` as three SASRec seeds, one SASRec with a changed setting and one
BERT4Rec, each 2 epochs, in a temporary sqlite MLflow store; the best SASRec exported and registered
as `models:/nb@champion` for the retrieval notebook.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

from pipelines import export as export_cli
from pipelines import prepare_data
from pipelines import train as train_cli

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
DATASET = "planted-ml"
GENRES = ("Comedy", "Drama", "Action|Thriller", "Animation|Children's")
TITLES = {1: "Toy Story", 11: "Fargo", 21: "Star Wars: Episode IV - A New Hope", 31: "Aladdin"}
# figures each notebook draws (image outputs expected at least)
FIGURES = {"01_leaderboard": 3, "02_where_models_differ": 3, "03_retrieval": 1, "04_item_embeddings": 1}


def write_movielens(root: Path, n_users: int = 60, n_items: int = 40) -> None:
    """ratings.dat (`user::item::rating::ts`) with the planted walk and movies.dat with genres by block."""
    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    for user in range(1, n_users + 1):
        start, length = int(rng.integers(n_items)), int(rng.integers(8, 14))
        rows += [f"{user}::{(start + t) % n_items + 1}::4::{1000 + 10 * t}" for t in range(length)]
    (root / "ratings.dat").write_text("\n".join(rows) + "\n")
    movies = [
        f"{i}::{TITLES.get(i, f'Movie {i}')} ({1990 + i % 10})::{GENRES[(i - 1) * len(GENRES) // n_items]}"
        for i in range(1, n_items + 1)
    ]
    (root / "movies.dat").write_text("\n".join(movies) + "\n", encoding="latin-1")


@pytest.fixture(scope="module")
def tracked_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment the notebooks read: a store with five finished runs and a registered model."""
    root = tmp_path_factory.mktemp("notebooks")
    write_movielens(root)
    data = {
        "name": DATASET,
        "output_dir": str(root / "processed"),
        "source": {
            "format": "movielens",
            "path": str(root / "ratings.dat"),
            "items": {"format": "movielens", "path": str(root / "movies.dat")},
        },
        "min_user_interactions": 1,
        "min_item_interactions": 1,
    }
    (root / "data.yaml").write_text(yaml.safe_dump(data))
    assert prepare_data.main(["--config", str(root / "data.yaml")]) == 0
    uri = f"sqlite:///{root}/mlflow.db"
    env = {"MLFLOW_TRACKING_URI": uri, "RECSYS_DATASET": DATASET, "RECSYS_MODEL_URI": "models:/nb@champion"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        models = {
            "sasrec": {"name": "sasrec", "params": {"max_len": 8, "hidden": 16, "n_heads": 2, "dropout": 0.1}},
            "bert4rec": {"name": "bert4rec", "params": {"max_len": 8, "hidden": 16, "n_heads": 2}},
        }
        records = []
        for model, overrides in (
            ("sasrec", []),
            ("sasrec", ["train.seed=1"]),
            ("sasrec", ["train.seed=2"]),
            ("sasrec", ["train.lr=0.02"]),  # not at defaults
            ("bert4rec", []),
        ):
            exp = root / f"{model}.yaml"
            cfg = {
                "name": f"{model}_{DATASET}",
                "data": str(root / "data.yaml"),
                "model": models[model],
                "train": {"max_epochs": 2, "batch_size": 32, "lr": 0.005, "progress_bar": False, "num_threads": 1},
                "tracking": {"experiment": "notebooks", "artifact_dir": str(root / "artifacts")},
            }
            exp.write_text(yaml.safe_dump(cfg))
            out = root / f"record{len(records)}.json"
            assert train_cli.main(["--config", str(exp), "--results-json", str(out), *overrides]) == 0
            records.append(json.loads(out.read_text()))
        best = max((r for r in records if r["model"] == "sasrec"), key=lambda r: r["metrics"]["val/ndcg@10"])
        args = ["--run-id", best["mlflow_run_id"], "--name", "nb", "--alias", "champion", "--tracking-uri", uri]
        assert export_cli.main(args) == 0
    return env


def test_every_notebook_is_tested() -> None:
    assert [p.stem for p in NOTEBOOKS] == sorted(FIGURES)


def _execute(path: Path) -> nbformat.NotebookNode | BaseException:
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}})
    try:
        client.execute()
    except Exception as err:  # a cell error: reported by that notebook's test
        return err
    return notebook


@pytest.fixture(scope="module")
def executed(tracked_runs: dict[str, str]) -> dict[str, nbformat.NotebookNode | BaseException]:
    """Every notebook executed, all kernels at once: each spends most of its time starting up and importing,
    which overlaps well (about half the time of one after the other on 2 cores)."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in tracked_runs.items():
            mp.setenv(key, value)
        mp.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
        with ThreadPoolExecutor(len(NOTEBOOKS)) as pool:
            return dict(zip([p.stem for p in NOTEBOOKS], pool.map(_execute, NOTEBOOKS), strict=True))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    code = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), (
        f"{path.name} is committed with outputs: strip them (jupyter nbconvert --clear-output --inplace)"
    )


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_draws(path: Path, executed: dict[str, nbformat.NotebookNode | BaseException]) -> None:
    notebook = executed[path.stem]
    if isinstance(notebook, BaseException):
        raise notebook
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= FIGURES[path.stem], f"{path.name} rendered {len(images)} figures"
