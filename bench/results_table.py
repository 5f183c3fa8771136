"""Generate the README's results summary and the full ledger of runs from bench/results/experiments/.

python bench/results_table.py            # rewrite the README summary and bench/results/EXPERIMENTS.md
python bench/results_table.py --check    # exit 1 when either file differs from what would be generated

Each `bench/results/experiments/*.json` is the record of one training run. The README shows, per
dataset, one row per model config at its shipped defaults (mean ± sd over seeds); the ledger shows
every record with its overrides. Whether a record ran at today's defaults is decided by
`Defaults.record_config`, which rebuilds the config each run used (see its docstring).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import json
import shlex
import statistics
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from recsys.config import ConfigError, apply_overrides, from_dict, read_yaml, to_dict
from recsys.registry import MODELS, lookup
from recsys.train.experiment import ExperimentConfig, resolve_bases

ROOT = Path(__file__).resolve().parents[1]
COMMAND = "python bench/results_table.py"
RECORDS_DIR = Path("bench/results/experiments")
README = Path("README.md")
LEDGER = Path("bench/results/EXPERIMENTS.md")
START, END = "<!-- results:start -->", "<!-- results:end -->"
PROTOCOL = "Protocol: leave-one-out, full ranking over the catalog, history items masked, ties by item index."

# Published anchors, test metrics @10, full ranking, leave-one-out. Only figures the README cited
# before it was generated are here (none was cited for SASRec or BERT4Rec):
# - ICSRec, Beauty: "the published 0.0578 / 0.0959" (NDCG@10 / HR@10), the released ICSRec
#   checkpoints (Qin et al., "Intent Contrastive Learning with Cross Subsequences for Sequential
#   Recommendation", WSDM 2024), the target of issue #7.
# - ICSRec, Sports: "the Sports target (0.0335 / 0.0565)" (NDCG@10 / HR@10), issue #7's target
#   from the same paper.
ANCHORS: dict[tuple[str, str], dict[str, float]] = {
    ("icsrec", "beauty"): {"test/hr@10": 0.0959, "test/ndcg@10": 0.0578},
    ("icsrec", "sports"): {"test/hr@10": 0.0565, "test/ndcg@10": 0.0335},
}

# Settings that do not change what a run learns: left out of the override column and of the
# comparison with today's defaults. The seed is kept in the ledger (a separate run) but seeds are
# grouped in the summary.
QUIET_OVERRIDES = ("train.progress_bar", "train.num_threads", "train.max_minutes", "tracking.")
NOT_COMPARED = ("train.seed", "train.progress_bar", "train.num_threads", "train.max_minutes")
STOPS = {"early_stopping": "early stopping", "time_limit": "time limit", "max_epochs": "max epochs"}
SUMMARY_METRICS = ("test/hr@10", "test/ndcg@10")
# Runs resumed before the fit-time fix (9134fae): their fit_s and wall_s count only the part after
# the last resume (the README said so when they were recorded), so their epoch time is taken over
# the epochs after it.
TIMED_AFTER_RESUME = frozenset({"icsrec_beauty.json", "icsrec_beauty_linear.json"})

# Where the config dataclasses lived when records without a `config` key were written; their
# defaults at a record's commit fill the keys its YAML left out.
HISTORIC_TRAIN_SOURCE = "recsys/train/experiment.py"
HISTORIC_MODEL_SOURCE = "recsys/models/{name}.py"

Flat = dict[str, Any]


@dataclass(frozen=True)
class Rebuilt:
    """A record's effective config as flat `key: value` pairs, or why it could not be rebuilt."""

    config: Flat | None
    reason: str = ""


def load_records(directory: Path) -> list[dict[str, Any]]:
    """Every `*.json` record in `directory`, each with its file name under `_file`."""
    records = []
    for path in sorted(directory.glob("*.json")):
        record = json.loads(path.read_text())
        record["_file"] = path.name
        records.append(record)
    return records


def parse_command(command: str) -> tuple[str | None, list[str]]:
    """The `--config` path and the `k=v` overrides of a `python -m pipelines.train ...` command."""
    tokens = shlex.split(command)
    if "pipelines.train" in tokens:
        tokens = tokens[tokens.index("pipelines.train") + 1 :]
    config, overrides, i = None, [], 0
    while i < len(tokens):
        token = tokens[i]
        if token.startswith("--"):  # every flag of pipelines.train takes a value
            flag, _, value = token.partition("=")
            if not value:
                i += 1
                value = tokens[i] if i < len(tokens) else ""
            if flag == "--config":
                config = value
        elif "=" in token:
            overrides.append(token)
        i += 1
    return config, overrides


def behavioural_overrides(overrides: Iterable[str]) -> list[str]:
    """The overrides that change what a run learns (the seed included)."""
    return [o for o in overrides if not o.split("=", 1)[0].startswith(QUIET_OVERRIDES)]


def format_mean_sd(values: list[float]) -> str:
    """`mean ± sample sd (median m, n=N)`; one value is shown alone with `(n=1)`."""
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.4f} (n=1)"
    mean, sd, median = statistics.mean(values), statistics.stdev(values), statistics.median(values)
    return f"{mean:.4f} ± {sd:.4f} (median {median:.4f}, n={len(values)})"


def end_note(record: Mapping[str, Any]) -> str:
    """Why the fit ended, and whether it was resumed."""
    if record.get("interrupted"):  # scored with --finalize-run after the process was stopped
        note = "stopped by hand"
    else:
        note = STOPS.get(record.get("stopped_by") or "", "not recorded")
    if "resumed_after_epoch" in record:  # continued with --resume-run
        note += f"; resumed after epoch {record['resumed_after_epoch']}"
    return note


def epoch_seconds(record: Mapping[str, Any]) -> float | None:
    """Mean wall time of one epoch: fit time (else the whole run's) over the epochs it covers."""
    seconds = record.get("fit_s") or record.get("wall_s")
    epochs = record.get("epochs")
    if epochs and record.get("_file") in TIMED_AFTER_RESUME:
        epochs -= record.get("resumed_after_epoch", 0)
    return seconds / epochs if seconds and epochs else None


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def machine_name(record: Mapping[str, Any]) -> str:
    machine = record.get("machine") or {}
    return f"{machine.get('gpu') or machine.get('cpu', '?')}, {machine.get('cores', '?')} cores"


def _flatten(data: Mapping[str, Any], prefix: str = "") -> Flat:
    out: Flat = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        merge = isinstance(value, Mapping) and isinstance(out.get(key), Mapping)
        out[key] = _deep_merge(out[key], value) if merge else value
    return out


def _literal_defaults(source: str, class_name: str) -> dict[str, Any] | None:
    """Literal field defaults of dataclass `class_name` in Python `source` (None: no such class)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name.lower() == class_name.lower():
            out: dict[str, Any] = {}
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value:
                    value: ast.expr | None = stmt.value
                    if isinstance(value, ast.Call):  # field(default=...); default_factory is skipped
                        value = next((k.value for k in value.keywords if k.arg == "default"), None)
                    with contextlib.suppress(ValueError, TypeError, SyntaxError):
                        if value is not None:
                            out[stmt.target.id] = ast.literal_eval(value)
            return out
    return None


def _git(root: Path, *args: str) -> str | None:
    """The output of `git args...` in `root`, or None when git fails or is missing."""
    try:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    except OSError:
        return None
    return result.stdout if result.returncode == 0 else None


class Defaults:
    """Rebuilds each record's effective config and today's, reading history from git.

    Args:
        root: the repository root (today's configs are read from its working tree).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._git: dict[tuple[str, str], str | None] = {}
        self._introduced: dict[tuple[str, str], dict[str, Any]] = {}
        self._today: dict[str, Rebuilt] = {}

    def git_show(self, commit: str, path: str) -> str | None:
        """The text of `path` at `commit`, or None when git does not know either."""
        key = (commit, path)
        if key not in self._git:
            self._git[key] = _git(self.root, "show", f"{commit}:{path}")
        return self._git[key]

    def _introduced_defaults(self, path: str, class_name: str) -> dict[str, Any]:
        """Each field's default in the first commit where it appears: the behaviour from before it existed."""
        key = (path, class_name)
        if key not in self._introduced:
            first: dict[str, Any] = {}
            for commit in (_git(self.root, "log", "--reverse", "--format=%H", "--", path) or "").split():
                source = self.git_show(commit, path)
                for name, value in (_literal_defaults(source or "", class_name) or {}).items():
                    first.setdefault(name, value)
            self._introduced[key] = first
        return self._introduced[key]

    def _resolve_at(self, commit: str, path: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
        """The YAML at `path` as of `commit` with every `_base:` file merged in (as `resolve_bases`)."""
        text = self.git_show(commit, path)
        if text is None:
            raise ConfigError(f"{path} is not in commit {commit[:7]}")
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict) or path in seen:
            raise ConfigError(f"{path} at {commit[:7]}: not a mapping, or a `_base` cycle")
        return self._merge_bases(commit, data, (*seen, path))

    def _merge_bases(self, commit: str, data: Mapping[str, Any], seen: tuple[str, ...]) -> dict[str, Any]:
        out = {k: self._merge_bases(commit, v, seen) if isinstance(v, Mapping) else v for k, v in data.items()}
        base = out.pop("_base", None)
        return _deep_merge(self._resolve_at(commit, base, seen), out) if isinstance(base, str) else out

    def today(self, experiment: str) -> Rebuilt:
        """Today's resolved config of the experiment YAML `experiment` (a repo-relative path)."""
        if experiment not in self._today:
            try:
                with contextlib.chdir(self.root):  # `_base:` paths are relative to the repo root
                    raw = resolve_bases(read_yaml(experiment), experiment)
                self._today[experiment] = Rebuilt(_comparable(raw, source=f"{experiment} (today)"))
            except (ConfigError, KeyError, TypeError, ValueError) as err:
                self._today[experiment] = Rebuilt(None, f"today's {experiment} does not load: {err}")
        return self._today[experiment]

    def record_config(self, record: Mapping[str, Any]) -> Rebuilt:
        """The config a record ran with, as flat comparable pairs.

        A record written with a `config` key (the resolved experiment config) is read from it. An
        older record is rebuilt from its `git_commit` and `command`: the experiment YAML and its
        `_base:` files as they were at that commit, the command's overrides applied, keys the YAML
        left out filled with the dataclass defaults at that commit (read from the source), and keys
        that did not exist yet with the default they were introduced with. The result is validated
        with today's dataclasses, so a key that no longer exists makes the record not comparable.
        """
        experiment, overrides = parse_command(record.get("command", ""))
        commit = record.get("git_commit") or ""
        from_git = not isinstance(record.get("config"), Mapping)  # records from now on carry `config`
        try:
            if not from_git:
                raw = apply_overrides(dict(record["config"]), [])  # a deep copy
            elif experiment and commit:
                raw = apply_overrides(self._resolve_at(commit, experiment), overrides)
            else:
                return Rebuilt(None, "no config, git commit or --config in the record")
            model = raw.get("model", {}).get("name", "")
            sections = (
                (("model", "params"), HISTORIC_MODEL_SOURCE.format(name=model), f"{model}Config"),
                (("train",), HISTORIC_TRAIN_SOURCE, "TrainConfig"),
                (("eval",), HISTORIC_TRAIN_SOURCE, "EvalConfig"),
            )
            for keys, path, cls in sections:
                defaults = self._introduced_defaults(path, cls)
                if from_git:
                    defaults = defaults | (_literal_defaults(self.git_show(commit, path) or "", cls) or {})
                node = raw
                for part in keys[:-1]:
                    node = node.setdefault(part, {})
                fields = _today_fields(keys, model)  # a field removed since can no longer be compared
                node[keys[-1]] = {k: v for k, v in defaults.items() if k in fields} | dict(node.get(keys[-1]) or {})
            return Rebuilt(_comparable(raw, source=str(record.get("_file", "record"))))
        except (ConfigError, KeyError, TypeError, ValueError) as err:
            return Rebuilt(None, f"not rebuilt: {err}")


def _today_fields(keys: tuple[str, ...], model: str) -> set[str]:
    """Field names of today's dataclass for the config section at `keys`."""
    if keys == ("model", "params"):
        cls = lookup(MODELS, model, "model").Config
    else:
        cls = get_type_hints(ExperimentConfig)[keys[0]]
    return {f.name for f in dataclasses.fields(cls)}


def _comparable(raw: Mapping[str, Any], *, source: str) -> Flat:
    """Validate a resolved experiment dict's model, train and eval sections with today's dataclasses.

    Returns flat `section.key: value` pairs without the quiet keys. The data config is not compared:
    rows are grouped by dataset and experiment file, which names it.
    """
    model = raw.get("model")
    if not isinstance(model, Mapping) or not isinstance(model.get("name"), str):
        raise ConfigError(f"{source}: no model name")
    sections = {"model": {"name": model["name"]}}
    model_config = lookup(MODELS, model["name"], "model").Config
    params = from_dict(model_config, model.get("params") or {}, source=source, prefix="model.params.")
    sections["model"]["params"] = to_dict(params)
    hints = get_type_hints(ExperimentConfig)
    for name in ("train", "eval"):
        sections[name] = to_dict(from_dict(hints[name], raw.get(name) or {}, source=source, prefix=f"{name}."))
    return {k: v for k, v in _flatten(sections).items() if not k.startswith(NOT_COMPARED)}


def config_diff(record: Flat, today: Flat) -> list[str]:
    """`key=value` (the record's value) for every key where the record differs from today."""
    keys = sorted(set(record) | set(today))
    return [f"{k}={_yaml_value(record.get(k))}" for k in keys if record.get(k) != today.get(k)]


def _yaml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ",".join(_yaml_value(v) for v in value) + "]"
    return str(value)


@dataclass
class Run:
    """One record with what the tables need about it."""

    record: dict[str, Any]
    experiment: str
    overrides: list[str]
    config: Rebuilt
    today: Rebuilt

    @property
    def at_defaults(self) -> bool:
        return self.config.config is not None and self.config.config == self.today.config

    @property
    def differs(self) -> list[str] | None:
        """Where the run differs from today's defaults; None when either side is unknown."""
        if self.config.config is None or self.today.config is None:
            return None
        return config_diff(self.config.config, self.today.config)

    @property
    def group(self) -> tuple[str, str]:
        """Runs with the same key differ at most in the seed."""
        if self.config.config is not None:
            return self.experiment, json.dumps(self.config.config, sort_keys=True, default=str)
        return self.experiment, " ".join(o for o in self.overrides if not o.startswith("train.seed="))

    def metric(self, name: str) -> float | None:
        value = self.record.get("metrics", {}).get(name)
        return float(value) if value is not None else None


def build_runs(records: list[dict[str, Any]], defaults: Defaults) -> list[Run]:
    runs = []
    for record in records:
        experiment, overrides = parse_command(record.get("command", ""))
        experiment = experiment or f"configs/experiment/{record.get('name')}.yaml"
        runs.append(
            Run(
                record=record,
                experiment=experiment,
                overrides=behavioural_overrides(overrides),
                config=defaults.record_config(record),
                today=defaults.today(experiment),
            )
        )
    return runs


def _model_order(name: str) -> tuple[int, str]:
    names = list(MODELS)
    return (names.index(name) if name in names else len(names), name)


def _experiment_name(path: str) -> str:
    return Path(path).stem


def _values(runs: list[Run], metric: str) -> list[float]:
    return [v for r in runs if (v := r.metric(metric)) is not None]


def render_summary(runs: list[Run]) -> str:
    """Per dataset, one row per model config: at its shipped defaults, else its best-validation group."""
    lines = [PROTOCOL, ""]
    by_dataset: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_dataset[run.record.get("dataset") or "?"].append(run)
    notes: list[str] = []
    for dataset in sorted(by_dataset):
        protocol = by_dataset[dataset][0].record.get("protocol") or {}
        size = f" ({protocol['n_users']:,} users, {protocol['n_items']:,} items)" if "n_users" in protocol else ""
        lines += [f"### {dataset}{size}", ""]
        lines.append(
            "| model | config | attention | at defaults | test HR@10 | published | test NDCG@10 | published | epoch |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|")
        by_experiment: dict[str, list[Run]] = defaultdict(list)
        for run in by_dataset[dataset]:
            by_experiment[run.experiment].append(run)
        order = sorted(by_experiment, key=lambda e: (_model_order(by_experiment[e][0].record["model"]), e))
        for experiment in order:
            group, at_defaults = _summary_group(by_experiment[experiment])
            first = group[0]
            model = first.record["model"]
            anchor = ANCHORS.get((model, dataset), {})
            if at_defaults:
                flag = "yes"
            else:
                notes.append(_footnote(first))
                flag = f"no [{len(notes)}]"
            times = [t for r in group if (t := epoch_seconds(r.record)) is not None]
            cells = [model, f"`{_experiment_name(experiment)}`", first.record.get("attention", ""), flag]
            for metric in SUMMARY_METRICS:
                cells.append(format_mean_sd(_values(group, metric)))
                cells.append(f"{anchor[metric]:.4f}" if metric in anchor else "—")
            cells.append(format_seconds(statistics.mean(times) if times else None))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += [f"- [{i}] {note}" for i, note in enumerate(notes, 1)]
    lines += [
        "- mean ± sample sd (and the median) over the seeds run; *at defaults*: the runs used today's config "
        "of that file, seed aside (otherwise the group of runs with the best mean validation NDCG@10 is shown)",
        "- published: the ICSRec paper's figures as issue #7 cites them (Beauty: its released checkpoints); none "
        "is cited yet for SASRec or BERT4Rec (sources in `bench/results_table.py`)",
        "- epoch: fit time / epochs, on the machines listed in the ledger",
    ]
    return "\n".join(lines)


def _summary_group(runs: list[Run]) -> tuple[list[Run], bool]:
    """The runs at today's defaults, else the seed group with the best mean val/ndcg@10."""
    at_defaults = [r for r in runs if r.at_defaults]
    if at_defaults:
        return at_defaults, True
    groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.group].append(run)

    def score(group: list[Run]) -> float:
        values = _values(group, "val/ndcg@10")
        return statistics.mean(values) if values else float("-inf")

    return max(groups.values(), key=lambda g: (score(g), g[0].record["_file"])), False


def _footnote(run: Run) -> str:
    name = _experiment_name(run.experiment)
    differs = run.differs
    if differs is None:
        reason = run.config.reason or run.today.reason
        return f"`{name}`: not at current defaults ({reason}); overrides: `{' '.join(run.overrides) or 'none'}`"
    return f"`{name}`: not at current defaults: `{' '.join(differs)}`"


def render_ledger(runs: list[Run]) -> str:
    """Every record, grouped by model then dataset."""
    lines = [
        "# Experiment ledger",
        "",
        f"Generated by `{COMMAND}` from `bench/results/experiments/*.json`; do not edit by hand.",
        "Every row is one training run, also an MLflow run (its id is in the JSON).",
        "",
        PROTOCOL,
        "",
        "- **overrides**: the `k=v` of the run's command, relative to the config file as it was at the run's "
        "commit (progress bar, threads, time limit and tracking left out).",
        "- **vs today's defaults**: where the run's config differs from today's config of that file, as the "
        "`k=v` to add to rerun it now (seed aside); `at defaults` when it does not.",
        "- **end**: why the fit ended (early stopping, time limit, max epochs, stopped by hand and scored with "
        "`--finalize-run`; `not recorded` for records older than that field).",
        "",
    ]
    head = (
        "| record | config | dataset | attention | loss | overrides | test HR@10 | test NDCG@10 | val NDCG@10 "
        "| epochs (best) | end | wall | machine | commit | vs today's defaults |"
    )
    by_model: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_model[run.record["model"]].append(run)
    for model in sorted(by_model, key=_model_order):
        lines += [f"## {model}", ""]
        by_dataset: dict[str, list[Run]] = defaultdict(list)
        for run in by_model[model]:
            by_dataset[run.record.get("dataset") or "?"].append(run)
        for dataset in sorted(by_dataset):
            lines += [f"### {model} on {dataset}", "", head, "|" + "---|" * (head.count("|") - 1)]
            ordered = sorted(by_dataset[dataset], key=lambda r: (r.experiment, r.record["_file"]))
            lines += [_ledger_row(run) for run in ordered]
            lines.append("")
    return "\n".join(lines)


def _ledger_row(run: Run) -> str:
    r = run.record

    def metric(name: str) -> str:
        value = run.metric(name)
        return f"{value:.4f}" if value is not None else "—"

    differs = run.differs
    if differs is None:
        vs_today = run.config.reason or run.today.reason
    else:
        vs_today = "at defaults" if not differs else "`" + " ".join(differs) + "`"
    cells = [
        f"[{r['_file']}](experiments/{r['_file']})",
        f"`{_experiment_name(run.experiment)}`",
        r.get("dataset") or "",
        r.get("attention", ""),
        r.get("loss", ""),
        "`" + " ".join(run.overrides) + "`" if run.overrides else "—",
        metric("test/hr@10"),
        metric("test/ndcg@10"),
        metric("val/ndcg@10"),
        f"{r.get('epochs')} ({r.get('best_epoch')})",
        end_note(r),
        _wall(r),
        machine_name(r),
        (r.get("git_commit") or "")[:7],
        vs_today.replace("|", "\\|"),
    ]
    return "| " + " | ".join(cells) + " |"


def _wall(record: Mapping[str, Any]) -> str:
    if not record.get("wall_s"):
        return "—"
    partial = " (after the resume only)" if record.get("_file") in TIMED_AFTER_RESUME else ""
    return f"{record['wall_s'] / 60:.1f} min{partial}"


def render_readme(text: str, summary: str) -> str:
    """`text` with the part between the results markers replaced by `summary`."""
    if START not in text or END not in text:
        raise ValueError(f"the README lacks the markers {START} / {END}")
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    return f"{before}{START}\n{summary}\n{END}{after}"


def generate(root: Path, records_dir: Path, readme: Path, ledger: Path) -> dict[Path, str]:
    """The new text of the README and of the ledger, keyed by their paths."""
    runs = build_runs(load_records(records_dir), Defaults(root))
    return {
        readme: render_readme(readme.read_text(), render_summary(runs)),
        ledger: render_ledger(runs),
    }


def stale_files(outputs: Mapping[Path, str]) -> list[Path]:
    """The paths whose current text differs from the generated one."""
    return [path for path, text in outputs.items() if not path.is_file() or path.read_text() != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 when a generated file is out of date")
    args = parser.parse_args(argv)
    try:
        outputs = generate(ROOT, ROOT / RECORDS_DIR, ROOT / README, ROOT / LEDGER)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.check:
        stale = stale_files(outputs)
        if stale:
            names = ", ".join(str(p.relative_to(ROOT)) for p in stale)
            shallow = (_git(ROOT, "rev-parse", "--is-shallow-repository") or "").strip() == "true"
            hint = " (this clone is shallow: the records' commits may be missing, `git fetch --unshallow`)"
            print(f"stale: {names}; run `{COMMAND}` and commit the result{hint if shallow else ''}", file=sys.stderr)
            return 1
        return 0
    for path, text in outputs.items():
        path.write_text(text)
    print(f"{len(load_records(ROOT / RECORDS_DIR))} records -> {README}, {LEDGER}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
