"""`info_nce` against a per-row reference written out loop by loop, on tiny hand-made views."""

from __future__ import annotations

import math

import torch

from recsys.nn.losses import info_nce


def _reference(a: torch.Tensor, b: torch.Tensor, temperature: float, labels: list[int] | None) -> float:
    views = torch.cat([a, b]).tolist()
    n = len(a)
    labels2 = (labels or list(range(n))) * 2
    total = 0.0
    for i in range(2 * n):
        partner = (i + n) % (2 * n)

        def sim(j: int, i: int = i) -> float:
            return sum(x * y for x, y in zip(views[i], views[j], strict=True)) / temperature

        negatives = [sim(j) for j in range(2 * n) if labels2[j] != labels2[i]]
        logits = [sim(partner), *negatives]
        total += -logits[0] + math.log(sum(math.exp(x) for x in logits))
    return total / (2 * n)


def test_matches_the_reference_with_and_without_labels() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 3, generator=gen), torch.randn(5, 3, generator=gen)
    for temperature in (1.0, 0.5):
        for labels in (None, [7, 7, 2, 3, 2]):
            got = info_nce(a, b, temperature=temperature, labels=None if labels is None else torch.tensor(labels))
            assert math.isclose(float(got), _reference(a, b, temperature, labels), rel_tol=1e-5)


def test_false_negatives_are_not_pushed_apart() -> None:
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # all four views share the label: no negatives are left, the loss is 0
    assert float(info_nce(a, b, labels=torch.tensor([4, 4]))) == 0.0
    # without the mask the identical rows are negatives: log(1 + 2 e^1 / e^1) = log 3
    assert math.isclose(float(info_nce(a, b)), math.log(3.0), rel_tol=1e-6)


def test_has_gradients_for_both_views() -> None:
    a = torch.randn(4, 3, requires_grad=True)
    b = torch.randn(4, 3, requires_grad=True)
    info_nce(a, b, labels=torch.tensor([1, 2, 1, 3])).backward()
    assert a.grad is not None and b.grad is not None
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0
