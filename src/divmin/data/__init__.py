"""Synthetic data with known ground truth (enumerable sequence spaces, Markov languages, ...) and image data
with no download."""

from ._images import FASHION_MNIST_DIRS, fashion_mnist, find_fashion_mnist, load_digits_images, read_idx
from ._markov import MarkovLanguage, check_token_ids
from ._sequences import BigramLM, PrefixTreeLM, all_sequences

__all__ = ["BigramLM", "FASHION_MNIST_DIRS", "MarkovLanguage", "PrefixTreeLM", "all_sequences", "check_token_ids",
           "fashion_mnist", "find_fashion_mnist", "load_digits_images", "read_idx"]
