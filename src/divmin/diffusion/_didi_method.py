"""``divmin train didi``: DiDi-Instruct, a few-step student distilled from a masked diffusion LM teacher.

Teacher (``teacher``): the ``final/`` directory of a ``divmin train mdlm`` run (any export that
:func:`divmin.engine.load_exported` rebuilds into a :class:`MaskedDiffusionLM`, a previous student
included), or null: a toy teacher, an :class:`MDLMTransformer` trained in seconds (``toy_teacher``)
on a random order-1 Markov language whose exact likelihood then scores the student's samples
(the evaluation's ``gen_ppl``), as the ``didi-synthetic`` recipe does. The toy teacher is not
saved: it is trained again, identically, when the run resumes. The method's knobs are
:class:`DiDiConfig`'s, under ``didi.`` (``--set didi.engine.max_steps=100``).

Export: the EMA student (the model that samples) as ``model.safetensors`` + ``config.json`` in
``RUN_DIR/final``, with the teacher's builder and arguments (and its tokenizer, when it has one), so
that :func:`divmin.engine.load_exported` rebuilds it wherever the teacher is rebuilt.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import MarkovLanguage
from ..engine import (EngineConfig, Instance, Int, Models, Number, TrainMethod, export_module, exportable_module,
                      load_exported, train_method, validate)
from ._didi_config import DiDiConfig
from ._didi_trainer import DiDiTrainer
from ._mdlm import MaskedDiffusionLM
from ._mdlm_nets import MDLMTransformer
from ._mdlm_trainer import MDLMConfig, MDLMTrainer

__all__ = ["DiDiTrainConfig", "ToyTeacherConfig"]


def _toy_training() -> MDLMConfig:
    return MDLMConfig(batch_size=64, lr=3e-3, engine=EngineConfig(max_steps=300, warmup_steps=20, log_every=100,
                                                                  progress=False, tensorboard=False,
                                                                  label="toy teacher"))


@dataclasses.dataclass
class ToyTeacherConfig:
    """The teacher of ``divmin train didi`` when ``teacher`` is null: an MDLM on a random Markov language."""

    vocab_size: int = 16  # V of the Markov language
    length: int = 8  # L, the sequence length
    sharpness: float = 2.0  # scale of the chain's logits (larger: lower entropy)
    language_seed: int = 0  # seed of the chain's tables
    width: int = 32  # transformer width (of the teacher, the student and the discriminator's trunk)
    depth: int = 2  # transformer layers
    heads: int = 2  # attention heads
    training: MDLMConfig = dataclasses.field(default_factory=_toy_training)  # the teacher's MDLM training (seconds)

    CHECKS = dict(vocab_size=Int(ge=2), length=Int(ge=2), sharpness=Number(ge=0), language_seed=Int(ge=0),
                  width=Int(ge=2), depth=Int(ge=1), heads=Int(ge=1), training=Instance(MDLMConfig))

    def __post_init__(self) -> None:
        validate(self)
        if self.width % self.heads or self.width % 2:
            raise ValueError(f"`width` ({self.width}) must be even and divisible by `heads` ({self.heads})")

    def language(self) -> MarkovLanguage:
        return MarkovLanguage(self.vocab_size, self.length, order=1, sharpness=self.sharpness,
                              seed=self.language_seed)


def _tiny_didi() -> DiDiConfig:
    # seconds on a CPU: the didi-synthetic recipe's settings for tiny models (a fast discriminator that
    # sees all blocks, noise t <= 0.3), a smaller target pool and a short run
    return DiDiConfig(batch_size=32, group_size=4, lr_student=2e-4, lr_discriminator=1e-3, disc_trainable_blocks=2,
                      disc_steps=2, disc_warmup=20, t_max=0.3, teacher_nfe=16, teacher_pool=256, ema_decay=0.95,
                      guidance_scale=1.0, eval_samples=256, engine=EngineConfig(max_steps=30, log_every=10,
                                                                                max_grad_norm=1.0))


@dataclasses.dataclass
class DiDiTrainConfig:
    """``divmin train didi``: the teacher, and DiDi-Instruct's settings under ``didi``."""

    teacher: str | Path | None = None  # a `divmin train mdlm` run's final/ directory; null = the toy teacher below
    toy_teacher: ToyTeacherConfig = dataclasses.field(default_factory=ToyTeacherConfig)  # used when teacher is null
    didi: DiDiConfig = dataclasses.field(default_factory=_tiny_didi)  # the method (didi.engine: the training loop)

    CHECKS = dict(teacher=Instance((str, Path), optional=True), toy_teacher=Instance(ToyTeacherConfig),
                  didi=Instance(DiDiConfig))

    def __post_init__(self) -> None:
        validate(self)


@exportable_module("didi_toy_mdlm")
def _toy_mdlm(vocab_size: int, length: int, width: int, depth: int, heads: int) -> nn.Module:
    return MaskedDiffusionLM(MDLMTransformer(vocab_size, length, width=width, depth=depth, heads=heads),
                             vocab_size, length)


def _toy_spec(c: ToyTeacherConfig) -> dict[str, Any]:
    return {"divmin_module": "didi_toy_mdlm",
            "args": {"vocab_size": c.vocab_size, "length": c.length, "width": c.width, "depth": c.depth,
                     "heads": c.heads}}


def _exported_spec(teacher: Path) -> dict[str, Any]:
    """The {divmin_module, args} of an exported teacher (its ``config.json``), checked to be a divmin module."""
    try:
        spec = json.loads((teacher / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"`teacher` {teacher}: no readable config.json ({type(err).__name__}); it must be the "
                         "final/ directory of a `divmin train mdlm` run") from None
    if not isinstance(spec, dict) or "divmin_module" not in spec:
        raise ValueError(f"`teacher` {teacher}: not a divmin module export (a `divmin train mdlm` run's final/)")
    return spec


def _load_teacher(config: DiDiTrainConfig) -> tuple[MaskedDiffusionLM, dict[str, Any], Any]:
    """(teacher, its export spec, its tokenizer or None) from ``config.teacher``."""
    path = Path(config.teacher)
    spec = _exported_spec(path)
    teacher = load_exported(path)
    if not isinstance(teacher, MaskedDiffusionLM):
        raise ValueError(f"`teacher` {path} holds a {type(teacher).__name__}, not a MaskedDiffusionLM")
    tokenizer = None
    if (path / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
    return teacher, spec, tokenizer


def _toy_teacher(config: DiDiTrainConfig, train: bool) -> MaskedDiffusionLM:
    """The toy teacher: built from ``didi.engine.seed``, trained on its Markov language when ``train``."""
    c = config.toy_teacher
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.didi.engine.seed)
        teacher = _toy_mdlm(**_toy_spec(c)["args"])
    if train:
        trainer = MDLMTrainer(teacher, c.language().sample, config=c.training)
        trainer.fit()
        teacher = trainer.model
    return teacher.eval().requires_grad_(False)


@train_method("didi", DiDiTrainConfig, "distil a few-step student from a masked diffusion LM (DiDi-Instruct)")
class DiDiMethod(TrainMethod):
    checkpoint_model = "student_ema"  # the EMA student: what DiDiTrainer.sample draws from
    trained_attr = "student_ema"

    def models(self, config: DiDiTrainConfig, training: bool) -> Models:
        if config.teacher is None:
            teacher, spec, tokenizer = _toy_teacher(config, training), _toy_spec(config.toy_teacher), None
            judge = config.toy_teacher.language()
        else:
            (teacher, spec, tokenizer), judge = _load_teacher(config), None
        student = copy.deepcopy(teacher).requires_grad_(True)  # DiDi-Instruct starts the student at the teacher
        return Models(student, tokenizer, {"teacher": teacher, "spec": spec, "judge": judge})

    def trainer(self, config: DiDiTrainConfig, models: Models) -> DiDiTrainer:
        return DiDiTrainer(student=models.model, teacher=models.others["teacher"], config=config.didi,
                           judge=models.others["judge"])

    def export(self, model: nn.Module, models: Models, config: Any, run_dir: Path) -> list[Path]:
        spec = models.others["spec"]
        return export_module(model, spec["divmin_module"], spec["args"], run_dir, tokenizer=models.tokenizer)
