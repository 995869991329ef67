"""Synthetic data with known ground truth (enumerable sequence spaces, ...) and image data with no download."""

from ._images import FASHION_MNIST_DIRS, fashion_mnist, find_fashion_mnist, load_digits_images, read_idx
from ._sequences import BigramLM, PrefixTreeLM, all_sequences

__all__ = ["BigramLM", "FASHION_MNIST_DIRS", "PrefixTreeLM", "all_sequences", "fashion_mnist", "find_fashion_mnist",
           "load_digits_images", "read_idx"]
