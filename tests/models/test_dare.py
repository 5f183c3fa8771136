"""DARE and its baselines: stage-1 search against a sort, padding, config checks, and a few training steps."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import polars as pl
import pytest
import torch

from recsys.data.item_features import ItemFeatures
from recsys.data.labelled import LabelledData
from recsys.models.dare import DARE, DAREConfig, genre_table, search_topk, search_topk_reference
from recsys.registry import RANKERS, build_ranker
from recsys.train.labelled import LabelledTrainConfig, evaluate_labelled, fit_labelled

VARIANTS = [("dare", 4), ("twin", 8), ("twin_proj", 4), ("din", 8)]


def _padded_scores(g: torch.Generator, ties: bool) -> torch.Tensor:
    scores = torch.randint(0, 4, (5, 3, 17), generator=g).float() if ties else torch.randn(5, 3, 17, generator=g)
    lengths = torch.tensor([17, 9, 3, 1, 0])
    pad = torch.arange(17)[None, :] < (17 - lengths)[:, None]  # left padding
    return scores.masked_fill(pad[:, None, :], float("-inf"))


@pytest.mark.parametrize("k", [1, 4, 8])
def test_topk_equals_sort_without_ties(k: int) -> None:
    scores = _padded_scores(torch.Generator().manual_seed(0), ties=False)
    idx, real = search_topk(scores, k)
    ref, ref_real = search_topk_reference(scores, k)
    assert torch.equal(real, ref_real)
    # distinct scores: the same real positions, in the same order
    assert torch.equal(torch.where(real, idx, -1), torch.where(ref_real, ref, -1))


@pytest.mark.parametrize("k", [2, 5])
def test_topk_with_ties_keeps_k_highest_scores(k: int) -> None:
    scores = _padded_scores(torch.Generator().manual_seed(1), ties=True)
    idx, real = search_topk(scores, k)
    ref, ref_real = search_topk_reference(scores, k)
    assert torch.equal(real, ref_real)
    # ties may be kept in any order: the kept scores (sorted) equal the sort's, position by position
    got = scores.gather(-1, idx).sort(-1, descending=True).values
    want = scores.gather(-1, ref).sort(-1, descending=True).values
    assert torch.equal(got, want)


def test_reference_breaks_ties_towards_the_earlier_position() -> None:
    scores = torch.tensor([[[1.0, 3.0, 3.0, 2.0, 3.0]]])
    assert search_topk_reference(scores, 2)[0].tolist() == [[[1, 2]]]


def test_padding_is_never_selected() -> None:
    scores = _padded_scores(torch.Generator().manual_seed(2), ties=False)
    idx, real = search_topk(scores, 8)
    lengths = [17, 9, 3, 1, 0]
    for b, n in enumerate(lengths):
        assert int(real[b, 0].sum()) == min(8, n)
        assert (idx[b][real[b]] >= 17 - n).all()  # every kept position holds a real behaviour


def _model(variant: str, d_att: int, **kw: object) -> DARE:
    torch.manual_seed(0)
    cfg = {"variant": variant, "d_att": d_att, "d_rep": 8, "top_k": 3, "max_len": 7, "mlp": (16,), **kw}
    model = build_ranker("dare", cfg, 99)
    assert isinstance(model, DARE)
    return model


@pytest.mark.parametrize(("variant", "d_att"), VARIANTS)
def test_logits_shape_and_padding_invariance(variant: str, d_att: int) -> None:
    model = _model(variant, d_att, n_ratings=6).eval()
    items = torch.tensor([[0, 0, 0, 5, 9, 12, 40], [0, 0, 0, 0, 0, 0, 3], [0] * 7])  # the last history is empty
    candidates = torch.tensor([[1, 2, 98], [4, 4, 4], [7, 8, 9]])
    ratings = torch.randint(1, 6, items.shape) * (items != 0)
    out = model.logits(items, candidates, ratings)
    assert out.shape == (3, 3) and torch.isfinite(out).all()
    wider = torch.cat([torch.zeros(3, 4, dtype=torch.long), items], 1)  # more left padding, same histories
    model.max_len = 11
    assert torch.allclose(
        model.logits(wider, candidates, torch.cat([torch.zeros(3, 4, dtype=torch.long), ratings], 1)), out, atol=1e-6
    )


def test_dare_with_top_k_covering_history_equals_full_attention() -> None:
    """With K >= the history length, the search keeps every behaviour: DARE's stage 2 then is target
    attention over the whole history, computed here the slow way."""
    model = _model("dare", 4, top_k=7).eval()
    items = torch.tensor([[0, 0, 3, 5, 9, 12, 40]])
    cand = torch.tensor([[17, 2]])
    with torch.no_grad():
        q, k, v = model._tables()
        w = torch.softmax(model._scores(q[cand], k[items], items), -1)  # [1, 2, L]
        agg = torch.einsum("bcl,blr->bcr", w, v[items])
        c = v[cand]
        want = model.mlp(torch.cat([c, agg, c * agg], -1)).squeeze(-1)
        assert torch.allclose(model.logits(items, cand), want, atol=1e-6)


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="d_att"):
        DAREConfig(variant="twin", d_att=4, d_rep=16)
    with pytest.raises(ValueError, match="top_k"):
        DAREConfig(top_k=0)
    assert "dare" in RANKERS


def test_genre_table_from_item_features() -> None:
    feats = ItemFeatures(
        n_items=3,
        raw_ids=["", "a", "b", "c"],
        text={"genres": [None, "Drama, Comedy", "Drama", None]},
        attributes=None,
        n_attributes=0,
    )
    assert genre_table(feats, 3).tolist() == [[0, 0], [2, 1], [2, 0], [0, 0]]  # Comedy = 1, Drama = 2
    with pytest.raises(ValueError, match="n_genres"):
        genre_table(feats, 2)


def _planted(n_users: int = 24, n_items: int = 20) -> LabelledData:
    """Users like items of their own half of the catalog: label 1 iff the candidate is in the half
    their history comes from; the history decides the label, so only attention over it helps."""
    rng = np.random.default_rng(0)
    half = n_items // 2
    seqs = torch.zeros(n_users, 31, dtype=torch.long)
    cols: dict[str, list[int]] = {"user_idx": [], "position": [], "item_idx": [], "label": [], "split": []}
    for u in range(n_users):
        lo = 1 + half * (u % 2)
        seqs[u, :30] = torch.from_numpy(rng.integers(lo, lo + half, 30))
        for j in range(24):
            cand = int(rng.integers(1, n_items + 1))
            cols["user_idx"].append(u)
            cols["position"].append(30)
            cols["item_idx"].append(cand)
            cols["label"].append(int(lo <= cand < lo + half))
            cols["split"].append(0 if j < 16 else 1 if j < 20 else 2)
    samples = pl.DataFrame(cols).with_columns(pl.col("split").cast(pl.Int8))
    return LabelledData(samples, seqs, torch.zeros_like(seqs), n_items, {})


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny ops on a loaded 2-core machine run faster on one thread than on two that wait for each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(("variant", "d_att"), [("dare", 4), ("din", 8)])
@pytest.mark.usefixtures("one_thread")
def test_a_tiny_config_learns_the_planted_pattern(variant: str, d_att: int) -> None:
    data = _planted()
    model = _model(variant, d_att, top_k=5)
    model.max_len = 30
    cfg = LabelledTrainConfig(epochs=5, batch_size=32, lr=1e-2, max_history=30)
    fit = fit_labelled(model, data, cfg, generator=torch.Generator().manual_seed(0))
    losses = [h["train/loss"] for h in fit.history]
    assert losses[-1] < 0.6 * losses[0]
    assert evaluate_labelled(model, data, "test", cfg)["test/auc"] > 0.9
