"""Column names and file names of the processed dataset directory (the ETL's output contract)."""

from __future__ import annotations

SCHEMA_VERSION = 1
PAD_ID = 0  # item index 0 is padding everywhere; real items are 1..n_items

# raw log columns after parsing (before ids are made dense)
USER = "user"
ITEM = "item"
TIMESTAMP = "timestamp"
RATING = "rating"
TEXT = "text"  # items: the kept text fields joined for display ("Toy Story (1995) | Animation, Comedy"), nullable
ROW = "row"  # position of the row in the input, so ties keep file order

# processed columns
USER_IDX = "user_idx"
ITEM_IDX = "item_idx"
RAW_ID = "raw_id"
ITEMS = "items"  # list[int] of item_idx, oldest first
TIMESTAMPS = "timestamps"  # list[int], aligned with ITEMS

# item feature columns of items.parquet (besides the text columns an item table keeps under their own names)
TITLE = "title"  # str: MovieLens title without its " (YYYY)"
YEAR = "year"  # str or null: the year split off a title
GENRES = "genres"  # list[str]: MovieLens genres or the genre flags set to 1 (empty when unknown)
ATTRIBUTES = "attributes"  # list[int]: attribute ids as in the source (empty when unknown)
ITEM_FEATURES = "item_features"  # meta.json key: {"columns": {name: "str" | "list[str]" | "list[int]"}, ...}
RESERVED_ITEM_COLUMNS = (ITEM_IDX, RAW_ID, TEXT, GENRES, ATTRIBUTES)

# processed files
INTERACTIONS_FILE = "interactions.parquet"
SEQUENCES_FILE = "sequences.parquet"
ITEMS_FILE = "items.parquet"
USERS_FILE = "users.parquet"
META_FILE = "meta.json"
REJECTED_SAMPLE_FILE = "rejected_sample.csv"
REJECT = "reject_reason"  # why a raw row was rejected (null for good rows)

# id policy: item_idx is 1..n_items (0 = PAD_ID), user_idx is 0..n_users-1; both follow the raw ids'
# sort order (numeric when ids are integers, lexicographic otherwise), so the same input gives the
# same ids and the S3-Rec files keep their own item ids.
FIRST_ITEM_IDX = 1
FIRST_USER_IDX = 0
