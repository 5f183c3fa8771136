"""Recformer: key-value flattening, the embedding layout, training steps and cold items."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from recsys.data.item_features import ItemFeatures
from recsys.models.recformer import KEY, SUMMARY, VALUE, Recformer, RecformerConfig
from recsys.objectives import build_objective, training_losses
from recsys.objectives.text import warm_up_ids
from recsys.train.experiment import TrainConfig
from recsys.train.module import build_loss

TITLES = ["Toy Story", "Heat", "Alien", "Babe", "Casino", "Fargo", "Jumanji"]
GENRES = ["Animation", "Action", "Horror", "Drama", "Crime", "Crime", "Adventure"]


def _features(n: int = 7) -> ItemFeatures:
    return ItemFeatures(
        n_items=n,
        raw_ids=["", *[str(i) for i in range(1, n + 1)]],
        text={
            "title": [None, *TITLES[:n]],
            "year": [None, "1995", None, *["19" + str(80 + i) for i in range(2, n)]],
            "genres": [None, *GENRES[:n]],
        },
        attributes=None,
        n_attributes=0,
    )


def _model(backbone: Path, **params: object) -> Recformer:
    torch.manual_seed(0)
    cfg = RecformerConfig(
        **{"backbone": str(backbone), "max_len": 3, "max_item_tokens": 10, "max_tokens": 24, **params}
    )
    return Recformer(cfg, 7, _features())


def test_an_item_is_flattened_to_capped_key_value_tokens(tiny_text_backbone: Path) -> None:
    model = _model(tiny_text_backbone, max_field_tokens=2)
    tok = model.tokenizer
    ids, types = model.tokenize([{"title": "Toy Story of Terror", "year": None, "genres": "Animation"}])
    expected = (
        tok("title", add_special_tokens=False)["input_ids"]
        + tok("Toy Story of Terror", add_special_tokens=False)["input_ids"][:2]  # capped at 2 tokens
        + tok("genres", add_special_tokens=False)["input_ids"]  # no year: neither key nor value
        + tok("Animation", add_special_tokens=False)["input_ids"]
    )
    n = len(expected)
    assert ids[0, :n].tolist() == expected and (ids[0, n:] == model.pad_id).all()
    title_key = len(tok("title", add_special_tokens=False)["input_ids"])
    assert types[0, :title_key].tolist() == [KEY] * title_key
    assert types[0, title_key : title_key + 2].tolist() == [VALUE, VALUE]


def test_a_history_is_the_summary_token_then_items_most_recent_first(tiny_text_backbone: Path) -> None:
    model = _model(tiny_text_backbone)
    ids, types, pos, mask = model.history_tokens(torch.tensor([[0, 2, 5]]))
    n5, n2 = int((model.item_tokens[5] != model.pad_id).sum()), int((model.item_tokens[2] != model.pad_id).sum())
    assert ids[0, 0] == model.tokenizer.cls_token_id and types[0, 0] == SUMMARY and pos[0, 0] == 0
    assert ids[0, 1 : 1 + n5].tolist() == model.item_tokens[5, :n5].tolist()  # item 5, the most recent
    assert pos[0, 1 : 1 + n5].tolist() == [1] * n5
    assert ids[0, 1 + n5 : 1 + n5 + n2].tolist() == model.item_tokens[2, :n2].tolist()
    assert pos[0, 1 + n5 : 1 + n5 + n2].tolist() == [2] * n2
    assert mask.sum() == 1 + n5 + n2
    long = model.history_tokens(torch.tensor([[1, 2, 3, 4, 5, 6]]))[0]  # cut at max_len items and max_tokens
    assert long.shape[1] <= model.cfg.max_tokens


@pytest.mark.parametrize("attention", ["sdpa", "linear"])
def test_tiny_model_trains_in_a_few_steps(tiny_text_backbone: Path, attention: str) -> None:
    model = _model(tiny_text_backbone, temperature=0.2, attention=attention)
    assert model.backbone.config._attn_implementation == ("recsys_linear" if attention == "linear" else "sdpa")
    objective = build_objective(model.objective)
    rows = objective.train_rows([[1, 2, 3, 4, 5, 6, 7]] * 8, model.max_len, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn, losses = build_loss(TrainConfig()), []
    for step in range(12):
        objective.on_epoch_start(model, [], step)  # refresh the item table every step here
        loss = training_losses(model.train(), objective, rows[list(range(8))], loss_fn).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-3:]) < sum(losses[:3])


def test_pretraining_adds_the_mlm_term(tiny_text_backbone: Path) -> None:
    model = _model(tiny_text_backbone, pretrain_epochs=1, mlm_prob=0.5)
    objective = build_objective(model.objective)
    objective.on_epoch_start(model, [], 0)
    rows = objective.train_rows([[1, 2, 3, 4, 5, 6, 7]] * 4, model.max_len, generator=torch.Generator().manual_seed(0))
    parts = training_losses(model.train(), objective, rows[[0, 1, 2, 3]], build_loss(TrainConfig()))
    assert set(parts.terms) == {"rec", "mlm"} and all(torch.isfinite(t) for t in parts.terms.values())
    parts.total.backward()
    assert model.mlm_head[0].weight.grad is not None  # the MLM head learns
    objective.on_epoch_start(model, [], 1)
    assert set(training_losses(model, objective, rows[[0, 1]], build_loss(TrainConfig())).terms) == {"rec"}


def test_an_unseen_item_gets_a_finite_vector_that_exact_search_finds(tiny_text_backbone: Path) -> None:
    import faiss

    model = _model(tiny_text_backbone).eval()
    with torch.no_grad():
        table = model.item_embeddings()[1:]
        new = model.embed_text([{"title": "Brand New Film", "year": "2026", "genres": "Documentary"}])
        known = model.embed_text([{"title": "Heat", "year": None, "genres": "Action"}])
    assert torch.isfinite(new).all()
    torch.testing.assert_close(known, table[1:2])  # the text path and the table agree for item 2
    index = faiss.IndexFlatIP(new.shape[1])
    index.add(torch.cat([table, new]).numpy())
    scores, top = index.search(new.numpy(), 2)  # a tiny random encoder maps all texts close together
    assert top[0, 0] == len(table) and scores[0, 0] > scores[0, 1]  # the new item's row, ahead of the rest


def test_added_items_extend_the_tables_and_are_ranked(tiny_text_backbone: Path) -> None:
    model = _model(tiny_text_backbone).eval()
    before = model.item_embeddings().clone()
    vectors = model.add_items([{"title": "Brand New Film", "year": "2026", "genres": "Documentary"}])
    table = model.item_embeddings()
    assert table.shape[0] == len(before) + 1 and torch.equal(table[:-1], before)  # old rows untouched
    torch.testing.assert_close(table[-1:], vectors)
    assert len(model.item_tokens) == len(table)
    scores = (
        model.sequence_representation(torch.tensor([[8]]), torch.tensor([[True]])) @ table.T
    )  # history: the new item
    assert torch.isfinite(scores).all()
    with pytest.raises(ValueError, match="no items"):
        model.add_items([])


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        RecformerConfig(max_item_tokens=32, max_tokens=16)
    with pytest.raises(ValueError, match="temperature"):
        RecformerConfig(temperature=0)
    with pytest.raises(ValueError, match="'flash'"):
        RecformerConfig(attention="flash")
    with pytest.raises(ValueError, match="id_len=5 needs item_ids"):
        RecformerConfig(id_len=5)
    with pytest.raises(ValueError, match="id_epochs=3 needs an ID encoder"):
        RecformerConfig(item_ids=True, id_epochs=3)
    with pytest.raises(ValueError, match="text_weights and text_loss weigh the text summary"):
        RecformerConfig(text_weights=(0.0, 1.0))
    with pytest.raises(ValueError, match="text_loss must be >= 0"):
        RecformerConfig(item_ids=True, id_len=4, text_loss=-1.0)
    with pytest.raises(ValueError, match="text weights must be >= 0"):
        RecformerConfig(item_ids=True, id_len=4, text_weights=(-1.0, 1.0))
    with pytest.raises(ValueError, match="id_warmup_frac must be in"):
        RecformerConfig(id_warmup_frac=1.0)
    with pytest.raises(ValueError, match="item_bias is added by the ID encoder's state: it needs id_len > 0"):
        RecformerConfig(item_ids=True, item_bias=True)
    with pytest.raises(ValueError, match="id_rows must be one of \\['fused', 'free', 'compact'\\], got 'wide'"):
        RecformerConfig(item_ids=True, id_len=4, id_rows="wide")
    with pytest.raises(ValueError, match="id_rows: free is read and scored by the ID encoder: it needs id_len > 0"):
        RecformerConfig(item_ids=True, id_rows="free")
    with pytest.raises(ValueError, match="id_rows: compact is read and scored by the ID encoder: it needs id_len > 0"):
        RecformerConfig(item_ids=True, id_rows="compact")
    with pytest.raises(ValueError, match="prior_weight=0.5 and prior_weights=\\[\\] weigh .* need item_prior: true"):
        RecformerConfig(prior_weight=0.5)
    with pytest.raises(ValueError, match="prior weights must be >= 0, got 0.0 and \\[-1.0\\]"):
        RecformerConfig(item_prior=True, prior_weights=(-1.0,))


def _id_user_model(backbone: Path, counts: torch.Tensor | None = None, **params: Any) -> Recformer:
    model = _model(backbone, item_ids=True, id_len=5, id_hidden=8, id_heads=2, id_encoder_dropout=0.0, **params)
    model.observe_training_items(torch.arange(1, 6), counts)  # items 6 and 7 held out of training: text only
    return model


def test_the_user_vector_is_the_text_summary_plus_the_id_encoders_last_state(tiny_text_backbone: Path) -> None:
    model = _id_user_model(tiny_text_backbone).eval()
    assert model.max_len == 5  # rows and evaluation read the ID encoder's history; the text its last 3
    history = torch.tensor([[4, 1, 2, 5, 3], [0, 0, 0, 2, 6]])
    with torch.no_grad():
        user = model.sequence_representation(history, history != 0)
        text = F.normalize(model.encode_history(history[:, -3:])[0], dim=-1) / model.cfg.temperature
        ids = model.id_encoder(history, model.item_embeddings()[history])[:, -1]  # type: ignore[misc]
    torch.testing.assert_close(user, text + ids)
    model.set_part_weight("text", 0.25)  # the text summary's weight, as chosen on validation (recsys.eval.part_weight)
    with torch.no_grad():
        torch.testing.assert_close(model.sequence_representation(history, history != 0), 0.25 * text + ids)
    assert model.trained_items().nonzero().flatten().tolist() == [1, 2, 3, 4, 5]


def test_text_loss_adds_the_text_summarys_own_loss_beside_the_summed_one(tiny_text_backbone: Path) -> None:
    model = _id_user_model(tiny_text_backbone, text_loss=0.5, text_weight=0.25).eval()
    objective = build_objective(model.objective)
    objective.on_epoch_start(model, [], 0)
    rows = objective.train_rows([[1, 2, 3, 4, 5, 1, 2]] * 4, model.max_len, generator=torch.Generator().manual_seed(0))
    batch = rows[[0, 1, 2, 3]]
    loss_fn = build_loss(TrainConfig())
    terms = training_losses(model, objective, batch, loss_fn).terms
    history, targets = batch.items[:, :-1], batch.items[:, -1]
    with torch.no_grad():
        ids, text = model.user_parts(history)
        table = model.item_embeddings()
        torch.testing.assert_close(terms["rec"], loss_fn(ids + 0.25 * text, table, targets))
        torch.testing.assert_close(terms["text"], 0.5 * loss_fn(text, table, targets))
    assert set(training_losses(_id_user_model(tiny_text_backbone).eval(), objective, batch, loss_fn).terms) == {"rec"}


def test_the_id_warm_up_trains_only_the_id_parts_and_never_scores_held_out_items(tiny_text_backbone: Path) -> None:
    model = _id_user_model(tiny_text_backbone).train()
    model.item_embeddings()  # the text table, encoded once
    text_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    table_before = model.item_table.clone()
    seqs = [[2, 4, 1, 2, 3, 4, 5, 1], [3, 4, 5, 2]] * 4  # rows: the last id_len + 1 = 6 items of each
    losses = warm_up_ids(model, seqs, epochs=12, lr=1e-2, batch_size=3, generator=torch.Generator().manual_seed(0))
    assert losses[-1] < 0.5 * losses[0]
    assert all(torch.equal(v, text_before[k]) for k, v in model.backbone.state_dict().items())
    torch.testing.assert_close(model.item_table, table_before)  # the text table is not trained here
    assert model.tower is not None and model.tower.id_emb is not None
    grad = model.tower.id_emb.weight.grad
    assert grad is not None and grad[1:6].abs().sum() > 0 and grad[6:].abs().sum() == 0  # held out: no ID row
    # held-out items are no class: with lr 0 a pass's loss is the cross-entropy over the trained items only,
    # every position of each user's last 6 items, every item by its text + ID vector (no id_dropout draws)
    frozen = _id_user_model(tiny_text_backbone, id_dropout=0.9).train()
    items = torch.tensor([[1, 2, 3, 4, 5, 1], [0, 0, 3, 4, 5, 2]] * 4)
    (loss,) = warm_up_ids(frozen, seqs, epochs=1, lr=0.0, batch_size=len(seqs))
    assert frozen.tower is not None and frozen.tower.training  # back in training mode after the warm-up
    frozen.eval()
    with torch.no_grad():
        targets = items[:, 1:]
        logits = frozen.id_states(items[:, :-1])[targets != 0] @ frozen.item_embeddings().T
        trained_only = F.cross_entropy(logits[:, 1:6], targets[targets != 0] - 1)
        every_item = F.cross_entropy(logits[:, 1:], targets[targets != 0] - 1)
    assert loss == pytest.approx(float(trained_only), rel=1e-5) and loss != pytest.approx(float(every_item), rel=1e-3)
    with pytest.raises(ValueError, match="needs a text \\+ ID model with an ID encoder"):
        warm_up_ids(_model(tiny_text_backbone), seqs, epochs=1, lr=1e-2, batch_size=3)
    with pytest.raises(ValueError, match="needs the users' training sequences"):
        warm_up_ids(model, [], epochs=1, lr=1e-2, batch_size=3)


def test_item_bias_adds_a_centred_learned_score_per_trained_item_through_the_id_part(tiny_text_backbone: Path) -> None:
    plain = _id_user_model(tiny_text_backbone).eval()
    model = _id_user_model(tiny_text_backbone, item_bias=True).eval()
    assert model.item_bias is not None
    with torch.no_grad():
        model.item_bias.copy_(torch.tensor([9.0, 1.0, 2.0, 3.0, 4.0, 5.0, 7.0, -4.0]))  # 0, 6, 7: no ID row
        table = model.item_embeddings()
        torch.testing.assert_close(table[:, :-1], plain.item_embeddings())  # the unit rows are unchanged
        assert table[:, -1].tolist() == [0.0, -2.0, -1.0, 0.0, 1.0, 2.0, 0.0, 0.0]  # centred on the trained mean 3
        history = torch.tensor([[4, 1, 2, 5, 3], [0, 0, 0, 2, 6]])
        ids, text = model.user_parts(history)
        plain_ids, plain_text = plain.user_parts(history)
        # the scores: the plain model's (same seed, same weights), plus each item's bias through the ID part only
        torch.testing.assert_close(ids @ table.T, plain_ids @ plain.item_embeddings().T + table[:, -1])
        torch.testing.assert_close(text @ table.T, plain_text @ plain.item_embeddings().T)
        user = model.sequence_representation(history, history != 0)
        torch.testing.assert_close(user @ table.T, (ids + text) @ table.T)
    assert any(p is model.item_bias for p in model.id_parameters())  # the warm-up trains it
    seqs = [[2, 4, 1, 2, 3, 4, 5, 1], [3, 4, 5, 2]] * 4
    warm_up_ids(model.train(), seqs, epochs=2, lr=1e-2, batch_size=3, generator=torch.Generator().manual_seed(0))
    assert model.item_bias.grad is not None and model.item_bias.grad[[6, 7]].abs().sum() == 0  # held out: no class
    added = model.eval().add_items([{"title": "Heat", "year": "1995", "genres": "Action"}])
    torch.testing.assert_close(added, model.item_embeddings()[-1:])  # an added item: its unit text vector, bias 0
    assert added[0, -1] == 0.0


@pytest.mark.parametrize("id_rows", ["free", "compact"])
def test_free_id_rows_sit_beside_the_text_table_and_only_the_id_state_scores_them(
    tiny_text_backbone: Path, id_rows: str
) -> None:
    model = _id_user_model(tiny_text_backbone, id_rows=id_rows, item_bias=True).eval()
    assert model.tower is not None and model.item_bias is not None
    with torch.no_grad():
        model.item_bias.copy_(torch.tensor([9.0, 1.0, 2.0, 3.0, 4.0, 5.0, 7.0, -4.0]))  # 0, 6, 7: no ID row
        table = model.item_embeddings()
        dim = model.item_table.shape[1]
        width = dim if id_rows == "free" else model.cfg.id_hidden  # compact: SASRec's width
        assert table.shape == (8, dim + width + 1)
        torch.testing.assert_close(table[:, :dim], model.item_table)  # the text half: unit text vectors, every item
        if id_rows == "free":  # the ID half: each trained item's ID row, started at its text vector
            torch.testing.assert_close(table[1:6, dim:-1], model.item_table[1:6])
        else:  # started at the 5 text vectors' 4 whitened components times 0.02: Gram = 0.02^2 (5 - 1) (I - J / 5)
            gram = table[1:6, dim:-1] @ table[1:6, dim:-1].T
            torch.testing.assert_close(gram, 0.02**2 * 4 * (torch.eye(5) - 1 / 5), atol=1e-6, rtol=1e-4)
        assert table[[0, 6, 7], dim:-1].abs().sum() == 0  # held-out items and padding: zeros
        assert table[:, -1].tolist() == [0.0, -2.0, -1.0, 0.0, 1.0, 2.0, 0.0, 0.0]
        started = table[1:6, dim:-1].clone()
        model.tower.id_emb.weight[1:6] *= 3.0  # type: ignore[union-attr]
        table = model.item_embeddings()
        torch.testing.assert_close(table[1:6, dim:-1], 3.0 * started)  # not unit-normalised
        history = torch.tensor([[4, 1, 2, 5, 3], [0, 0, 0, 2, 6]])
        ids, text = model.user_parts(history)
        state = model.id_encoder(history, model.tower.id_view(history))[:, -1]  # type: ignore[misc]
        summary = F.normalize(model.encode_history(history[:, -3:])[0], dim=-1) / model.cfg.temperature
        # the ID state scores the ID rows (plus each item's bias), the text summary the unit text vectors
        torch.testing.assert_close(ids @ table.T, state @ table[:, dim:-1].T + table[:, -1])
        torch.testing.assert_close(text @ table.T, summary @ model.item_table.T)
        model.set_part_weight("text", 0.5)
        torch.testing.assert_close(model.sequence_representation(history, history != 0), ids + 0.5 * text)
    seqs = [[2, 4, 1, 2, 3, 4, 5, 1], [3, 4, 5, 2]] * 4
    before = model.item_table.clone()
    warm_up_ids(model.train(), seqs, epochs=2, lr=1e-2, batch_size=3, generator=torch.Generator().manual_seed(0))
    grad = model.tower.id_emb.weight.grad  # type: ignore[union-attr]
    assert grad is not None and grad[1:6].abs().sum() > 0 and grad[6:].abs().sum() == 0  # held out: no class
    torch.testing.assert_close(model.item_table, before)  # the text half is not trained by the warm-up
    twin: dict[str, str | None] = {"title": "Heat", "year": None, "genres": "Action"}  # item 2's text
    added = model.eval().add_items([twin])
    torch.testing.assert_close(added, model.item_embeddings()[-1:])
    torch.testing.assert_close(added[0, :dim], model.item_table[2])  # its twin's text vector, no ID half, bias 0
    assert added[0, dim:].abs().sum() == 0


def test_item_prior_is_a_fixed_centred_log_count_column_weighed_by_the_user(tiny_text_backbone: Path) -> None:
    counts = torch.tensor([0, 4, 1, 9, 3, 2, 0, 0])  # 6 and 7: never in training
    plain = _id_user_model(tiny_text_backbone, item_bias=True).eval()
    params: dict[str, Any] = {"item_bias": True, "item_prior": True, "prior_weights": (0.0, 2.0)}
    model = _id_user_model(tiny_text_backbone, counts, **params).eval()
    with pytest.raises(ValueError, match="item_prior needs the training counts of all 8 rows, got None"):
        model.observe_training_items(torch.arange(1, 6))
    with pytest.raises(ValueError, match="item_prior needs the training counts of all 8 rows, got 7"):
        model.observe_training_items(torch.arange(1, 6), counts[:-1])
    log_counts = torch.log1p(counts.float())
    expected = torch.where(counts > 0, log_counts - log_counts[1:6].mean(), torch.zeros(8))
    history = torch.tensor([[4, 1, 2, 5, 3], [0, 0, 0, 2, 6]])
    with torch.no_grad():
        table = model.item_embeddings()
        torch.testing.assert_close(table[:, :-1], plain.item_embeddings())  # the other columns are unchanged
        torch.testing.assert_close(table[:, -1], expected)
        scores = plain.sequence_representation(history, history != 0) @ plain.item_embeddings().T
        # prior_weight is 0 until chosen: the model scores as without the prior (training included)
        torch.testing.assert_close(model.sequence_representation(history, history != 0) @ table.T, scores)
        assert model.part_weights() == {"prior": (0.0, 2.0)}
        base, unit = model.split_user(history, "prior")
        torch.testing.assert_close(base @ table.T, scores)
        assert unit[:, -1].tolist() == [1.0, 1.0] and unit[:, :-1].abs().sum() == 0
        model.set_part_weight("prior", 2.0)
        user = model.sequence_representation(history, history != 0)
        assert user[:, -1].tolist() == [2.0, 2.0]
        torch.testing.assert_close(user @ table.T, scores + 2.0 * expected)
        torch.testing.assert_close(model.split_user(history, "prior")[0], base)
    with pytest.raises(ValueError, match="no part 'genre' to weigh in this Recformer; expected 'text' or 'prior'"):
        model.set_part_weight("genre", 1.0)
    # a model trained without the prior, given it afterwards: the model trained with it (its weight 0 in training)
    plain.add_item_prior(counts, (0.0, 2.0))
    assert plain.cfg == dataclasses.replace(model.cfg, prior_weight=0.0) and plain.part_weights() == {
        "prior": (0.0, 2.0)
    }
    with torch.no_grad():
        torch.testing.assert_close(plain.item_embeddings(), model.item_embeddings())
    with pytest.raises(ValueError, match="has its item_prior already"):
        plain.add_item_prior(counts, (1.0,))
    added = model.add_items([{"title": "Heat", "year": "1995", "genres": "Action"}])
    assert added[0, -1] == 0.0 and model.item_prior is not None and len(model.item_prior) == 9  # an average item
    # a text-only model takes the prior too: its summary, then the prior weight against the last column
    text_only = _model(tiny_text_backbone, item_prior=True, prior_weight=1.0).eval()
    text_only.observe_training_items(torch.arange(1, 6), counts)
    with torch.no_grad():
        table = text_only.item_embeddings()
        user = text_only.sequence_representation(history, history != 0)
        summary = F.normalize(text_only.encode_history(history[:, -3:])[0], dim=-1) / text_only.cfg.temperature
    torch.testing.assert_close(user @ table.T, summary @ text_only.item_table.T + expected)
    with pytest.raises(ValueError, match="no part 'text' to weigh in this Recformer"):
        text_only.split_user(history, "text")


def _slow_borrowed(values: torch.Tensor, text: torch.Tensor, item: int, donors: list[int], k: int) -> torch.Tensor:
    """The mean of `values` over `item`'s `k` nearest `donors` by cosine over the `text` table (the slow reference)."""
    unit = F.normalize(text, dim=-1)
    nearest = sorted((d for d in donors if d != item), key=lambda d: -float(unit[item] @ unit[d]))[:k]
    return values[nearest].mean(0)


def test_borrow_ids_scores_an_item_without_an_id_row_by_its_text_neighbours_rows_and_bias(
    tiny_text_backbone: Path,
) -> None:
    params: dict[str, Any] = {"item_bias": True, "id_dropout": 0.5}
    plain = _id_user_model(tiny_text_backbone, **params)
    model = _id_user_model(tiny_text_backbone, borrow_ids=2, **params)
    assert model.tower is not None and model.item_bias is not None and model.tower.id_emb is not None
    with torch.no_grad():
        for m in (plain, model):
            assert m.item_bias is not None
            m.item_bias.copy_(torch.tensor([9.0, 1.0, 2.0, 3.0, 4.0, 5.0, 7.0, -4.0]))  # 0, 6, 7: no ID row
        model.eval()
        table, plain_table = model.item_embeddings(), plain.eval().item_embeddings()
        torch.testing.assert_close(table[:6], plain_table[:6])  # the trained items (and padding) are unchanged
        rows, text = model.tower.id_emb.weight, model.item_table
        centred = torch.tensor([0.0, -2.0, -1.0, 0.0, 1.0, 2.0])
        for item in (6, 7):  # held out: the text + the neighbours' mean ID row, unit-normalised; their mean bias
            expected = F.normalize(text[item] + _slow_borrowed(rows, text, item, [1, 2, 3, 4, 5], 2), dim=-1)
            torch.testing.assert_close(table[item, :-1], expected)
            torch.testing.assert_close(table[item, -1], _slow_borrowed(centred, text, item, [1, 2, 3, 4, 5], 2))
        assert not torch.allclose(table[6:], plain_table[6:])
    # training is unchanged: an item that id_dropout drops (and a held-out one) is its text alone, as without
    # borrowing (same draws, same rows)
    assert plain.tower is not None
    model.tower.train()
    plain.tower.train()
    torch.manual_seed(0)
    trained = model.tower(torch.arange(8))
    torch.manual_seed(0)
    torch.testing.assert_close(trained, plain.tower(torch.arange(8)))
    model.tower.eval()
    plain.tower.eval()
    # a model trained without borrowing, given it afterwards: the model configured with it
    plain.eval().add_id_borrowing(2)
    assert plain.cfg == model.cfg
    with torch.no_grad():
        torch.testing.assert_close(plain.item_embeddings(), model.eval().item_embeddings())
    # an item added by text borrows as a cold item does: its neighbours (its catalog twin first) lend rows and bias
    added = model.add_items([{"title": "Heat", "year": None, "genres": "Action"}])  # item 2's text
    with torch.no_grad():
        text = model.item_table
        torch.testing.assert_close(text[8], text[2])
        assert model.tower.id_neighbours[8, 0] == 2
        expected = F.normalize(text[8] + _slow_borrowed(rows, text, 8, [1, 2, 3, 4, 5], 2), dim=-1)
        torch.testing.assert_close(added[0, :-1], expected)
        torch.testing.assert_close(added[0, -1], _slow_borrowed(centred, text, 8, [1, 2, 3, 4, 5], 2))
    # the neighbours follow the table: re-encoding it finds them again
    model.tower.id_neighbours.zero_()
    model.refresh_items()
    assert model.tower.id_neighbours[6:].ne(0).all()
    with pytest.raises(ValueError, match="borrow_ids=2 borrows ID rows: it needs item_ids: true"):
        RecformerConfig(borrow_ids=2)
    with pytest.raises(ValueError, match="borrow_ids must be >= 0, got -1"):
        RecformerConfig(item_ids=True, borrow_ids=-1)
    with pytest.raises(ValueError, match="a text-only Recformer has no ID rows to borrow"):
        _model(tiny_text_backbone).add_id_borrowing(2)


# the first components of two user vectors and of items 2 and 6 with `pooling: cls`, written by the
# code before pooling was configurable (the summary token's state): cls must stay exactly that
GOLDEN_CLS_USERS = [
    [0.18265, 0.00204, -0.50688, -0.16676, 0.11282, -0.03767],
    [0.18226, 0.00148, -0.50717, -0.16687, 0.11335, -0.03771],
]
GOLDEN_CLS_ITEMS = [
    [0.18322, 0.00222, -0.50747, -0.1668, 0.11395, -0.03858],
    [0.18142, 0.00301, -0.50697, -0.16638, 0.11378, -0.03811],
]
HISTORIES = torch.tensor([[0, 2, 5], [1, 3, 4]])


def test_cls_pooling_gives_the_vectors_it_gave_before_pooling_was_configurable(tiny_text_backbone: Path) -> None:
    model = _model(tiny_text_backbone, pooling="cls").eval()
    with torch.no_grad():
        users = model.sequence_representation(HISTORIES, HISTORIES != 0) * model.cfg.temperature
        items = model.item_embeddings()[[2, 6]]
    torch.testing.assert_close(users[:, :6], torch.tensor(GOLDEN_CLS_USERS), rtol=0, atol=2e-5)
    torch.testing.assert_close(items[:, :6], torch.tensor(GOLDEN_CLS_ITEMS), rtol=0, atol=2e-5)


def _slow_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of each row's real token states, one token at a time (the reference for `pool`)."""
    rows = []
    for b in range(states.shape[0]):
        total, count = torch.zeros(states.shape[-1]), 0
        for t in range(states.shape[1]):
            if mask[b, t]:
                total, count = total + states[b, t], count + 1
        rows.append(total / count)
    return torch.stack(rows)


def test_mean_pooling_is_the_mean_over_real_tokens(tiny_text_backbone: Path) -> None:
    model = _model(tiny_text_backbone).eval()
    assert model.cfg.pooling == "mean"  # the default, for the sentence-transformer backbone
    with torch.no_grad():
        ids, types, pos, mask = model.history_tokens(HISTORIES)
        assert not mask.all()  # the shorter history is padded: padding must not count
        states = model.encode_tokens(ids, types, pos, mask)  # [B, T, D]
        users = model.sequence_representation(HISTORIES, HISTORIES != 0) * model.cfg.temperature
        torch.testing.assert_close(users, torch.nn.functional.normalize(_slow_mean(states, mask), dim=-1))
        one = model.history_tokens(torch.tensor([[0, 0, 6]]))
        item = torch.nn.functional.normalize(_slow_mean(model.encode_tokens(*one), one[3]), dim=-1)
        torch.testing.assert_close(model.item_embeddings()[6:7], item)
        assert not torch.allclose(users, torch.nn.functional.normalize(states[:, 0], dim=-1))  # not the cls state


def test_an_unknown_pooling_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="pooling.*'max'"):
        RecformerConfig(pooling="max")


def test_a_model_saved_before_pooling_and_the_snapshot_existed_loads_as_cls_and_live(
    tiny_text_backbone: Path, tmp_path: Path
) -> None:
    import json

    from recsys.model_io import MODEL_JSON, load_model, resolved_config, save_model

    model = _model(tiny_text_backbone, pooling="cls", item_encoder="live").eval()
    save_model(model, "recformer", resolved_config(model), 7, tmp_path / "m")
    spec = json.loads((tmp_path / "m" / MODEL_JSON).read_text())
    del spec["config"]["pooling"], spec["config"]["item_encoder"]  # a model saved before the fields existed
    (tmp_path / "m" / MODEL_JSON).write_text(json.dumps(spec))
    loaded = load_model(tmp_path / "m")
    assert loaded.cfg.pooling == "cls" and loaded.cfg.item_encoder == "live"  # type: ignore[attr-defined]
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.sequence_representation(HISTORIES, HISTORIES != 0),
            model.sequence_representation(HISTORIES, HISTORIES != 0),
        )


def test_histories_longer_than_the_backbone_positions_encode_and_survive_a_save(
    tiny_text_backbone: Path, tmp_path: Path
) -> None:
    from recsys.model_io import load_model, resolved_config, save_model

    model = _model(tiny_text_backbone, max_len=100, max_tokens=800, attention="linear").eval()
    assert model.backbone.config.max_position_embeddings == 800  # the tiny backbone has MiniLM's 512
    history = torch.arange(100)[None] % 7 + 1
    assert model.history_tokens(history)[0].shape[1] > 512  # past the pretrained table
    with torch.no_grad():
        vector = model.sequence_representation(history, history != 0)
    assert torch.isfinite(vector).all()
    save_model(model, "recformer", resolved_config(model), 7, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(loaded.sequence_representation(history, history != 0), vector)


@pytest.mark.parametrize("item_encoder", ["snapshot", "live"])
def test_the_table_and_added_items_come_from_one_encoder_and_a_snapshot_keeps_the_validated_table(
    tiny_text_backbone: Path, item_encoder: str
) -> None:
    model = _model(tiny_text_backbone, item_encoder=item_encoder)
    objective = build_objective(model.objective)
    objective.on_epoch_start(model, [], 0)  # stage 1: the table encoded before the epoch
    encoded = model.item_embeddings().clone()
    rows = objective.train_rows([[1, 2, 3, 4, 5, 6, 7]] * 8, model.max_len, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):  # the encoder moves on while the table stays (as within an epoch)
        loss = training_losses(model.train(), objective, rows[list(range(8))], build_loss(TrainConfig())).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if model.table_encoder is not None:
        assert not any(p.requires_grad or p.grad is not None for p in model.table_encoder.parameters())
    objective.on_fit_end(model.eval())
    table = model.item_embeddings().clone()
    heat = {"title": "Heat", "year": None, "genres": "Action"}  # item 2's text, added again as a new item
    with torch.no_grad():
        live = model.item_vectors(model.item_tokens[2:3], model.item_types[2:3])
        twin = model.add_items([heat])
    assert float(F.cosine_similarity(twin, table[2:3])) > 0.9999  # the twin gets its catalog row
    assert float(F.cosine_similarity(live, encoded[2:3])) < 0.999  # the live encoder has moved
    if item_encoder == "snapshot":
        torch.testing.assert_close(table, encoded)  # the table validation scored, unchanged
    else:
        assert not torch.allclose(table, encoded)  # re-encoded by the final weights
