"""bench/results_table.py: formatting, override filtering, config rebuilding from git, grouping, the check."""

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

COMMAND = (
    "python -m pipelines.train --config configs/experiment/toy.yaml model.params.dropout=0.3 train.seed=43 "
    "train.progress_bar=false train.num_threads=1 train.max_minutes=70 tracking.experiment=beauty "
    "--finalize-run abc123 --results-json bench/results/experiments/toy.json"
)


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
    _, overrides = rt.parse_command(record["command"])
    return rt.Run(
        record=record,
        experiment="configs/experiment/toy.yaml",
        overrides=rt.behavioural_overrides(overrides),
        config=rt.Rebuilt(config),
        today=rt.Rebuilt(today),
    )


def test_mean_sd_is_the_sample_sd_with_n_and_one_value_has_no_sd() -> None:
    # mean 0.0457; deviations -2e-4, -1e-4, 3e-4: sample sd sqrt(14e-8 / 2) = 0.000265
    assert rt.format_mean_sd([0.0455, 0.0456, 0.0460]) == "0.0457 ± 0.0003 (median 0.0456, n=3)"
    assert rt.format_mean_sd([0.04561]) == "0.0456 (n=1)"
    assert rt.format_mean_sd([]) == "—"


def test_command_parsing_keeps_behavioural_overrides_and_the_seed() -> None:
    config, overrides = rt.parse_command(COMMAND)
    assert config == "configs/experiment/toy.yaml"
    assert rt.behavioural_overrides(overrides) == ["model.params.dropout=0.3", "train.seed=43"]


def test_end_note_and_epoch_time() -> None:
    assert rt.end_note({"stopped_by": "early_stopping"}) == "early stopping"
    assert rt.end_note({"stopped_by": "time_limit", "resumed_after_epoch": 43}) == "time limit; resumed after epoch 43"
    assert rt.end_note({"interrupted": "fit stopped after epoch 13", "stopped_by": None}) == "stopped by hand"
    assert rt.end_note({}) == "not recorded"
    assert rt.epoch_seconds({"fit_s": 100.0, "wall_s": 130.0, "epochs": 4}) == 25.0
    assert rt.epoch_seconds({"wall_s": 120.0, "epochs": 4}) == 30.0
    assert rt.format_seconds(25.0) == "25 s"
    assert rt.format_seconds(150.0) == "2.5 min"


def test_summary_shows_runs_at_defaults_over_seeds() -> None:
    today = {"model.params.dropout": 0.5}
    runs = [
        _run(_record("a", 42, 0.070, 0.0455), today, today),
        _run(_record("b", 43, 0.071, 0.0456), today, today),
        _run(_record("c", 44, 0.069, 0.0460), today, today),
        _run(_record("d", 42, 0.090, 0.0600), {"model.params.dropout": 0.3}, today),  # better, not default
    ]
    summary = rt.render_summary(runs)
    row = next(line for line in summary.splitlines() if line.startswith("| sasrec"))
    assert "| yes |" in row
    assert "0.0457 ± 0.0003 (median 0.0456, n=3)" in row
    assert "0.0914 ± 0.0005 (median 0.0912, n=3)" in row  # HR@10 = 2 x NDCG@10 in these records
    assert "10 s" in row  # 100 s of fit over 10 epochs


def test_summary_falls_back_to_the_best_validation_group_and_says_so() -> None:
    today = {"model.params.dropout": 0.5}
    worse = {"model.params.dropout": 0.3}
    better = {"model.params.dropout": 0.2}
    runs = [
        _run(_record("a", 42, 0.060, 0.040), worse, today),
        _run(_record("b", 42, 0.070, 0.050), better, today),
        _run(_record("c", 43, 0.072, 0.052), better, today),
    ]
    summary = rt.render_summary(runs)
    row = next(line for line in summary.splitlines() if line.startswith("| sasrec"))
    assert "| no [1] |" in row
    assert "0.0510 ± 0.0014 (median 0.0510, n=2)" in row
    assert "[1] `toy`: not at current defaults: `model.params.dropout=0.2`" in summary


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
    assert "stopped by hand" in ledger


def _git(repo: Path, *args: str) -> str:
    base = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    return subprocess.run([*base, *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def _write(repo: Path, files: dict[str, str]) -> str:
    for path, text in files.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "step")
    return _git(repo, "rev-parse", "HEAD")


EXPERIMENT = """name: toy
data: configs/data/toy.yaml
model:
  _base: configs/model/sasrec.yaml
train:
  _base: configs/train/default.yaml
"""


@pytest.fixture
def toy_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    return repo


def test_record_config_is_rebuilt_at_its_commit_with_the_defaults_of_that_time(toy_repo: Path) -> None:
    # commit 1: the model YAML leaves `hidden` to the dataclass, whose default was then 32, and the
    # dataclass has no `norm` yet; commit 2 introduces `norm` with the default "post"
    old = _write(
        toy_repo,
        {
            "configs/experiment/toy.yaml": EXPERIMENT,
            "configs/model/sasrec.yaml": "name: sasrec\nparams:\n  dropout: 0.5\n",
            "configs/train/default.yaml": "lr: 0.001\nnum_threads: 2\n",
            "recsys/models/sasrec.py": "class SASRecConfig:\n    hidden: int = 32\n",
        },
    )
    _write(toy_repo, {"recsys/models/sasrec.py": 'class SASRecConfig:\n    hidden: int = 32\n    norm: str = "post"\n'})
    # today: hidden, dropout and norm restated as today's dataclass has them
    _write(
        toy_repo,
        {"configs/model/sasrec.yaml": "name: sasrec\nparams:\n  hidden: 64\n  dropout: 0.3\n  norm: pre\n"},
    )
    defaults = rt.Defaults(toy_repo)
    command = "python -m pipelines.train --config configs/experiment/toy.yaml model.params.dropout=0.3 train.seed=7"
    record = {"_file": "r.json", "command": command + " train.num_threads=1", "git_commit": old}
    rebuilt = defaults.record_config(record)
    today = defaults.today("configs/experiment/toy.yaml")
    assert rebuilt.config is not None and today.config is not None
    assert rt.config_diff(rebuilt.config, today.config) == ["model.params.hidden=32", "model.params.norm=post"]

    # the same settings written down explicitly are at today's defaults (seed and threads aside)
    explicit = command + " model.params.hidden=64 model.params.norm=pre"
    assert defaults.record_config({"command": explicit, "git_commit": old}).config == today.config


def test_unknown_commits_and_removed_keys_are_not_at_defaults(toy_repo: Path) -> None:
    old = _write(
        toy_repo,
        {
            "configs/experiment/toy.yaml": EXPERIMENT,
            "configs/model/sasrec.yaml": "name: sasrec\nparams:\n  gone_key: 1\n",
            "configs/train/default.yaml": "lr: 0.001\n",
        },
    )
    _write(toy_repo, {"configs/model/sasrec.yaml": "name: sasrec\nparams: {}\n"})
    defaults = rt.Defaults(toy_repo)
    command = "python -m pipelines.train --config configs/experiment/toy.yaml"
    removed = defaults.record_config({"command": command, "git_commit": old})
    assert removed.config is None and "gone_key" in removed.reason
    unknown = defaults.record_config({"command": command, "git_commit": "f" * 40})
    assert unknown.config is None and "not in commit" in unknown.reason


def test_a_recorded_config_is_preferred_over_git(toy_repo: Path) -> None:
    _write(
        toy_repo,
        {
            "configs/experiment/toy.yaml": EXPERIMENT,
            "configs/model/sasrec.yaml": "name: sasrec\nparams: {}\n",
            "configs/train/default.yaml": "lr: 0.001\n",
        },
    )
    defaults = rt.Defaults(toy_repo)
    config = {
        "name": "toy",
        "data": "configs/data/toy.yaml",
        "model": {"name": "sasrec", "params": {"dropout": 0.1}},
        "train": {"lr": 0.001, "seed": 3},
        "tracking": {"experiment": "x"},
    }
    record = {"command": "python -m pipelines.train --config configs/experiment/toy.yaml", "config": config}
    rebuilt = defaults.record_config(record | {"git_commit": "f" * 40})  # the commit is not needed
    today = defaults.today("configs/experiment/toy.yaml")
    assert rebuilt.config is not None and today.config is not None
    assert rt.config_diff(rebuilt.config, today.config) == ["model.params.dropout=0.1"]


def test_generate_writes_both_files_and_the_check_names_the_stale_one(toy_repo: Path) -> None:
    commit = _write(
        toy_repo,
        {
            "configs/experiment/toy.yaml": EXPERIMENT,
            "configs/model/sasrec.yaml": "name: sasrec\nparams: {}\n",
            "configs/train/default.yaml": "lr: 0.001\n",
        },
    )
    records = toy_repo / "records"
    records.mkdir()
    for seed in (42, 43):
        record = _record(f"toy_{seed}", seed, 0.07, 0.05) | {"git_commit": commit}
        del record["_file"]
        (records / f"toy_{seed}.json").write_text(json.dumps(record))
    readme, ledger = toy_repo / "README.md", toy_repo / "EXPERIMENTS.md"
    readme.write_text(f"# toy\n\n{rt.START}\nold table\n{rt.END}\n\nafter\n")
    outputs = rt.generate(toy_repo, records, readme, ledger)
    assert rt.stale_files(outputs) == [readme, ledger]
    for path, text in outputs.items():
        path.write_text(text)
    assert rt.stale_files(rt.generate(toy_repo, records, readme, ledger)) == []
    assert "0.0500 ± 0.0000 (median 0.0500, n=2)" in readme.read_text() and readme.read_text().endswith("\n\nafter\n")
    assert "toy_42.json" in ledger.read_text()

    ledger.write_text(ledger.read_text() + "edited by hand\n")
    assert rt.stale_files(rt.generate(toy_repo, records, readme, ledger)) == [ledger]
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="markers"):
        rt.generate(toy_repo, records, readme, ledger)


def test_the_repository_readme_and_ledger_are_in_sync() -> None:
    outputs = rt.generate(REPO_ROOT, REPO_ROOT / rt.RECORDS_DIR, REPO_ROOT / rt.README, REPO_ROOT / rt.LEDGER)
    stale = [str(p.relative_to(REPO_ROOT)) for p in rt.stale_files(outputs)]
    assert not stale, f"stale: {stale}; run `python bench/results_table.py` and commit the result"
