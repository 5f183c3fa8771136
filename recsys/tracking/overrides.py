"""Which `key=value` overrides of a recorded `python -m pipelines.train ...` command change what the run
learns: the one classifier the results tables (bench/results_table.py) and the notebooks
(`recsys.eval.analysis.run_overview`) share."""

from __future__ import annotations

import shlex

# How a run is executed, not what it learns: left out of every override list and of the comparison
# of a run's config with today's defaults. The time limit is here too: a run it cut short says so
# in its record (`stopped_by: time_limit`), not in its config.
QUIET_OVERRIDES = ("train.progress_bar", "train.num_threads", "train.max_minutes", "tracking.")
# The seed changes what a run learns but not which configuration it is: tables that group runs
# over seeds leave it out, the per-run ledger keeps it.
SEED_KEY = "train.seed"
# pipelines.train's flags that take no value (every other `--flag` takes one).
VALUELESS_FLAGS = ("--prepare",)


def parse_train_command(command: str) -> tuple[str | None, list[str]]:
    """The `--config` path and the `k=v` overrides of a `python -m pipelines.train ...` command.

    Args:
        command: the command as recorded; tokens before `pipelines.train` (the interpreter, an
            environment assignment) are ignored.
    """
    tokens = shlex.split(command) if command else []
    if "pipelines.train" in tokens:
        tokens = tokens[tokens.index("pipelines.train") + 1 :]
    config, overrides, i = None, [], 0
    while i < len(tokens):
        token = tokens[i]
        if token.startswith("--"):
            flag, _, value = token.partition("=")
            if not value and flag not in VALUELESS_FLAGS:
                i += 1
                value = tokens[i] if i < len(tokens) else ""
            if flag == "--config":
                config = value
        elif "=" in token:
            overrides.append(token)
        i += 1
    return config, overrides


def is_quiet(key: str, *, keep_seed: bool = False) -> bool:
    """True when the dotted config `key` does not change what a run learns (the seed unless `keep_seed`)."""
    return key.startswith(QUIET_OVERRIDES) or (not keep_seed and key == SEED_KEY)


def behavioural_overrides(command: str, *, keep_seed: bool = False) -> list[str]:
    """The overrides of a training command that change what the run learns.

    Args:
        command: a recorded `python -m pipelines.train ...` command.
        keep_seed: keep `train.seed=...` (a per-run listing); by default it is left out, so a run
            whose command sets only the seed and run mechanics has no overrides (it is at defaults).
    """
    _, overrides = parse_train_command(command)
    return [o for o in overrides if not is_quiet(o.split("=", 1)[0], keep_seed=keep_seed)]
