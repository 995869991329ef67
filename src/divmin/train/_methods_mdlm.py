"""``divmin train mdlm``: a masked diffusion language model (MDLM) trained on your text.

Data: TRL's language-modeling format, a ``text`` column. Every text is tokenized (no special
tokens), followed by the tokenizer's EOS, and the stream is cut into blocks of ``length``
tokens (the last, partial block is dropped), as GPT-style pre-training packs its data. The
network is a :class:`divmin.diffusion.MDLMTransformer` over the tokenizer's vocabulary
(``len(tokenizer)``; the mask token is one more id). Export: ``model.safetensors`` +
``config.json`` (:func:`divmin.train.load_exported` rebuilds the :class:`MaskedDiffusionLM`) and
the tokenizer, in ``RUN_DIR/final``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..diffusion import MaskedDiffusionLM, MDLMConfig, MDLMTrainer, MDLMTransformer
from ..engine import Bool, EngineConfig, Int, Number
from . import _models as M
from ._config import SOURCE_CHECKS
from ._data import check_columns, load_rows, tiny_kd_rows
from ..engine import export_module, exportable_module
from ._registry import Models, TrainMethod, train_method, trainer_config

__all__ = ["MDLMTrainConfig", "pack_texts"]


def _engine() -> EngineConfig:
    return EngineConfig(max_steps=200, log_every=20)


@dataclasses.dataclass
class MDLMTrainConfig(MDLMConfig):
    """``divmin train mdlm``: every :class:`MDLMConfig` key, plus the tokenizer, the data and the network."""

    tokenizer: str | Path | None = None  # tokenizer name or path (its vocabulary is the model's); null = the tiny default's
    data: str | Path | None = None  # text data (a `text` column): .jsonl / .csv / `datasets` directory; null = tiny default texts
    length: int = 32  # tokens per training sequence (the packed block length; the longest the model takes)
    width: int = 128  # transformer width
    depth: int = 4  # transformer layers
    heads: int = 4  # attention heads (width divisible by heads)
    dropout: float = 0.0  # dropout inside the layers
    time_conditioning: bool = False  # add an embedding of t to every position (MDLM works without)
    trust_remote_code: bool = False  # passed to AutoTokenizer.from_pretrained
    engine: EngineConfig = dataclasses.field(default_factory=_engine)  # max_steps = denoiser updates

    CHECKS = dict(MDLMConfig.CHECKS, tokenizer=SOURCE_CHECKS["tokenizer"], data=SOURCE_CHECKS["data"],
                  length=Int(ge=1), width=Int(ge=2), depth=Int(ge=1), heads=Int(ge=1), dropout=Number(ge=0, lt=1),
                  time_conditioning=Bool(), trust_remote_code=Bool())

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.width % self.heads or self.width % 2:
            raise ValueError(f"`width` ({self.width}) must be even and divisible by `heads` ({self.heads})")


def pack_texts(texts: list[str], tokenizer: Any, length: int) -> torch.Tensor:
    """(N, length) token ids: every text then EOS, concatenated and cut into full blocks."""
    eos = getattr(tokenizer, "eos_token_id", None)
    stream: list[int] = []
    for text in texts:
        stream += list(tokenizer(text, add_special_tokens=False)["input_ids"]) + ([eos] if eos is not None else [])
    n = len(stream) // length
    if n == 0:
        raise ValueError(f"`data` holds {len(stream)} tokens, fewer than one sequence of `length` {length}")
    return torch.tensor(stream[:n * length], dtype=torch.long).view(n, length)


@exportable_module("mdlm")
def _mdlm(vocab_size: int, length: int, width: int, depth: int, heads: int, dropout: float,
          time_conditioning: bool) -> nn.Module:
    net = MDLMTransformer(vocab_size, length, width=width, depth=depth, heads=heads, dropout=dropout,
                          time_conditioning=time_conditioning)
    return MaskedDiffusionLM(net, vocab_size, length)


def _args(config: MDLMTrainConfig, tokenizer: Any) -> dict[str, Any]:
    return {"vocab_size": len(tokenizer), "length": config.length, "width": config.width, "depth": config.depth,
            "heads": config.heads, "dropout": config.dropout, "time_conditioning": config.time_conditioning}


def _tiny_texts() -> list[dict[str, str]]:
    return [{"text": f"{r['prompt']} {r['completion']}"} for r in tiny_kd_rows()]


@train_method("mdlm", MDLMTrainConfig, "a masked diffusion language model (MDLM) trained on text")
class MDLM(TrainMethod):
    checkpoint_model = "denoiser"

    def models(self, config: MDLMTrainConfig, training: bool) -> Models:
        if config.tokenizer is None:
            tokenizer = M.tiny_tokenizer()
        else:
            tokenizer = M.load_tokenizer(config.tokenizer, trust_remote_code=config.trust_remote_code)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.engine.seed)
            model = _mdlm(**_args(config, tokenizer))
        return Models(model, tokenizer)

    def trainer(self, config: MDLMTrainConfig, models: Models) -> MDLMTrainer:
        rows = _tiny_texts() if config.data is None else load_rows(config.data, key="data")
        check_columns(rows, (("text",),), key="data", method="mdlm")
        texts = [r["text"] for r in rows]
        if not all(isinstance(t, str) for t in texts):
            raise ValueError("`data`: every 'text' must be a string")
        data = pack_texts(texts, models.tokenizer, config.length)
        return MDLMTrainer(models.model, data, config=trainer_config(config, MDLMConfig))

    def export(self, model: nn.Module, models: Models, config: Any, run_dir: Path) -> list[Path]:
        return export_module(model, "mdlm", _args(config, models.tokenizer), run_dir, tokenizer=models.tokenizer)
