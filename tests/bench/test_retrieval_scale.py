"""bench/retrieval_scale.py and its modules: chunked exact search and neighbour distances against direct
computations (retrieval_measure), the choice of defaults on a hand-made table and the docs' table against
the committed records (retrieval_choice), and the CLI's --render."""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recsys.retrieval.index import exact_search

REPO_ROOT = Path(__file__).resolve().parents[2]


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / f"bench/{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def measure() -> Any:
    return _load("retrieval_measure")


@pytest.fixture(scope="module")
def choice() -> Any:
    return _load("retrieval_choice")


def _docs_records() -> list[str]:
    docs = (REPO_ROOT / "docs/benchmarks.md").read_text()
    return sorted(set(re.findall(r"<!-- table: (bench/results/retrieval_scale[\w.]*\.json) -->", docs)))


def _catalog(n: int, dim: int, seed: int) -> np.ndarray:
    emb = np.zeros((n + 1, dim), dtype=np.float32)
    emb[1:] = np.random.default_rng(seed).standard_normal((n, dim))
    return emb


def test_chunked_exact_top_equals_exact_search(measure: Any) -> None:
    emb = _catalog(500, 8, 0)
    queries = np.random.default_rng(1).standard_normal((7, 8)).astype(np.float32)
    got, _ = measure.exact_top(emb, queries, 20, chunk_rows=64)  # many item chunks, one cut mid-way
    _, want = exact_search(emb, queries, 20)
    np.testing.assert_array_equal(got, want.numpy())


def test_nn_ratio_matches_a_direct_computation(measure: Any) -> None:
    emb = _catalog(300, 6, 2)
    rows = np.array([1, 5, 299, 300])
    got = measure.nn_ratio(emb, rows, chunk_rows=50)
    x = emb[1:].astype(np.float64)
    dist = [min(np.linalg.norm(x[r - 1] - x[j]) for j in range(300) if j != r - 1) for r in rows]
    ratio = np.array(dist) / np.median(np.linalg.norm(x, axis=1))
    assert got["p50"] == pytest.approx(np.percentile(ratio, 50), rel=2e-3)
    assert got["p90"] == pytest.approx(np.percentile(ratio, 90), rel=2e-3)


def _kind(recalls: list[float], p99: list[float], index_bytes: int, param: str = "nprobe") -> dict[str, Any]:
    values = [16, 32, 64][: len(recalls)]
    sweep = [
        {"value": v, "param": param, "recall@100": r, "single_ms_p99": p, "refine_factor": None}
        for v, r, p in zip(values, recalls, p99, strict=True)
    ]
    return {"built": True, "index_bytes": index_bytes, "sweep": sweep}


def test_choice_takes_the_first_setting_that_holds_at_every_size(choice: Any) -> None:
    args = argparse.Namespace(target_recall=0.95, p99_ms=20.0, memory_budget_gb=8.0)
    results = {
        "sizes": {
            "1000": {"kinds": {"ivf_flat": _kind([0.96, 0.99, 1.0], [1, 2, 30], 10**6)}},
            "10000": {"kinds": {"ivf_flat": _kind([0.90, 0.97, 0.99], [1, 2, 3], 10**7)}},
        }
    }
    picked = choice.choose(results, 100, args)
    assert picked["chosen"] == {"kind": "ivf_flat", "nprobe": 32}  # 16 fails at 10k; 64 is slower at 1k
    results["sizes"]["1000"]["kinds"]["ivf_flat"]["sweep"][1]["single_ms_p99"] = 25.0
    assert choice.choose(results, 100, args)["chosen"] is None  # 64 reaches recall but misses the p99
    results["sizes"]["10000"]["kinds"]["ivf_flat"]["index_bytes"] = 9 * 10**9
    assert "GB" in choice.choose(results, 100, args)["rejected"][0]
    del results["sizes"]["10000"]["kinds"]["ivf_flat"]
    assert choice.choose(results, 100, args)["rejected"][0] == "ivf_flat: not built at every size"


def test_docs_show_the_committed_tables(choice: Any) -> None:
    docs = (REPO_ROOT / "docs/benchmarks.md").read_text()
    named = _docs_records()
    assert named, "docs/benchmarks.md names no retrieval_scale record"
    for path in named:
        table = choice.render_table(json.loads((REPO_ROOT / path).read_text()))
        assert table in docs, f"the table of {path} in docs/benchmarks.md is stale: run --render {path}"


def test_render_flag_prints_the_table(choice: Any, capsys: pytest.CaptureFixture[str]) -> None:
    path = REPO_ROOT / _docs_records()[0]
    assert _load("retrieval_scale").main(["--render", str(path)]) == 0
    assert capsys.readouterr().out == choice.render_table(json.loads(path.read_text()))
