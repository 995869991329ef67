"""A CPU-sized GPT-2 and an offline word-level tokenizer, built from code (no download).

The tests, the recipes and the doctests need a real Hugging Face causal LM
(KV cache, ``position_ids``, ``.logits``) and a real tokenizer (``__call__``,
``batch_decode``, pad/EOS ids) small enough to train on two CPU cores:
:func:`tiny_gpt2` and :func:`word_tokenizer`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # transformers takes seconds to import: only the functions that build one load it
    from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

__all__ = ["tiny_gpt2", "word_tokenizer"]


def _vocab_size(vocab: int | Sequence[str] | Mapping[str, int]) -> int:
    if isinstance(vocab, bool) or not isinstance(vocab, (int, Sequence, Mapping)) or isinstance(vocab, str):
        raise TypeError(f"`vocab` must be a vocabulary size or a word list / word->id mapping, "
                        f"got {type(vocab).__name__}")
    size = vocab if isinstance(vocab, int) else len(vocab)
    if size < 2:
        raise ValueError(f"`vocab` must have at least 2 tokens, got {size}")
    return size


def tiny_gpt2(vocab: int | Sequence[str] | Mapping[str, int], *, seed: int = 0, n_layer: int = 2, n_embd: int = 64,
              n_head: int = 2, n_positions: int = 64, eos_id: int = 1, pad_id: int = 0) -> GPT2LMHeadModel:
    """A freshly initialised GPT-2 without dropout (forwards are deterministic in train mode too).

    Args:
        vocab: the vocabulary size, or the vocabulary itself (its length is used).
        seed: the initialisation; the global RNG is left as it was.
        n_layer / n_embd / n_head / n_positions: the architecture (``n_embd``
            divisible by ``n_head``; ``n_positions`` bounds prompt + completion).
        eos_id / pad_id: written to the config (EOS doubles as BOS, as in GPT-2);
            the defaults match vocabularies that start ``[PAD], [EOS], ...``.

    >>> model = tiny_gpt2(10, n_layer=1, n_embd=8)
    >>> model(torch.tensor([[2, 3, 4]])).logits.shape
    torch.Size([1, 3, 10])
    >>> torch.equal(tiny_gpt2(10, seed=3).transformer.wte.weight, tiny_gpt2(10, seed=3).transformer.wte.weight)
    True
    """
    size = _vocab_size(vocab)
    for name, value, low in (("n_layer", n_layer, 1), ("n_embd", n_embd, 1), ("n_head", n_head, 1),
                             ("n_positions", n_positions, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"`{name}` must be an int >= {low}, got {value!r}")
    if n_embd % n_head:
        raise ValueError(f"`n_embd` ({n_embd}) must be divisible by `n_head` ({n_head})")
    for name, value in (("eos_id", eos_id), ("pad_id", pad_id)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < size:
            raise ValueError(f"`{name}` must be a token id in [0, {size}), got {value!r}")
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, vocab_size=size, n_positions=n_positions,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=pad_id)
    # init draws from the global CPU RNG: seed it inside a fork so callers' streams are untouched
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        model = GPT2LMHeadModel(cfg)
    # transformers finds a model's loss by its class name, which "GPT2LMHeadModel" does not match: it then
    # warns on every first call with labels, and uses the causal-LM loss anyway. Name it, so it says nothing.
    model.loss_type = "ForCausalLM"
    return model


def word_tokenizer(vocab: Sequence[str] | Mapping[str, int], *, pad_token: str = "[PAD]",
                   eos_token: str = "[EOS]", unk_token: str = "[UNK]") -> PreTrainedTokenizerFast:
    """A Hugging Face fast tokenizer over a fixed word list: whitespace and punctuation split, no merges.

    Args:
        vocab: the words in id order, or a word -> id mapping; must contain the
            three special tokens.
        pad_token / eos_token / unk_token: the special tokens (unknown words map
            to ``unk_token``). No special token is added when encoding.

    >>> tok = word_tokenizer(["[PAD]", "[EOS]", "[UNK]", "hello", "world", "!"])
    >>> tok("hello world !")["input_ids"], tok("hello moon")["input_ids"]
    ([3, 4, 5], [3, 2])
    >>> tok.decode([3, 4, 1], skip_special_tokens=True), tok.pad_token_id, tok.eos_token_id
    ('hello world', 0, 1)
    """
    if isinstance(vocab, str) or not isinstance(vocab, (Sequence, Mapping)):
        raise TypeError(f"`vocab` must be a word list or a word->id mapping, got {type(vocab).__name__}")
    ids = dict(vocab) if isinstance(vocab, Mapping) else {w: i for i, w in enumerate(vocab)}
    if len(ids) != len(vocab):
        raise ValueError("`vocab` lists a word twice")
    if sorted(ids.values()) != list(range(len(ids))):
        raise ValueError("`vocab` ids must be 0, 1, ..., len(vocab) - 1")
    for name, token in (("pad_token", pad_token), ("eos_token", eos_token), ("unk_token", unk_token)):
        if token not in ids:
            raise ValueError(f"`{name}` {token!r} is not in `vocab`")
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(WordLevel(ids, unk_token=unk_token))
    tok.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=pad_token, eos_token=eos_token,
                                   unk_token=unk_token)
