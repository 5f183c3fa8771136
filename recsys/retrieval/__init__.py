"""recsys.retrieval."""
