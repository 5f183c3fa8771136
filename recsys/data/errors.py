"""The one error type of the data layer: input that cannot become a processed dataset."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data: missing or empty file, wrong delimiter, too many bad rows, nothing left after filters."""
