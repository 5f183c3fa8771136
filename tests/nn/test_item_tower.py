"""The item tower: output shapes for every view / adapter / fuse, a cold item (no ID row) is its text
part alone, and the text table built from item text."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from recsys.data.item_features import ItemFeatures
from recsys.nn.item_tower import ItemTower, ItemTowerConfig, build_text_table, build_text_view
from recsys.nn.item_vectors import sentence_of

N_ITEMS, DIM = 11, 8


def _tower(**kw: object) -> ItemTower:
    torch.manual_seed(0)
    cfg = ItemTowerConfig(**{"text": "some-encoder", **kw})  # type: ignore[arg-type]
    tower = ItemTower(cfg, N_ITEMS, DIM)
    if cfg.text:
        table = torch.randn(N_ITEMS + 1, cfg.table_width(DIM))
        table[0] = 0
        tower.set_text_table(table)
    return tower


CASES = [
    {"fuse": "sum"},
    {"fuse": "concat"},
    {"adapter": "linear", "text_dim": 5},
    {"adapter": "linear", "text_dim": 5, "fuse": "concat"},
    {"id_embedding": False},
    {"text": ""},
]


@pytest.mark.parametrize("kw", CASES)
def test_shapes_and_padding_is_zero(kw: dict[str, object]) -> None:
    tower = _tower(**kw)
    items = torch.tensor([[0, 3, 11], [1, 0, 2]])
    out = tower(items)
    assert out.shape == (2, 3, DIM) and torch.equal(out[items == 0], torch.zeros(2, DIM))
    table = tower.item_weight()
    assert table.shape == (N_ITEMS + 1, DIM) and torch.equal(table[0], torch.zeros(DIM))
    torch.testing.assert_close(table[items], out)
    assert tower.text_table.shape[1] == (0 if kw.get("text") == "" else 5 if "text_dim" in kw else DIM)


@pytest.mark.parametrize("kw", [c for c in CASES if c.get("text") != "" and c.get("id_embedding") is not False])
def test_a_cold_item_gets_its_text_vector_only(kw: dict[str, object]) -> None:
    tower = _tower(**kw)
    items = torch.tensor([4, 7])
    before = tower(items)
    tower.drop_ids(torch.tensor([7]))
    after = tower(items)
    torch.testing.assert_close(after[0], before[0])  # a warm item keeps both views
    torch.testing.assert_close(after[1], tower.text_view(torch.tensor(7)))
    assert not torch.allclose(after[1], before[1])
    torch.testing.assert_close(tower.id_view(torch.tensor(7)), torch.zeros(DIM))
    with pytest.raises(ValueError, match="text view"):
        _tower(text="").drop_ids(torch.tensor([7]))


def test_pca_text_view_starts_at_the_id_tables_scale_and_only_the_adapter_learns() -> None:
    tower = _tower()
    assert tower.text_scale is not None and float(tower.text_scale.detach()) == pytest.approx(0.02)
    trainable = {n for n, p in tower.named_parameters() if p.requires_grad}
    assert trainable == {"id_emb.weight", "text_scale"} and "text_table" in dict(tower.named_buffers())


def test_config_refuses_bad_values_naming_the_field() -> None:
    for kw, field in [({"pooling": "max"}, "pooling"), ({"adapter": "mlp"}, "adapter"), ({"fuse": "x"}, "fuse")]:
        with pytest.raises(ValueError, match=field):
            ItemTowerConfig(**kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="id_embedding"):
        ItemTowerConfig(id_embedding=False, text="")
    with pytest.raises(ValueError, match="text table"):
        _tower().set_text_table(torch.zeros(N_ITEMS + 1, DIM + 1))


@pytest.mark.parametrize("kw", [{"fuse": "sum"}, {"fuse": "concat"}])
def test_id_dropout_makes_items_text_only_in_training_and_never_in_eval(kw: dict[str, object]) -> None:
    tower = _tower(id_dropout=0.5, **kw)
    items = torch.arange(1, N_ITEMS + 1)
    text_only = tower.text_view(items)
    tower.eval()
    full = tower(items)
    torch.testing.assert_close(tower(items), full)  # evaluation: every item keeps its ID row
    tower.train()
    torch.manual_seed(3)
    dropped = [torch.isclose(tower(items), text_only).all(-1) for _ in range(200)]  # [N] per call
    share = torch.stack(dropped).float().mean()
    assert 0.4 < float(share) < 0.6  # about half the items lose their ID row in each call
    kept = ~dropped[-1]
    torch.manual_seed(3)
    for _ in range(199):
        tower.uses_id(items)  # replays the draws before the last call
    torch.testing.assert_close(tower(items)[kept], full[kept])  # the others are whole
    with pytest.raises(ValueError, match="id_dropout"):
        ItemTowerConfig(id_dropout=1.0)
    with pytest.raises(ValueError, match="id_dropout"):
        ItemTowerConfig(id_dropout=0.2, id_embedding=False)


def test_identity_text_view_ids_from_text_and_appended_rows() -> None:
    tower = _tower(adapter="identity")
    items = torch.arange(N_ITEMS + 1)
    assert tower.text_scale is None and tower.adapter is None
    torch.testing.assert_close(tower.text_view(items), tower.text_table)  # used as is
    tower.keep_ids_of(torch.tensor([2, 5]))
    tower.init_ids_from_text()
    fused = tower(items)
    torch.testing.assert_close(fused[[2, 5]], 2 * tower.text_table[[2, 5]])  # ID row = text vector at the start
    torch.testing.assert_close(fused[[1, 3]], tower.text_table[[1, 3]])  # untrained: text only
    rows = torch.randn(2, DIM)
    torch.testing.assert_close(tower.append_text_rows(rows), rows)  # added: text only, no ID row
    assert len(tower.has_id) == N_ITEMS + 3 and not tower.has_id[-2:].any()
    assert tower.item_weight().shape == (N_ITEMS + 3, DIM)
    with pytest.raises(ValueError, match=r"\[K, 8\]"):
        tower.append_text_rows(torch.randn(2, DIM + 1))
    with pytest.raises(ValueError, match="both an ID view and a text view"):
        _tower(id_embedding=False).init_ids_from_text()
    with pytest.raises(ValueError, match="identity"):
        build_text_view(ItemTowerConfig(adapter="identity"), _features(3), DIM)


def test_a_narrower_id_view_starts_from_the_text_reduced_and_is_read_alone() -> None:
    tower = _tower(adapter="identity", id_width=3)
    trained = torch.tensor([1, 2, 4, 5, 8, 9])
    tower.keep_ids_of(trained)
    tower.init_ids_from_text()
    rows = tower.id_view(torch.arange(N_ITEMS + 1))
    assert rows.shape == (N_ITEMS + 1, 3) and rows[~tower.has_id].abs().sum() == 0  # untrained, padding: no row
    # whitened principal components times the init std: orthogonal columns, each of variance INIT_STD ** 2 over
    # the trained items (slow reference: the covariance of the rows)
    centred = rows[trained] - rows[trained].mean(0)
    torch.testing.assert_close(centred.T @ centred / (len(trained) - 1), 0.02**2 * torch.eye(3))
    text = tower.text_table[trained] - tower.text_table[trained].mean(0)  # the leading direction is the text's
    top = torch.linalg.svd(text, full_matrices=False).U[:, 0]
    assert abs(F.cosine_similarity(centred[:, 0], top, dim=0)) > 0.999
    with pytest.raises(ValueError, match="3 wide \\(id_width\\) and the text view 8"):
        tower(torch.tensor([1]))
    added = torch.randn(2, DIM)
    torch.testing.assert_close(tower.append_text_rows(added), added)  # nothing to fuse: the text views
    assert tower.id_view(torch.tensor([N_ITEMS + 1, N_ITEMS + 2])).abs().sum() == 0
    few = _tower(adapter="identity", id_width=4)
    few.keep_ids_of(torch.tensor([3, 6]))
    few.init_ids_from_text()  # two items span one component: the others start at 0
    assert few.id_view(torch.tensor([3, 6]))[:, 1:].abs().sum() == 0 and few.id_view(torch.tensor([3])).abs().sum() > 0
    with pytest.raises(ValueError, match="id_width must be >= 0"):
        ItemTowerConfig(id_width=-1)


def _nearest(tower: ItemTower, item: int, donors: list[int], k: int) -> list[int]:
    """The `k` donors nearest to `item` by cosine over the text table (the slow reference)."""
    text = F.normalize(tower.text_table, dim=-1)
    ranked = sorted((d for d in donors if d != item), key=lambda d: -float(text[item] @ text[d]))
    return ranked[:k]


@pytest.mark.parametrize("kw", [{"fuse": "sum"}, {"fuse": "concat"}])
def test_an_item_without_an_id_row_borrows_its_text_neighbours_rows(kw: dict[str, object]) -> None:
    tower = _tower(borrow_ids=2, id_dropout=0.5, **kw)
    tower.keep_ids_of(torch.tensor([2, 5, 7, 11]))
    assert tower.id_emb is not None
    rows = tower.id_emb.weight.detach()
    tower.eval()
    with torch.no_grad():
        for item in range(1, N_ITEMS + 1):
            own = item in (2, 5, 7, 11)
            expected = rows[item] if own else rows[_nearest(tower, item, [2, 5, 7, 11], 2)].mean(0)
            torch.testing.assert_close(tower.id_view(torch.tensor(item)), expected)
        # training: a dropped item borrows from its neighbours (never itself) instead of its own row
        tower.train()
        torch.manual_seed(0)
        dropped = ~tower.uses_id(torch.arange(N_ITEMS + 1))
        torch.manual_seed(0)
        views = tower.id_view(torch.arange(N_ITEMS + 1))
        warm_dropped = [i for i in (2, 5, 7, 11) if dropped[i]]
        assert warm_dropped
        for item in warm_dropped:
            torch.testing.assert_close(views[item], rows[_nearest(tower, item, [2, 5, 7, 11], 2)].mean(0))
        tower.eval()
        # an item added by text finds its neighbours too: a copy of item 5's text borrows item 5's row first
        tower.append_text_rows(tower.text_table[5:6].clone())
        assert tower.id_neighbours[-1, 0] == 5
    with pytest.raises(ValueError, match="borrow_ids"):
        ItemTowerConfig(borrow_ids=2, id_embedding=False)
    with pytest.raises(ValueError, match="borrow_ids must be >= 0"):
        ItemTowerConfig(borrow_ids=-1)


def test_borrowing_for_scoring_only_leaves_training_as_without_it() -> None:
    trained = torch.tensor([2, 5, 7, 11])
    plain, tower = _tower(id_dropout=0.5), _tower(borrow_ids=2, borrow_training=False, id_dropout=0.5)
    for t in (plain, tower):
        t.keep_ids_of(trained)
    assert tower.id_emb is not None
    rows, items = tower.id_emb.weight.detach(), torch.arange(N_ITEMS + 1)
    torch.manual_seed(0)
    views = tower.id_view(items)  # training: an item without its row (dropped or untrained) has zeros
    torch.manual_seed(0)
    torch.testing.assert_close(views, plain.id_view(items))
    assert not tower.borrowing
    tower.eval()
    assert tower.borrowing
    for item in (1, 3, 10):  # scoring: an item without an ID row borrows
        torch.testing.assert_close(
            tower.id_view(torch.tensor(item)), rows[_nearest(tower, item, [2, 5, 7, 11], 2)].mean(0)
        )
    views = tower.id_view(items)
    views.sum().backward()  # the padding row neither adds to a borrowed row nor learns from one
    assert tower.id_emb.weight.grad is not None and tower.id_emb.weight.grad[0].abs().sum() == 0
    # borrowing given afterwards finds every item's neighbours; a new text table finds them again
    plain.eval().set_borrow_ids(3)
    assert plain.cfg.borrow_ids == 3 and plain.id_neighbours.shape == (N_ITEMS + 1, 3)
    torch.testing.assert_close(
        plain.id_view(torch.tensor(1)), plain.id_emb.weight.detach()[_nearest(plain, 1, [2, 5, 7, 11], 3)].mean(0)
    )  # type: ignore[union-attr]
    table = torch.randn(N_ITEMS + 1, DIM)
    table[0] = 0
    plain.set_text_table(table)
    assert plain.id_neighbours[1].tolist() == _nearest(plain, 1, [2, 5, 7, 11], 3)
    with pytest.raises(ValueError, match="borrow_ids must be >= 0"):
        plain.set_borrow_ids(-1)


def _features(n_items: int) -> ItemFeatures:
    titles = [None, *[f"Item {i} {['red', 'blue', 'green'][i % 3]}" for i in range(1, n_items + 1)]]
    return ItemFeatures(n_items, ["", *map(str, range(1, n_items + 1))], {"title": titles}, None, 0)


def test_text_table_from_item_text_pca_linear_and_random(tiny_llama_backbone: Path, tmp_path: Path) -> None:
    base = {"text": str(tiny_llama_backbone), "fields": ("title",), "cache_dir": str(tmp_path), "text_dim": 32}
    features = _features(40)
    white, hit = build_text_table(ItemTowerConfig(**base), features, 16)  # type: ignore[arg-type]
    assert white.shape == (41, 16) and not hit and torch.equal(white[0], torch.zeros(16))
    torch.testing.assert_close(torch.cov(white[1:].T.double()), torch.eye(16, dtype=torch.float64), atol=1e-4, rtol=0)
    linear, hit = build_text_table(ItemTowerConfig(**base, adapter="linear"), features, 16)  # type: ignore[arg-type]
    assert linear.shape == (41, 32) and hit  # the same vectors, from the cache
    random, _ = build_text_table(ItemTowerConfig(**base, random_text=True), features, 16)  # type: ignore[arg-type]
    assert random.shape == (41, 16) and not torch.allclose(random, white, atol=0.1)
    with pytest.raises(ValueError, match="text_dim"):
        build_text_table(ItemTowerConfig(**{**base, "adapter": "linear", "text_dim": 7}), features, 16)  # type: ignore[arg-type]


def test_keep_ids_of_the_trained_items_drops_the_rest_unless_ids_for_all() -> None:
    tower = _tower()
    tower.keep_ids_of(torch.tensor([2, 5, 11]))
    assert tower.has_id.nonzero().flatten().tolist() == [2, 5, 11]
    every = _tower(ids_for="all")
    every.keep_ids_of(torch.tensor([2]))
    assert every.has_id[1:].all() and not every.has_id[0]
    with pytest.raises(ValueError, match="ids_for"):
        ItemTowerConfig(ids_for="some")


@pytest.mark.parametrize("kw", [{}, {"fuse": "concat"}, {"adapter": "linear"}, {"id_embedding": False}])
def test_an_item_added_by_text_gets_its_catalog_twins_text_vector(
    kw: dict[str, object], tiny_llama_backbone: Path, tmp_path: Path
) -> None:
    cfg = ItemTowerConfig(
        **{"text": str(tiny_llama_backbone), "fields": ("title",), "cache_dir": str(tmp_path), "text_dim": 32, **kw}
    )  # type: ignore[arg-type]
    features = _features(40)
    view = build_text_view(cfg, features, 16)
    tower = ItemTower(cfg, 40, 16)
    tower.set_text_table(view.table, view.mean, view.proj)
    twin = 7
    added = tower.add_items([sentence_of({"title": features.text["title"][twin]}, ("title",))])
    assert added.shape == (1, 16) and len(tower.has_id) == 42 and not tower.has_id[41]
    text = tower.text_view(torch.tensor([twin, 41]))
    assert F.cosine_similarity(text[0], text[1], dim=0) >= 0.999  # the same text, the same vector
    torch.testing.assert_close(added[0], text[1])  # text only: no ID row for an added item
    torch.testing.assert_close(tower.item_weight()[41], added[0])
    if not cfg.id_embedding:
        torch.testing.assert_close(tower(torch.tensor(twin)), added[0], atol=1e-5, rtol=1e-4)


def test_a_tower_without_its_reduction_or_text_refuses_to_add_items(tiny_llama_backbone: Path, tmp_path: Path) -> None:
    base = {"text": str(tiny_llama_backbone), "fields": ("title",), "cache_dir": str(tmp_path), "text_dim": 32}
    loaded = ItemTower(ItemTowerConfig(**base), 40, 16)  # type: ignore[arg-type]
    state = {k: v for k, v in loaded.state_dict().items() if k not in ("text_mean", "text_proj")}
    loaded.load_state_dict(state)  # a model saved before the reduction was kept still loads
    with pytest.raises(ValueError, match="without its text reduction"):
        loaded.add_items(["Item 1 red."])
    with pytest.raises(ValueError, match="random_text"):
        ItemTower(ItemTowerConfig(**base, random_text=True), 40, 16).add_items(["x"])  # type: ignore[arg-type]
