"""AdamW's foreach and fused implementations take the same steps as the default one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recsys.data.datamodule import SequenceDataModule
from recsys.objectives import training_losses
from recsys.registry import build_model
from recsys.train.experiment import EvalConfig, TrainConfig
from recsys.train.module import RecModule

TINY = {"max_len": 8, "hidden": 16, "n_heads": 2, "n_layers": 2, "dropout": 0.0, "attn_dropout": 0.0}
STEPS = 5


def trained_weights(impl: str, data_dir: Path) -> tuple[dict[str, torch.Tensor], type[torch.optim.Optimizer]]:
    """The weights after STEPS optimiser steps of a seeded tiny SASRec with `impl`, and the optimiser's flags."""
    torch.manual_seed(0)
    cfg = TrainConfig(lr=5e-3, batch_size=16, weight_decay=0.1, optimizer_impl=impl)  # type: ignore[arg-type]
    module = RecModule(build_model("sasrec", TINY, 40), cfg, EvalConfig())
    optimizer = module.build_optimizer()
    group = optimizer.param_groups[0]
    flags = {"default": (None, None), "foreach": (True, None), "fused": (None, True)}
    assert (group["foreach"], group["fused"]) == flags[impl]
    dm = SequenceDataModule(data_dir, max_len=8, batch_size=16, eval_batch_size=64, seed=0)
    dm.setup()
    for step, batch in enumerate(dm.train_dataloader()):
        if step == STEPS:
            break
        loss = training_losses(module.model, module.objective, batch, module.loss).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {k: v.detach().clone() for k, v in module.model.state_dict().items()}, type(optimizer)


@pytest.fixture(scope="module")
def reference(planted_dataset: Path) -> dict[str, torch.Tensor]:
    return trained_weights("default", planted_dataset / "processed")[0]


@pytest.mark.parametrize("impl", ["foreach", "fused"])
def test_implementations_take_the_same_first_steps(
    impl: str, reference: dict[str, torch.Tensor], planted_dataset: Path
) -> None:
    weights, kind = trained_weights(impl, planted_dataset / "processed")
    assert kind is torch.optim.AdamW
    torch.manual_seed(0)
    initial = build_model("sasrec", TINY, 40).state_dict()
    moved = max(float((initial[k] - reference[k]).abs().max()) for k in reference)
    assert moved > 1e-3, "the steps did not move the weights: nothing was compared"
    for name, value in reference.items():
        # the key bias's gradient is rounding noise (it cannot change a softmax), and Adam scales noise to
        # lr-sized steps: implementations differ there by ~1e-6 after 5 steps, elsewhere by ~1e-8
        torch.testing.assert_close(weights[name], value, rtol=1e-5, atol=1e-5, msg=f"{impl}: {name}")


def test_fused_on_a_device_without_the_kernel_is_refused() -> None:
    module = RecModule(build_model("sasrec", TINY, 40).to("meta"), TrainConfig(optimizer_impl="fused"), EvalConfig())
    with pytest.raises(ValueError, match="optimizer_impl='fused'.*no fused AdamW on meta.*'foreach' or 'default'"):
        module.build_optimizer()


def test_fused_under_mixed_precision_with_clipping_is_refused_at_config_time() -> None:
    """Lightning cannot clip the gradients of a fused AdamW under AMP: the config says so before a fit starts."""
    with pytest.raises(ValueError, match="grad_clip=null or optimizer_impl=default"):
        TrainConfig(optimizer_impl="fused", precision="bf16-mixed")
    TrainConfig(optimizer_impl="fused", precision="bf16-mixed", grad_clip=None)  # no clipping: allowed
    TrainConfig(optimizer_impl="fused")  # fp32 clips on its own
