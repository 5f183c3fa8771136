"""Metrics of labelled-candidate predictions (rankers such as DARE): AUC, GAUC and log loss.

Pure functions over (labels, probabilities[, users]) arrays, computed with scikit-learn.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from sklearn.metrics import log_loss as _sk_log_loss
from sklearn.metrics import roc_auc_score

from recsys.data.labelled import LabelledBatch
from recsys.models.ranker import Ranker
from recsys.objectives.labelled import labelled_logits


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of `scores` [S] for binary `labels` [S] (ties count one half)."""
    return float(roc_auc_score(labels, scores))


def gauc(labels: np.ndarray, scores: np.ndarray, users: np.ndarray) -> float:
    """Per-user AUC averaged with each user's sample count as its weight.

    Users whose samples are all of one label have no AUC and are left out of the mean.

    Raises:
        ValueError: no user has both labels.
    """
    order = np.argsort(users, kind="stable")
    users, labels, scores = users[order], labels[order], scores[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    total, weight = 0.0, 0
    for a, b in zip(starts, ends, strict=True):
        y = labels[a:b]
        if y.min() == y.max():
            continue
        total += (b - a) * roc_auc_score(y, scores[a:b])
        weight += b - a
    if weight == 0:
        raise ValueError("GAUC is undefined: no user has both a positive and a negative sample")
    return float(total / weight)


def log_loss(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean binary cross-entropy of probabilities `probs` [S] (clipped away from 0 and 1) for `labels` [S]."""
    eps = 1e-7
    return float(_sk_log_loss(labels, np.clip(probs, eps, 1 - eps), labels=[0, 1]))


def labelled_metrics(labels: np.ndarray, probs: np.ndarray, users: np.ndarray, prefix: str) -> dict[str, float]:
    """`{prefix}/auc`, `{prefix}/gauc` and `{prefix}/logloss` of one split's predictions."""
    return {
        f"{prefix}/auc": auc(labels, probs),
        f"{prefix}/gauc": gauc(labels, probs, users),
        f"{prefix}/logloss": log_loss(labels, probs),
    }


def labelled_predictions(model: Ranker, batch: LabelledBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(labels, probabilities, user_idx), each [B], of a batch of labelled rows under `model` (no grad)."""
    with torch.no_grad():
        probs = torch.sigmoid(labelled_logits(model, batch).float())
    return batch.labels, probs.cpu(), batch.users


def metrics_of_predictions(
    parts: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], prefix: str
) -> dict[str, float]:
    """`labelled_metrics` of the batches' `labelled_predictions`, concatenated."""
    labels, probs, users = (torch.cat(list(x)).cpu().numpy() for x in zip(*parts, strict=True))
    return labelled_metrics(labels, probs.astype(np.float64), users, prefix)


def labelled_split_metrics(model: Ranker, batches: Iterable[LabelledBatch], prefix: str) -> dict[str, float]:
    """AUC, GAUC and log loss of `model` (in eval mode) over every batch of one split."""
    return metrics_of_predictions((labelled_predictions(model, b) for b in batches), prefix)
