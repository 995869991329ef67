"""Synthetic data with known ground truth (enumerable sequence spaces, Markov languages, ...) and image data
with no download, and real text as fixed-length token blocks (:func:`text_blocks`); training rows from your files in TRL's
formats (:func:`load_rows`, :func:`kd_examples`, :func:`prompts_of`, :func:`pack_texts`)."""

from ._image_source import IMAGE_SETS, ImageSet, ImageSource
from ._images import FASHION_MNIST_DIRS, fashion_mnist, find_fashion_mnist, load_digits_images, read_idx
from ._markov import MarkovLanguage, check_token_ids, check_token_source
from ._sequences import BigramLM, PrefixTreeLM, all_sequences
from ._rows import check_columns, kd_examples, load_rows, pack_texts, prompts_of, render_messages, rows_of, tiny_kd_rows, tiny_preference_rows
from ._text import SEPARATORS, TEXT_SPLITS, TextBlocks, pack_blocks, read_documents, text_blocks, word_vocab

# the API page (members_order: __all__) lists the entry points first, internals last
__all__ = ["MarkovLanguage", "BigramLM", "PrefixTreeLM", "all_sequences", "text_blocks", "load_digits_images",
           "fashion_mnist", "FASHION_MNIST_DIRS", "SEPARATORS", "TEXT_SPLITS", "TextBlocks",
           "check_token_ids", "check_token_source", "find_fashion_mnist", "pack_blocks", "read_documents",
           "read_idx", "word_vocab", "load_rows", "check_columns", "kd_examples", "pack_texts", "prompts_of",
           "render_messages", "rows_of", "tiny_kd_rows", "tiny_preference_rows", "ImageSource", "IMAGE_SETS", "ImageSet"]
