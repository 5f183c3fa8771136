"""A tiny processed dataset and an untrained, seeded SASRec saved as a model directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from retrieval_support import MODEL_CFG, N_ITEMS, write_processed

from recsys.model_io import save_model
from recsys.registry import build_model


@pytest.fixture(scope="module")
def processed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_processed(tmp_path_factory.mktemp("processed"), np.random.default_rng(0))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model("sasrec", MODEL_CFG, N_ITEMS).eval()
    out = tmp_path_factory.mktemp("model") / "model"
    save_model(model, "sasrec", MODEL_CFG, N_ITEMS, out)
    return out
