"""bench/results_table.py and its table modules: formatting, configs read from records, grouping, the
ML-1M half leaderboard, the check, and that none of it needs git."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _load_script() -> Any:
    spec = importlib.util.spec_from_file_location("results_table", REPO_ROOT / "bench/results_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["results_table"] = module
    spec.loader.exec_module(module)
    return module


rt = _load_script()
import leaderboard as lb  # noqa: E402  (bench/, put on the path by results_table)
import run_tables as tables  # noqa: E402


def _record(name: str, seed: int, val: float, test: float, **extra: Any) -> dict[str, Any]:
    return {
        "_file": f"{name}.json",
        "name": "toy",
        "command": f"python -m pipelines.train --config configs/experiment/toy.yaml train.seed={seed}",
        "git_commit": "0" * 40,
        "machine": {"cpu": "CPU", "cores": 2, "gpu": None},
        "dataset": "beauty",
        "model": "sasrec",
        "attention": "sdpa",
        "loss": "ce",
        "epochs": 10,
        "best_epoch": 8,
        "fit_s": 100.0,
        "wall_s": 120.0,
        "metrics": {"val/ndcg@10": val, "test/ndcg@10": test, "test/hr@10": 2 * test},
        **extra,
    }


def _run(record: dict[str, Any], config: dict[str, Any] | None, today: dict[str, Any]) -> Any:
    overrides = tables.behavioural_overrides(record["command"], keep_seed=True)
    experiment = "configs/experiment/toy.yaml"
    return tables.Run(record, experiment, overrides, tables.Config(config), tables.Config(today))


def test_mean_sd_is_the_sample_sd_with_n_and_one_value_has_no_sd() -> None:
    # mean 0.0457; deviations -2e-4, -1e-4, 3e-4: sample sd sqrt(14e-8 / 2) = 0.000265
    assert rt.format_mean_sd([0.0455, 0.0456, 0.0460]) == "0.0457 ± 0.0003 (median 0.0456, n=3)"
    assert rt.format_mean_sd([0.04561]) == "0.0456 (n=1)"
    assert rt.format_mean_sd([]) == "—"
    assert lb.mean_sd([0.0455, 0.0456, 0.0460]) == "0.0457 ± 0.0003" and lb.mean_sd([0.04561]) == "0.0456"


def test_end_note_and_epoch_time() -> None:
    assert tables.end_note({"stopped_by": "early_stopping"}) == "early stopping"
    note = tables.end_note({"stopped_by": "time_limit", "resumed_after_epoch": 43})
    assert note == "time limit; resumed after epoch 43"
    assert tables.end_note({"interrupted": "fit stopped after epoch 13", "stopped_by": None}) == "stopped by hand"
    assert tables.end_note({}) == "not recorded"
    assert tables.epoch_seconds({"fit_s": 100.0, "wall_s": 130.0, "epochs": 4}) == 25.0
    assert tables.epoch_seconds({"wall_s": 120.0, "epochs": 4}) == 30.0
    assert [tables.format_seconds(s) for s in (0.4, 25.0, 150.0)] == ["< 1 s", "25 s", "2.5 min"]


def test_summary_shows_runs_at_defaults_over_seeds() -> None:
    today = {"model.params.dropout": 0.5}
    runs = [
        _run(_record("a", 42, 0.070, 0.0455), today, today),
        _run(_record("b", 43, 0.071, 0.0456), today, today),
        _run(_record("c", 44, 0.069, 0.0460), today, today),
        _run(_record("d", 42, 0.090, 0.0600), {"model.params.dropout": 0.3}, today),  # better, not default
    ]
    row = next(line for line in rt.render_summary(runs).splitlines() if line.startswith("| sasrec"))
    assert "| yes | 3 | 0.0457 ± 0.0003 |" in row
    assert "| 0.0914 ± 0.0005 |" in row  # HR@10 = 2 x NDCG@10 in these records
    assert row.endswith("| 10 s |")  # 100 s of fit over 10 epochs


def test_summary_falls_back_to_the_best_validation_group_and_says_so() -> None:
    today = {"model.params.dropout": 0.5}
    worse, better = {"model.params.dropout": 0.3}, {"model.params.dropout": 0.2}
    runs = [
        _run(_record("a", 42, 0.060, 0.040), worse, today),
        _run(_record("b", 42, 0.070, 0.050), better, today),
        _run(_record("c", 43, 0.072, 0.052), better, today),
    ]
    summary = rt.render_summary(runs)
    row = next(line for line in summary.splitlines() if line.startswith("| sasrec"))
    assert "| no [1] | 2 | 0.0510 ± 0.0014 |" in row
    assert "[1] `toy`: not at today's defaults: `model.params.dropout=0.2`" in summary


def test_ml1m_records_go_to_the_leaderboard_not_to_a_table_of_their_own() -> None:
    today = {"model.params.dropout": 0.5}
    summary = rt.render_summary([_run(_record("m", 0, 0.1, 0.1, dataset="ml-1m"), today, today)])
    assert "| sasrec" not in summary


def test_ledger_groups_by_model_then_dataset_and_marks_runs_at_defaults() -> None:
    today = {"model.params.dropout": 0.5}
    sports = _record("s", 42, 0.04, 0.03, dataset="sports")
    bert = _record("b", 42, 0.05, 0.04, model="bert4rec", interrupted="fit stopped after epoch 9")
    runs = [_run(sports, today, today), _run(_record("a", 42, 0.07, 0.05), {"model.params.dropout": 0.3}, today)]
    runs.append(_run(bert, None, today))
    ledger = rt.render_ledger(runs)
    headings = [line for line in ledger.splitlines() if line.startswith("#")]
    assert headings[1:] == [
        "## sasrec",
        "### sasrec on beauty",
        "### sasrec on sports",
        "## bert4rec",
        "### bert4rec on beauty",
    ]
    assert "`model.params.dropout=0.3` |" in ledger
    assert "| at defaults |" in ledger
    assert "| `train.seed=42` |" in ledger  # the ledger keeps each run's seed
    assert "stopped by hand" in ledger


EXPERIMENT = """name: toy
data: configs/data/toy.yaml
model:
  _base: configs/model/sasrec.yaml
train:
  _base: configs/train/default.yaml
"""


@pytest.fixture
def toy_repo(tmp_path: Path) -> Path:
    """A directory (not a git repository) with one experiment config whose model YAML sets dropout 0.3."""
    files = {
        "configs/experiment/toy.yaml": EXPERIMENT,
        "configs/model/sasrec.yaml": "name: sasrec\nparams:\n  dropout: 0.3\n",
        "configs/train/default.yaml": "lr: 0.001\n",
    }
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    return tmp_path


def _config(**params: Any) -> dict[str, Any]:
    """A resolved experiment config as a record carries it."""
    return {
        "name": "toy",
        "data": "configs/data/toy.yaml",
        "model": {"name": "sasrec", "params": {"dropout": 0.3, **params}},
        "train": {"lr": 0.001, "seed": 3, "num_threads": 1},
        "tracking": {"experiment": "x"},
    }


def test_a_record_is_compared_with_today_through_its_own_config(toy_repo: Path) -> None:
    today = tables.today_config(toy_repo, "configs/experiment/toy.yaml")
    same = tables.record_config({"config": _config()})  # seed and threads differ: not compared
    other = tables.record_config({"config": _config(hidden=32)})
    assert today.flat is not None and same.flat == today.flat
    assert other.flat is not None and tables.config_diff(other.flat, today.flat) == ["model.params.hidden=32"]

    missing = tables.record_config({"_file": "r.json"})
    assert missing.flat is None and "no config" in missing.reason
    removed = tables.record_config({"_file": "r.json", "config": _config(gone_key=1)})
    assert removed.flat is None and "gone_key" in removed.reason


def _ml1m(file: str, model: str | None, val: float, test: float, **extra: Any) -> dict[str, Any]:
    protocol = {"split": "leave_one_out", "full_ranking": True, "exclude_seen": True, "n_users": 2999, "n_items": 3266}
    metrics = {"val/ndcg@10": val, "test/ndcg@10": test, "test/hr@10": 2 * test}
    record = {"_file": file, "dataset": "ml-1m", "model": model, "protocol": protocol, "metrics": metrics}
    return record | {"fit_s": 60.0, "machine": {"cpu": "CPU", "cores": 2}} | extra


def test_leaderboard_keeps_only_the_ml1m_half_protocol() -> None:
    assert lb.entry(_ml1m("experiments/s.json", "sasrec", 0.2, 0.1)) is not None
    cold = _ml1m("c.json", "sasrec", 0.2, 0.1)
    cold["protocol"] = cold["protocol"] | {"cold_item_share": 0.1}
    full = _ml1m("f.json", "sasrec", 0.2, 0.1)
    full["protocol"] = full["protocol"] | {"n_users": 6040}
    unmasked = _ml1m("u.json", "sasrec", 0.2, 0.1)
    unmasked["protocol"] = unmasked["protocol"] | {"exclude_seen": False}
    other = _ml1m("b.json", "sasrec", 0.2, 0.1, dataset="beauty")
    assert [lb.entry(r) for r in (cold, full, unmasked, other)] == [None] * 4


def test_recformer_with_id_vectors_is_a_family_of_its_own() -> None:
    text_only = _ml1m("r.json", "recformer", 0.2, 0.1, config={"model": {"params": {"item_ids": False}}})
    with_ids = _ml1m("i.json", "recformer", 0.2, 0.1, config={"model": {"params": {"item_ids": True}}})
    user_ids = _ml1m("u.json", "recformer", 0.2, 0.1, config={"model": {"params": {"item_ids": True, "id_len": 200}}})
    families = [e.family for r in (text_only, with_ids, user_ids) if (e := lb.entry(r)) is not None]
    assert families == ["recformer", "recformer_id", "recformer_id_user"]


def test_leaderboard_picks_each_familys_best_validation_group_and_lists_every_family() -> None:
    records = [
        _ml1m("experiments/sasrec_a_seed0.json", "sasrec", 0.20, 0.10),
        _ml1m("experiments/sasrec_a_seed1.json", "sasrec", 0.22, 0.12),
        _ml1m("experiments/sasrec_b_seed0.json", "sasrec", 0.19, 0.30),  # better test, worse validation
        _ml1m("experiments/pop_seed0.json", "pop", 0.01, 0.01, fit_s=None, wall_s=0.5),
        {  # a two-stage record: a ranker on stage 1's candidate lists, stage 1's own figure beside its metrics
            "_file": "experiments/two_stage/dare_seed0.json",
            "dataset": "ml-1m",
            "model": "dare",
            "protocol": {
                "kind": "candidate_lists",
                "stage1_model": "sasrec",
                "split": "leave_one_out",
                "full_ranking": True,
                "exclude_seen": True,
                "n_users": 2999,
            },
            "metrics": {"stage1_test/ndcg@10": 0.06, "test/ndcg@10": 0.03, "test/hr@10": 0.07},
            "fit_s": 600.0,
            "machine": {"cpu": "CPU", "cores": 2},
        },
    ]
    table = lb.render_leaderboard([e for r in records if (e := lb.entry(r)) is not None])
    rows = {
        line.split(" | ")[0].removeprefix("| ").split(" [")[0]: line
        for line in table.splitlines()
        if line.startswith("| ")
    }
    assert set(lb.FAMILIES.values()) <= set(rows)
    assert rows["SASRec"] == "| SASRec | `experiments/sasrec_a` | 2 | 0.1100 ± 0.0141 | 0.2200 ± 0.0283 | 60 s |"
    assert rows["popularity"].endswith("| 1 | 0.0100 | 0.0200 | < 1 s (whole run) |")
    two_stage = rows[lb.FAMILIES["sasrec+dare"]]
    assert two_stage.endswith(" [1] | `experiments/two_stage/dare` | 1 | 0.0300 | 0.0700 | 10.0 min (ranker only) |")
    assert "- [1] stage 1 alone on the same lists: test NDCG@10 0.0600" in table
    assert rows["BERT4Rec"] == "| BERT4Rec | no record yet | | | | |"
    assert "leave-one-out, full ranking over the catalog, history items masked" in table


def test_the_repository_leaderboard_has_a_row_for_every_family_and_records_for_the_known_ones() -> None:
    table = lb.render_leaderboard(lb.leaderboard_entries(REPO_ROOT / rt.RESULTS_DIR))
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| model ")]
    labels = [row.split(" | ")[0].removeprefix("| ").split(" [")[0] for row in rows]
    assert labels == list(lb.FAMILIES.values())
    with_records = {label for label, row in zip(labels, rows, strict=True) if "no record yet" not in row}
    assert {"popularity", "SASRec", "Recformer", lb.FAMILIES["llm_rec"], lb.FAMILIES["sasrec+dare"]} <= with_records


def _write_records(root: Path, records: list[dict[str, Any]]) -> Path:
    results = root / "bench/results"
    for record in records:
        path = results / record.pop("_file")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
    return results


def test_generate_writes_both_files_and_the_check_names_the_stale_one(toy_repo: Path) -> None:
    records = [_record(f"experiments/toy_{s}", s, 0.07, 0.05, config=_config()) for s in (42, 43)]
    records.append(_ml1m("experiments/llm_rec/x_seed0.json", "llm_rec", 0.2, 0.1))
    results = _write_records(toy_repo, records)
    readme, ledger = toy_repo / "README.md", toy_repo / "EXPERIMENTS.md"
    readme.write_text(f"# toy\n\n{rt.START}\nold table\n{rt.END}\n\nafter\n")
    outputs = rt.generate(toy_repo, results, readme, ledger)
    assert rt.stale_files(outputs) == [readme, ledger]
    for path, text in outputs.items():
        path.write_text(text)
    assert rt.stale_files(rt.generate(toy_repo, results, readme, ledger)) == []
    text = readme.read_text()
    assert "| sasrec | `toy` | sdpa | yes | 2 | 0.0500 ± 0.0000 |" in text and text.endswith("\n\nafter\n")
    assert "| `experiments/llm_rec/x` | 1 | 0.1000 |" in text
    assert "toy_42.json" in ledger.read_text()

    ledger.write_text(ledger.read_text() + "edited by hand\n")
    assert rt.stale_files(rt.generate(toy_repo, results, readme, ledger)) == [ledger]
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="markers"):
        rt.generate(toy_repo, results, readme, ledger)


def test_the_check_never_calls_git_and_the_repository_files_are_in_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_subprocess(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"the results tables started a process: {args}")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    monkeypatch.setattr(subprocess.Popen, "__init__", no_subprocess)
    tables.today_config.cache_clear()  # read today's configs again, under the patch
    outputs = rt.generate(REPO_ROOT, REPO_ROOT / rt.RESULTS_DIR, REPO_ROOT / rt.README, REPO_ROOT / rt.LEDGER)
    stale = [str(p.relative_to(REPO_ROOT)) for p in rt.stale_files(outputs)]
    assert not stale, f"stale: {stale}; run `python bench/results_table.py` and commit the result"
