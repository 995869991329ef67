"""The tiny GPT-2 builder and the offline word-level tokenizer."""

from __future__ import annotations

import pytest
import torch

from divmin.lm import tiny_gpt2, word_tokenizer

WORDS = ["[PAD]", "[EOS]", "[UNK]", "tell", "me", "about", "cats", ":"]


@pytest.mark.parametrize("vocab", [8, WORDS, {w: i for i, w in enumerate(WORDS)}])
def test_vocab_size_from_a_size_a_list_or_a_mapping(vocab):
    model = tiny_gpt2(vocab, n_layer=1, n_embd=8)
    assert model.config.vocab_size == 8 and model(torch.tensor([[3, 4]])).logits.shape == (1, 2, 8)
    assert (model.config.eos_token_id, model.config.pad_token_id, model.config.bos_token_id) == (1, 0, 1)


def test_seed_fixes_the_weights_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    a, b, c = tiny_gpt2(8, seed=4), tiny_gpt2(8, seed=4), tiny_gpt2(8, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_no_dropout_train_mode_forwards_are_deterministic():
    model = tiny_gpt2(8, seed=0, n_layer=2, n_embd=16).train()
    x = torch.tensor([[3, 4, 5, 6]])
    assert torch.equal(model(x).logits, model(x).logits)
    torch.testing.assert_close(model(x).logits, model.eval()(x).logits)


@pytest.mark.parametrize("kwargs, match", [(dict(vocab=1), "vocab"), (dict(vocab="abc"), "vocab"),
                                           (dict(n_layer=0), "n_layer"), (dict(n_embd=10, n_head=4), "n_head"),
                                           (dict(eos_id=8), "eos_id"), (dict(pad_id=-1), "pad_id"),
                                           (dict(seed=-1), "seed")])
def test_tiny_gpt2_bad_arguments(kwargs, match):
    kwargs = {"vocab": 8, **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        tiny_gpt2(kwargs.pop("vocab"), **kwargs)


def test_word_tokenizer_encodes_words_and_punctuation_without_specials():
    tok = word_tokenizer(WORDS)
    assert tok("tell me about cats :")["input_ids"] == [3, 4, 5, 6, 7]
    assert tok("tell me about dogs:")["input_ids"] == [3, 4, 5, 2, 7]  # unknown word, punctuation split off
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert tok.batch_decode([[3, 6, 1, 0]], skip_special_tokens=True) == ["tell cats"]
    assert tok("cats [EOS]")["input_ids"] == [6, 1]  # special tokens in text are recognised


@pytest.mark.parametrize("vocab, kwargs, error, match", [
    (["a", "b"], {}, ValueError, "pad_token"), (WORDS + ["tell"], {}, ValueError, "twice"),
    ({"[PAD]": 0, "[EOS]": 1, "[UNK]": 5}, {}, ValueError, "ids"), ("tell me", {}, TypeError, "vocab"),
    (WORDS, {"eos_token": "</s>"}, ValueError, "eos_token"),
])
def test_word_tokenizer_bad_vocabularies(vocab, kwargs, error, match):
    with pytest.raises(error, match=match):
        word_tokenizer(vocab, **kwargs)
