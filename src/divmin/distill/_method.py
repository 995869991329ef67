"""``divmin train kd``: distil a teacher causal LM into a student, on your models and TRL-format data.

The train config is where the models and data come from (:class:`divmin.lm.LMSource`, plus the
teacher and the truncation lengths) and, nested under ``kd``, the trainer's own
:class:`DistillConfig`: ``--set kd.divergence=js --set kd.engine.max_steps=10``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..data import kd_examples, rows_of, tiny_kd_rows
from ..engine import EngineConfig, Instance, Int, Models, train_method
from ..lm import SOURCE_CHECKS, CausalLMMethod, LMSource, causal_lm_of
from ._trainer import DistillConfig, DistillTrainer

__all__ = ["KDTrainConfig"]


def _kd_defaults() -> DistillConfig:
    # 100 steps: the tiny defaults finish in seconds; set kd.engine.max_steps for a real run
    return DistillConfig(engine=EngineConfig(max_steps=100, log_every=10))


@dataclasses.dataclass
class KDTrainConfig(LMSource):
    """``divmin train kd``: the models and data, and the :class:`DistillConfig` under ``kd``."""

    teacher: str | Path | None = None  # the teacher: Hugging Face name or local path (same vocabulary as `model`); null = the tiny default teacher
    max_prompt_length: int = 256  # prompts keep their last this many tokens
    max_completion_length: int = 256  # completions keep their first this many tokens
    kd: DistillConfig = dataclasses.field(default_factory=_kd_defaults)  # the distillation itself (divergence, lr, engine...)

    CHECKS = dict(SOURCE_CHECKS, teacher=Instance((str, Path), optional=True), max_prompt_length=Int(ge=1),
                  max_completion_length=Int(ge=1), kd=Instance(DistillConfig))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kd.task != "causal_lm":
            raise ValueError(f"`kd.task` must be 'causal_lm' for `divmin train kd`, got {self.kd.task!r} "
                             "(classifiers: use divmin.distill.DistillTrainer from Python)")
        if (self.model is None) != (self.teacher is None):
            raise ValueError("`model` and `teacher` must be given together (they share a vocabulary); "
                             "leave both null for the tiny defaults")


@train_method("kd", KDTrainConfig, "knowledge distillation of a teacher LM into a student with any divergence")
class KD(CausalLMMethod):
    checkpoint_model = "student"

    def models(self, config: KDTrainConfig, training: bool) -> Models:
        student, tokenizer = self.trained_lm(config, config.kd.engine.seed)
        teacher = causal_lm_of(config, "teacher", "teacher", config.kd.engine.seed + 1) if training else None
        return Models(student, tokenizer, {"teacher": teacher})

    def trainer(self, config: KDTrainConfig, models: Models) -> DistillTrainer:
        kw = dict(max_prompt_length=config.max_prompt_length, max_completion_length=config.max_completion_length)
        train = kd_examples(rows_of(config, "data", tiny_kd_rows), models.tokenizer, key="data", **kw)
        held = rows_of(config, "eval_data")
        held = None if held is None else kd_examples(held, models.tokenizer, key="eval_data", **kw)
        return DistillTrainer(models.model, models.others["teacher"], train, eval_dataset=held,
                              tokenizer=models.tokenizer, config=config.kd)
