"""Next-item losses against their definitions, written out on small tensors."""

from __future__ import annotations

import pytest
import torch

from recsys.nn.losses import (
    LOSSES,
    bce_with_negatives,
    full_cross_entropy,
    gbce,
    in_batch_softmax,
    over_classes,
    sampled_softmax,
)
from recsys.train.experiment import TrainConfig
from recsys.train.module import build_loss

N_ITEMS = 7  # real items 1..7, row 0 padding


def _case(seed: int = 0, positions: int = 5, dim: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(positions, dim, generator=gen)
    item_emb = torch.randn(N_ITEMS + 1, dim, generator=gen)
    targets = torch.randint(1, N_ITEMS + 1, (positions,), generator=gen)
    return hidden, item_emb, targets


def _log_probs(hidden: torch.Tensor, item_emb: torch.Tensor) -> torch.Tensor:
    """[T, N] log-softmax over the real items only: column c is item c + 1."""
    return torch.log_softmax(hidden @ item_emb[1:].T, dim=-1)


def test_full_cross_entropy_is_the_mean_nll_over_real_items() -> None:
    hidden, item_emb, targets = _case()
    expected = -_log_probs(hidden, item_emb)[torch.arange(len(targets)), targets - 1].mean()
    torch.testing.assert_close(full_cross_entropy(hidden, item_emb, targets), expected)
    torch.testing.assert_close(full_cross_entropy(hidden, item_emb, targets, chunk_size=2), expected)


def test_padding_row_is_never_a_class() -> None:
    hidden, item_emb, targets = _case(1)
    moved = item_emb.clone()
    moved[0] = 100.0 * hidden.mean(0)  # a padding row that would win every softmax if it were a class
    torch.testing.assert_close(
        full_cross_entropy(hidden, moved, targets), full_cross_entropy(hidden, item_emb, targets)
    )


@pytest.mark.parametrize("eps", [0.1, 0.5])
def test_label_smoothing_mixes_the_nll_with_the_mean_over_the_catalog(eps: float) -> None:
    hidden, item_emb, targets = _case(2)
    log_p = _log_probs(hidden, item_emb)
    nll = -log_p[torch.arange(len(targets)), targets - 1]
    uniform = -log_p.mean(-1)  # cross-entropy against the uniform distribution over the N real items
    expected = ((1 - eps) * nll + eps * uniform).mean()
    got = full_cross_entropy(hidden, item_emb, targets, label_smoothing=eps, chunk_size=3)
    torch.testing.assert_close(got, expected)


def test_sampled_softmax_is_zero_when_every_negative_is_the_target() -> None:
    hidden, item_emb, _ = _case(3)
    one_item = item_emb[:2]  # a catalog of one real item: each drawn negative is the target, masked out
    loss = sampled_softmax(hidden, one_item, torch.ones(len(hidden), dtype=torch.long), n_negatives=4)
    assert float(loss) == pytest.approx(0.0, abs=1e-6)


def test_sampled_softmax_matches_its_definition_for_a_seed() -> None:
    hidden, item_emb, targets = _case(4)
    negatives = torch.randint(1, N_ITEMS + 1, (3,), generator=torch.Generator().manual_seed(9))
    logits = torch.cat([(hidden * item_emb[targets]).sum(-1, keepdim=True), hidden @ item_emb[negatives].T], 1)
    logits[:, 1:][negatives[None, :] == targets[:, None]] = float("-inf")
    expected = -torch.log_softmax(logits, -1)[:, 0].mean()
    got = sampled_softmax(hidden, item_emb, targets, n_negatives=3, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(got, expected)


def test_gbce_without_calibration_and_one_negative_is_bce() -> None:
    hidden, item_emb, targets = _case(5)
    bce = bce_with_negatives(hidden, item_emb, targets, n_negatives=1, generator=torch.Generator().manual_seed(3))
    plain = gbce(hidden, item_emb, targets, n_negatives=1, calibration=0.0, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(plain, bce)


def test_in_batch_softmax_does_not_use_a_duplicate_target_as_negative() -> None:
    hidden, item_emb, _ = _case(6)
    same = torch.full((len(hidden),), 2, dtype=torch.long)
    loss = in_batch_softmax(hidden, item_emb, same, item_log_prob=torch.zeros(N_ITEMS + 1))
    assert float(loss) == pytest.approx(0.0, abs=1e-6)


def test_train_config_passes_label_smoothing_to_the_ce_loss() -> None:
    hidden, item_emb, targets = _case(7)
    smoothed = build_loss(TrainConfig(label_smoothing=0.2))(hidden, item_emb, targets)
    torch.testing.assert_close(smoothed, full_cross_entropy(hidden, item_emb, targets, label_smoothing=0.2))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"label_smoothing": 1.0}, "label_smoothing must be in"),
        ({"label_smoothing": 0.1, "loss": "bce"}, "loss 'ce' only"),
    ],
)
def test_bad_label_smoothing_is_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)  # type: ignore[arg-type]


def _drawn_negatives(seed: int, positions: int, n_negatives: int) -> torch.Tensor:
    """The negatives the losses draw with `torch.Generator().manual_seed(seed)`: [T, n_neg] in 1..N."""
    return torch.randint(1, N_ITEMS + 1, (positions, n_negatives), generator=torch.Generator().manual_seed(seed))


def _log_sigmoid_terms(
    hidden: torch.Tensor, item_emb: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """-log sigmoid(s+) per position and -log(1 - sigmoid(s-)) per negative, a negative equal to the target dropped."""
    pos = -torch.log(torch.sigmoid((hidden * item_emb[targets]).sum(-1)))
    neg_scores = torch.stack([item_emb[negatives[t]] @ hidden[t] for t in range(len(targets))])
    neg = -torch.log(1 - torch.sigmoid(neg_scores))
    return pos, torch.where(negatives == targets[:, None], torch.zeros_like(neg), neg)


@pytest.mark.parametrize("calibration", [0.0, 0.75, 1.0])
def test_gbce_is_its_written_out_definition(calibration: float) -> None:
    """-beta log sigmoid(s+) - sum log(1 - sigmoid(s-)), beta = alpha (t (1 - 1/alpha) + 1/alpha),
    alpha = k / (N - 1): the exponent really differs from 1 here (k = 3 of N - 1 = 6: alpha = 0.5)."""
    hidden, item_emb, targets = _case(8)
    k = 3
    alpha = k / (N_ITEMS - 1)
    beta = alpha * (calibration * (1 - 1 / alpha) + 1 / alpha)
    assert beta == pytest.approx({0.0: 1.0, 0.75: 0.625, 1.0: 0.5}[calibration])
    pos, neg = _log_sigmoid_terms(hidden, item_emb, targets, _drawn_negatives(4, len(targets), k))
    expected = (beta * pos + neg.sum(-1)).mean()
    got = gbce(
        hidden, item_emb, targets, n_negatives=k, calibration=calibration, generator=torch.Generator().manual_seed(4)
    )
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_bce_is_its_written_out_definition() -> None:
    hidden, item_emb, targets = _case(9)
    pos, neg = _log_sigmoid_terms(hidden, item_emb, targets, _drawn_negatives(2, len(targets), 4))
    got = bce_with_negatives(hidden, item_emb, targets, n_negatives=4, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(got, pos.mean() + neg.mean(), rtol=1e-5, atol=1e-6)


def test_in_batch_softmax_is_its_written_out_definition() -> None:
    """Distinct targets: row t's softmax over the batch's targets, logits corrected by -log q(item)."""
    hidden, item_emb, _ = _case(10)
    targets = torch.tensor([3, 1, 7, 5, 2])
    log_q = torch.log(torch.tensor([0.0, 0.3, 0.1, 0.2, 0.05, 0.15, 0.1, 0.1]).clamp_min(1e-9))
    loss = in_batch_softmax(hidden, item_emb, targets, item_log_prob=log_q)
    expected = 0.0
    for t in range(len(targets)):
        logits = torch.stack([hidden[t] @ item_emb[j] - log_q[j] for j in targets])
        expected += -torch.log_softmax(logits, 0)[t] / len(targets)
    torch.testing.assert_close(loss, torch.as_tensor(expected), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["ce", "sampled_softmax", "bce"])
def test_over_classes_equals_the_loss_on_the_cut_catalog(name: str) -> None:
    torch.manual_seed(0)
    hidden, item_emb = torch.randn(6, 4), torch.randn(9, 4)  # items 1..8
    classes = torch.tensor([2, 3, 5, 8])
    targets = torch.tensor([2, 3, 5, 8, 5, 2])
    fn = LOSSES[name]
    torch.manual_seed(1)
    restricted = over_classes(fn, classes)(hidden, item_emb, targets)
    cut = item_emb[torch.tensor([0, 2, 3, 5, 8])]  # padding + the classes, renumbered 1..4
    torch.manual_seed(1)
    torch.testing.assert_close(restricted, fn(hidden, cut, torch.tensor([1, 2, 3, 4, 3, 1])))
    if name == "ce":  # an item outside the classes is no negative: moving it changes nothing
        moved = item_emb.clone()
        moved[4] = 100 * hidden[0]
        torch.testing.assert_close(over_classes(fn, classes)(hidden, moved, targets), restricted)
    with pytest.raises(ValueError, match=r"targets \[4\]"):
        over_classes(fn, classes)(hidden, item_emb, torch.tensor([4]))
    with pytest.raises(ValueError, match="ids >= 1"):
        over_classes(fn, torch.tensor([0, 2]))
