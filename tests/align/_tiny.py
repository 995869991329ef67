"""A tiny GPT-2, an offline word-level tokenizer and synthetic preference data with a known answer."""

from __future__ import annotations

import random

import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

SPECIALS = ["[PAD]", "[EOS]", "[UNK]"]
TOPICS = ["cats", "dogs", "birds", "fish", "trees", "rivers", "stars", "clouds"]
FILLER = ["the", "a", "is", "are", "very", "quite", "really", "often", "it", "they"]
WORDS = ["question", "about", "answer", "good", "bad", "user", "assistant", "system", ":", "?", ".", "<", ">"]
VOCAB = {w: i for i, w in enumerate(SPECIALS + WORDS + TOPICS + FILLER)}


def tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer over VOCAB (whitespace + punctuation split), no download."""
    tok = Tokenizer(WordLevel(VOCAB, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", eos_token="[EOS]", unk_token="[UNK]")


CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")


def model(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=len(VOCAB), n_positions=64,
                     bos_token_id=VOCAB["[EOS]"], eos_token_id=VOCAB["[EOS]"], pad_token_id=VOCAB["[PAD]"])
    return GPT2LMHeadModel(cfg)


def preference_rows(n: int, seed: int = 0, conversational: bool = False) -> list[dict]:
    """Pairs whose true preference is known: chosen says "good", rejected says "bad", rest identical."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        topic = rng.choice(TOPICS)
        tail = " ".join(rng.choice(FILLER) for _ in range(rng.randint(1, 3)))
        prompt = f"question about {topic} ?"
        chosen, rejected = f"answer {topic} {tail} good .", f"answer {topic} {tail} bad ."
        if conversational:
            rows.append({"prompt": [{"role": "user", "content": prompt}],
                         "chosen": [{"role": "assistant", "content": chosen}],
                         "rejected": [{"role": "assistant", "content": rejected}]})
        else:
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows
