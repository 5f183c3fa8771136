"""bench/cold_start.py: a variant that reuses another's fit must train exactly as it (same config but its part)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from recsys.data.item_features import ItemFeatures

ROOT = Path(__file__).resolve().parents[2]


def _features() -> ItemFeatures:
    titles = ["Toy Story", "Heat", "Alien", "Babe", "Casino", "Fargo", "Jumanji"]
    genres = ["Animation", "Action", "Horror", "Drama", "Crime", "Crime", "Adventure"]
    text: dict[str, list[str | None]] = {"title": [None, *titles], "genres": [None, *genres]}
    return ItemFeatures(7, ["", *map(str, range(1, 8))], text, None, 0)


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


def test_scoring_parts_added_to_a_saved_fit_give_the_model_configured_with_them(tiny_text_backbone: Path) -> None:
    from recsys.models.recformer import Recformer, RecformerConfig

    bench = _bench()
    counts = torch.tensor([0, 4, 1, 9, 3, 2, 0, 0])  # items 6 and 7 never trained
    base: dict[str, object] = {"backbone": str(tiny_text_backbone), "max_len": 3, "max_item_tokens": 10}
    base |= {"max_tokens": 24, "fields": ("title", "genres")}
    base |= {"item_ids": True, "id_len": 5, "id_hidden": 8, "id_heads": 2, "item_bias": True}
    base |= {"text_weights": (0.0, 1.0)}
    parts = {"item_prior": True, "prior_weights": (0.0, 0.5), "borrow_ids": 2, "text_weights": (0.0, 1.0, 2.0)}
    models = []
    for params in (base, base | parts):
        torch.manual_seed(0)
        model = Recformer(RecformerConfig(**params), 7, _features())  # type: ignore[arg-type]
        model.observe_training_items(torch.arange(1, 6), counts)
        models.append(model.eval())
    saved, configured = models
    bench.add_scoring_parts(saved, parts, counts)
    assert saved.cfg == configured.cfg
    assert saved.part_weights() == {"text": (0.0, 1.0, 2.0), "prior": (0.0, 0.5)}
    with torch.no_grad():
        torch.testing.assert_close(saved.item_embeddings(), configured.item_embeddings())
