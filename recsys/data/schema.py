"""Column names and file names of the processed dataset directory (the ETL's output contract)."""

from __future__ import annotations

SCHEMA_VERSION = 1
PAD_ID = 0  # item index 0 is padding everywhere; real items are 1..n_items

# raw log columns after parsing (before ids are made dense)
USER = "user"
ITEM = "item"
TIMESTAMP = "timestamp"
RATING = "rating"
TEXT = "text"
ROW = "row"  # position of the row in the input, so ties keep file order

# processed columns
USER_IDX = "user_idx"
ITEM_IDX = "item_idx"
RAW_ID = "raw_id"
ITEMS = "items"  # list[int] of item_idx, oldest first
TIMESTAMPS = "timestamps"  # list[int], aligned with ITEMS

# processed files
INTERACTIONS_FILE = "interactions.parquet"
SEQUENCES_FILE = "sequences.parquet"
ITEMS_FILE = "items.parquet"
USERS_FILE = "users.parquet"
META_FILE = "meta.json"
REJECTED_SAMPLE_FILE = "rejected_sample.csv"
