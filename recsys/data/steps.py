"""The ETL's steps and rules, written once: both engines (polars `etl.py`, Spark `spark_etl.py`) build
their plans from these names and orders, and `tests/data/test_spark_etl.py` checks that they give
identical outputs on the same input.

Steps, in order: read (the reader's own line-level reasons) -> validate (bad rows counted by the first
reason that applies) -> rating threshold -> dedupe policy -> iterative k-core until stable -> dense ids
(raw-id order; item 0 = padding) -> chronological order (ties keep input order) -> sequences.
"""

from __future__ import annotations

from typing import Literal

from recsys.data import schema as S

EtlEngine = Literal["polars", "spark"]
ENGINES: tuple[EtlEngine, ...] = ("polars", "spark")

STEPS = (
    "read",
    "validate",
    "min_rating",
    "dedupe",
    "k_core",
    "dense_ids",
    "chronological_order",
    "sequences",
)

# reasons a reader sets for a whole line (kept as the row's reason, before any value check)
READER_REASONS = ("not_utf8", "malformed_line")
# value checks of `validate`, first match wins; an engine implements exactly these (tested)
VALUE_REASONS = (
    "missing_value",  # user, item or timestamp null or blank
    "bad_user_id",  # not an integer (id_type int; ASCII digits with an optional sign) or beyond int64
    "bad_item_id",
    "bad_timestamp",  # not an integer (timestamp_type int)
    "negative_timestamp",
    "future_timestamp",  # later than the run's start + FUTURE_SLACK_S
    "bad_rating",  # not a number, or NaN (only when the log has ratings)
)
REJECT_REASONS = READER_REASONS + VALUE_REASONS
FUTURE_SLACK_S = 86_400  # a day of slack for clocks: anything later than that cannot have happened yet

# tie rules: dedupe keeps the smallest (`first`) or largest (`last`) of these per (user, item);
# sequences follow CHRONOLOGICAL_ORDER, so equal timestamps keep input (file) order
DEDUPE_ORDER = (S.TIMESTAMP, S.ROW)
CHRONOLOGICAL_ORDER = (S.USER_IDX, S.TIMESTAMP, S.ROW)
# dense ids follow the raw ids' sort order (numeric for int ids, byte order for strings)
VOCABULARIES = ((S.USER, S.USER_IDX, S.FIRST_USER_IDX), (S.ITEM, S.ITEM_IDX, S.FIRST_ITEM_IDX))
# the interaction columns a processed dataset keeps (rating only when the log has one)
OUTPUT_COLUMNS = (S.USER_IDX, S.ITEM_IDX, S.TIMESTAMP, S.RATING)

# text -> integer, the rule polars' non-strict cast applies after stripping whitespace
INTEGER_TEXT = r"^[+-]?[0-9]+$"
# text -> float, polars' non-strict cast: decimals, exponents, nan / inf / infinity in any case
FLOAT_TEXT = r"^[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|(?i:nan|inf|infinity))$"
