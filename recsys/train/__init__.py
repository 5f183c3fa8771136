"""recsys.train."""
