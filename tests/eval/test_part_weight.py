"""Part weights chosen on validation: each weight's NDCG from parts computed once agrees with the full
evaluator's for the model combined at that weight; the best is set in the model, a tie to the smaller;
several parts are chosen in the model's order, each given the weights chosen before it."""

from __future__ import annotations

import pytest
import torch

from recsys.data.datasets import EvalBatch
from recsys.eval.evaluate import evaluate
from recsys.eval.part_weight import WeightedParts, choose_part_weight, choose_part_weights
from recsys.models.base import SequentialRecommender


class TwoParts(SequentialRecommender):
    """User vector = mean of the history's `base` rows + weight * the last item's `part` row
    (+ `first` weight * the first item's `part` row, a second part where `first_weights` are named)."""

    def __init__(
        self, n_items: int, dim: int, weights: tuple[float, ...], first_weights: tuple[float, ...] = ()
    ) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.register_buffer("table", torch.randn(n_items + 1, dim, generator=gen))
        self.base_rows = torch.randn(n_items + 1, dim, generator=gen)
        self.part_rows = torch.randn(n_items + 1, dim, generator=gen)
        self.weights, self.weight = weights, 1.0
        self.first_weights, self.first = first_weights, 0.0

    def encode(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def item_embeddings(self) -> torch.Tensor:
        return self.table

    def split_user(self, items: torch.Tensor, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        base, last, first = self.base_rows[items].mean(1), self.part_rows[items[:, -1]], self.part_rows[items[:, 0]]
        if part == "last":
            return base + self.first * first, last
        return base + self.weight * last, first

    def sequence_representation(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        base, part = self.split_user(items, "last")
        return base + self.weight * part

    def part_weights(self) -> dict[str, tuple[float, ...]]:
        return {"last": self.weights} | ({"first": self.first_weights} if self.first_weights else {})

    def set_part_weight(self, part: str, weight: float) -> None:
        if part == "last":
            self.weight = weight
        else:
            self.first = weight


def _batches(n_items: int) -> list[EvalBatch]:
    gen = torch.Generator().manual_seed(1)
    out = []
    for _ in range(3):
        items = torch.randint(1, n_items + 1, (16, 5), generator=gen)
        out.append(EvalBatch(items, torch.randint(1, n_items + 1, (16,), generator=gen), items))
    return out


def test_each_weights_ndcg_is_the_evaluators_and_the_best_is_set() -> None:
    model = TwoParts(40, 8, (0.0, 0.5, 1.0, 2.0))
    # the part row of each history's last item points at its target: the more part, the better
    batches = _batches(40)
    for batch in batches:
        model.part_rows[batch.items[:, -1]] = 3 * model.table[batch.targets]
    assert isinstance(model, WeightedParts)
    weight, ndcg = choose_part_weight(model, "last", batches, k=10, exclude_seen=True)
    for w, value in ndcg.items():
        model.set_part_weight("last", w)
        full = evaluate(model, batches, split="val", ks=(10,), reference=True).metrics["val/ndcg@10"]
        assert value == pytest.approx(full, abs=1e-9), w
    assert ndcg[0.0] < ndcg[2.0] and weight == max(ndcg, key=lambda w: (ndcg[w], -w))
    model.set_part_weight("last", -1.0)  # choosing sets the best weight in the model
    choose_part_weight(model, "last", batches, k=10, exclude_seen=True)
    assert model.weight == weight


def test_a_tie_goes_to_the_smaller_weight_and_bad_input_is_named() -> None:
    model = TwoParts(40, 8, (4.0, 2.0))
    model.base_rows.zero_()  # the weight only scales the user vector: every weight ranks alike
    weight, ndcg = choose_part_weight(model, "last", _batches(40), k=10, exclude_seen=False)
    assert ndcg[2.0] == ndcg[4.0] and weight == 2.0 and model.weight == 2.0
    with pytest.raises(ValueError, match="needs validation users"):
        choose_part_weight(model, "last", [], k=10, exclude_seen=True)
    with pytest.raises(ValueError, match="names no weights to choose among for part 'last'"):
        choose_part_weight(TwoParts(40, 8, ()), "last", _batches(40), k=10, exclude_seen=True)
    with pytest.raises(ValueError, match="names no weights for part 'text'; it names \\['last'\\]"):
        choose_part_weight(model, "text", _batches(40), k=10, exclude_seen=True)


def test_several_parts_are_chosen_in_order_each_given_the_weights_chosen_before_it() -> None:
    model = TwoParts(40, 8, (0.0, 0.5, 1.0, 2.0), first_weights=(0.0, 1.0, 3.0))
    batches = _batches(40)
    for batch in batches:  # the last item points at the target, the first item a little too
        model.part_rows[batch.items[:, -1]] = 3 * model.table[batch.targets]
    chosen = choose_part_weights(model, batches, k=10, exclude_seen=True)
    assert list(chosen) == ["last", "first"]
    last, _ = chosen["last"]
    first, ndcg = chosen["first"]
    assert model.weight == last and model.first == first
    # the second part's NDCG is measured with the first part at its chosen weight: the evaluator's figure
    for w, value in ndcg.items():
        model.set_part_weight("first", w)
        full = evaluate(model, batches, split="val", ks=(10,), reference=True).metrics["val/ndcg@10"]
        assert value == pytest.approx(full, abs=1e-9), w
    with pytest.raises(ValueError, match="needs validation users"):
        choose_part_weights(model, [], k=10, exclude_seen=True)
