"""bench/cold_start.py: a variant that reuses another's fit must train exactly as it (same config but its part)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cold_start_bench", ROOT / "bench/cold_start.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("split_kind", ["cold", "leave_one_out"])
def test_a_reused_fit_is_checked_to_differ_only_in_its_part(split_kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the experiment configs name their `_base` from the repository root, as the bench runs
    bench = _bench()
    for name, (base, parts) in bench.SAME_FIT.items():
        cfg = bench.experiment(name, split_kind, 1, ["train.max_epochs=1"], 1)
        bench.same_fit_config(cfg, bench.experiment(base, split_kind, 1, ["train.max_epochs=1"], 1), parts)
        other = bench.experiment(base, split_kind, 1, ["train.max_epochs=1", "model.params.id_len=20"], 1)
        with pytest.raises(ValueError, match=f"{cfg.name} does not train as .*: they differ in \\['model'\\]"):
            bench.same_fit_config(cfg, other, parts)
        seed_changed = bench.experiment(base, split_kind, 2, ["train.max_epochs=1"], 1)
        with pytest.raises(ValueError, match="they differ in \\['split', 'train'\\]|they differ in \\['train'\\]"):
            bench.same_fit_config(cfg, seed_changed, parts)
    assert bench.record_path("recformer_id_user_prior", split_kind, 1, ["train.max_epochs=1"]).name == (
        f"recformer_id_user_prior_max_epochs1_{'cold' if split_kind == 'cold' else 'loo'}_seed1.json"
    )
