"""recsys: sequential recommendation from raw logs to an online top-k service."""

__version__ = "0.1.0"
