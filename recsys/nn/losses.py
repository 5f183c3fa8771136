"""Training losses as pure functions over (hidden states, item embeddings, targets).

Every loss takes `hidden` [T, D] (one row per position that carries a target), `item_emb` [N, D]
(row 0 = padding, never a valid class) and `targets` [T] long in 1..N-1, and returns a scalar.
Logits over the full catalog are only formed by `full_cross_entropy`, in chunks of positions so
that [T, N] never has to fit in memory at once for large catalogs.

Contrastive terms of auxiliary objectives (`info_nce`) take two views [B, D] of the same rows instead;
they are not next-item losses, so they are not in `LOSSES`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

LossFn = Callable[..., torch.Tensor]


def full_cross_entropy(
    hidden: torch.Tensor,
    item_emb: torch.Tensor,
    targets: torch.Tensor,
    *,
    chunk_size: int = 4096,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Softmax cross-entropy over the whole catalog (padding row excluded), mean over positions.

    `label_smoothing` moves that share of each target's probability mass evenly onto the N - 1 real
    items (the target included), as in `torch.nn.functional.cross_entropy`; 0 is the plain loss.
    """
    total = hidden.new_zeros((), dtype=torch.float32)
    items = item_emb[1:]  # padding is never a class: class c is item c + 1
    for start in range(0, hidden.shape[0], chunk_size):
        logits = hidden[start : start + chunk_size] @ items.T  # [t, N - 1]
        classes = targets[start : start + chunk_size] - 1
        total = total + F.cross_entropy(logits.float(), classes, reduction="sum", label_smoothing=label_smoothing)
    return total / max(hidden.shape[0], 1)


def sampled_softmax(
    hidden: torch.Tensor,
    item_emb: torch.Tensor,
    targets: torch.Tensor,
    *,
    n_negatives: int = 256,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Softmax over the target and `n_negatives` uniform negatives shared by the batch.

    Uniform sampling has a constant proposal probability, so the logQ correction cancels; a negative
    equal to the row's own target is masked out.
    """
    n_items = item_emb.shape[0] - 1
    negatives = torch.randint(1, n_items + 1, (n_negatives,), device=hidden.device, generator=generator)
    pos_logit = (hidden * item_emb[targets]).sum(-1, keepdim=True)  # [T, 1]
    neg_logits = hidden @ item_emb[negatives].T  # [T, n_neg]
    neg_logits = neg_logits.masked_fill(negatives[None, :] == targets[:, None], float("-inf"))
    logits = torch.cat([pos_logit, neg_logits], dim=1).float()
    return F.cross_entropy(logits, torch.zeros_like(targets))


def in_batch_softmax(
    hidden: torch.Tensor, item_emb: torch.Tensor, targets: torch.Tensor, *, item_log_prob: torch.Tensor
) -> torch.Tensor:
    """Softmax over the batch's own targets as negatives, with logQ correction.

    Args:
        item_log_prob: [N] log of each item's sampling probability (its share of training targets);
            subtracting it from the logits corrects the popularity bias of in-batch negatives.
    """
    logits = hidden @ item_emb[targets].T - item_log_prob[targets][None, :]  # [T, T]
    same = targets[:, None] == targets[None, :]
    eye = torch.eye(len(targets), dtype=torch.bool, device=targets.device)
    logits = logits.masked_fill(same & ~eye, float("-inf")).float()  # duplicates are not negatives
    return F.cross_entropy(logits, torch.arange(len(targets), device=targets.device))


def bce_with_negatives(
    hidden: torch.Tensor,
    item_emb: torch.Tensor,
    targets: torch.Tensor,
    *,
    n_negatives: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Binary cross-entropy: the target vs `n_negatives` uniform negatives per position (SASRec's loss)."""
    pos, neg = _pos_neg_logits(hidden, item_emb, targets, n_negatives, generator)
    return F.softplus(-pos).mean() + F.softplus(neg).mean()


def gbce(
    hidden: torch.Tensor,
    item_emb: torch.Tensor,
    targets: torch.Tensor,
    *,
    n_negatives: int = 256,
    calibration: float = 0.75,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Generalised BCE (gSASRec): the positive probability raised to beta to undo negative sampling.

    beta = alpha * (t * (1 - 1/alpha) + 1/alpha) with alpha = n_negatives / (N - 1) and t = calibration.
    """
    n_items = item_emb.shape[0] - 1
    alpha = n_negatives / max(n_items - 1, 1)
    beta = alpha * (calibration * (1 - 1 / alpha) + 1 / alpha)
    pos, neg = _pos_neg_logits(hidden, item_emb, targets, n_negatives, generator)
    # -log(sigmoid(pos)^beta) computed stably as beta * softplus(-pos)
    return (beta * F.softplus(-pos) + F.softplus(neg).sum(-1)).mean()


def _pos_neg_logits(
    hidden: torch.Tensor,
    item_emb: torch.Tensor,
    targets: torch.Tensor,
    n_negatives: int,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    n_items = item_emb.shape[0] - 1
    negatives = torch.randint(1, n_items + 1, (len(targets), n_negatives), device=hidden.device, generator=generator)
    pos = (hidden * item_emb[targets]).sum(-1).float()  # [T]
    neg = torch.einsum("td,tkd->tk", hidden, item_emb[negatives]).float()  # [T, n_neg]
    neg = neg.masked_fill(negatives == targets[:, None], float("-inf"))  # softplus(-inf) = 0
    return pos, neg


def info_nce(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    *,
    temperature: float = 1.0,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE (NT-Xent) over B pairs, the other 2B - 2 views of the batch as negatives.

    Each of the 2B views [anchors; positives] is scored against its partner and the other views by
    dot product / `temperature`; the loss is the mean softmax cross-entropy of the partner.

    Args:
        anchors: [B, D] first views.
        positives: [B, D] second views; row i is the positive of `anchors[i]`.
        temperature: softmax temperature.
        labels: [B] optional classes (ICSRec: target item or intent id); views that share a label
            with the row are not used as its negatives (false-negative mitigation).
    """
    n = len(anchors)
    views = torch.cat([anchors, positives]).float()  # [2B, D]
    sim = views @ views.T / temperature  # [2B, 2B]
    rows = torch.arange(2 * n, device=views.device)
    partner = (rows + n) % (2 * n)
    pos = sim[rows, partner]  # [2B]
    if labels is None:
        labels = torch.arange(n, device=views.device)  # only the row itself and its partner are excluded
    both = torch.cat([labels, labels])  # [2B]
    neg = sim.masked_fill(both[:, None] == both[None, :], float("-inf"))  # self and partner included
    logits = torch.cat([pos[:, None], neg], dim=1)  # [2B, 1 + 2B]
    return F.cross_entropy(logits, torch.zeros_like(rows))


def over_classes(loss: LossFn, classes: torch.Tensor) -> LossFn:
    """`loss` with only the items `classes` [K] (ids >= 1) as classes: the item table is cut to padding +
    those rows and each target renumbered, so items outside them are never negatives (e.g. items that
    no training sequence holds: cold or added later, which do not exist when a model trains)."""
    keep = torch.cat([classes.new_zeros(1), torch.unique(classes)])  # [K + 1], padding first
    if bool((keep[1:] < 1).any()):
        raise ValueError("classes must be item ids >= 1 (0 is padding)")

    def restricted(
        hidden: torch.Tensor, item_emb: torch.Tensor, targets: torch.Tensor, **kwargs: object
    ) -> torch.Tensor:
        index = torch.full((item_emb.shape[0],), -1, dtype=torch.long, device=item_emb.device)
        kept = keep.to(item_emb.device)
        index[kept] = torch.arange(len(kept), device=item_emb.device)
        renumbered = index[targets]
        if bool((renumbered < 1).any()):
            bad = targets[renumbered < 1][:5].tolist()
            raise ValueError(f"targets {bad} are not among the loss's classes ({len(kept) - 1} items)")
        return loss(hidden, item_emb[kept], renumbered, **kwargs)

    return restricted


LOSSES: dict[str, LossFn] = {
    "ce": full_cross_entropy,
    "sampled_softmax": sampled_softmax,
    "in_batch": in_batch_softmax,
    "bce": bce_with_negatives,
    "gbce": gbce,
}


def paired_softmax(
    queries: torch.Tensor, keys: torch.Tensor, *, temperature: float = 1.0, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """One-directional in-batch contrast: query i against key i, the batch's other keys as negatives.

    Args:
        queries: [B, D] (e.g. history summaries).
        keys: [B, D]; row i is the positive of `queries[i]` (e.g. its target item's text vector).
        temperature: softmax temperature.
        labels: [B] optional classes (target item ids); a key that shares the row's label is not
            used as its negative.
    """
    logits = queries.float() @ keys.float().T / temperature  # [B, B]
    if labels is not None:
        same = (labels[:, None] == labels[None, :]) & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        logits = logits.masked_fill(same, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(queries), device=queries.device))


def labelled_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of `logits` [S] against 0/1 `labels` [S] (labelled candidates, e.g. DARE)."""
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
