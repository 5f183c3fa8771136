"""Constants and writers behind tests/retrieval/conftest.py (a unique module name: every test dir has a conftest)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from recsys.data import schema as S

N_ITEMS = 61  # odd sizes so shape bugs cannot hide
N_USERS = 37
MODEL_CFG = {"max_len": 7, "hidden": 16, "n_layers": 1, "n_heads": 2, "dropout": 0.0, "attn_dropout": 0.0}


def write_processed(root: Path, rng: np.random.Generator) -> Path:
    """items (raw ids 'sku-<i>', text on even items), users ('u<n>') and sequences of 3..20 items."""
    root.mkdir(parents=True, exist_ok=True)
    items = pl.DataFrame(
        {
            S.ITEM_IDX: np.arange(1, N_ITEMS + 1),
            S.RAW_ID: [f"sku-{i}" for i in range(1, N_ITEMS + 1)],
            S.TEXT: [f"Product {i}" if i % 2 == 0 else None for i in range(1, N_ITEMS + 1)],
        }
    )
    users = pl.DataFrame({S.USER_IDX: np.arange(N_USERS), S.RAW_ID: [f"u{n}" for n in range(N_USERS)]})
    seqs = [rng.integers(1, N_ITEMS + 1, size=int(rng.integers(3, 21))).tolist() for _ in range(N_USERS)]
    sequences = pl.DataFrame(
        {
            S.USER_IDX: np.arange(N_USERS),
            S.ITEMS: seqs,
            S.TIMESTAMPS: [list(range(len(s))) for s in seqs],
        }
    )
    items.write_parquet(root / S.ITEMS_FILE)
    users.write_parquet(root / S.USERS_FILE)
    sequences.write_parquet(root / S.SEQUENCES_FILE)
    (root / S.META_FILE).write_text(json.dumps({"name": "tiny", "n_items": N_ITEMS, "n_users": N_USERS}))
    return root
