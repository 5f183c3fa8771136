"""The objective contract, checked for every registered objective with a model that trains on it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

from recsys.data.candidate_lists import CandidateListBatch
from recsys.data.item_features import ItemFeatures
from recsys.data.labelled import LabelledBatch
from recsys.models.base import SequentialRecommender
from recsys.objectives import OBJECTIVES, build_objective, training_losses
from recsys.objectives.base import REC, NonFiniteLossError
from recsys.registry import MODELS, RANKERS, build_model, build_ranker
from recsys.train.experiment import TrainConfig
from recsys.train.module import build_loss

N_ITEMS = 23
TINY = {"max_len": 6, "hidden": 16, "n_heads": 2, "dropout": 0.1, "attn_dropout": 0.1}
# objective -> a registered model (and params) that declares it; a new objective adds a line here
EXAMPLES: dict[str, tuple[str, dict[str, Any]]] = {
    "next_item": ("sasrec", {}),
    "masked": ("bert4rec", {}),
    "cross_subsequence": ("icsrec", {"n_intents": 4}),
    "window_views": ("icsrec", {"n_intents": 4, "rows": "window"}),
    "text_next_item": (
        "recformer",
        {"max_item_tokens": 6, "max_tokens": 40, "fields": ["title"], "pretrain_epochs": 1},
    ),
    "random_window": ("llm_rec", {"n_layers": 1, "fields": ["title"], "windows": "random"}),
    "labelled_candidates": ("dare", {"d_att": 4, "d_rep": 8, "top_k": 3, "max_len": 6}),
    "listwise_candidates": (
        "dare",
        {"d_att": 4, "d_rep": 8, "top_k": 3, "max_len": 6, "d_time": 4, "stage1_inputs": True},
    ),
}
SEQUENCE_OBJECTIVES = sorted(name for name, cls in OBJECTIVES.items() if cls.trains_on_sequences)
SEQS = [[(3 * u + t) % N_ITEMS + 1 for t in range(4 + u % 5)] for u in range(12)]  # lengths 4..8


@pytest.fixture
def make_model(request: pytest.FixtureRequest) -> Callable[[str], SequentialRecommender]:
    def make(name: str) -> SequentialRecommender:
        torch.manual_seed(0)
        model_name, params = EXAMPLES[name]
        if model_name in RANKERS:
            return build_ranker(model_name, params, N_ITEMS)
        if not MODELS[model_name].uses_item_features:
            return build_model(model_name, {**TINY, **params}, N_ITEMS)
        backbone = str(request.getfixturevalue("tiny_text_backbone"))
        if model_name == "llm_rec":  # a tiny random Llama over the tiny BERT's item vectors
            llama, cache = request.getfixturevalue("tiny_llama_backbone"), request.getfixturevalue("tmp_path")
            params = {**params, "item_encoder": backbone, "cache_dir": str(cache)}
            backbone = str(llama)
        titles = [None, *[f"item {i}" for i in range(1, N_ITEMS + 1)]]
        features = ItemFeatures(N_ITEMS, [str(i) for i in range(N_ITEMS + 1)], {"title": titles}, None, 0)
        model = build_model(model_name, {"backbone": backbone, "max_len": 6, **params}, N_ITEMS, item_features=features)
        assert model.objective == name
        return model

    return make


def test_every_objective_has_an_example_model() -> None:
    assert set(EXAMPLES) == set(OBJECTIVES)


@pytest.mark.parametrize("name", SEQUENCE_OBJECTIVES)
def test_a_step_gives_finite_named_terms_and_gradients(
    name: str, make_model: Callable[[str], SequentialRecommender]
) -> None:
    model, objective = make_model(name), build_objective(name)
    rows = objective.train_rows(SEQS, model.max_len, generator=torch.Generator().manual_seed(0))
    assert len(rows) == len(rows.lengths()) >= len(SEQS)
    loader = DataLoader(rows, sampler=BatchSampler(SequentialSampler(rows), 8, drop_last=False), batch_size=None)
    objective.on_epoch_start(model, loader, 0)  # type: ignore[arg-type]
    batch = rows[list(range(8))]
    inputs, targets = objective.inputs_and_targets(model, batch)
    assert inputs.shape == targets.shape and (targets != 0).any()
    assert ((targets != 0) <= (inputs != 0)).all()  # targets sit at real (or masked) input positions
    parts = training_losses(model.train(), objective, batch, build_loss(TrainConfig()))
    assert next(iter(parts.terms)) == REC
    assert all(torch.isfinite(t) for t in parts.terms.values())
    torch.testing.assert_close(parts.total, sum(parts.terms.values()))
    parts.total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", SEQUENCE_OBJECTIVES)
def test_expected_targets_per_batch_is_none_or_positive(
    name: str, make_model: Callable[[str], SequentialRecommender]
) -> None:
    model, objective = make_model(name), build_objective(name)
    rows = objective.train_rows(SEQS, model.max_len, generator=torch.Generator().manual_seed(0))
    expected = objective.expected_targets_per_batch(model, rows, 4)
    assert expected is None or expected > 0


@pytest.mark.parametrize("name", sorted(set(OBJECTIVES) - set(SEQUENCE_OBJECTIVES)))
def test_a_labelled_step_gives_finite_terms_and_gradients(
    name: str, make_model: Callable[[str], SequentialRecommender]
) -> None:
    model, objective = make_model(name), build_objective(name)
    with pytest.raises(TypeError, match="labelled dataset|candidate lists"):
        objective.train_rows(SEQS, model.max_len, generator=torch.Generator())
    items = torch.tensor([[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]])
    batch: LabelledBatch | CandidateListBatch = LabelledBatch(
        items, torch.zeros_like(items), torch.tensor([7, 9]), torch.tensor([1.0, 0.0]), torch.arange(2)
    )
    if name == "listwise_candidates":  # stage 1's top-3 lists, the target second in the first, first in the other
        candidates = torch.tensor([[7, 9, 8], [9, 10, 11]])
        batch = CandidateListBatch(items, candidates, torch.randn(2, 3), torch.tensor([1, 0]), torch.tensor([6, 8]))
    parts = training_losses(model.train(), objective, batch, build_loss(TrainConfig()))
    assert next(iter(parts.terms)) == REC and torch.isfinite(parts.total)
    parts.total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_a_non_finite_loss_is_an_error_naming_its_terms(make_model: Callable[[str], SequentialRecommender]) -> None:
    model, objective = make_model("next_item"), build_objective("next_item")
    with torch.no_grad():
        model.item_embeddings()[1:].fill_(float("nan"))
    batch = objective.train_rows(SEQS, model.max_len, generator=torch.Generator())[[0, 1]]
    with pytest.raises(NonFiniteLossError, match="rec nan"):
        training_losses(model, objective, batch, build_loss(TrainConfig()))
