"""recsys.tracking."""
