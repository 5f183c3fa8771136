"""recsys.serve."""
