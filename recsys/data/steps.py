"""The ETL's steps and rules, written once: both engines (polars `polars_etl.py`, Spark `spark_etl.py`)
build their plans from these names, orders and checks, and `tests/data/test_spark_etl.py` checks that
they give identical outputs on the same input.

Steps, in order: read (the reader's own line-level reasons) -> validate (bad rows counted by the first
reason that applies) -> rating threshold -> dedupe policy -> iterative k-core until stable -> dense ids
(raw-id order; item 0 = padding) -> chronological order (ties keep input order) -> sequences.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

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
FUTURE_SLACK_S = 86_400  # a day of slack for clocks: anything later than that cannot have happened yet
# the flag column an engine sets before typing: user, item or timestamp null or blank in the raw log
MISSING_FLAG = "_missing"
# where a text column keeps its raw value once typed (the rejected-row sample shows what the file held)
RAW_PREFIX = "raw_"

CheckTest = Literal["flag", "null", "null_or_nan", "below", "above"]


class ValueCheck(NamedTuple):
    """One value check of `validate`: a row whose typed `column` passes `test` is rejected for `reason`.

    Tests: `flag` (the column is true), `null` (the cast gave null), `null_or_nan`, `below` / `above`
    (strictly less / greater than `bound`).
    """

    reason: str
    column: str
    test: CheckTest
    bound: int = 0  # of `below` and `above`


def value_checks(*, has_rating: bool, max_timestamp: int | None) -> tuple[ValueCheck, ...]:
    """The value checks of `validate` that apply to a log, in order: the first that matches is the reason.

    Args:
        has_rating: whether the log has a rating column (`bad_rating` checks it).
        max_timestamp: the latest plausible timestamp, epoch seconds (`future_timestamp`); None: no bound.
    """
    checks = [
        ValueCheck("missing_value", MISSING_FLAG, "flag"),  # user, item or timestamp null or blank
        # not an integer (id_type int; ASCII digits with an optional sign) or beyond int64
        ValueCheck("bad_user_id", S.USER, "null"),
        ValueCheck("bad_item_id", S.ITEM, "null"),
        ValueCheck("bad_timestamp", S.TIMESTAMP, "null"),  # not an integer (timestamp_type int)
        ValueCheck("negative_timestamp", S.TIMESTAMP, "below", 0),
    ]
    if max_timestamp is not None:  # later than the run's start + FUTURE_SLACK_S
        checks.append(ValueCheck("future_timestamp", S.TIMESTAMP, "above", max_timestamp))
    if has_rating:  # not a number, or NaN
        checks.append(ValueCheck("bad_rating", S.RATING, "null_or_nan"))
    return tuple(checks)


# every value reason, in first-match order
VALUE_REASONS = tuple(c.reason for c in value_checks(has_rating=True, max_timestamp=0))
REJECT_REASONS = READER_REASONS + VALUE_REASONS

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
