"""The model contract, checked for every registered model (implicit-style contract test)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from recsys.config import ConfigError
from recsys.data import schema as S
from recsys.data.datamodule import SequenceDataModule
from recsys.data.item_features import ItemFeatures, load_item_features
from recsys.data.labelled import LabelledBatch
from recsys.data.processed import load_processed
from recsys.eval.evaluate import evaluate
from recsys.model_io import load_model, resolved_config, save_model
from recsys.models.base import SequentialRecommender, representation_by_length
from recsys.models.ranker import Ranker, unknown_stage1_scores
from recsys.objectives import OBJECTIVES, build_objective, training_losses
from recsys.registry import MODELS, RANKERS, build_model, build_ranker, choose_model, model_class
from recsys.train.experiment import EvalConfig, TrainConfig, resolve_bases
from recsys.train.module import RecModule, build_loss

ODD = {"hidden": 32, "n_heads": 4, "max_len": 7, "dropout": 0.1, "attn_dropout": 0.1}
N_ITEMS = 99


ID_MODELS = sorted(name for name, cls in MODELS.items() if not cls.uses_item_features)
TEXT_MODELS = sorted(name for name, cls in MODELS.items() if cls.uses_item_features)
# ID models on the shared encoder run in every attention / norm layout; a text model in its own
VARIANTS = [(n, {"attention": a, "norm": m}) for n in ID_MODELS for a in ("sdpa", "linear") for m in ("pre", "post")]
VARIANTS += [(n, {}) for n in TEXT_MODELS]
NORMS = [(n, {"norm": m}) for n in ID_MODELS for m in ("pre", "post")] + [(n, {}) for n in TEXT_MODELS]


def _toy_features(n_items: int) -> ItemFeatures:
    titles = [None, *[f"Item {i} {['red', 'blue', 'green'][i % 3]}" for i in range(1, n_items + 1)]]
    return ItemFeatures(
        n_items=n_items,
        raw_ids=["", *map(str, range(1, n_items + 1))],
        text={"title": titles},
        attributes=None,
        n_attributes=0,
    )


@pytest.fixture
def make_model(request: pytest.FixtureRequest) -> Callable[..., SequentialRecommender]:
    """Builds a registered model on odd sizes (hidden 32): ID models from `ODD`, text models on a
    tiny random BERT over toy item titles (or the given `features`)."""

    def make(
        name: str, extra: dict[str, Any] | None = None, n_items: int = N_ITEMS, features: ItemFeatures | None = None
    ) -> SequentialRecommender:
        if not MODELS[name].uses_item_features:
            return build_model(name, {**ODD, **(extra or {})}, n_items)
        backbone = request.getfixturevalue("tiny_text_backbone")
        if name == "llm_rec":  # a tiny random Llama over the tiny BERT's item vectors, cached under tmp_path
            llama, cache = request.getfixturevalue("tiny_llama_backbone"), request.getfixturevalue("tmp_path")
            params = {**LLM_PARAMS, "backbone": str(llama), "item_encoder": str(backbone), "cache_dir": str(cache)}
        elif name == "id_text_sasrec":  # ODD SASRec over an ID table + the tiny Llama's cached item vectors
            llama, cache = request.getfixturevalue("tiny_llama_backbone"), request.getfixturevalue("tmp_path")
            tower = {"text": str(llama), "fields": ["title"], "cache_dir": str(cache)}
            params = {**ODD, "item_tower": tower}
        else:
            params = {**TEXT_PARAMS, "backbone": str(backbone)}
        params |= extra or {}
        return build_model(name, params, n_items, item_features=features or _toy_features(n_items))

    return make


# a text model: titles only, a few tokens per item, the table re-encoded before every "epoch"
TEXT_PARAMS: dict[str, Any] = {
    "max_len": 7,
    "fields": ["title"],
    "max_item_tokens": 6,
    "max_tokens": 48,
    "refresh_epochs": 1000,
    "temperature": 0.1,
}

# the LLM-backed model: titles only, LoRA on the tiny Llama's first 2 blocks
LLM_PARAMS: dict[str, Any] = {"max_len": 7, "fields": ["title"], "n_layers": 2, "max_item_tokens": 8}


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    items = torch.randint(1, N_ITEMS + 1, (5, 7), generator=gen)
    items[0, :3] = 0  # left padding
    items[1, :6] = 0
    return items, items != 0


@pytest.mark.parametrize(("name", "variant"), VARIANTS)
def test_shapes_on_odd_sizes(
    name: str, variant: dict[str, Any], make_model: Callable[..., SequentialRecommender]
) -> None:
    model = make_model(name, variant).eval()
    items, mask = _batch()
    assert model.encode(items, mask).shape in ((5, 7, 32), (5, 1, 32))  # a text model summarises into one state
    assert model.sequence_representation(items, mask).shape == (5, 32)
    assert model.item_embeddings().shape == (N_ITEMS + 1, 32)
    assert torch.isfinite(model.sequence_representation(items, mask)).all()


@pytest.mark.parametrize(("name", "variant"), [v for v in VARIANTS if v[1].get("norm", "pre") == "pre"])
def test_representation_by_length_matches_one_padded_call(
    name: str, variant: dict[str, Any], make_model: Callable[..., SequentialRecommender]
) -> None:
    torch.manual_seed(0)
    model = make_model(name, variant).eval()
    items = torch.randint(1, N_ITEMS + 1, (9, 7), generator=torch.Generator().manual_seed(3))
    for row, pad in enumerate([0, 6, 3, 5, 1, 6, 2, 4, 0]):  # lengths 7, 1, 4, 2, 6, 1, 5, 3, 7
        items[row, :pad] = 0
    names, params = zip(*((n, p) for n, p in model.named_parameters() if p.requires_grad), strict=True)
    reference = model.sequence_representation(items, items != 0)  # [9, 32]
    probe = torch.randn(reference.shape, generator=torch.Generator().manual_seed(4))  # not |rep|^2: unit reps have none
    ref_grads = torch.autograd.grad((reference * probe).sum(), params, allow_unused=True)
    for groups in (1, 2, 4, 9, 20):
        grouped = representation_by_length(model, items, groups)
        torch.testing.assert_close(grouped, reference, atol=1e-5, rtol=1e-4)
        grads = torch.autograd.grad((grouped * probe).sum(), params, allow_unused=True)
        for name, grad, ref_grad in zip(names, grads, ref_grads, strict=True):
            if ref_grad is not None:  # float32 sums in another order: compare to the gradient's scale
                assert (grad - ref_grad).abs().max() <= 2e-3 * ref_grad.abs().max() + 1e-7, (name, groups)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_unknown_config_key_names_it(name: str) -> None:
    with pytest.raises(ValueError, match="hiddden"):
        build_model(name, {"hiddden": 32}, N_ITEMS)


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(KeyError, match="sasrec"):
        build_model("sasrecc", {}, N_ITEMS)


@pytest.mark.parametrize(("name", "variant"), NORMS)
def test_save_load_round_trip(
    name: str, variant: dict[str, Any], tmp_path: Path, make_model: Callable[..., SequentialRecommender]
) -> None:
    model = make_model(name, variant).eval()
    save_model(model, name, resolved_config(model), N_ITEMS, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    items, mask = _batch()
    torch.testing.assert_close(loaded.sequence_representation(items, mask), model.sequence_representation(items, mask))
    torch.testing.assert_close(loaded.item_embeddings(), model.item_embeddings())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_names_a_registered_objective(name: str, make_model: Callable[..., SequentialRecommender]) -> None:
    assert make_model(name).objective in OBJECTIVES


def test_unknown_objective_lists_valid_names() -> None:
    with pytest.raises(KeyError, match="next_item"):
        build_objective("next_itme")


@pytest.mark.parametrize("objective", ["masked", "cross_subsequence", "window_views", "text_next_item"])
def test_an_objective_refuses_a_model_without_its_hooks(objective: str) -> None:
    obj = build_objective(objective)
    batch = obj.train_rows([[3, 4, 5], [4, 5, 6]], 3, generator=torch.Generator())[[0, 1]]
    with pytest.raises(TypeError, match="SASRec"):
        obj.loss_terms(build_model("sasrec", ODD, N_ITEMS), batch, lambda h, e, t: h.sum())


# a model's settings for these short runs where its defaults suit long ones: BERT4Rec's default
# 40% of masked positions on cropped rows leaves its post-norm loss flat for the first 20 steps
SHORT_RUN_PARAMS: dict[str, dict[str, object]] = {"bert4rec": {"mask_prob": 0.2, "crop_prob": 0.0}}


def _trained(
    make_model: Callable[..., SequentialRecommender], name: str, dataset: Path, steps: int, variant: dict[str, Any]
) -> tuple[SequentialRecommender, SequenceDataModule, list[float]]:
    """`steps` full-batch steps on the planted data, the objective's epoch hook every 25 steps."""
    torch.manual_seed(0)
    params = {"dropout": 0.0, "attn_dropout": 0.0, **SHORT_RUN_PARAMS.get(name, {})} if name in ID_MODELS else {}
    features = load_item_features(dataset / "processed") if name in TEXT_MODELS else None
    model = make_model(name, {**params, **variant}, 40, features)
    objective = build_objective(model.objective)
    dm = SequenceDataModule(
        dataset / "processed", max_len=7, batch_size=64, eval_batch_size=64, seed=0, rows=objective.train_rows
    )
    dm.setup()
    module = RecModule(model, TrainConfig(lr=5e-3), EvalConfig())
    opt = module.build_optimizer()
    rows = list(range(len(dm.train_set)))
    losses = []
    for step in range(steps):
        if step % 25 == 0:
            objective.on_epoch_start(model, dm.ordered_train_dataloader(), step // 25)
            model.train()
        loss = training_losses(model, objective, dm.train_set[rows], module.loss).total
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    objective.on_epoch_start(model, dm.ordered_train_dataloader(), steps // 25 + 1)
    return model, dm, losses


# training checks run on the ID models; a text model's start is its pretrained encoder, which a tiny
# random one does not stand in for (test_recformer.py trains a tiny one with its own settings)
@pytest.mark.parametrize(("name", "variant"), [n for n in NORMS if n[0] in ID_MODELS])
def test_loss_decreases_in_20_steps(
    name: str, variant: dict[str, Any], planted_dataset: Path, make_model: Callable[..., SequentialRecommender]
) -> None:
    _, _, losses = _trained(make_model, name, planted_dataset, 20, variant)
    assert sum(losses[-5:]) < 0.9 * sum(losses[:5])


# full-batch steps to learn the planted walk; masked training sees the last position less often
PLANTED_STEPS = {"sasrec": 150, "bert4rec": 600, "icsrec": 20}


@pytest.mark.parametrize("name", ID_MODELS)
def test_planted_next_item_is_ranked_first(
    name: str, planted_dataset: Path, make_model: Callable[..., SequentialRecommender]
) -> None:
    model, dm, _ = _trained(make_model, name, planted_dataset, PLANTED_STEPS[name], {})
    result = evaluate(model, dm.test_dataloader(), split="test", ks=(1, 10))
    assert result.metrics["test/hr@1"] >= 0.9, result.metrics


@pytest.mark.parametrize(("name", "variant"), NORMS)
def test_representation_does_not_depend_on_left_padding(
    name: str, variant: dict[str, Any], make_model: Callable[..., SequentialRecommender]
) -> None:
    """Eval batches are trimmed to their longest history: a history padded to any width up to
    max_len must give the same representation (BERT4Rec once dropped an item of narrow batches)."""
    model = make_model(name, variant).eval()
    history = torch.tensor([[5, 17, 42, 8]])
    reference = model.sequence_representation(history, history != 0)
    for width in (5, 6, 7):
        padded = torch.cat([torch.zeros(1, width - 4, dtype=torch.long), history], dim=1)
        torch.testing.assert_close(model.sequence_representation(padded, padded != 0), reference)
    full = torch.randint(1, N_ITEMS + 1, (1, 7), generator=torch.Generator().manual_seed(1))  # max_len items
    one_item = torch.tensor([[9]])
    assert torch.isfinite(model.sequence_representation(full, full != 0)).all()
    assert torch.isfinite(model.sequence_representation(one_item, one_item != 0)).all()


# ---- rankers (recsys.models.ranker.Ranker): the same contract checks, through `score` ----

RANKER_ODD: dict[str, dict[str, Any]] = {  # odd sizes: d_rep 12, d_att / d_proj 5, K 3 of L 7, N 99
    "dare": {"d_att": 5, "top_k": 3},
    "twin": {"top_k": 3},
    "din": {},
}
RANKER_VARIANTS = [(n, {}) for n in sorted(RANKERS)] + [("twin", {"d_proj": 5})]  # + TWIN with projection


def _genre_features(n_items: int) -> ItemFeatures:
    genres = [None, *[["Drama", "Comedy, Drama", "Horror", None][i % 4] for i in range(1, n_items + 1)]]
    return ItemFeatures(n_items, ["", *map(str, range(1, n_items + 1))], {"genres": genres}, None, 0)


def _odd_ranker(name: str, extra: dict[str, Any], features: ItemFeatures | None = None) -> Ranker:
    torch.manual_seed(0)
    params = {"d_rep": 12, "max_len": 7, "mlp": [24], "n_ratings": 6, **RANKER_ODD[name], **extra}
    return build_ranker(name, params, N_ITEMS, item_features=features or _genre_features(N_ITEMS))


def _ranker_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """items [5, 7] (left-padded, one empty), candidates [5, 3], stage-1 scores [5, 3], ratings [5, 7]."""
    items, _ = _batch()
    items[4] = 0
    gen = torch.Generator().manual_seed(1)
    candidates = torch.randint(1, N_ITEMS + 1, (5, 3), generator=gen)
    ratings = torch.randint(1, 6, items.shape, generator=gen) * (items != 0)
    return items, candidates, torch.randn(5, 3, generator=gen), ratings


def test_the_registry_tables_share_no_name_and_unknown_names_list_both() -> None:
    assert not set(MODELS) & set(RANKERS)
    with pytest.raises(KeyError, match=r"dare.*din") as err:
        model_class("dar")
    assert "sasrec" in str(err.value)


@pytest.mark.parametrize(("name", "extra"), RANKER_VARIANTS)
def test_ranker_shapes_on_odd_sizes(name: str, extra: dict[str, Any]) -> None:
    model = _odd_ranker(name, extra).eval()
    assert isinstance(model, Ranker) and model.objective in OBJECTIVES and model.max_len == 7
    assert model.cfg.n_genres == 4  # auto: Comedy, Drama, Horror + padding
    items, candidates, stage1, ratings = _ranker_inputs()
    for kwargs in ({}, {"ratings": ratings}):
        logits = model.score(items, candidates, stage1, **kwargs)
        assert logits.shape == (5, 3) and torch.isfinite(logits).all()
    one = model.score(items[:1], candidates[:1, :1], stage1[:1, :1])  # one history, one candidate
    assert one.shape == (1, 1)


@pytest.mark.parametrize("name", sorted(RANKERS))
def test_ranker_yaml_loads_and_a_wrong_key_is_one_line_naming_it(name: str) -> None:
    root = Path(__file__).resolve().parents[2]
    model = resolve_bases({"model": {"_base": str(root / f"configs/model/{name}.yaml")}}, "exp")["model"]
    assert model["name"] == name
    choose_model(name, model["params"], table=RANKERS)  # the shipped YAML is a valid config
    with pytest.raises(ConfigError, match="d_rpe") as err:
        choose_model(name, {**model["params"], "d_rpe": 8}, table=RANKERS)
    assert "\n" not in str(err.value) and f"ranker '{name}'" in str(err.value)


@pytest.mark.parametrize(("name", "extra"), RANKER_VARIANTS)
def test_ranker_save_load_round_trip(name: str, extra: dict[str, Any], tmp_path: Path) -> None:
    """Saved with its resolved config (auto fields as numbers) and rebuilt without item features:
    the genre table comes back from the weights, the scores are identical."""
    model = _odd_ranker(name, extra).eval()
    save_model(model, name, {**RANKER_ODD[name], **extra, "d_rep": 12, "max_len": 7, "mlp": [24]}, N_ITEMS, tmp_path)
    spec = json.loads((tmp_path / "model.json").read_text())
    assert spec["config"]["n_genres"] == 4 and spec["config"]["n_ratings"] == 6
    loaded = load_model(tmp_path, kind="ranker")
    items, candidates, stage1, ratings = _ranker_inputs()
    torch.testing.assert_close(
        loaded.score(items, candidates, stage1, ratings=ratings),
        model.score(items, candidates, stage1, ratings=ratings),
    )
    with pytest.raises(TypeError, match="ranker"):
        load_model(tmp_path)  # a ranker is not a retrieval model


def _planted_rankings(dataset: Path) -> tuple[list[list[int]], int]:
    ds = load_processed(dataset / "processed")
    return ds.sequences.sort(S.USER_IDX)[S.ITEMS].to_list(), ds.n_items


def _left(history: list[int], width: int = 7) -> list[int]:
    return [0] * (width - len(history[-width:])) + history[-width:]


def _labelled_planted(seqs: list[list[int]], n_items: int) -> Callable[[torch.Generator], LabelledBatch]:
    """Labelled rows of the planted walks: every training prefix (the last item held out) with its
    next item as the positive and 4 unseen items as negatives, drawn afresh for each batch."""
    hist: list[list[int]] = []
    pos: list[int] = []
    rows: list[torch.Tensor] = []  # [N + 1] 1 = an unseen item (a possible negative)
    for s in seqs:
        for t in range(1, len(s) - 1):
            hist.append(_left(s[:t]))
            pos.append(s[t])
            mask = torch.ones(n_items + 1)
            mask[[0, *s[: t + 1]]] = 0.0
            rows.append(mask)
    items, positives, unseen = torch.tensor(hist), torch.tensor(pos), torch.stack(rows)

    def draw(gen: torch.Generator) -> LabelledBatch:
        negatives = torch.multinomial(unseen, 4, generator=gen)  # [P, 4]
        candidates = torch.cat([positives[:, None], negatives], 1).reshape(-1)  # [P * 5]
        labels = torch.zeros(len(positives), 5)
        labels[:, 0] = 1.0
        batch_items = items.repeat_interleave(5, 0)
        users = torch.zeros(len(candidates), dtype=torch.long)
        return LabelledBatch(batch_items, torch.zeros_like(batch_items), candidates, labels.reshape(-1), users)

    return draw


def _trained_ranker(name: str, dataset: Path, steps: int) -> tuple[Ranker, list[float]]:
    """`steps` full-batch Adam steps on labelled rows of the planted walks (one thread: tiny ops)."""
    seqs, n_items = _planted_rankings(dataset)
    draw = _labelled_planted(seqs, n_items)
    torch.manual_seed(0)
    params = {"d_rep": 16, "max_len": 7, "mlp": [32], **({"d_att": 8} if name == "dare" else {})}
    model = build_ranker(name, params | ({"top_k": 3} if "top_k" in RANKER_ODD[name] else {}), n_items)
    objective, gen = build_objective(model.objective), torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(steps):
            loss = training_losses(model.train(), objective, draw(gen), build_loss(TrainConfig())).total
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    finally:
        torch.set_num_threads(threads)
    return model.eval(), losses


@pytest.mark.parametrize("name", sorted(RANKERS))
def test_ranker_loss_decreases_in_20_steps(name: str, planted_dataset: Path) -> None:
    _, losses = _trained_ranker(name, planted_dataset, 20)
    assert sum(losses[-5:]) < 0.9 * sum(losses[:5])


@pytest.mark.parametrize("name", sorted(RANKERS))
def test_ranker_ranks_the_planted_next_item_first(name: str, planted_dataset: Path) -> None:
    """Every unseen item is a candidate after each user's held-out history; the walk's next item is
    the only one whose predecessor is in the history (the rankers have no positions to go by)."""
    model, _ = _trained_ranker(name, planted_dataset, 200)
    seqs, n_items = _planted_rankings(planted_dataset)
    items = torch.tensor([_left(s[:-1]) for s in seqs])
    candidates = torch.arange(n_items + 1).expand(len(seqs), -1)  # [U, N + 1]
    seen = torch.zeros(len(seqs), n_items + 1, dtype=torch.bool)
    for user, s in enumerate(seqs):
        seen[user, [0, *s[:-1]]] = True
    with torch.no_grad():
        logits = model.score(items, candidates, unknown_stage1_scores(candidates)).masked_fill(seen, float("-inf"))
    hit = (logits.argmax(1) == torch.tensor([s[-1] for s in seqs])).float().mean()
    assert hit >= 0.9, float(hit)
