"""A CPU-sized GPT-2, an offline word-level tokenizer and a synthetic corpus with a computable reward.

Everything here is built from code (no download). A prompt is ``"tell me about
<topic> :"`` (always 4 tokens); a response is ``<topic>`` followed by a few
words, each drawn from the GOOD, BAD or NEUTRAL pool, and then ``[EOS]``. The
true reward of a response is its number of GOOD words minus its number of BAD
words (:func:`true_reward`), so any sampled text can be scored exactly.

Also here: batched ancestral sampling (:func:`sample_responses`) and summed
response log-probabilities (:func:`response_logps`) for equal-length prompts.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from torch import Tensor
from torch.utils.data import DataLoader
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from ..align._logps import sequence_logps
from ..engine import EngineConfig, Int, Number, StepOutput, Trainer, Tuple

__all__ = ["BAD", "GOOD", "NEUTRAL", "TOPICS", "VOCAB", "build_model", "build_tokenizer", "check_corpus_config", "corpus",
           "prompt_text", "response_logps", "sample_responses", "true_reward", "warm_up"]

SPECIALS = ["[PAD]", "[EOS]", "[UNK]"]
PROMPT_WORDS = ["tell", "me", "about", ":"]
TOPICS = ["cats", "dogs", "birds", "fish", "trees", "rivers", "stars", "clouds", "hills", "roads"]
GOOD = ["great", "kind", "bright", "calm", "happy", "warm"]
BAD = ["awful", "rude", "dull", "grim", "sad", "cold"]
NEUTRAL = ["the", "a", "is", "are", "very", "quite", "really", "often", "it", "they", "and", "some", "many",
           "small", "big", "old"]
VOCAB = {w: i for i, w in enumerate(SPECIALS + PROMPT_WORDS + TOPICS + GOOD + BAD + NEUTRAL)}
PAD_ID, EOS_ID = VOCAB["[PAD]"], VOCAB["[EOS]"]
_GOOD, _BAD = frozenset(GOOD), frozenset(BAD)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer over VOCAB (whitespace + punctuation split); adds no special tokens."""
    tok = Tokenizer(WordLevel(VOCAB, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", eos_token="[EOS]", unk_token="[UNK]")


def build_model(seed: int, n_layer: int = 2, n_embd: int = 64, n_head: int = 2, n_positions: int = 32
                ) -> GPT2LMHeadModel:
    """A freshly initialised GPT-2 over VOCAB, without dropout (deterministic forwards)."""
    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, vocab_size=len(VOCAB), n_positions=n_positions,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     bos_token_id=EOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    return GPT2LMHeadModel(cfg)


# checks of the corpus / warm-up fields shared by the tiny-LM recipes' configs (divmin.engine.validate)
CORPUS_CHECKS = dict(
    n_layer=Int(ge=1), n_embd=Int(ge=2), corpus_size=Int(ge=1), p_good=Number(ge=0, le=1), p_bad=Number(ge=0, le=1),
    response_words=Tuple((Int(ge=1), Int(ge=1))), heldout_topics=Int(ge=1, le=len(TOPICS) - 1), sft_steps=Int(ge=1),
    sft_lr=Number(gt=0), sft_batch=Int(ge=1),
)


def check_corpus_config(config) -> None:
    """The cross-field rules of the corpus fields (each field is checked by CORPUS_CHECKS)."""
    if config.p_good + config.p_bad > 1:
        raise ValueError("`p_good` + `p_bad` must be <= 1")
    lo, hi = config.response_words
    if lo > hi or hi + 2 > config.max_new_tokens:
        raise ValueError("`response_words` must be (min, max) with min <= max <= `max_new_tokens` - 2")
    if config.n_embd % 2:
        raise ValueError("`n_embd` must be even (2 attention heads)")


def prompt_text(topic: str) -> str:
    return f"tell me about {topic} :"


def corpus(n: int, seed: int, p_good: float, p_bad: float, words: tuple[int, int]) -> list[tuple[str, str]]:
    """``n`` (prompt, response) texts; a response is the topic then ``words`` (min, max) pool words."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        topic = rng.choice(TOPICS)
        body = []
        for _ in range(rng.randint(*words)):
            u = rng.random()
            pool = GOOD if u < p_good else BAD if u < p_good + p_bad else NEUTRAL
            body.append(rng.choice(pool))
        out.append((prompt_text(topic), " ".join([topic, *body])))
    return out


def true_reward(words: list[str]) -> float:
    """Number of GOOD words minus number of BAD words."""
    return float(sum(w in _GOOD for w in words) - sum(w in _BAD for w in words))


def _stack_prompts(prompts: list[list[int]], n: int) -> Tensor:
    if len({len(p) for p in prompts}) != 1:
        raise ValueError("sample_responses / response_logps need prompts of equal token length")
    return torch.tensor(prompts, dtype=torch.long).repeat_interleave(n, dim=0)


@torch.no_grad()
def sample_responses(model: torch.nn.Module, prompts: list[list[int]], n: int, max_new_tokens: int,
                     generator: torch.Generator) -> list[list[int]]:
    """``n`` ancestral samples (temperature 1) per prompt, prompt-major; each ends with EOS unless cut.

    ``generator`` is a CPU generator; the model may live on any device.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    ids = _stack_prompts(prompts, n)
    done = torch.zeros(ids.shape[0], dtype=torch.bool)
    out: list[list[int]] = [[] for _ in range(ids.shape[0])]
    for _ in range(max_new_tokens):
        logits = model(input_ids=ids.to(device), attention_mask=torch.ones_like(ids).to(device)).logits[:, -1]
        logits = logits.float().cpu()
        nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(1)
        nxt = torch.where(done, torch.full_like(nxt, PAD_ID), nxt)
        for k in (~done).nonzero().flatten().tolist():
            out[k].append(int(nxt[k]))
        done |= nxt == EOS_ID
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        if bool(done.all()):
            break
    model.train(was_training)
    return out


@torch.no_grad()
def response_logps(model: torch.nn.Module, prompts: list[list[int]], responses: list[list[int]],
                   batch_size: int = 256) -> Tensor:
    """(len(responses),) summed log-probs of each response token sequence (as sampled, EOS included).

    ``responses`` are prompt-major with ``len(responses) // len(prompts)`` per prompt.
    """
    device = next(model.parameters()).device
    n = len(responses) // len(prompts)
    pids = _stack_prompts(prompts, n)
    out = []
    for s in range(0, len(responses), batch_size):
        chunk, p = responses[s:s + batch_size], pids[s:s + batch_size]
        length = p.shape[1] + max(len(r) for r in chunk)
        ids = torch.full((len(chunk), length), PAD_ID, dtype=torch.long)
        mask, att = torch.zeros_like(ids), torch.zeros_like(ids)
        ids[:, :p.shape[1]] = p
        for k, r in enumerate(chunk):
            end = p.shape[1] + len(r)
            ids[k, p.shape[1]:end] = torch.tensor(r, dtype=torch.long)
            mask[k, p.shape[1]:end], att[k, :end] = 1, 1
        ids, mask, att = ids.to(device), mask.to(device), att.to(device)
        logits = model(input_ids=ids, attention_mask=att).logits
        out.append(sequence_logps(logits.float(), ids, mask).cpu())
    return torch.cat(out)


# ------------------------------------------------------------------ warm-up
def _collate_sft(rows: list[tuple[list[int], list[int]]]) -> dict[str, Tensor]:
    """(prompt ids, response ids + EOS) rows -> right-padded batch; loss on response tokens only."""
    length = max(len(p) + len(r) for p, r in rows)
    ids = torch.full((len(rows), length), PAD_ID, dtype=torch.long)
    labels = torch.full_like(ids, -100)
    att = torch.zeros_like(ids)
    for k, (p, r) in enumerate(rows):
        ids[k, :len(p) + len(r)] = torch.tensor(p + r)
        labels[k, len(p):len(p) + len(r)] = torch.tensor(r)
        att[k, :len(p) + len(r)] = 1
    return {"input_ids": ids, "attention_mask": att, "labels": labels}


class _WarmUpTask:
    """Engine task: next-token prediction of the corpus responses given their prompts."""

    def __init__(self, rows: list[tuple[list[int], list[int]]], model_kwargs: dict, lr: float, batch: int) -> None:
        self.rows, self.model_kwargs, self.lr, self.batch = rows, model_kwargs, lr, batch

    def models(self) -> dict[str, torch.nn.Module]:
        return {"lm": build_model(**self.model_kwargs)}

    def optimizers(self, models: dict[str, torch.nn.Module]) -> dict[str, torch.optim.Optimizer]:
        return {"lm": torch.optim.AdamW(models["lm"].parameters(), lr=self.lr)}

    def batches(self, ctx) -> DataLoader:
        return DataLoader(self.rows, batch_size=self.batch, shuffle=True, collate_fn=_collate_sft)

    def train_step(self, batch: dict[str, Tensor], ctx) -> StepOutput:
        return StepOutput(loss=ctx.models["lm"](**batch).loss)


def warm_up(tokenizer, out_dir: Path, engine: EngineConfig, *, seed: int, n_layer: int, n_embd: int,
            corpus_size: int, p_good: float, p_bad: float, response_words: tuple[int, int], steps: int, lr: float,
            batch: int, resume: bool = False) -> tuple[torch.nn.Module, float]:
    """A tiny GPT-2 trained (through the engine) on :func:`corpus`, frozen; and its final loss."""
    enc = lambda text: list(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    rows = [(enc(p), enc(r) + [EOS_ID]) for p, r in corpus(corpus_size, seed, p_good, p_bad, response_words)]
    task = _WarmUpTask(rows, dict(seed=seed, n_layer=n_layer, n_embd=n_embd), lr, batch)
    engine = dataclasses.replace(engine, max_steps=steps, out_dir=str(out_dir), lr_schedule="cosine",
                                 warmup_steps=0, eval_every=None)
    trainer = Trainer(task, engine)
    result = trainer.fit(resume=resume)
    model = trainer.models["lm"].cpu().requires_grad_(False)
    return model.eval(), float(result.metrics["loss"])
