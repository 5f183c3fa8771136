"""recsys.nn."""
