"""Shared library for the paper replications: data, training loop, metrics and key tables."""
