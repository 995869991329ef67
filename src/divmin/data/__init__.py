"""Synthetic data with known ground truth (enumerable sequence spaces, ...)."""

from ._sequences import BigramLM, PrefixTreeLM, all_sequences

__all__ = ["BigramLM", "PrefixTreeLM", "all_sequences"]
