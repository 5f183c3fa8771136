"""recsys.models."""
