"""The approximate-index defaults are the settings bench/retrieval_scale.py chose from its table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recsys.retrieval.index import IndexConfig

RECORD = Path(__file__).resolve().parents[2] / "bench/results/retrieval_scale.json"


def test_defaults_are_the_benchmark_choice() -> None:
    record = json.loads(RECORD.read_text())
    choice = record["results"].get("choice", {}).get("chosen")
    if choice is None:
        pytest.skip("the recorded table chose no setting (partial run); the defaults are not from it")
    defaults = IndexConfig()
    for field, value in choice.items():
        if field != "kind":  # `kind` stays flat (exact) by default: the choice is for large catalogs
            assert getattr(defaults, field) == value, f"IndexConfig.{field} is not the table's choice {value}"
    measured = record["results"]["sizes"]
    config = next(iter(measured.values()))["kinds"][choice["kind"]]["config"]
    for field in ("nlist", "pq_m", "pq_nbits", "hnsw_m", "ef_construction", "max_train_points", "kmeans_iters"):
        assert getattr(defaults, field) == config[field], f"IndexConfig.{field} differs from the measured index"
