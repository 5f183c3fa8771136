"""Two-stage ranking: candidate lists from a stage-1 model, listwise ranker training through the run
path, the stage-1 weight chosen on validation and saved, and the metrics against the full-ranking evaluator."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from recsys.data.candidate_lists import CandidateListConfig, candidate_lists, tail_rows
from recsys.data.datamodule import SequenceDataModule
from recsys.eval.evaluate import evaluate
from recsys.eval.two_stage import ListScores, list_ranks, list_ranks_reference, stage1_only, two_stage_metrics
from recsys.model_io import load_model, save_model
from recsys.models.dare import DARE, DAREConfig
from recsys.nn.target_attention import recency_positions, stage1_features, standardized
from recsys.objectives.listwise import listwise_loss
from recsys.registry import choose_model
from recsys.retrieval.ranking import RankingStage
from recsys.train.experiment import load_experiment
from recsys.train.run import train_experiment

SASREC = {"max_len": 8, "hidden": 16, "n_heads": 2, "dropout": 0.0}


@pytest.fixture(scope="module")
def stage1_dir(planted_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stage-1 SASRec (seeded random weights) saved as a model directory of the planted catalog."""
    n_items = json.loads((planted_dataset / "processed/meta.json").read_text())["n_items"]
    torch.manual_seed(3)
    model = choose_model("sasrec", SASREC).build(n_items)
    out = tmp_path_factory.mktemp("stage1")
    save_model(model, "sasrec", SASREC, n_items, out)
    return out


def test_list_ranks_match_the_sorting_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (64, 12), generator=gen).float()  # many ties
    target_pos = torch.randint(-1, 12, (64,), generator=gen)
    assert torch.equal(list_ranks(scores, target_pos), list_ranks_reference(scores, target_pos))
    assert bool((list_ranks(scores, target_pos)[target_pos < 0] == 13).all())  # a miss ranks past the list


def test_stage1_features_are_the_standardised_score_and_the_scaled_rank() -> None:
    scores = torch.tensor([[3.0, 1.0, 2.0, 0.0]])
    feats = stage1_features(scores)
    assert torch.allclose(feats[..., 0], standardized(scores))
    expected_rank = torch.tensor([[0.0, 2.0, 1.0, 3.0]])
    assert torch.allclose(feats[..., 1], torch.log1p(expected_rank) / np.log1p(4))
    assert torch.equal(recency_positions(torch.tensor([[0, 0, 7, 9]])), torch.tensor([[0, 0, 2, 1]]))


def test_the_listwise_loss_is_the_softmax_cross_entropy_of_the_target() -> None:
    scores = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
    candidates = torch.tensor([[4, 5, 6], [4, 5, 0]])  # the second list's last slot is padding
    loss = listwise_loss(scores, candidates, torch.tensor([0, 1]))
    first = -torch.log_softmax(scores[0], 0)[0]
    second = -torch.log_softmax(scores[1, :2], 0)[1]
    assert torch.isclose(loss, (first + second) / 2)
    with pytest.raises(ValueError, match="target in every list"):
        listwise_loss(scores, candidates, torch.tensor([0, -1]))


def test_stage1_lists_agree_with_the_full_ranking_evaluator(planted_dataset: Path, stage1_dir: Path) -> None:
    config = CandidateListConfig(processed=str(planted_dataset / "processed"), stage1=str(stage1_dir), top_n=15)
    lists = candidate_lists(config)
    test = lists.split("test")
    alone = stage1_only(ListScores(test.stage1, standardized(test.stage1), test.target_pos, test.events))
    ours = two_stage_metrics(alone, (5, 10), "test")
    model = load_model(stage1_dir)
    dm = SequenceDataModule(planted_dataset / "processed", max_len=8, batch_size=32, eval_batch_size=32, seed=0)
    dm.setup()
    full = evaluate(model, dm.test_dataloader(), split="test", ks=(5, 10)).metrics
    for k in (5, 10):  # top-15 lists hold every top-10 hit: the same metrics as ranking the catalog
        assert ours[f"test/ndcg@{k}"] == pytest.approx(full[f"test/ndcg@{k}"], abs=1e-9)
        assert ours[f"test/hr@{k}"] == pytest.approx(full[f"test/hr@{k}"], abs=1e-9)
    # every user is in test; train and val split the validation lists between them
    assert len(test.items) == len(dm.test_set)
    assert len(lists.split("train").items) + len(lists.split("val").items) == len(dm.val_set)
    small = candidate_lists(config, batch_size=7)  # batches of other history widths: the same lists
    for name in ("train", "val", "test"):
        for a, b in zip(small.split(name), lists.split(name), strict=True):
            assert torch.allclose(a, b, atol=1e-5) if a.is_floating_point() else torch.equal(a, b)
    for history, candidates in zip(test.items, test.candidates, strict=True):  # history masked, no padding
        assert not set(history.tolist()) & set(candidates.tolist()) - {0}
        assert bool((candidates != 0).all())


def test_a_stage1_of_another_catalog_is_refused(planted_dataset: Path, tmp_path: Path) -> None:
    other = choose_model("sasrec", SASREC).build(7)
    save_model(other, "sasrec", SASREC, 7, tmp_path / "other")
    with pytest.raises(ValueError, match="another catalog"):
        candidate_lists(
            CandidateListConfig(processed=str(planted_dataset / "processed"), stage1=str(tmp_path / "other"))
        )


def test_recency_makes_the_same_item_score_by_its_position() -> None:
    torch.manual_seed(0)
    model = DARE(DAREConfig(d_att=4, d_rep=4, top_k=4, max_len=4, n_genres=0, n_ratings=0, d_time=4), n_items=9).eval()
    cand = torch.tensor([[5]])
    early = model.attention_scores(torch.tensor([[3, 3, 3, 3]]), cand)[0, 0]
    assert not torch.allclose(early, early[0].expand(4))  # one item, four positions, four logits


def test_a_two_stage_ranker_trains_selects_its_weight_and_serves_it(
    planted_dataset: Path, stage1_dir: Path, planted_experiment: Callable[..., Path], tmp_path: Path
) -> None:
    lists_cfg = tmp_path / "lists.yaml"
    lists_cfg.write_text(
        yaml.safe_dump({"processed": str(planted_dataset / "processed"), "stage1": str(stage1_dir), "top_n": 15})
    )
    dare = {
        "name": "dare",
        "params": {"d_att": 8, "d_rep": 8, "top_k": 4, "max_len": 8, "mlp": [16], "d_time": 4, "stage1_inputs": True},
    }
    exp = planted_experiment(model=dare, max_epochs=3, val_every=1, grad_clip=None)
    cfg = load_experiment(exp, [f"data={lists_cfg}"])
    outcome = train_experiment(cfg, tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    assert outcome is not None
    m = outcome.metrics
    # the weight chosen on validation keeps at least stage 1's validation quality (its order is in the grid)
    assert m["val/ndcg@10"] >= m["stage1_val/ndcg@10"] - 1e-9
    assert m["test/recall@15"] == m["stage1_test/recall@15"]  # re-ordering never adds or drops items
    assert outcome.record["config"]["model"]["params"]["stage1_weight"] == m["stage1_weight"]

    saved = tmp_path / "saved"
    saved.mkdir()
    from recsys.tracking.mlflow import download_run_artifacts

    model_dir = download_run_artifacts(outcome.tracking_uri, outcome.run_id, "model", saved)
    ranker = load_model(model_dir, kind="ranker")
    assert ranker.cfg.stage1_weight == m["stage1_weight"]
    lists = candidate_lists(CandidateListConfig(processed=str(planted_dataset / "processed"), stage1=str(stage1_dir)))
    row = lists.split("test")
    history = row.items[0][row.items[0] != 0].numpy()
    stage = RankingStage("dare", ranker, top_n=15, history_len=8)
    served = stage.rerank(history, row.candidates[0].numpy(), row.stage1[0].numpy())
    with torch.inference_mode():
        raw = ranker.ranker_logits(row.items[:1], row.candidates[:1], row.stage1[:1])[0]
    combined = raw + ranker.cfg.stage1_weight * standardized(row.stage1[:1])[0]
    expected = row.candidates[0][torch.sort(combined, descending=True, stable=True).indices]
    assert np.array_equal(served.items, expected.numpy())


def test_tail_rows_pair_each_of_the_last_items_with_the_history_before_it() -> None:
    hists, targets, owners = tail_rows([[1, 2, 3, 4], [5], [6, 7]], 2)
    assert hists == [[1, 2], [1, 2, 3], [6]]
    assert targets == [3, 4, 7]
    assert owners == [0, 0, 2]


def test_holdout_tail_trains_on_less_and_evaluates_the_same(planted_dataset: Path) -> None:
    from recsys.data.processed import load_processed
    from recsys.data.schema import ITEMS
    from recsys.data.split import SplitConfig, split_sequences

    ds = load_processed(planted_dataset / "processed")
    full = split_sequences(ds.sequences, SplitConfig(), ds.n_items)
    cut = split_sequences(ds.sequences, SplitConfig(holdout_tail=3), ds.n_items)
    for a, b in zip(full.train[ITEMS].to_list(), cut.train[ITEMS].to_list(), strict=True):
        assert b == a[: max(1, len(a) - 3)]
    assert cut.validation.equals(full.validation) and cut.test.equals(full.test)
    assert cut.protocol["holdout_tail"] == 3
    with pytest.raises(ValueError, match="holdout_tail"):
        SplitConfig(holdout_tail=-1)


def test_tail_lists_add_training_targets_from_the_tail_stage1(planted_dataset: Path, stage1_dir: Path) -> None:
    base = CandidateListConfig(processed=str(planted_dataset / "processed"), stage1=str(stage1_dir), top_n=15)
    plain = candidate_lists(base)
    more = candidate_lists(CandidateListConfig(**{**vars(base), "tail_stage1": str(stage1_dir), "tail_targets": 2}))
    # train and validate on the tail lists of the same users (every planted history has >= 2 items before
    # its validation target), test unchanged
    for name in ("train", "val"):
        assert len(more.split(name).items) == 2 * len(plain.split(name).items)
    assert torch.equal(more.split("test").candidates, plain.split("test").candidates)
    with pytest.raises(ValueError, match="go together"):
        CandidateListConfig(processed="p", stage1="s", tail_targets=2)
