"""Shared, generic test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The read-only datasets directory (`../shared/data` beside the repo); skips when absent."""
    path = (REPO_ROOT / "../shared/data").resolve()
    if not path.is_dir():
        pytest.skip(f"shared datasets not found at {path} (expected a sibling 'shared/data' of the repo)")
    return path
