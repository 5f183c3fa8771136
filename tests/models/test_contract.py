"""The model contract, checked for every registered model (implicit-style contract test)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recsys.data.datamodule import SequenceDataModule
from recsys.eval.evaluate import evaluate
from recsys.model_io import load_model, save_model
from recsys.registry import MODELS, build_model
from recsys.train.experiment import EvalConfig, TrainConfig
from recsys.train.module import RecModule

ODD = {"hidden": 32, "n_heads": 4, "max_len": 7, "dropout": 0.1, "attn_dropout": 0.1}
N_ITEMS = 99


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    items = torch.randint(1, N_ITEMS + 1, (5, 7), generator=gen)
    items[0, :3] = 0  # left padding
    items[1, :6] = 0
    return items, items != 0


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("attention", ["sdpa", "linear"])
@pytest.mark.parametrize("norm", ["pre", "post"])
def test_shapes_on_odd_sizes(name: str, attention: str, norm: str) -> None:
    model = build_model(name, {**ODD, "attention": attention, "norm": norm}, N_ITEMS).eval()
    items, mask = _batch()
    assert model.encode(items, mask).shape == (5, 7, 32)
    assert model.sequence_representation(items, mask).shape == (5, 32)
    assert model.item_embeddings().shape == (N_ITEMS + 1, 32)
    assert torch.isfinite(model.sequence_representation(items, mask)).all()


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("attention", ["sdpa", "linear"])
def test_representation_by_length_matches_one_padded_call(name: str, attention: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, {**ODD, "attention": attention}, N_ITEMS).eval()
    items = torch.randint(1, N_ITEMS + 1, (9, 7), generator=torch.Generator().manual_seed(3))
    for row, pad in enumerate([0, 6, 3, 5, 1, 6, 2, 4, 0]):  # lengths 7, 1, 4, 2, 6, 1, 5, 3, 7
        items[row, :pad] = 0
    params = [p for p in model.parameters() if p.requires_grad]
    reference = model.sequence_representation(items, items != 0)  # [9, 32]
    ref_grads = torch.autograd.grad(reference.square().sum(), params, allow_unused=True)
    for groups in (1, 2, 4, 9, 20):
        grouped = model.representation_by_length(items, groups)
        torch.testing.assert_close(grouped, reference, atol=1e-5, rtol=1e-4)
        grads = torch.autograd.grad(grouped.square().sum(), params, allow_unused=True)
        for grad, ref_grad in zip(grads, ref_grads, strict=True):
            if ref_grad is not None:  # float32 sums in another order: compare to the gradient's scale
                assert (grad - ref_grad).abs().max() <= 2e-3 * ref_grad.abs().max() + 1e-7


@pytest.mark.parametrize("name", sorted(MODELS))
def test_unknown_config_key_names_it(name: str) -> None:
    with pytest.raises(ValueError, match="hiddden"):
        build_model(name, {"hiddden": 32}, N_ITEMS)


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(KeyError, match="sasrec"):
        build_model("sasrecc", {}, N_ITEMS)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("norm", ["pre", "post"])
def test_save_load_round_trip(name: str, norm: str, tmp_path: Path) -> None:
    params = {**ODD, "norm": norm}
    model = build_model(name, params, N_ITEMS).eval()
    save_model(model, name, params, N_ITEMS, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    items, mask = _batch()
    torch.testing.assert_close(loaded.sequence_representation(items, mask), model.sequence_representation(items, mask))


def _trained(
    name: str, dataset: Path, steps: int, norm: str = "pre"
) -> tuple[RecModule, SequenceDataModule, list[float]]:
    torch.manual_seed(0)
    objective = MODELS[name].objective
    dm = SequenceDataModule(
        dataset / "processed", max_len=7, batch_size=64, eval_batch_size=64, seed=0, objective=objective
    )
    dm.setup()
    params = {**ODD, "dropout": 0.0, "attn_dropout": 0.0, "norm": norm}
    module = RecModule(build_model(name, params, dm.n_items), TrainConfig(lr=5e-3), EvalConfig())
    module.log = lambda *args, **kwargs: None  # type: ignore[method-assign]  # no Trainer attached
    opt = module.build_optimizer()
    rows = list(range(len(dm.train_set)))
    losses = []
    for _ in range(steps):
        loss = module._common_step(dm.train_set[rows], "train")
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return module, dm, losses


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("norm", ["pre", "post"])
def test_loss_decreases_in_20_steps(name: str, norm: str, planted_dataset: Path) -> None:
    _, _, losses = _trained(name, planted_dataset, 20, norm)
    assert sum(losses[-5:]) < 0.9 * sum(losses[:5])


# full-batch steps to learn the planted walk; masked training sees the last position less often
PLANTED_STEPS = {"sasrec": 150, "bert4rec": 600, "icsrec": 20}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_planted_next_item_is_ranked_first(name: str, planted_dataset: Path) -> None:
    module, dm, _ = _trained(name, planted_dataset, PLANTED_STEPS[name])
    result = evaluate(module.model, dm.test_dataloader(), split="test", ks=(1, 10))
    assert result.metrics["test/hr@1"] >= 0.9, result.metrics


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("norm", ["pre", "post"])
def test_representation_does_not_depend_on_left_padding(name: str, norm: str) -> None:
    """Eval batches are trimmed to their longest history: a history padded to any width up to
    max_len must give the same representation (BERT4Rec once dropped an item of narrow batches)."""
    model = build_model(name, {**ODD, "norm": norm}, N_ITEMS).eval()
    history = torch.tensor([[5, 17, 42, 8]])
    reference = model.sequence_representation(history, history != 0)
    for width in (5, 6, 7):
        padded = torch.cat([torch.zeros(1, width - 4, dtype=torch.long), history], dim=1)
        torch.testing.assert_close(model.sequence_representation(padded, padded != 0), reference)
    full = torch.randint(1, N_ITEMS + 1, (1, 7), generator=torch.Generator().manual_seed(1))  # max_len items
    one_item = torch.tensor([[9]])
    assert torch.isfinite(model.sequence_representation(full, full != 0)).all()
    assert torch.isfinite(model.sequence_representation(one_item, one_item != 0)).all()
