"""Shared code names no model and no objective: it looks them up in the registries."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from recsys.objectives import OBJECTIVES
from recsys.registry import MODELS

ROOT = Path(__file__).resolve().parents[2]
SHARED = sorted((ROOT / "recsys/train").glob("*.py")) + [ROOT / "recsys/data/datamodule.py"]
NAMES = sorted(
    {*MODELS, *(cls.__name__ for cls in MODELS.values())}
    | {*OBJECTIVES, *(cls.__name__ for cls in OBJECTIVES.values() if cls.__name__ != "Objective")}
)


@pytest.mark.parametrize("path", SHARED, ids=lambda p: str(p.relative_to(ROOT)))
def test_shared_training_code_names_no_model_or_objective(path: Path) -> None:
    text = path.read_text()
    found = [name for name in NAMES if re.search(rf"\b{re.escape(name)}\b", text, flags=re.IGNORECASE)]
    assert not found, f"{path.relative_to(ROOT)} names {found}: move the special case into its model or objective"


def test_the_names_checked_include_every_registry_entry() -> None:
    assert {"sasrec", "bert4rec", "icsrec", "next_item", "masked", "cross_subsequence", "window_views"} <= set(NAMES)
