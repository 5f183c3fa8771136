"""The objectives refactor changed structure, not behaviour: per-step losses and validation metrics
of short seeded runs equal those recorded from the code before it (commit df67b3b).

`golden_training.json` was written once by running this harness's loop on that commit (training
steps through `RecModule._common_step`, epoch starts through the model's own hook); the loop here
is the same one through the public training step.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from recsys.data.datamodule import SequenceDataModule
from recsys.eval.evaluate import evaluate
from recsys.objectives import build_objective, training_losses
from recsys.registry import build_model
from recsys.train.experiment import TrainConfig
from recsys.train.module import build_loss

GOLDEN = json.loads((Path(__file__).with_name("golden_training.json")).read_text())
TINY = {"max_len": 8, "hidden": 16, "n_heads": 2, "n_layers": 2, "dropout": 0.1, "attn_dropout": 0.1}
CASES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {  # model, its params, train settings
    "sasrec": ("sasrec", {}, {}),
    "sasrec_length_pool": ("sasrec", {}, {"length_pool": 2}),
    "bert4rec": ("bert4rec", {"crop_prob": 0.3, "mask_prob": 0.3, "last_item_share": 0.1}, {}),
    "icsrec_prefix": ("icsrec", {"n_intents": 8}, {"length_pool": 2}),
    "icsrec_window": ("icsrec", {"n_intents": 8, "rows": "window", "similarity": "cos"}, {}),
}
STEPS = 20


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the recording's setting: summation order, hence the last bits
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("case", sorted(CASES))
def test_training_matches_the_recording(case: str, planted_dataset: Path, one_thread: None) -> None:
    name, params, train = CASES[case]
    torch.manual_seed(0)
    model = build_model(name, {**TINY, **params}, 40)
    objective = build_objective(model.objective)
    cfg = TrainConfig(lr=5e-3, batch_size=16, **train)
    dm = SequenceDataModule(
        planted_dataset / "processed",
        max_len=model.max_len,
        batch_size=cfg.batch_size,
        eval_batch_size=64,
        seed=0,
        rows=objective.train_rows,
        length_pool=cfg.length_pool,
    )
    dm.setup()
    targets_per_batch = None
    if cfg.length_pool:
        targets_per_batch = objective.expected_targets_per_batch(model, dm.train_set, cfg.batch_size)
    loss_fn = build_loss(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=0.0)
    losses: list[float] = []
    epoch = 0
    while len(losses) < STEPS:
        model.train()
        objective.on_epoch_start(model, dm.ordered_train_dataloader(), epoch)
        model.train()
        for batch in dm.train_dataloader():
            loss = training_losses(model, objective, batch, loss_fn, targets_per_batch=targets_per_batch).total
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(float(loss.detach()))
            if len(losses) == STEPS:
                break
        epoch += 1
    metrics = evaluate(model.eval(), dm.val_dataloader(), split="val", ks=(5, 10)).metrics

    assert losses == pytest.approx(GOLDEN[case]["losses"], abs=1e-6, rel=0)
    assert {k: float(v) for k, v in metrics.items()} == pytest.approx(GOLDEN[case]["val"], abs=1e-6, rel=0)
