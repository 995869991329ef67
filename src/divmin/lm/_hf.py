"""Hugging Face causal LMs for training: by name or local path, LoRA, tiny defaults, and where they come from.

:class:`LMSource` holds the fields every LM method of ``divmin train`` shares (model, tokenizer,
data, LoRA...); :class:`CausalLMMethod` is the train method base that exports such a model with
``save_pretrained`` and its tokenizer.

With no model named, a method runs on the *tiny defaults*: GPT-2s of a few thousand parameters
over a 40-word vocabulary, built from code (:func:`divmin.lm.tiny_gpt2`,
:func:`divmin.lm.word_tokenizer`), so ``divmin train kd --out runs/kd`` works on a fresh machine
with no download. They show the pipeline end to end; they are not useful models.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import socket
import threading
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..engine import Bool, Instance, Int, Models, Number, OneOf, Text, TrainMethod, Tuple, validate
from ..engine import export_hf, quiet_transformers
from ._tiny import tiny_gpt2, word_tokenizer

__all__ = ["CausalLMMethod", "LMSource", "LoraSettings", "ModelLoadError", "SOURCE_CHECKS", "TINY_VOCAB",
           "apply_lora", "causal_lm_of", "load_causal_lm", "load_tokenizer", "tiny_lm", "tiny_tokenizer",
           "tokenizer_of"]

_SPECIALS = ["[PAD]", "[EOS]", "[UNK]"]
_NUMBERS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
_WORDS = ["count", "from", "to", "after", "before", "comes", "what", "is", ":", "user", "assistant", "good", "bad",
          "yes", "no", "the", "answer", "please", "thanks", "a", "number", "word", "list", "next", "and", "then",
          "stop"]
TINY_VOCAB = {w: i for i, w in enumerate(_SPECIALS + _NUMBERS + _WORDS)}

# the tiny defaults' sizes: a teacher twice as wide as the student (KD), the student the policy of the rest
_TINY_SIZES = {"student": dict(n_layer=1, n_embd=32), "teacher": dict(n_layer=2, n_embd=64)}
_DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclasses.dataclass
class LoraSettings:
    """LoRA adapters (peft ``LoraConfig``); ``r: 0`` trains every weight instead."""

    r: int = 0  # adapter rank; 0 = no LoRA (full fine-tuning)
    alpha: float = 16.0  # LoRA scaling numerator (lora_alpha); the update is scaled by alpha / r
    dropout: float = 0.0  # dropout on the adapter input (lora_dropout)
    target_modules: tuple[str, ...] | None = None  # module names to adapt, e.g. [q_proj, v_proj]; null = peft's default for the architecture

    CHECKS = dict(r=Int(ge=0), alpha=Number(gt=0), dropout=Number(ge=0, lt=1),
                  target_modules=Tuple(each=Text(), min_len=1, optional=True))

    def __post_init__(self) -> None:
        validate(self)


DTYPES = ("float32", "bfloat16", "float16", "auto")  # `torch_dtype` of named models
_PATH = Instance((str, Path), optional=True)  # a Hugging Face name or a local path
# the checks of LMSource's fields, for train configs that declare some of them themselves (mdlm: tokenizer, data)
SOURCE_CHECKS = dict(
    model=_PATH, tokenizer=_PATH, data=_PATH, eval_data=_PATH, lora=Instance(LoraSettings), merge_lora=Bool(),
    torch_dtype=OneOf(DTYPES), trust_remote_code=Bool(),
)


@dataclasses.dataclass
class LMSource:
    """Where a causal-LM method's model, tokenizer and data come from (the base of the LM train configs,
    which nest the method's own config beside these fields)."""

    model: str | Path | None = None  # the trained model: Hugging Face name or local path; null = the tiny offline default
    tokenizer: str | Path | None = None  # tokenizer name or path; null = the model's (the tiny default's without a model)
    data: str | Path | None = None  # training data: a .jsonl / .csv file or a `datasets` save_to_disk directory; null = the tiny default data
    eval_data: str | Path | None = None  # held-out data in the same format; null = no evaluation
    lora: LoraSettings = dataclasses.field(default_factory=LoraSettings)  # LoRA adapters (peft); r: 0 = full fine-tuning
    merge_lora: bool = False  # at export, merge the LoRA adapters into the base (else final/ holds the adapter alone)
    torch_dtype: str = "float32"  # dtype named models are loaded in: float32, bfloat16, float16 or auto
    trust_remote_code: bool = False  # passed to from_pretrained (models with their own code on the Hub)

    CHECKS = SOURCE_CHECKS

    def __post_init__(self) -> None:
        validate(self)


class CausalLMMethod(TrainMethod):
    """A train method whose model is a Hugging Face causal LM (its config an :class:`LMSource`): built by
    :meth:`trained_lm`, exported with ``save_pretrained`` + tokenizer."""

    def trained_lm(self, config: LMSource, seed: int) -> tuple[nn.Module, Any]:
        """(the trained model: ``config.model`` or the tiny default student built with ``seed``, with the
        LoRA adapters of ``config.lora``; its tokenizer)."""
        tokenizer = tokenizer_of(config)
        return apply_lora(causal_lm_of(config, "model", "student", seed), config.lora), tokenizer

    def export(self, model: nn.Module, models: Models, config: Any, run_dir: Path) -> list[Path]:
        return export_hf(model, models.tokenizer, run_dir, merge_lora=config.merge_lora)


class ModelLoadError(ValueError):
    """A model or tokenizer that could not be loaded (one line for the command line, no traceback)."""


def tiny_tokenizer() -> Any:
    """The word-level tokenizer of the tiny defaults (no chat template: messages are joined as text)."""
    return word_tokenizer(TINY_VOCAB)


def tiny_lm(role: str = "student", seed: int = 0) -> nn.Module:
    """A tiny GPT-2 over :data:`TINY_VOCAB` (``role``: "student" or the larger "teacher")."""
    return tiny_gpt2(TINY_VOCAB, seed=seed, n_positions=128, eos_id=TINY_VOCAB["[EOS]"],
                     pad_id=TINY_VOCAB["[PAD]"], **_TINY_SIZES[role])


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hub's endpoint opens within ``timeout`` seconds (asked once).

    Without it, huggingface_hub retries an unreachable Hub for about a minute (a dozen log lines)
    before it looks in its cache; divmin then asks the cache alone (``local_files_only``).
    The probe runs in a thread because name resolution has no timeout of its own.
    """
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    ok: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((url.hostname, port), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(ok)


def _hub_kwargs(name: str) -> dict:
    """``local_files_only=True`` for a Hub name when the Hub cannot be reached (the cache answers at once)."""
    if os.path.isdir(name) or _offline() or hub_reachable():
        return {}
    return {"local_files_only": True}


def _fail(key: str, name: str, err: Exception, local_only: bool = False) -> ModelLoadError:
    if _offline() and not os.path.isdir(name):
        why = "not a local directory and not in the Hugging Face cache (HF_HUB_OFFLINE is set; download it first)"
    elif local_only:
        why = "not a local directory and not in the Hugging Face cache, and the Hub cannot be reached from here"
    elif not os.path.isdir(name) and ("/" in name and name.startswith((".", "/", "~"))):
        why = "no such directory"
    else:
        why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ModelLoadError(f"{key} {name!r} could not be loaded: {why}")


def _dtype_keyword() -> str:
    """``from_pretrained``'s dtype argument: ``dtype`` since transformers 4.56, which warns on every load given
    the older ``torch_dtype``; ``torch_dtype`` before (4.45 <= transformers < 4.56, which ignore ``dtype``)."""
    import transformers
    from packaging.version import Version

    return "dtype" if Version(transformers.__version__).release >= (4, 56) else "torch_dtype"


def load_causal_lm(name: str | os.PathLike, *, key: str = "model", torch_dtype: str = "float32",
                   trust_remote_code: bool = False) -> nn.Module:
    """``AutoModelForCausalLM.from_pretrained(name)``; a failure is one :class:`ModelLoadError` line."""
    from transformers import AutoModelForCausalLM

    name = str(name)
    if torch_dtype not in _DTYPES:
        raise ValueError(f"`torch_dtype` must be one of {', '.join(map(repr, _DTYPES))}, got {torch_dtype!r}")
    hub = _hub_kwargs(name)
    try:
        with quiet_transformers():
            return AutoModelForCausalLM.from_pretrained(name, **{_dtype_keyword(): _DTYPES[torch_dtype]},
                                                        trust_remote_code=trust_remote_code, **hub)
    except (OSError, ValueError, EnvironmentError) as err:
        raise _fail(key, name, err, local_only=bool(hub)) from None


def load_tokenizer(name: str | os.PathLike, *, key: str = "tokenizer", trust_remote_code: bool = False) -> Any:
    """``AutoTokenizer.from_pretrained(name)`` with a pad token (EOS when it has none)."""
    from transformers import AutoTokenizer

    name = str(name)
    hub = _hub_kwargs(name)
    try:
        tok = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code, **hub)
    except (OSError, ValueError) as err:
        raise _fail(key, name, err, local_only=bool(hub)) from None
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token  # batches need a pad id; EOS is the usual stand-in (as TRL does)
    return tok


def apply_lora(model: nn.Module, lora: LoraSettings) -> nn.Module:
    """``model`` with peft LoRA adapters (only they train), or ``model`` itself when ``lora.r == 0``."""
    if lora.r == 0:
        return model
    from peft import LoraConfig, get_peft_model

    targets = list(lora.target_modules) if lora.target_modules is not None else None
    gpt2 = getattr(getattr(model, "config", None), "model_type", None) == "gpt2"
    if targets is None and gpt2:
        targets = ["c_attn"]  # peft knows gpt2 too, but say it: the tiny defaults are GPT-2s
    # GPT-2's projections are Conv1D, whose weight is (in, out): peft must be told
    cfg = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets,
                     task_type="CAUSAL_LM", fan_in_fan_out=gpt2)
    try:
        with warnings.catch_warnings():
            # peft asks transformers (5.x) a deprecated question while wrapping: not the user's to fix
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            return get_peft_model(model, cfg)
    except ValueError as err:
        raise ValueError(f"`lora`: {str(err).splitlines()[0]}") from None


def causal_lm_of(config: LMSource, key: str, role: str, seed: int) -> nn.Module:
    """The causal LM named by ``config.<key>`` (``model``, ``teacher``...), or the tiny default of ``role``
    built with ``seed`` when it is null."""
    name = getattr(config, key)
    if name is None:
        return tiny_lm(role, seed=seed)
    return load_causal_lm(name, key=key, torch_dtype=config.torch_dtype, trust_remote_code=config.trust_remote_code)


def tokenizer_of(config: LMSource) -> Any:
    """``config.tokenizer``, else the tokenizer of ``config.model``, else the tiny default's."""
    name = config.tokenizer or config.model
    if name is None:
        return tiny_tokenizer()
    return load_tokenizer(name, key="tokenizer" if config.tokenizer else "model",
                          trust_remote_code=config.trust_remote_code)
