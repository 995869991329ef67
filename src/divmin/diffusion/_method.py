"""``divmin train fdistill`` (a one-step generator distilled from a Gaussian-mixture diffusion teacher)
and ``divmin train mdlm`` (a masked diffusion LM trained on your text).

Each train config holds what the method is trained on (the teacher mixture and the networks; the
tokenizer, the text and the network) and, nested under the method's name, the trainer's own config:
``--set fdistill.divergence=js --set mdlm.engine.max_steps=10``.

fdistill's teacher is the exact mixture of ``means`` / ``mode_std``; its EMA generator is exported
as ``model.safetensors`` + ``config.json`` (:func:`divmin.engine.load_exported` rebuilds it); other
teachers: the Python API (:class:`FDistillTrainer`). mdlm's data is TRL's language-modeling format, a
``text`` column: every text is tokenized (no special tokens) and followed by EOS, and the stream is
cut into blocks of ``length`` tokens (:func:`divmin.data.pack_texts`), as GPT-style pre-training
packs its data; the network is a :class:`MDLMTransformer` over the tokenizer's vocabulary
(``len(tokenizer)``; the mask token is one more id), exported with the tokenizer.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import check_columns, load_rows, pack_texts, tiny_kd_rows
from ..engine import Bool, EngineConfig, Instance, Int, Models, Number, TrainMethod, Tuple, validate
from ..engine import export_module, exportable_module, train_method
from ..lm import SOURCE_CHECKS, load_tokenizer, tiny_tokenizer
from ._config import FDistillConfig
from ._fdistill import FDistillTrainer
from ._mdlm import MaskedDiffusionLM
from ._mdlm_nets import MDLMTransformer
from ._mdlm_trainer import MDLMConfig, MDLMTrainer
from ._nets import EDMDenoiser, MLPBackbone, MLPGenerator
from ._teacher import GaussianMixtureTeacher

__all__ = ["FDistillTrainConfig", "MDLMTrainConfig"]


# ------------------------------------------------------------------ fdistill
def _square_means() -> tuple[tuple[float, ...], ...]:
    return ((-2.0, -2.0), (-2.0, 2.0), (2.0, -2.0), (2.0, 2.0))


def _fdistill_defaults() -> FDistillConfig:
    return FDistillConfig(engine=EngineConfig(max_steps=200, log_every=20))


@dataclasses.dataclass
class FDistillTrainConfig:
    """``divmin train fdistill``: the teacher mixture and the networks, and the :class:`FDistillConfig`
    under ``fdistill``."""

    means: tuple[tuple[float, ...], ...] = dataclasses.field(default_factory=_square_means)  # teacher mixture means, K points of dimension D
    mode_std: float = 0.3  # standard deviation of every teacher component
    hidden: int = 64  # width of the generator, fake-score and discriminator MLPs
    depth: int = 2  # residual blocks of the fake score (the generator has depth + 1 layers)
    init_scale: float = 3.0  # the generator starts as N(0, init_scale^2 I)
    fdistill: FDistillConfig = dataclasses.field(default_factory=_fdistill_defaults)  # f-distill itself (divergence, lr, engine: max_steps = generator updates...)

    CHECKS = dict(means=Tuple(each=Tuple(each=Number(), min_len=1), min_len=1), mode_std=Number(gt=0),
                  hidden=Int(ge=2), depth=Int(ge=1), init_scale=Number(gt=0), fdistill=Instance(FDistillConfig))

    def __post_init__(self) -> None:
        validate(self)
        if len({len(m) for m in self.means}) != 1:
            raise ValueError(f"`means` must all have the same dimension, got {self.means}")


@exportable_module("mlp_generator")
def _mlp_generator(dim: int, hidden: int, depth: int, init_scale: float) -> nn.Module:
    return MLPGenerator(dim, hidden, depth, init_scale=init_scale)


def _generator_args(config: FDistillTrainConfig) -> dict[str, Any]:
    return {"dim": len(config.means[0]), "hidden": config.hidden, "depth": config.depth + 1,
            "init_scale": config.init_scale}


@train_method("fdistill", FDistillTrainConfig, "one-step generator distilled from a diffusion teacher (f-distill)")
class FDistillMethod(TrainMethod):
    checkpoint_model = "generator_ema"  # the EMA generator: what FDistillTrainer.sample(ema=True) draws from
    trained_attr = "generator_ema"

    def models(self, config: FDistillTrainConfig, training: bool) -> Models:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.fdistill.engine.seed)
            gen = _mlp_generator(**_generator_args(config))
        teacher = GaussianMixtureTeacher(torch.tensor(config.means), config.mode_std)
        return Models(gen, None, {"teacher": teacher})

    def trainer(self, config: FDistillTrainConfig, models: Models) -> FDistillTrainer:
        teacher = models.others["teacher"]
        radius = float(teacher.means.norm(dim=1).max().clamp_min(1.0))
        dim = teacher.dim
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.fdistill.engine.seed + 1)
            fake = EDMDenoiser(MLPBackbone(dim, config.hidden, config.depth), sigma_data=radius)
            # the trainer builds its discriminator from the global RNG: seeded here, so a run is reproducible
            return FDistillTrainer(models.model, teacher, fake, config=config.fdistill, sample_shape=(dim,))

    def export(self, model: nn.Module, models: Models, config: Any, run_dir: Path) -> list[Path]:
        return export_module(model, "mlp_generator", _generator_args(config), run_dir)


# ---------------------------------------------------------------------- mdlm
def _mdlm_defaults() -> MDLMConfig:
    return MDLMConfig(engine=EngineConfig(max_steps=200, log_every=20))


@dataclasses.dataclass
class MDLMTrainConfig:
    """``divmin train mdlm``: the tokenizer, the data and the network, and the :class:`MDLMConfig` under ``mdlm``."""

    tokenizer: str | Path | None = None  # tokenizer name or path (its vocabulary is the model's); null = the tiny default's
    data: str | Path | None = None  # text data (a `text` column): .jsonl / .csv / `datasets` directory; null = tiny default texts
    length: int = 32  # tokens per training sequence (the packed block length; the longest the model takes)
    width: int = 128  # transformer width
    depth: int = 4  # transformer layers
    heads: int = 4  # attention heads (width divisible by heads)
    dropout: float = 0.0  # dropout inside the layers
    time_conditioning: bool = False  # add an embedding of t to every position (MDLM works without)
    trust_remote_code: bool = False  # passed to AutoTokenizer.from_pretrained
    mdlm: MDLMConfig = dataclasses.field(default_factory=_mdlm_defaults)  # MDLM training itself (lr, batch_size, engine: max_steps = denoiser updates...)

    CHECKS = dict(tokenizer=SOURCE_CHECKS["tokenizer"], data=SOURCE_CHECKS["data"], length=Int(ge=1), width=Int(ge=2),
                  depth=Int(ge=1), heads=Int(ge=1), dropout=Number(ge=0, lt=1), time_conditioning=Bool(),
                  trust_remote_code=Bool(), mdlm=Instance(MDLMConfig))

    def __post_init__(self) -> None:
        validate(self)
        if self.width % self.heads or self.width % 2:
            raise ValueError(f"`width` ({self.width}) must be even and divisible by `heads` ({self.heads})")


@exportable_module("mdlm")
def _mdlm(vocab_size: int, length: int, width: int, depth: int, heads: int, dropout: float,
          time_conditioning: bool) -> nn.Module:
    net = MDLMTransformer(vocab_size, length, width=width, depth=depth, heads=heads, dropout=dropout,
                          time_conditioning=time_conditioning)
    return MaskedDiffusionLM(net, vocab_size, length)


def _mdlm_args(config: MDLMTrainConfig, tokenizer: Any) -> dict[str, Any]:
    return {"vocab_size": len(tokenizer), "length": config.length, "width": config.width, "depth": config.depth,
            "heads": config.heads, "dropout": config.dropout, "time_conditioning": config.time_conditioning}


def _tiny_texts() -> list[dict[str, str]]:
    return [{"text": f"{r['prompt']} {r['completion']}"} for r in tiny_kd_rows()]


@train_method("mdlm", MDLMTrainConfig, "a masked diffusion language model (MDLM) trained on text")
class MDLM(TrainMethod):
    checkpoint_model = "denoiser"

    def models(self, config: MDLMTrainConfig, training: bool) -> Models:
        if config.tokenizer is None:
            tokenizer = tiny_tokenizer()
        else:
            tokenizer = load_tokenizer(config.tokenizer, trust_remote_code=config.trust_remote_code)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.mdlm.engine.seed)
            model = _mdlm(**_mdlm_args(config, tokenizer))
        return Models(model, tokenizer)

    def trainer(self, config: MDLMTrainConfig, models: Models) -> MDLMTrainer:
        rows = _tiny_texts() if config.data is None else load_rows(config.data, key="data")
        check_columns(rows, (("text",),), key="data", method="mdlm")
        texts = [r["text"] for r in rows]
        if not all(isinstance(t, str) for t in texts):
            raise ValueError("`data`: every 'text' must be a string")
        data = pack_texts(texts, models.tokenizer, config.length)
        return MDLMTrainer(models.model, data, config=config.mdlm)

    def export(self, model: nn.Module, models: Models, config: Any, run_dir: Path) -> list[Path]:
        return export_module(model, "mdlm", _mdlm_args(config, models.tokenizer), run_dir, tokenizer=models.tokenizer)
