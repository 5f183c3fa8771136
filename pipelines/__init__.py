"""Thin command-line entry points: config -> recsys calls."""
