"""``divmin train fdpg`` (a causal LM toward an energy-based target) and ``divmin train fdistill``
(a one-step generator distilled from a Gaussian-mixture diffusion teacher).

fdpg's target is GDC's pointwise constraint: P(y | x) proportional to a(y | x) (b(y) + epsilon),
with a the initial model and b(y) = 1 when the completion contains one of ``target_words``.
fdistill's teacher is the exact mixture of ``means`` / ``mode_std``; its generator is exported as
``model.safetensors`` + ``config.json`` (:func:`divmin.train.load_exported` rebuilds it).
Other targets and teachers: the Python API (:class:`divmin.align.FDPGTrainer`, :class:`divmin.diffusion.FDistillTrainer`).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..align import EnergyTarget, FDPGConfig, FDPGTrainer, PointwiseConstraint
from ..diffusion import EDMDenoiser, FDistillTrainer, FDistillConfig, GaussianMixtureTeacher, MLPBackbone, MLPGenerator
from ..engine import EngineConfig, Int, Number, Text, Tuple
from . import _models as M
from ._config import SOURCE_CHECKS
from ._data import prompts_of
from ..engine import export_module, exportable_module
from ._methods import LMSource, _rows, _short_engine
from ._registry import CausalLMMethod, Models, TrainMethod, train_method, trainer_config

__all__ = ["FDPGTrainConfig", "FDistillTrainConfig"]


# ---------------------------------------------------------------------- fdpg
@dataclasses.dataclass
class FDPGTrainConfig(LMSource, FDPGConfig):
    """``divmin train fdpg``: every :class:`FDPGConfig` key, plus the model, the prompts and the target."""

    target_words: tuple[str, ...] = ("good",)  # b(y) = 1 when the completion contains one of these words
    constraint_epsilon: float = 0.01  # smoothing of b: P ~ a (b + epsilon) keeps failing samples finite
    engine: EngineConfig = dataclasses.field(default_factory=_short_engine)  # training loop settings

    CHECKS = dict(FDPGConfig.CHECKS, **SOURCE_CHECKS, target_words=Tuple(each=Text(), min_len=1),
                  constraint_epsilon=Number(ge=0))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eval_data is not None:
            raise ValueError("`eval_data` is not used by fdpg (it evaluates on its own samples); leave it null")


def _contains_any(words: tuple[str, ...]):
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, words)) + r")\b")
    return lambda texts: [bool(pattern.search(t)) for t in texts]


def _tiny_prompts() -> list[dict[str, str]]:
    return [{"prompt": f"what is {w} :"} for w in ("one", "two", "three", "four")]


@train_method("fdpg", FDPGTrainConfig, "align an LM to an energy-based target (f-DPG; GDC's word constraint)")
class FDPG(CausalLMMethod):
    checkpoint_model = "policy"

    def models(self, config: FDPGTrainConfig, training: bool) -> Models:
        policy = M.apply_lora(M.source(config, "model", "student", seed=config.engine.seed), config.lora)
        return Models(policy, M.tokenizer_of(config))

    def trainer(self, config: FDPGTrainConfig, models: Models) -> FDPGTrainer:
        contexts = prompts_of(_rows(config, "data", _tiny_prompts), models.tokenizer)
        target = EnergyTarget(None) * PointwiseConstraint(_contains_any(config.target_words),
                                                          epsilon=config.constraint_epsilon)
        return FDPGTrainer(models.model, models.tokenizer, target, contexts=contexts,
                           config=trainer_config(config, FDPGConfig))


# ------------------------------------------------------------------ fdistill
def _square_means() -> tuple[tuple[float, ...], ...]:
    return ((-2.0, -2.0), (-2.0, 2.0), (2.0, -2.0), (2.0, 2.0))


def _fdistill_engine() -> EngineConfig:
    return EngineConfig(max_steps=200, log_every=20)


@dataclasses.dataclass
class FDistillTrainConfig(FDistillConfig):
    """``divmin train fdistill``: every :class:`FDistillConfig` key, plus the teacher mixture and the networks."""

    means: tuple[tuple[float, ...], ...] = dataclasses.field(default_factory=_square_means)  # teacher mixture means, K points of dimension D
    mode_std: float = 0.3  # standard deviation of every teacher component
    hidden: int = 64  # width of the generator, fake-score and discriminator MLPs
    depth: int = 2  # residual blocks of the fake score (the generator has depth + 1 layers)
    init_scale: float = 3.0  # the generator starts as N(0, init_scale^2 I)
    engine: EngineConfig = dataclasses.field(default_factory=_fdistill_engine)  # max_steps = generator updates

    CHECKS = dict(FDistillConfig.CHECKS, means=Tuple(each=Tuple(each=Number(), min_len=1), min_len=1),
                  mode_std=Number(gt=0), hidden=Int(ge=2), depth=Int(ge=1), init_scale=Number(gt=0))

    def __post_init__(self) -> None:
        super().__post_init__()
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
            torch.manual_seed(config.engine.seed)
            gen = _mlp_generator(**_generator_args(config))
        teacher = GaussianMixtureTeacher(torch.tensor(config.means), config.mode_std)
        return Models(gen, None, {"teacher": teacher})

    def trainer(self, config: FDistillTrainConfig, models: Models) -> FDistillTrainer:
        teacher = models.others["teacher"]
        radius = float(teacher.means.norm(dim=1).max().clamp_min(1.0))
        dim = teacher.dim
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.engine.seed + 1)
            fake = EDMDenoiser(MLPBackbone(dim, config.hidden, config.depth), sigma_data=radius)
        return FDistillTrainer(models.model, teacher, fake, config=trainer_config(config, FDistillConfig), sample_shape=(dim,))

    def export(self, model: nn.Module, models: Models, config: Any, run_dir: Path) -> list[Path]:
        return export_module(model, "mlp_generator", _generator_args(config), run_dir)
