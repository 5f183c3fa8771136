"""ICSRec (Qin et al., WSDM 2024): intent contrastive learning with cross subsequences.

The network is SASRec's (the shared causal `ItemSequenceEncoder`); ICSRec changes what it learns
from. Training rows are every prefix of every user's training sequence, each predicting only its
next item (objective "cross_subsequence", see `recsys.data.subsequences`), plus two contrastive
terms on the last hidden state of the prefix (its intent representation):

- coarse-grain: a prefix and a prefix of any user with the same target (its positive, sampled
  by the data) are pulled together, the rest of the batch pushed away (`info_nce`);
- fine-grain: each of the two views is pulled toward the centroid of its intent, the intents being
  k-means clusters of all prefixes' representations, refit at the start of every epoch.

With false-negative mitigation, batch rows that share the target (coarse) or the intent (fine)
are not used as negatives. As in the authors' code, similarities are dot products, centroids are
L2-normalised for the contrast, and a view is assigned its nearest raw centroid (L2); `similarity:
cos` L2-normalises the representations in both contrasts too (the assignment stays on raw ones). By default
the prefix's contrastive representation is the rec loss's own forward pass; `anchor_pass:
separate` encodes it again with fresh dropout, as the authors do (one more pass per step).

`rows: window` trains on whole windows instead (objective "window_views"): every position of a
user's window predicts its next item, as SASRec, and so is the rec loss of one prefix; per row, one
prefix drawn at random is the anchor of both contrasts, its representation the hidden state where
it ends, and the intents are clustered from the hidden states of every prefix. Every prefix still
counts once per epoch in the rec loss, but in one forward pass per user instead of one per prefix,
and batches mix users of all lengths; the contrasts see one prefix per user and epoch.

`contrast_warmup` (epochs, 0 = off, the paper's setting) ramps both contrastive weights linearly
from 0 at epoch 0 to their full value at that epoch: the encoder first learns the next item, and
the intents are first clustered from representations that carry it. `contrast_start` (epochs, 0 =
the paper's) trains on the rec loss alone for that many epochs before the ramp (or the full
weights) begins, so the contrasts are added to an encoder that already ranks the next item. Epochs
with weight 0 skip the clustering and the contrastive forward passes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from recsys.data.datasets import ViewBatch
from recsys.models.base import SequentialRecommender, representation_by_length
from recsys.nn.losses import info_nce
from recsys.nn.sequence_encoder import ItemSequenceEncoder, validate_encoder_fields

log = logging.getLogger(__name__)


ANCHOR_PASSES = ("shared", "separate")
ROWS = ("prefix", "window")
SIMILARITIES = ("dot", "cos")


@dataclass(frozen=True)
class ICSRecConfig:
    max_len: int = 50
    hidden: int = 64
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.5  # the paper's Beauty / Sports setting
    attn_dropout: float = 0.5
    attention: str = "sdpa"  # any key of recsys.nn.attention.ATTENTION
    chunk_size: int = 64  # for the chunked linear backends
    norm: str = "pre"  # pre-norm blocks (nanoGPT); "post": BERT's post-norm layout (recsys.nn.blocks)
    n_intents: int = 512  # k-means clusters (the paper's default; its released Beauty script uses 256)
    temperature: float = 1.0  # of both InfoNCE terms
    # "dot": raw dot products (the authors' `sim='dot'`); "cos": cosine, the representations
    # L2-normalised before both contrasts (logits bounded by 1 / temperature, whatever their norm)
    similarity: str = "dot"
    coarse_weight: float = 0.3  # lambda: cross-subsequence contrast (the authors' Beauty/Sports scripts)
    fine_weight: float = 0.1  # beta: contrast with the intent centroids; 0 skips the clustering
    false_negative_mask: bool = True  # FNM: same-target / same-intent rows are not negatives
    kmeans_iters: int = 20  # as the authors' faiss clustering
    kmeans_redo: int = 1  # restarts keeping the best; the authors use 5 (5x the clustering time)
    kmeans_seed: int = 1  # the same seed every epoch, so a refit depends only on the representations
    view_groups: int = 8  # positive views are encoded in this many length groups (speed only, same values)
    # "shared": the anchor of both contrasts is the rec loss's own forward pass (one pass fewer);
    # "separate": the anchor is encoded again, with its own dropout, as in the authors' code
    anchor_pass: str = "shared"
    contrast_warmup: int = 0  # epochs over which both contrastive weights ramp up from 0 (0: none)
    contrast_start: int = 0  # epochs on the rec loss alone before the contrasts (or their ramp) begin
    # "prefix": one training row per prefix (the paper); "window": one per user's window, every
    # position a prefix, one random prefix per row contrasted (objective "window_views")
    rows: str = "prefix"

    def __post_init__(self) -> None:
        validate_encoder_fields(self)
        for name in ("n_intents", "kmeans_iters", "kmeans_redo", "view_groups"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("contrast_warmup", "contrast_start"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 epochs, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        for name in ("coarse_weight", "fine_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.anchor_pass not in ANCHOR_PASSES:
            raise ValueError(f"anchor_pass={self.anchor_pass!r} is not one of {list(ANCHOR_PASSES)}")
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"similarity={self.similarity!r} is not one of {list(SIMILARITIES)}")
        if self.rows not in ROWS:
            raise ValueError(f"rows={self.rows!r} is not one of {list(ROWS)}")
        if self.rows == "window" and self.anchor_pass != "shared":
            raise ValueError("rows='window' reads the anchor from the rec pass: it needs anchor_pass='shared'")


class ContrastiveTerms(NamedTuple):
    coarse: torch.Tensor  # scalar, cross-subsequence InfoNCE
    fine: torch.Tensor | None  # scalar, intent InfoNCE summed over both views; None before any clustering


def fit_intents(points: torch.Tensor, n_intents: int, *, iters: int, redo: int, seed: int) -> torch.Tensor:
    """k-means centroids [K, D] of `points` [S, D] (faiss, seeded); K = min(n_intents, S)."""
    import faiss  # the CPU package is a core dependency; imported here to keep model imports light

    k = min(n_intents, len(points))
    if k < n_intents:
        log.warning("only %d representations for %d intents: clustering into %d", len(points), n_intents, k)
    x = points.detach().float().cpu().contiguous().numpy()
    kmeans = faiss.Kmeans(
        x.shape[1],
        k,
        niter=iters,
        nredo=redo,
        seed=seed,
        max_points_per_centroid=4096,  # faiss subsamples (seeded) above this, as in the authors' code
        min_points_per_centroid=1,  # few points per intent is expected on small data; no warning
        verbose=False,
    )
    kmeans.train(x)
    assert kmeans.centroids is not None
    return torch.from_numpy(kmeans.centroids.copy())  # [K, D]


def contrast_scale(warmup: int, epoch: int, start: int = 0) -> float:
    """The factor on the contrastive terms at 0-based `epoch`: 0 before `start`, then
    (epoch - start) / warmup capped at 1 (1 from `start` on without warm-up)."""
    if epoch < start:
        return 0.0
    return 1.0 if warmup == 0 else min(1.0, (epoch - start) / warmup)


def assign_intents(z: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index [B] of the nearest centroid (L2) of each row of `z` [B, D]."""
    # argmin |z - c|^2 = argmax (z.c - |c|^2 / 2)
    return (z @ centroids.T - 0.5 * (centroids * centroids).sum(-1)).argmax(-1)


class ICSRec(SequentialRecommender):
    Config = ICSRecConfig

    def __init__(self, cfg: ICSRecConfig, n_items: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.max_len = cfg.max_len
        self.objective = "cross_subsequence" if cfg.rows == "prefix" else "window_views"
        self.net = ItemSequenceEncoder(cfg, n_items, causal=True)
        # [K, D] raw k-means centroids; refit every epoch, so not part of the saved state
        self.intents: torch.Tensor
        self.register_buffer("intents", torch.zeros(0, cfg.hidden), persistent=False)
        self.contrast_scale = contrast_scale(cfg.contrast_warmup, 0, cfg.contrast_start)  # set each epoch

    def encode(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden: torch.Tensor = self.net(items, mask)  # [B, L, D]
        return hidden

    def item_embeddings(self) -> torch.Tensor:
        return self.net.item_weight()  # [N + 1, D]

    def contrastive_terms(self, batch: ViewBatch, hidden: torch.Tensor) -> ContrastiveTerms:
        """The two unweighted contrastive losses for a cross-subsequence batch and its `hidden` [B, L, D]."""
        if self.cfg.rows == "window":
            if batch.anchor_from_end is None:
                raise ValueError("ICSRec with rows='window' needs ViewBatch.anchor_from_end ('window_views' rows)")
            rows = torch.arange(len(hidden), device=hidden.device)
            col = hidden.shape[1] - 1 - batch.anchor_from_end.to(hidden.device)  # [B] where the anchor prefix ends
            z = hidden[rows, col]  # [B, D]
            targets = batch.items[rows, col + 1]  # [B] the item after it (items are one column wider)
        elif self.cfg.anchor_pass == "shared":
            z, targets = hidden[:, -1], batch.items[:, -1]  # [B, D] intent representation of each prefix
        else:  # [B, D], own dropout
            z, targets = representation_by_length(self, batch.items[:, :-1], self.cfg.view_groups), batch.items[:, -1]
        # the views have any length, unlike the length-grouped anchors: encode them by length
        z_pos = representation_by_length(self, batch.positives, self.cfg.view_groups)  # [B, D]
        fnm = self.cfg.false_negative_mask
        coarse = info_nce(
            self._view(z), self._view(z_pos), temperature=self.cfg.temperature, labels=targets if fnm else None
        )
        if len(self.intents) == 0:
            return ContrastiveTerms(coarse, None)
        return ContrastiveTerms(coarse, self._intent_nce(z) + self._intent_nce(z_pos))

    def _intent_nce(self, z: torch.Tensor) -> torch.Tensor:
        intent = assign_intents(z.detach().float(), self.intents)  # [B]
        prototypes = F.normalize(self.intents, dim=-1)[intent]  # [B, D], constants
        labels = intent if self.cfg.false_negative_mask else None
        return info_nce(self._view(z), prototypes, temperature=self.cfg.temperature, labels=labels)

    def _view(self, z: torch.Tensor) -> torch.Tensor:
        """`z` [B, D] as the contrasts compare it: as it is ("dot") or L2-normalised ("cos")."""
        return F.normalize(z, dim=-1) if self.cfg.similarity == "cos" else z

    def contrastive_loss(self, batch: ViewBatch, hidden: torch.Tensor) -> torch.Tensor | None:
        """The weighted contrastive terms (None while their scale is 0); `hidden` [B, L, D] of the inputs."""
        if self.contrast_scale == 0:
            return None
        terms = self.contrastive_terms(batch, hidden)
        loss = self.cfg.coarse_weight * terms.coarse
        if terms.fine is not None:
            loss = loss + self.cfg.fine_weight * terms.fine
        return self.contrast_scale * loss

    @torch.no_grad()
    def refit(self, batches: Iterable[ViewBatch], epoch: int = 0) -> None:
        """Set the warm-up scale of the contrastive terms for `epoch` and refit the intents: k-means
        over the representations of every training prefix (eval mode; with window rows, the hidden
        state at every position of every window)."""
        self.contrast_scale = contrast_scale(self.cfg.contrast_warmup, epoch, self.cfg.contrast_start)
        if self.cfg.fine_weight == 0 or self.contrast_scale == 0:
            return
        device = self.intents.device
        was_training = self.training
        self.eval()
        reps = []
        for batch in batches:
            history = batch.items[:, :-1].to(device)  # the prefix (or window), without its target
            if self.cfg.rows == "window":
                reps.append(self.encode(history, history != 0)[history != 0].float().cpu())  # [prefixes, D]
            else:
                reps.append(self.sequence_representation(history, history != 0).float().cpu())  # [B, D]
        self.train(was_training)
        cfg = self.cfg
        centroids = fit_intents(
            torch.cat(reps), cfg.n_intents, iters=cfg.kmeans_iters, redo=cfg.kmeans_redo, seed=cfg.kmeans_seed
        )
        self.intents = centroids.to(device)
