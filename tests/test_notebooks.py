"""Notebooks execute top to bottom against a real (temporary) MLflow store holding a training run."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

from recsys.train.experiment import load_experiment
from recsys.train.run import train_experiment

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_offline_evaluation_notebook_reads_runs(
    tmp_path: Path, planted_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp = {
        "name": "nb",
        "data": str(planted_dataset / "data.yaml"),
        "model": {"name": "sasrec", "params": {"max_len": 8, "hidden": 16, "n_heads": 2}},
        "train": {"max_epochs": 2, "batch_size": 32, "progress_bar": False},
        "tracking": {"experiment": "nb-test", "artifact_dir": str(tmp_path / "artifacts")},
    }
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(exp))
    outcome = train_experiment(load_experiment(tmp_path / "exp.yaml"), tracking_uri=uri)
    assert outcome is not None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("RECSYS_EXPERIMENT", "nb-test")
    nb = nbformat.read(REPO / "notebooks/offline_evaluation.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    outputs = "".join(str(o) for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", []))
    assert "1 runs in experiment 'nb-test'" in outputs
    assert "test/ndcg@10" in outputs
