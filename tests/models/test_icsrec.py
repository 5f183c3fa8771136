"""ICSRec beyond the registry contract: its config, the seeded intent clustering, every loss term."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from recsys.data.datamodule import SequenceDataModule
from recsys.data.datasets import TrainBatch
from recsys.eval.evaluate import evaluate
from recsys.models.icsrec import ICSRec, ICSRecConfig, assign_intents, fit_intents
from recsys.nn.losses import info_nce
from recsys.objectives import build_objective, training_losses
from recsys.registry import build_model
from recsys.train.experiment import EvalConfig, TrainConfig
from recsys.train.module import RecModule, build_loss

SMALL = {"max_len": 7, "hidden": 16, "n_heads": 2, "n_intents": 8, "dropout": 0.1, "attn_dropout": 0.1}


def _setup(planted_dataset: Path, **params: object) -> tuple[ICSRec, SequenceDataModule]:
    torch.manual_seed(0)
    model = build_model("icsrec", SMALL | params, 40)
    assert isinstance(model, ICSRec)
    objective = build_objective(model.objective)
    dm = SequenceDataModule(
        planted_dataset / "processed", max_len=7, batch_size=64, eval_batch_size=128, seed=0, rows=objective.train_rows
    )
    dm.setup()
    return model, dm


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_intents", 0),
        ("temperature", 0.0),
        ("coarse_weight", -1.0),
        ("kmeans_iters", 0),
        ("hidden", 31),
        ("anchor_pass", "twice"),
        ("contrast_warmup", -1),
        ("contrast_start", -1),
        ("rows", "users"),
        ("similarity", "l2"),
    ],
)
def test_bad_config_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        ICSRecConfig(**{field: value})  # type: ignore[arg-type]


def test_paper_defaults() -> None:
    cfg = ICSRecConfig()
    assert (cfg.max_len, cfg.hidden, cfg.n_layers, cfg.n_heads, cfg.dropout) == (50, 64, 2, 2, 0.5)
    assert cfg.n_intents == 512


def test_kmeans_is_seeded_and_reproducible() -> None:
    points = torch.randn(600, 16, generator=torch.Generator().manual_seed(0))
    first = fit_intents(points, 12, iters=10, redo=2, seed=5)
    again = fit_intents(points, 12, iters=10, redo=2, seed=5)
    other = fit_intents(points, 12, iters=10, redo=2, seed=6)
    assert first.shape == (12, 16)
    assert torch.equal(first, again)
    assert torch.equal(assign_intents(points, first), assign_intents(points, again))
    assert not torch.equal(first, other)
    assert fit_intents(points[:5], 12, iters=10, redo=1, seed=5).shape == (5, 16)  # fewer points than intents


def test_assignment_is_the_nearest_centroid() -> None:
    centroids = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    z = torch.tensor([[9.0, 1.0], [1.0, 1.0], [2.0, 7.0]])
    assert assign_intents(z, centroids).tolist() == [1, 0, 2]


def test_epoch_start_clustering_is_reproducible(planted_dataset: Path) -> None:
    model, dm = _setup(planted_dataset)
    assert len(model.intents) == 0
    model.refit(dm.ordered_train_dataloader())
    first = model.intents.clone()
    assert first.shape == (8, 16)
    assert model.training  # the eval-mode pass restores the training mode
    model.refit(dm.ordered_train_dataloader())
    assert torch.equal(model.intents, first)
    assert "intents" not in model.state_dict()  # refit every epoch, never saved


def test_every_loss_term_is_finite_and_has_gradients(planted_dataset: Path) -> None:
    model, dm = _setup(planted_dataset)
    model.refit(dm.ordered_train_dataloader())
    batch = dm.train_set[list(range(64))]
    objective = build_objective(model.objective)
    inputs, targets = objective.inputs_and_targets(model, batch)
    assert (targets[:, :-1] == 0).all() and torch.equal(targets[:, -1], batch.items[:, -1])
    hidden = model.encode(inputs, inputs != 0)
    terms = model.contrastive_terms(batch, hidden)
    assert terms.fine is not None
    weights = list(model.net.parameters())
    for name, term in [("coarse", terms.coarse), ("fine", terms.fine)]:
        assert torch.isfinite(term), name
        grads = torch.autograd.grad(term, weights, retain_graph=True, allow_unused=True)
        assert all(g is None or torch.isfinite(g).all() for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0, name
    loss = training_losses(model, objective, batch, build_loss(TrainConfig())).total  # CE + weighted terms
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


def test_without_intents_only_the_coarse_term(planted_dataset: Path) -> None:
    model, dm = _setup(planted_dataset, fine_weight=0.0, dropout=0.0, attn_dropout=0.0)
    model.refit(dm.ordered_train_dataloader())  # fine_weight 0: no clustering
    assert len(model.intents) == 0
    batch = dm.train_set[list(range(32))]
    hidden = model.encode(batch.items[:, :-1], batch.items[:, :-1] != 0)
    terms = model.contrastive_terms(batch, hidden)
    assert terms.fine is None
    extra = model.contrastive_loss(batch, hidden)
    assert extra is not None
    torch.testing.assert_close(extra, model.cfg.coarse_weight * terms.coarse)


def test_a_separate_anchor_pass_differs_only_by_its_dropout(planted_dataset: Path) -> None:
    shared, dm = _setup(planted_dataset)
    separate = build_model("icsrec", SMALL | {"anchor_pass": "separate"}, dm.n_items)
    assert isinstance(separate, ICSRec)
    separate.load_state_dict(shared.state_dict())
    shared.refit(dm.ordered_train_dataloader())
    separate.intents = shared.intents
    batch = dm.train_set[list(range(64))]
    history = batch.items[:, :-1]

    def coarse_and_fine(model: ICSRec, seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        terms = model.contrastive_terms(batch, model.encode(history, history != 0))
        assert terms.fine is not None
        return torch.stack([terms.coarse, terms.fine])

    for model in (shared, separate):
        model.eval()  # no dropout: the anchor's own pass is the rec pass's last state
    torch.testing.assert_close(coarse_and_fine(separate, 0), coarse_and_fine(shared, 0))
    for model in (shared, separate):
        model.train()  # with dropout the separate anchor is another draw
    assert not torch.allclose(coarse_and_fine(separate, 0), coarse_and_fine(shared, 0))


def test_a_batch_without_positives_is_refused(planted_dataset: Path) -> None:
    model, _ = _setup(planted_dataset)
    items = torch.tensor([[0, 1, 2, 3]])
    with pytest.raises(TypeError, match="ViewBatch"):
        build_objective(model.objective).extra_terms(
            model, TrainBatch(items), model.encode(items[:, :-1], items[:, :-1] != 0)
        )


@pytest.mark.parametrize(
    ("start", "warmup", "schedule"),
    [
        (0, 4, {0: None, 1: 1 / 4, 9: 1.0}),  # ramp from epoch 0
        (3, 2, {0: None, 2: None, 3: None, 4: 1 / 2, 5: 1.0}),  # rec loss alone, then the ramp's own epoch 0
    ],
)
def test_contrast_schedule_delays_and_ramps_the_terms(
    planted_dataset: Path, start: int, warmup: int, schedule: dict[int, float | None]
) -> None:
    model, dm = _setup(planted_dataset, contrast_start=start, contrast_warmup=warmup, dropout=0.0, attn_dropout=0.0)
    batch = dm.train_set[list(range(32))]
    hidden = model.encode(batch.items[:, :-1], batch.items[:, :-1] != 0)
    full = None
    for epoch, factor in schedule.items():
        model.refit(dm.ordered_train_dataloader(), epoch=epoch)
        if factor is None:
            assert model.contrastive_loss(batch, hidden) is None  # the rec loss alone
            assert len(model.intents) == 0  # and no clustering
            continue
        assert len(model.intents) == 8
        if full is None:  # the later epochs refit the same seeded intents: the same terms
            terms = model.contrastive_terms(batch, hidden)
            assert terms.fine is not None
            full = model.cfg.coarse_weight * terms.coarse + model.cfg.fine_weight * terms.fine
        torch.testing.assert_close(model.contrastive_loss(batch, hidden), full * factor)


def test_cosine_similarity_contrasts_normalised_representations(planted_dataset: Path) -> None:
    model, dm = _setup(planted_dataset, similarity="cos", temperature=0.2, dropout=0.0, attn_dropout=0.0)
    model.refit(dm.ordered_train_dataloader())
    batch = dm.train_set[list(range(32))]
    assert batch.positives is not None
    hidden = model.encode(batch.items[:, :-1], batch.items[:, :-1] != 0)
    terms = model.contrastive_terms(batch, hidden)
    # by hand: both views normalised; intents assigned from the raw representations
    views = [hidden[:, -1], model.sequence_representation(batch.positives, batch.positives != 0)]
    unit = [F.normalize(v, dim=-1) for v in views]
    coarse = info_nce(unit[0], unit[1], temperature=0.2, labels=batch.items[:, -1])
    torch.testing.assert_close(terms.coarse, coarse)
    intents = [assign_intents(v, model.intents) for v in views]
    prototypes = F.normalize(model.intents, dim=-1)
    fine = sum(info_nce(u, prototypes[k], temperature=0.2, labels=k) for u, k in zip(unit, intents, strict=True))
    assert terms.fine is not None
    torch.testing.assert_close(terms.fine, fine)
    assert terms.coarse <= torch.log(torch.tensor(2.0 * 32)) + 2 / 0.2  # logits bounded by 1 / temperature


def test_window_rows_need_the_shared_anchor() -> None:
    with pytest.raises(ValueError, match="anchor_pass"):
        ICSRecConfig(rows="window", anchor_pass="separate")


def test_window_rows_contrast_the_state_where_the_drawn_prefix_ends(planted_dataset: Path) -> None:
    model, dm = _setup(planted_dataset, rows="window", dropout=0.0, attn_dropout=0.0)
    assert model.objective == "window_views"
    model.refit(dm.ordered_train_dataloader())
    assert model.intents.shape == (8, 16)  # clustered from every position of every window
    batch = dm.train_set[list(range(64))]
    assert batch.positives is not None and batch.anchor_from_end is not None
    objective = build_objective(model.objective)
    inputs, targets = objective.inputs_and_targets(model, batch)
    assert torch.equal(targets[inputs != 0], batch.items[:, 1:][inputs != 0])  # next item at every position
    hidden = model.encode(inputs, inputs != 0)
    terms = model.contrastive_terms(batch, hidden)
    # by hand: row r's anchor is its state at the column before its drawn target
    col = inputs.shape[1] - 1 - batch.anchor_from_end
    rows = torch.arange(len(col))
    assert (inputs[rows, col] != 0).all()
    z_pos = model.sequence_representation(batch.positives, batch.positives != 0)
    expected = info_nce(hidden[rows, col], z_pos, temperature=1.0, labels=batch.items[rows, col + 1])
    torch.testing.assert_close(terms.coarse, expected)
    assert terms.fine is not None and torch.isfinite(terms.fine)
    model.train()
    loss = training_losses(model, objective, batch, build_loss(TrainConfig())).total
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


def test_window_rows_learn_the_planted_next_item(planted_dataset: Path) -> None:
    model, dm = _setup(planted_dataset, rows="window", dropout=0.0, attn_dropout=0.0)
    module = RecModule(model, TrainConfig(lr=5e-3), EvalConfig())
    opt = module.build_optimizer()
    rows = list(range(len(dm.train_set)))
    for step in range(150):
        if step % 50 == 0:
            model.refit(dm.ordered_train_dataloader(), epoch=step // 50)
        loss = training_losses(model, module.objective, dm.train_set[rows], module.loss).total
        opt.zero_grad()
        loss.backward()
        opt.step()
    result = evaluate(model, dm.test_dataloader(), split="test", ks=(1, 10))
    assert result.metrics["test/hr@1"] >= 0.9, result.metrics
