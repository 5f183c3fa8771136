"""DARE and its baselines TWIN and DIN: stage-1 search against a sort, padding, config checks, the
scores of the implementation before they were split into three rankers, and a few training steps."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import pytorch_lightning as lightning
import torch

from recsys.data.item_features import ItemFeatures
from recsys.data.labelled import LabelledData
from recsys.data.labelled_datamodule import LabelledDataModule
from recsys.eval.labelled import labelled_split_metrics
from recsys.model_io import load_model, save_model
from recsys.models.dare import DARE, DAREConfig
from recsys.models.ranker import Ranker, RankerData, unknown_stage1_scores
from recsys.models.twin import TWINConfig
from recsys.nn.target_attention import attention_logits, genre_table, search_topk, search_topk_reference
from recsys.objectives import training_losses
from recsys.registry import RANKERS, build_ranker, choose_model
from recsys.train.experiment import EvalConfig, TrainConfig
from recsys.train.module import RecModule

# the four settings of issue 31, once variants of one DARE class: (registry name, their own params)
VARIANTS = [("dare", {"d_att": 4}), ("twin", {}), ("twin", {"d_proj": 4}), ("din", {})]
VARIANT_IDS = ["dare", "twin", "twin_proj", "din"]
GOLDEN = json.loads((Path(__file__).parent / "ranker_golden.json").read_text())


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


def _model(name: str, extra: dict[str, Any], n_items: int = 99, **kw: Any) -> Ranker:
    torch.manual_seed(0)
    search = {"top_k": 3} if name != "din" else {}  # DIN attends over the whole history
    cfg = {"d_rep": 8, "max_len": 7, "mlp": (16,), **search, **extra, **kw}
    return build_ranker(name, cfg, n_items)


def _score(
    model: Ranker, items: torch.Tensor, candidates: torch.Tensor, ratings: torch.Tensor | None = None
) -> torch.Tensor:
    return model.score(items, candidates, unknown_stage1_scores(candidates), ratings=ratings)


@pytest.mark.parametrize(("name", "extra"), VARIANTS, ids=VARIANT_IDS)
def test_logits_shape_and_padding_invariance(name: str, extra: dict[str, Any]) -> None:
    model = _model(name, extra, n_ratings=6).eval()
    items = torch.tensor([[0, 0, 0, 5, 9, 12, 40], [0, 0, 0, 0, 0, 0, 3], [0] * 7])  # the last history is empty
    candidates = torch.tensor([[1, 2, 98], [4, 4, 4], [7, 8, 9]])
    ratings = torch.randint(1, 6, items.shape) * (items != 0)
    out = _score(model, items, candidates, ratings)
    assert out.shape == (3, 3) and torch.isfinite(out).all()
    wider = torch.cat([torch.zeros(3, 4, dtype=torch.long), items], 1)  # more left padding, same histories
    model.max_len = 11
    assert torch.allclose(
        _score(model, wider, candidates, torch.cat([torch.zeros(3, 4, dtype=torch.long), ratings], 1)), out, atol=1e-6
    )


def _golden_features(n_items: int) -> ItemFeatures:
    names = ["Action", "Comedy", "Drama", "Horror"]
    genres = [None] + [
        ", ".join(sorted({names[i % 4], names[(i * 7) % 4]})) if i % 5 else None for i in range(1, n_items + 1)
    ]
    return ItemFeatures(n_items, [str(i) for i in range(n_items + 1)], {"genres": genres}, None, 0)


@pytest.mark.parametrize(("name", "extra", "variant"), [(*v, i) for v, i in zip(VARIANTS, VARIANT_IDS, strict=True)])
def test_scores_match_the_implementation_before_the_split(name: str, extra: dict[str, Any], variant: str) -> None:
    """The same seed builds the same weights under the same state_dict keys (old weights load) and
    gives the logits the single DARE class with `variant` gave (tests/models/ranker_golden.json)."""
    d_att = 4 if variant in ("dare", "twin_proj") else 8
    params = {**extra, "d_rep": 8, "max_len": 7, "mlp": (16,), "n_ratings": 6} | ({"top_k": 3} if name != "din" else {})
    torch.manual_seed(0)
    model = build_ranker(name, params, 29, item_features=_golden_features(29)).eval()  # n_genres: auto -> 5
    assert model.cfg.n_genres == 5 and (variant != "dare" or model.cfg.d_att == d_att)
    assert sorted(model.state_dict()) == GOLDEN["state_dict_keys"][variant]
    items = torch.tensor([[0, 0, 3, 5, 9, 12, 28], [0, 0, 0, 0, 0, 0, 3], [0] * 7, [1, 2, 3, 4, 5, 6, 7]])
    cands = torch.tensor([[1, 2, 28], [4, 4, 4], [7, 8, 9], [3, 6, 29]])
    ratings = torch.tensor([[0, 0, 5, 1, 3, 4, 2], [0, 0, 0, 0, 0, 0, 5], [0] * 7, [1, 2, 3, 4, 5, 4, 3]])
    with torch.no_grad():
        torch.testing.assert_close(_score(model, items, cands, ratings), torch.tensor(GOLDEN["logits"][variant]))
        torch.testing.assert_close(_score(model, items, cands), torch.tensor(GOLDEN["logits"][f"{variant}_noratings"]))


def test_dare_with_top_k_covering_history_equals_full_attention() -> None:
    """With K >= the history length, the search keeps every behaviour: DARE's stage 2 then is target
    attention over the whole history, computed here the slow way."""
    model = _model("dare", {"d_att": 4}, top_k=7).eval()
    assert isinstance(model, DARE)
    items = torch.tensor([[0, 0, 3, 5, 9, 12, 40]])
    cand = torch.tensor([[17, 2]])
    with torch.no_grad():
        att, rep = model.att(model.item_genres), model.rep(model.item_genres)
        w = torch.softmax(attention_logits(att[cand], att[items], items), -1)  # [1, 2, L]
        agg = torch.einsum("bcl,blr->bcr", w, rep[items])
        c = rep[cand]
        want = model.mlp(torch.cat([c, agg, c * agg], -1)).squeeze(-1)
        assert torch.allclose(_score(model, items, cand), want, atol=1e-6)


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="d_proj"):
        TWINConfig(d_proj=-1)
    with pytest.raises(ValueError, match="top_k"):
        DAREConfig(top_k=0)
    with pytest.raises(ValueError, match="n_genres"):
        DAREConfig(n_genres="many")  # type: ignore[arg-type]
    assert set(RANKERS) == {"dare", "twin", "din"}


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


@pytest.mark.parametrize(("name", "extra"), [("dare", {"d_att": 4, "top_k": 5}), ("din", {})])
@pytest.mark.usefixtures("one_thread")
def test_a_tiny_config_learns_the_planted_pattern(name: str, extra: dict[str, Any]) -> None:
    data = _planted()
    model = _model(name, extra)
    model.max_len = 30
    dm = LabelledDataModule(data, max_history=30, batch_size=32, eval_batch_size=256, seed=0)
    module = RecModule(model, TrainConfig(batch_size=32, lr=1e-2, grad_clip=None), EvalConfig())
    before = _held_out_loss(module, dm)
    trainer = lightning.Trainer(
        max_epochs=5,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=dm)  # the one LightningModule, validated on AUC each epoch
    assert "val/auc" in trainer.callback_metrics
    assert _held_out_loss(module, dm) < 0.6 * before
    assert labelled_split_metrics(model.eval(), dm.test_dataloader(), "test")["test/auc"] > 0.9


def _held_out_loss(module: RecModule, dm: LabelledDataModule) -> float:
    """Mean BCE of the training rows under the module's model (no grad)."""
    with torch.no_grad():
        losses = [
            float(training_losses(module.model, module.objective, b, module.loss).total) for b in dm.val_dataloader()
        ]
    return sum(losses) / len(losses)


@pytest.mark.parametrize(("recipe", "levels"), [("explicit", 6), ("paper", 0)])
def test_auto_side_features_resolve_from_the_data(recipe: str, levels: int, tmp_path: Path) -> None:
    """`n_ratings: auto` -> ratings 1..5 + none under explicit labels (0 under the implicit paper
    recipe); `n_genres: auto` -> the item features' genres + padding. The resolved numbers are the
    config the model keeps and saves, so it rebuilds without the data."""
    data = _planted()
    data = LabelledData(
        data.samples, data.sequences, data.sequences % 5 + 1, data.n_items, {"config": {"recipe": recipe}}
    )
    features = _golden_features(data.n_items)
    choice = choose_model("din", {"d_rep": 8, "mlp": [16]}, table=RANKERS).resolved(
        RankerData.of_labelled(data, features)
    )
    assert (choice.config.n_genres, choice.config.n_ratings) == (5, levels)
    model = choice.build(data.n_items, features)
    assert model.cfg == choice.config and choice.spec(data.n_items)["config"]["n_ratings"] == levels
    save_model(model, "din", {"d_rep": 8, "mlp": [16]}, data.n_items, tmp_path)  # auto matches what it resolved to
    assert load_model(tmp_path, kind="ranker").cfg == model.cfg
