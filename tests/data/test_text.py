"""Text as token blocks: documents, packing, the train/validation split and the errors users meet."""

from __future__ import annotations

import random

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from divmin.data import TEXT_SPLITS, pack_blocks, read_documents, text_blocks, word_vocab
from divmin.lm import word_tokenizer

DOCS = [f"doc{i} has words {' '.join(['w' + str(j % 7) for j in range(i, i + 3 + i % 4)])} ." for i in range(20)]


def _bpe(texts: list[str], **special: str) -> PreTrainedTokenizerFast:
    """A byte-pair tokenizer trained here on ``texts`` (the `tokenizers` library, no download)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=80, special_tokens=["<unk>", *special.values()]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", **special)


def _stream(tok, docs: list[str]) -> list[int]:
    return [t for d in docs for t in (*tok(d, add_special_tokens=False)["input_ids"], tok.eos_token_id)]


def test_blocks_are_the_separated_token_stream_cut_in_order():
    tok = word_tokenizer(word_vocab(DOCS))
    blocks = text_blocks(DOCS, tok, block_length=5, valid_fraction=0.0, seed=0)
    docs = list(DOCS)
    random.Random(0).shuffle(docs)  # the documented document shuffle
    stream = _stream(tok, docs)
    n = len(stream) // 5
    assert blocks.train.dtype == torch.long and blocks.train.shape == (n, 5)
    assert blocks.train.flatten().tolist() == stream[:5 * n]
    assert blocks.valid.shape == (0, 5) and blocks.block_length == 5 and blocks.vocab_size == len(tok)
    text = " ".join(blocks.decode(blocks.train))
    assert [" ".join(d.split()) for d in text.split("[EOS]")][:-1] == docs[:text.count("[EOS]")]


def test_split_holds_out_whole_documents_and_packs_each_side_alone():
    tok = word_tokenizer(word_vocab(DOCS))
    blocks = text_blocks(DOCS, tok, block_length=4, valid_fraction=0.2, seed=3)
    train_docs = set(" ".join(blocks.decode(blocks.train)).replace("[EOS]", "\n").split("\n"))
    valid_docs = set(" ".join(blocks.decode(blocks.valid)).replace("[EOS]", "\n").split("\n"))
    clean = lambda s: {" ".join(d.split()) for d in s} & set(DOCS)  # noqa: E731  (complete documents only)
    assert clean(train_docs) and clean(valid_docs) and not clean(train_docs) & clean(valid_docs)
    assert 2 <= len(clean(valid_docs)) <= 4  # ceil(0.2 * 20) = 4 documents held out, some cut by the block edges
    again = text_blocks(DOCS, tok, block_length=4, valid_fraction=0.2, seed=3)
    assert torch.equal(again.train, blocks.train) and torch.equal(again.valid, blocks.valid)
    other = text_blocks(DOCS, tok, block_length=4, valid_fraction=0.2, seed=4)
    assert not torch.equal(other.valid, blocks.valid)


def test_a_text_file_and_a_trained_bpe_tokenizer(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(DOCS[:10]) + "\n", encoding="utf-8")
    tok = _bpe(DOCS, eos_token="</s>")
    blocks = text_blocks(path, tok, block_length=6, valid_fraction=0.0, split="paragraphs")
    assert blocks.vocab_size == len(tok) and int(blocks.train.max()) < len(tok)
    assert blocks.train.numel() == 6 * (len(_stream(tok, DOCS[:10])) // 6)
    assert blocks.separator_id == tok.eos_token_id
    # a sep token works as the separator too
    tok2 = _bpe(DOCS, sep_token="<sep>")
    assert text_blocks(path, tok2, block_length=6, separator="sep_token").separator_id == tok2.sep_token_id


def test_pack_blocks_drops_the_tail_and_works_without_separator():
    assert pack_blocks([[1, 2, 3], [4, 5]], 2).tolist() == [[1, 2], [3, 4]]
    assert pack_blocks([[1, 2, 3]], 2, separator_id=0).tolist() == [[1, 2], [3, 0]]
    assert pack_blocks([[1]], 3).shape == (0, 3)


def test_documents_per_split_rule():
    text = "a b\n  \nc\n\nd e\nf"
    assert read_documents([text], split="lines") == ["a b", "c", "d e", "f"]
    assert read_documents([text], split="paragraphs") == ["a b", "c", "d e f"]
    assert read_documents([text], split="whole") == [text]
    assert set(TEXT_SPLITS) == {"lines", "paragraphs", "whole"}


def test_word_vocab_counts_like_the_tokenizer_splits():
    vocab = word_vocab(["the cat, the dog.", "the end"], max_words=3)
    assert vocab == ["[PAD]", "[EOS]", "[UNK]", "the", ",", "."]
    tok = word_tokenizer(word_vocab(["the cat, the dog.", "the end"]))
    assert tok.unk_token_id not in tok("the cat, the dog.")["input_ids"]


def test_errors_name_the_problem_and_the_fix(tmp_path):
    tok = word_tokenizer(word_vocab(DOCS))
    with pytest.raises(FileNotFoundError, match="no text file"):
        text_blocks(tmp_path / "missing.txt", tok, block_length=4)
    (tmp_path / "empty.txt").write_text("  \n\n ")
    with pytest.raises(ValueError, match="holds no text"):
        text_blocks(tmp_path / "empty.txt", tok, block_length=4)
    with pytest.raises(ValueError, match="holds no text"):
        text_blocks([], tok, block_length=4)
    with pytest.raises(ValueError, match="`block_length` must be an int >= 2"):
        text_blocks(DOCS, tok, block_length=1)
    with pytest.raises(ValueError, match=r"has no eos_token.*add_special_tokens"):
        text_blocks(DOCS, _bpe(DOCS), block_length=4)
    assert text_blocks(DOCS, _bpe(DOCS), block_length=4, separator=None).separator_id is None
    with pytest.raises(ValueError, match="unknown `separator`.*valid: eos_token"):
        text_blocks(DOCS, tok, block_length=4, separator="eos")
    with pytest.raises(ValueError, match="`split`: unknown text split .*lines"):
        text_blocks(DOCS, tok, block_length=4, split="sentences")
    with pytest.raises(TypeError, match="`tokenizer` must be a Hugging Face tokenizer"):
        text_blocks(DOCS, lambda s: s, block_length=4)
    with pytest.raises(ValueError, match="shorter than one block"):
        text_blocks(DOCS[:3], tok, block_length=500, valid_fraction=0.0)
    with pytest.raises(ValueError, match="validation text .* shorter than one block"):
        text_blocks(DOCS, tok, block_length=40, valid_fraction=0.05)
    with pytest.raises(ValueError, match="holds out all"):
        text_blocks(["one document"], tok, block_length=2, valid_fraction=0.5, split="whole")
    with pytest.raises(ValueError, match="`valid_fraction`"):
        text_blocks(DOCS, tok, block_length=4, valid_fraction=1.0)
