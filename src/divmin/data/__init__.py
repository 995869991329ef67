"""Synthetic data with known ground truth (enumerable sequence spaces, Markov languages, ...)."""

from ._markov import MarkovLanguage, check_token_ids
from ._sequences import BigramLM, PrefixTreeLM, all_sequences

__all__ = ["BigramLM", "MarkovLanguage", "PrefixTreeLM", "all_sequences", "check_token_ids"]
