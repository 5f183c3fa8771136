"""Tables of training-run records: the per-dataset summary and the ledger of every run (bench/results_table.py).

Each record carries the resolved config it ran with (`config`); whether a run is at today's defaults
is that config compared with today's config of its experiment file, read from the working tree.
"""

from __future__ import annotations

import contextlib
import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, get_type_hints

from recsys.config import ConfigError, from_dict, read_yaml, to_dict
from recsys.registry import MODELS, lookup
from recsys.tracking.overrides import behavioural_overrides, is_quiet, parse_train_command
from recsys.tracking.records import summarize
from recsys.train.experiment import ExperimentConfig, resolve_bases

PROTOCOL = "Protocol: leave-one-out, full ranking over the catalog, history items masked, ties by item index."
STOPS = {"early_stopping": "early stopping", "time_limit": "time limit", "max_epochs": "max epochs"}
# Runs resumed before the fit-time fix (9134fae): their fit_s and wall_s count only the part after
# the last resume, so their epoch time is taken over the epochs after it.
TIMED_AFTER_RESUME = frozenset({"icsrec_beauty.json", "icsrec_beauty_linear.json"})

Flat = dict[str, Any]


def load_records(directory: Path, pattern: str = "*.json") -> list[dict[str, Any]]:
    """Every record matching `pattern` in `directory`, each with its path relative to it under `_file`;
    scratch records under a `tmp/` folder (git-ignored, so absent from a fresh clone) are left out."""
    records = []
    for path in sorted(directory.glob(pattern)):
        if "tmp" in path.relative_to(directory).parts[:-1]:
            continue
        record = json.loads(path.read_text())
        if isinstance(record, dict):
            records.append(record | {"_file": path.relative_to(directory).as_posix()})
    return records


def format_mean_sd(values: list[float]) -> str:
    """`mean ± sample sd (median m, n=N)`; one value is shown alone with `(n=1)`."""
    if not values:
        return "—"
    s = summarize(values)
    if s["sd"] is None:
        return f"{s['mean']:.4f} (n=1)"
    return f"{s['mean']:.4f} ± {s['sd']:.4f} (median {s['median']:.4f}, n={len(values)})"


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return "< 1 s"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


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


def comparable(raw: Mapping[str, Any], *, source: str) -> Flat:
    """A resolved experiment config's model, train and eval sections, validated with today's dataclasses.

    Returns flat `section.key: value` pairs without the keys that do not change what a run learns
    (the seed included). A key today's dataclass added since is filled with its default; a key it no
    longer has is an error. The data config is not compared: rows are grouped by dataset and
    experiment file, which names it.
    """
    model = raw.get("model")
    if not isinstance(model, Mapping) or not isinstance(model.get("name"), str):
        raise ConfigError(f"{source}: no model name")
    sections: dict[str, Any] = {"model": {"name": model["name"]}}
    model_config = lookup(MODELS, model["name"], "model").Config
    params = from_dict(model_config, model.get("params") or {}, source=source, prefix="model.params.")
    sections["model"]["params"] = to_dict(params)
    hints = get_type_hints(ExperimentConfig)
    for name in ("train", "eval"):
        sections[name] = to_dict(from_dict(hints[name], raw.get(name) or {}, source=source, prefix=f"{name}."))
    return {k: v for k, v in _flatten(sections).items() if not is_quiet(k)}


@dataclass(frozen=True)
class Config:
    """A config as flat comparable pairs, or why there is none."""

    flat: Flat | None
    reason: str = ""


def record_config(record: Mapping[str, Any]) -> Config:
    """The config a record ran with (its `config` key), as comparable pairs."""
    raw = record.get("config")
    if not isinstance(raw, Mapping):
        return Config(None, "the record carries no config")
    try:
        return Config(comparable(raw, source=str(record.get("_file", "record"))))
    except (ConfigError, KeyError, TypeError, ValueError) as err:
        return Config(None, f"its config does not load today: {err}")


@cache
def today_config(root: Path, experiment: str) -> Config:
    """Today's resolved config of the experiment YAML `experiment` (a path relative to `root`)."""
    try:
        with contextlib.chdir(root):  # `_base:` paths are relative to the repo root
            return Config(comparable(resolve_bases(read_yaml(experiment), experiment), source=f"{experiment} (today)"))
    except (ConfigError, KeyError, TypeError, ValueError, OSError) as err:
        return Config(None, f"today's {experiment} does not load: {err}")


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
    """One training record with what the tables need about it."""

    record: dict[str, Any]
    experiment: str  # the experiment YAML it ran, repo-relative
    overrides: list[str]  # its command's behavioural overrides, the seed kept
    config: Config
    today: Config

    @property
    def at_defaults(self) -> bool:
        return self.config.flat is not None and self.config.flat == self.today.flat

    @property
    def differs(self) -> list[str] | None:
        """Where the run differs from today's defaults; None when either side is unknown."""
        if self.config.flat is None or self.today.flat is None:
            return None
        return config_diff(self.config.flat, self.today.flat)

    @property
    def group(self) -> tuple[str, str]:
        """Runs with the same key differ at most in the seed."""
        if self.config.flat is not None:
            return self.experiment, json.dumps(self.config.flat, sort_keys=True, default=str)
        return self.experiment, " ".join(o for o in self.overrides if not o.startswith("train.seed="))

    @property
    def name(self) -> str:
        return Path(self.experiment).stem

    def metric(self, name: str) -> float | None:
        value = self.record.get("metrics", {}).get(name)
        return float(value) if value is not None else None


def build_runs(records: list[dict[str, Any]], root: Path) -> list[Run]:
    """One `Run` per training record, compared with today's config of its experiment file under `root`."""
    runs = []
    for record in records:
        command = record.get("command", "")
        experiment = parse_train_command(command)[0] or f"configs/experiment/{record.get('name')}.yaml"
        overrides = behavioural_overrides(command, keep_seed=True)
        runs.append(Run(record, experiment, overrides, record_config(record), today_config(root, experiment)))
    return runs


def model_order(name: str) -> tuple[int, str]:
    names = list(MODELS)
    return (names.index(name) if name in names else len(names), name)


def values(runs: list[Run], metric: str) -> list[float]:
    return [v for r in runs if (v := r.metric(metric)) is not None]


def by_key(runs: list[Run], key: Any) -> dict[Any, list[Run]]:
    out: dict[Any, list[Run]] = defaultdict(list)
    for run in runs:
        out[key(run)].append(run)
    return out


def differs_note(run: Run) -> str:
    """Where a run differs from today's defaults, as the `k=v` to add to rerun it now."""
    differs = run.differs
    if differs is None:
        return run.config.reason or run.today.reason
    return "at defaults" if not differs else "`" + " ".join(differs) + "`"
