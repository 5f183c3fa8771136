"""Imports point down: loading a config pulls in neither MLflow nor Lightning, and the service
process never imports Lightning. Each check runs in a fresh interpreter (a subprocess), so modules
imported by other tests cannot hide an import."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from recsys.data.schema import META_FILE
from recsys.model_io import save_model
from recsys.registry import build_model
from recsys.retrieval.bundle import write_bundle
from recsys.retrieval.index import IndexConfig

REPO = Path(__file__).resolve().parents[1]
LIGHTNING = ("pytorch_lightning", "lightning")


def _loaded_after(code: str) -> dict[str, bool]:
    """Run `code` in a new interpreter at the repo root; which of MLflow / Lightning it imported."""
    probe = textwrap.dedent(code) + textwrap.dedent(
        """
        import json, sys
        print(json.dumps({m: m in sys.modules for m in ("mlflow", "pytorch_lightning", "lightning")}))
        """
    )
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded: dict[str, bool] = json.loads(proc.stdout.strip().splitlines()[-1])
    return loaded


def test_loading_configs_imports_neither_mlflow_nor_lightning() -> None:
    loaded = _loaded_after(
        """
        from recsys.config import load_config
        from recsys.data.config import DataConfig
        from recsys.train.experiment import load_experiment

        cfg = load_experiment("configs/experiment/sasrec_beauty.yaml", ["train.max_epochs=3"])
        data = load_config(DataConfig, cfg.data)
        assert cfg.model.name == "sasrec" and data.name
        """
    )
    assert not any(loaded.values()), loaded


def test_the_service_never_imports_lightning(planted_dataset: Path, tmp_path: Path) -> None:
    """The app is built and a real bundle loaded into it, as `pipelines.serve` does before binding."""
    data_dir = planted_dataset / "processed"
    n_items = int(json.loads((data_dir / META_FILE).read_text())["n_items"])
    params = {"max_len": 8, "hidden": 16, "n_heads": 2}
    torch.manual_seed(0)
    model = build_model("sasrec", params, n_items).eval()
    save_model(model, "sasrec", params, n_items, tmp_path / "model")
    with torch.no_grad():
        emb = model.item_embeddings().numpy()
    write_bundle(
        tmp_path / "bundle",
        model_dir=tmp_path / "model",
        item_emb=emb,
        data_dir=data_dir,
        index_config=IndexConfig(kind="flat"),
        name="imports",
        source_run_id=None,
    )
    loaded = _loaded_after(
        f"""
        import pipelines.serve
        from recsys.serve.app import create_app
        from recsys.serve.settings import ServeSettings

        app = create_app(ServeSettings(model_uri={str(tmp_path / "bundle")!r}))
        app.state.holder.load()
        assert app.state.holder.current is not None
        """
    )
    assert not any(loaded[m] for m in LIGHTNING), loaded
    assert not loaded["mlflow"], loaded  # a second of start-up: only a remote registry needs it


def test_models_do_not_import_the_registry_or_model_io() -> None:
    """`recsys.models` sits below the registry: importing every model loads neither."""
    code = """
        import sys
        import recsys.models.base, recsys.models.bert4rec, recsys.models.icsrec, recsys.models.sasrec
        assert "recsys.registry" not in sys.modules and "recsys.model_io" not in sys.modules
        """
    assert not any(_loaded_after(code).values())
