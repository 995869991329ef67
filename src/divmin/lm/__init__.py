"""Language-model utilities shared by every method: one sampler, one batch layout, one sequence log-prob.

- Layout (:func:`assemble`, :class:`LMCollator`, :func:`tokenize_pairs`): rows are
  ``[left-padded prompt][right-padded completion]`` with ``position_ids`` and
  ``labels`` aligned to the logits (``labels[:, t]`` is the token ``logits[:, t]``
  predicts, :data:`IGNORE` = -100 elsewhere); :func:`compact` cuts its padding
  columns once completions are final, :func:`counted_logits` applies a model's head
  to the labelled positions only.
- Log-probabilities (:func:`sequence_logps`, :func:`completion_logps`): summed over
  labelled tokens, without a (B, T, V) log-softmax.
- Sampling (:func:`sample_completions`, :func:`sample_n`, :class:`Completions`):
  ancestral, KV-cached, temperature, stop at EOS, from an explicit ``torch.Generator``.
- Tiny models (:func:`tiny_gpt2`, :func:`word_tokenizer`): a CPU-sized GPT-2 and an
  offline word-level tokenizer for tests, recipes and examples.
- Hugging Face models (:func:`load_causal_lm`, :func:`load_tokenizer`, :func:`apply_lora`,
  :class:`LMSource`, :class:`CausalLMMethod`): by name or local path, LoRA via peft, the tiny
  offline defaults (:func:`tiny_lm`, :func:`tiny_tokenizer`) of ``divmin train``.
- Judge (:class:`ARJudge`, :func:`tiny_judge`, :class:`JudgeTrainer`): a causal LM that scores whole
  token blocks, trained on the engine, for the generative perplexity of diffusion LMs' samples.

``lm`` depends on torch, transformers, tokenizers and the engine; the methods
(``divmin.align``, ``divmin.distill``) build on it.
"""

from ._judge import ARJudge, JudgeConfig, JudgeTrainer, draw_token_batch, tiny_judge
from ._heads import counted_logits
from ._hf import (
    SOURCE_CHECKS,
    TINY_VOCAB,
    CausalLMMethod,
    LMSource,
    LoraSettings,
    ModelLoadError,
    apply_lora,
    causal_lm_of,
    load_causal_lm,
    load_tokenizer,
    tiny_lm,
    tiny_tokenizer,
    tokenizer_of,
)
from ._layout import IGNORE, LMCollator, assemble, compact, tokenize_pairs
from ._logps import completion_logps, sequence_logps
from ._sampling import Completions, sample_completions, sample_n
from ._tiny import tiny_gpt2, word_tokenizer

# the API page (members_order: __all__) lists the entry points first, internals last
__all__ = [
    "sequence_logps",
    "sample_completions",
    "completion_logps",
    "tiny_gpt2",
    "word_tokenizer",
    "LMCollator",
    "ARJudge",
    "IGNORE",
    "JudgeConfig",
    "JudgeTrainer",
    "Completions",
    "assemble",
    "sample_n",
    "tiny_judge",
    "draw_token_batch",
    "tokenize_pairs",
    "compact",
    "counted_logits",
    "load_causal_lm",
    "load_tokenizer",
    "apply_lora",
    "tiny_lm",
    "tiny_tokenizer",
    "tokenizer_of",
    "causal_lm_of",
    "LMSource",
    "LoraSettings",
    "CausalLMMethod",
    "ModelLoadError",
    "SOURCE_CHECKS",
    "TINY_VOCAB",
]
