"""A tiny GPT-2, an offline word-level tokenizer and synthetic preference data with a known answer."""

from __future__ import annotations

import random

from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

from divmin.lm import tiny_gpt2, word_tokenizer

SPECIALS = ["[PAD]", "[EOS]", "[UNK]"]
TOPICS = ["cats", "dogs", "birds", "fish", "trees", "rivers", "stars", "clouds"]
FILLER = ["the", "a", "is", "are", "very", "quite", "really", "often", "it", "they"]
WORDS = ["question", "about", "answer", "good", "bad", "user", "assistant", "system", ":", "?", ".", "<", ">"]
VOCAB = {w: i for i, w in enumerate(SPECIALS + WORDS + TOPICS + FILLER)}


def tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer over VOCAB (whitespace + punctuation split), no download."""
    return word_tokenizer(VOCAB)


CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")


def model(seed: int = 0) -> GPT2LMHeadModel:
    """A 2-layer, 32-wide GPT-2 over VOCAB without dropout."""
    return tiny_gpt2(VOCAB, seed=seed, n_layer=2, n_embd=32, n_head=2, n_positions=64,
                     eos_id=VOCAB["[EOS]"], pad_id=VOCAB["[PAD]"])


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
