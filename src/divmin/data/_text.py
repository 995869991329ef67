"""Real text as fixed-length token blocks: any Hugging Face tokenizer, any text file.

:func:`text_blocks` turns a text file (or a list of documents) into the (N, L) id
tensors the masked diffusion LM (:class:`divmin.diffusion.MDLMTrainer`) and the
autoregressive judge (:class:`divmin.lm.JudgeTrainer`) train on:

1. split the text into documents (``split``: one per non-empty line, one per
   blank-line-separated paragraph, or the whole text);
2. shuffle the documents (``seed``) and hold out a fraction of them for validation,
   so no document is in both splits;
3. per split, tokenize every document (no special tokens added), append the
   separator id (the tokenizer's EOS by default), concatenate, and cut the stream
   into blocks of ``block_length`` ids; the last incomplete block is dropped.

The MDLM's mask is an extra id V = ``len(tokenizer)`` (:class:`divmin.diffusion.MaskedDiffusionLM`),
so the tokenizer needs no mask token; it needs the separator token unless ``separator=None``.
:func:`word_vocab` lists the words of a text for :func:`divmin.lm.word_tokenizer` (a tokenizer
fitted to the text, with no download).

>>> from divmin.lm import word_tokenizer
>>> docs = ["a b c", "b c", "c a b a", "a a"]
>>> tok = word_tokenizer(word_vocab(docs))
>>> blocks = text_blocks(docs, tok, block_length=3, valid_fraction=0.25)
>>> blocks.train.shape, blocks.valid.shape, blocks.vocab_size, blocks.separator_id
(torch.Size([3, 3]), torch.Size([1, 3]), 6, 1)
"""

from __future__ import annotations

import math
import os
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from ..registry import Registry

__all__ = ["SEPARATORS", "TEXT_SPLITS", "TextBlocks", "pack_blocks", "read_documents", "text_blocks", "word_vocab"]

# the special-token attributes a Hugging Face tokenizer may carry (PreTrainedTokenizerBase.SPECIAL_TOKENS_ATTRIBUTES)
SEPARATORS = ("eos_token", "sep_token", "bos_token", "cls_token", "pad_token", "unk_token", "mask_token")

TEXT_SPLITS: Registry[Callable[[str], list[str]]] = Registry("text split")  # name -> text -> documents
_splitter = TEXT_SPLITS.register


@_splitter("lines")
def _lines(text: str) -> list[str]:
    """One document per non-blank line."""
    return [line.strip() for line in text.splitlines() if line.strip()]


@_splitter("paragraphs")
def _paragraphs(text: str) -> list[str]:
    """One document per block of lines separated by blank lines (its lines joined by spaces)."""
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]


@_splitter("whole")
def _whole(text: str) -> list[str]:
    """The whole text as one document (validation then needs ``valid_fraction=0``)."""
    return [text.strip()] if text.strip() else []


@dataclass(frozen=True)
class TextBlocks:
    """What :func:`text_blocks` returns.

    train / valid: (N_train, L) / (N_valid, L) long token ids in [0, ``vocab_size``);
    ``valid`` has 0 rows when ``valid_fraction=0``. vocab_size: ``len(tokenizer)`` (the
    ids a model must embed; added tokens included). separator_id: the id appended after
    every document (None: no separator). tokenizer: the tokenizer used (to decode samples).
    """

    train: Tensor
    valid: Tensor
    vocab_size: int
    separator_id: int | None
    tokenizer: Any

    @property
    def block_length(self) -> int:
        return self.train.shape[1]

    def decode(self, blocks: Tensor, *, skip_special_tokens: bool = False) -> list[str]:
        """(N, L) ids -> N strings (the separator shows as its token unless ``skip_special_tokens``)."""
        return self.tokenizer.batch_decode(blocks.tolist(), skip_special_tokens=skip_special_tokens)


def read_documents(source: str | os.PathLike | Sequence[str], *, split: str = "lines") -> list[str]:
    """Documents of a UTF-8 text file (a path) or of a list of strings, split by ``split`` (a TEXT_SPLITS name).

    FileNotFoundError for a missing file, ValueError for an unknown ``split`` or a text with no
    non-blank document.

    >>> read_documents(["one line\\n\\n two ", "three"])
    ['one line', 'two', 'three']
    """
    try:
        splitter = TEXT_SPLITS.get(split)
    except ValueError as err:
        raise ValueError(f"`split`: {err}") from None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"`source`: no text file at {str(path)!r} (give a path to a UTF-8 text file, "
                                    f"or a list of strings)")
        texts, where = [path.read_text(encoding="utf-8")], repr(str(path))
    elif isinstance(source, Sequence) and all(isinstance(s, str) for s in source):
        texts, where = list(source), "the list of strings"
    else:
        raise TypeError(f"`source` must be a path to a text file or a list of strings, got {type(source).__name__}")
    docs = [d for text in texts for d in splitter(text)]
    if not docs:
        raise ValueError(f"`source`: {where} holds no text (empty or only whitespace)")
    return docs


def word_vocab(source: str | os.PathLike | Sequence[str], *, max_words: int | None = None,
               specials: Sequence[str] = ("[PAD]", "[EOS]", "[UNK]"), split: str = "lines") -> list[str]:
    """``specials`` then the words of ``source`` (most frequent first, ties alphabetical), for
    :func:`divmin.lm.word_tokenizer`; words are split as its pre-tokenizer does (``\\w+`` runs and
    punctuation runs). ``max_words``: keep this many words (the rest become the unknown token).

    >>> word_vocab(["b a b .", "c b"])
    ['[PAD]', '[EOS]', '[UNK]', 'b', '.', 'a', 'c']
    """
    if max_words is not None and (isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < 1):
        raise ValueError(f"`max_words` must be an int >= 1 or None, got {max_words!r}")
    counts = Counter(w for doc in read_documents(source, split=split) for w in re.findall(r"\w+|[^\w\s]+", doc))
    for s in specials:
        counts.pop(s, None)
    words = sorted(counts, key=lambda w: (-counts[w], w))
    return [*specials, *words[:max_words]]


def _separator_id(tokenizer: Any, separator: str | None) -> int | None:
    if separator is None:
        return None
    if separator not in SEPARATORS:
        raise ValueError(f"unknown `separator` {separator!r}; valid: {', '.join(SEPARATORS)} or None")
    token_id = getattr(tokenizer, f"{separator}_id", None)
    if token_id is None:
        raise ValueError(f"`tokenizer` has no {separator} to separate documents: add one, e.g. "
                         f"tokenizer.add_special_tokens({{'{separator}': '[EOS]'}}) (then build the models with "
                         f"vocab_size=len(tokenizer)), choose another `separator` ({', '.join(SEPARATORS)}), "
                         f"or pass separator=None")
    return int(token_id)


def pack_blocks(docs: Sequence[Sequence[int]], block_length: int, separator_id: int | None = None) -> Tensor:
    """Concatenate the token lists ``docs`` (each followed by ``separator_id`` when given) and cut the
    stream into an (N, ``block_length``) long tensor, dropping the incomplete last block.

    >>> pack_blocks([[5, 6, 7], [8]], 3, separator_id=1)
    tensor([[5, 6, 7],
            [1, 8, 1]])
    """
    if isinstance(block_length, bool) or not isinstance(block_length, int) or block_length < 2:
        raise ValueError(f"`block_length` must be an int >= 2 (a block needs a context and a next token), "
                         f"got {block_length!r}")
    tail = [] if separator_id is None else [separator_id]
    stream = [t for doc in docs for t in (*doc, *tail)]
    n = len(stream) // block_length
    return torch.tensor(stream[:n * block_length], dtype=torch.long).view(n, block_length)


def _encode(tokenizer: Any, docs: list[str]) -> list[list[int]]:
    return [list(ids) for ids in tokenizer(docs, add_special_tokens=False)["input_ids"]] if docs else []


def text_blocks(source: str | os.PathLike | Sequence[str], tokenizer: Any, *, block_length: int,
                valid_fraction: float = 0.1, separator: str | None = "eos_token", split: str = "lines",
                seed: int = 0) -> TextBlocks:
    """Tokenize ``source`` with ``tokenizer`` and pack it into train / validation blocks (module docstring).

    Args:
        source: a path to a UTF-8 text file, or a list of strings.
        tokenizer: a Hugging Face ``PreTrainedTokenizerBase`` (``AutoTokenizer.from_pretrained(...)``,
            :func:`divmin.lm.word_tokenizer`, ...).
        block_length: L >= 2, the ids per block (the models' sequence length).
        valid_fraction: the fraction of documents held out, in [0, 1) (rounded up to whole documents).
        separator: the special token appended after every document (an attribute name such as
            "eos_token" or "sep_token"), or None.
        split: how the text becomes documents (a :data:`TEXT_SPLITS` name: "lines", "paragraphs", "whole").
        seed: the document shuffle before the split.

    Raises FileNotFoundError (missing file), TypeError (not a tokenizer) and ValueError (empty text,
    block_length < 2, missing separator token, a split with no complete block), each naming the argument.
    """
    from transformers import PreTrainedTokenizerBase

    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise TypeError(f"`tokenizer` must be a Hugging Face tokenizer (PreTrainedTokenizerBase), "
                        f"got {type(tokenizer).__name__}")
    if isinstance(block_length, bool) or not isinstance(block_length, int) or block_length < 2:
        raise ValueError(f"`block_length` must be an int >= 2 (a block needs a context and a next token), "
                         f"got {block_length!r}")
    if isinstance(valid_fraction, bool) or not isinstance(valid_fraction, (int, float)) \
            or not 0 <= valid_fraction < 1:
        raise ValueError(f"`valid_fraction` must be a number in [0, 1), got {valid_fraction!r}")
    sep = _separator_id(tokenizer, separator)
    docs = read_documents(source, split=split)
    random.Random(seed).shuffle(docs)
    n_valid = math.ceil(valid_fraction * len(docs))
    if n_valid >= len(docs):
        raise ValueError(f"`valid_fraction`={valid_fraction} holds out all {len(docs)} document(s) "
                         f"(split={split!r}); lower it or give more documents")
    train, valid = (pack_blocks(_encode(tokenizer, part), block_length, sep)
                    for part in (docs[n_valid:], docs[:n_valid]))
    for name, blocks, count in (("training", train, len(docs) - n_valid), ("validation", valid, n_valid)):
        if blocks.shape[0] == 0 and (name == "training" or n_valid):
            raise ValueError(f"the {name} text ({count} document(s)) is shorter than one block of "
                             f"`block_length`={block_length} tokens: lower `block_length` or give more text")
    return TextBlocks(train, valid, len(tokenizer), sep, tokenizer)
