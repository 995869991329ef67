"""``divmin train kd`` and ``divmin train fdpo``: Hugging Face causal LMs, TRL-format data.

Each config subclasses the trainer's config (every key of :class:`~divmin.distill.DistillConfig`
/ :class:`~divmin.align.FDPOConfig`, with its checks) and adds where the models and data come from.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..align import FDPOConfig, FDPOTrainer
from ..distill import DistillConfig, DistillTrainer
from ..engine import EngineConfig, Instance, Int
from . import _models as M
from ._config import SOURCE_CHECKS, LoraSettings
from ._data import check_columns, kd_examples, load_rows, tiny_kd_rows, tiny_preference_rows
from ._registry import CausalLMMethod, Models, train_method, trainer_config

__all__ = ["FDPOTrainConfig", "KDTrainConfig", "LMSource"]


def _short_engine() -> EngineConfig:
    # 100 steps: the tiny defaults finish in seconds; set engine.max_steps for a real run
    return EngineConfig(max_steps=100, log_every=10)


@dataclasses.dataclass
class LMSource:
    """Where a causal-LM method's model, tokenizer and data come from (shared by the LM methods)."""

    model: str | Path | None = None  # the trained model: Hugging Face name or local path; null = the tiny offline default
    tokenizer: str | Path | None = None  # tokenizer name or path; null = the model's (the tiny default's without a model)
    data: str | Path | None = None  # training data: a .jsonl / .csv file or a `datasets` save_to_disk directory; null = the tiny default data
    eval_data: str | Path | None = None  # held-out data in the same format; null = no evaluation
    lora: LoraSettings = dataclasses.field(default_factory=LoraSettings)  # LoRA adapters (peft); r: 0 = full fine-tuning
    merge_lora: bool = False  # at export, merge the LoRA adapters into the base (else final/ holds the adapter alone)
    torch_dtype: str = "float32"  # dtype named models are loaded in: float32, bfloat16, float16 or auto
    trust_remote_code: bool = False  # passed to from_pretrained (models with their own code on the Hub)


def _lm(config: Any, key: str, role: str) -> Any:
    return M.source(config, key, role, seed=config.engine.seed + (role == "teacher"))


def _rows(config: Any, key: str, default: Any, columns: tuple[tuple[str, ...], ...] = (), method: str = "") -> Any:
    """The rows of ``config.<key>`` (``default()`` for unset training data, None for unset eval data)."""
    path = getattr(config, key)
    if path is None:
        return default() if key == "data" else None
    rows = load_rows(path, key=key)
    if columns:
        check_columns(rows, columns, key=key, method=method)
    return rows


# ------------------------------------------------------------------------ kd
@dataclasses.dataclass
class KDTrainConfig(LMSource, DistillConfig):
    """``divmin train kd``: every :class:`DistillConfig` key, plus the models and data."""

    teacher: str | Path | None = None  # the teacher: Hugging Face name or local path (same vocabulary as `model`); null = the tiny default teacher
    max_prompt_length: int = 256  # prompts keep their last this many tokens
    max_completion_length: int = 256  # completions keep their first this many tokens
    engine: EngineConfig = dataclasses.field(default_factory=_short_engine)  # training loop settings

    CHECKS = dict(DistillConfig.CHECKS, **SOURCE_CHECKS, teacher=Instance((str, Path), optional=True),
                  max_prompt_length=Int(ge=1), max_completion_length=Int(ge=1))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.task != "causal_lm":
            raise ValueError(f"`task` must be 'causal_lm' for `divmin train kd`, got {self.task!r} "
                             "(classifiers: use divmin.distill.DistillTrainer from Python)")
        if (self.model is None) != (self.teacher is None):
            raise ValueError("`model` and `teacher` must be given together (they share a vocabulary); "
                             "leave both null for the tiny defaults")


@train_method("kd", KDTrainConfig, "knowledge distillation of a teacher LM into a student with any divergence")
class KD(CausalLMMethod):
    checkpoint_model = "student"

    def models(self, config: KDTrainConfig, training: bool) -> Models:
        tokenizer = M.tokenizer_of(config)
        student = M.apply_lora(_lm(config, "model", "student"), config.lora)
        teacher = _lm(config, "teacher", "teacher") if training else None
        return Models(student, tokenizer, {"teacher": teacher})

    def trainer(self, config: KDTrainConfig, models: Models) -> DistillTrainer:
        kw = dict(max_prompt_length=config.max_prompt_length, max_completion_length=config.max_completion_length)
        train = kd_examples(_rows(config, "data", tiny_kd_rows), models.tokenizer, key="data", **kw)
        held = _rows(config, "eval_data", None)
        held = None if held is None else kd_examples(held, models.tokenizer, key="eval_data", **kw)
        return DistillTrainer(models.model, models.others["teacher"], train, eval_dataset=held,
                              tokenizer=models.tokenizer, config=trainer_config(config, DistillConfig))


# ---------------------------------------------------------------------- fdpo
@dataclasses.dataclass
class FDPOTrainConfig(LMSource, FDPOConfig):
    """``divmin train fdpo``: every :class:`FDPOConfig` key, plus the models and data."""

    ref_model: str | Path | None = None  # the reference policy (name or path); null = a frozen copy of `model` (see `reference`)
    engine: EngineConfig = dataclasses.field(default_factory=_short_engine)  # training loop settings

    CHECKS = dict(FDPOConfig.CHECKS, **SOURCE_CHECKS, ref_model=Instance((str, Path), optional=True))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ref_model is not None and self.reference == "adapter":
            raise ValueError("`ref_model` is not used with `reference`='adapter' (the base without adapter is "
                             "the reference); set one or the other")
        if self.reference == "adapter" and self.lora.r == 0:
            raise ValueError("`reference`='adapter' needs LoRA: set `lora.r` > 0")


@train_method("fdpo", FDPOTrainConfig, "preference optimisation (f-DPO: DPO under any admissible f)")
class FDPO(CausalLMMethod):
    checkpoint_model = "policy"

    def models(self, config: FDPOTrainConfig, training: bool) -> Models:
        tokenizer = M.tokenizer_of(config)
        policy = M.apply_lora(_lm(config, "model", "student"), config.lora)
        ref = M.load_causal_lm(config.ref_model, key="ref_model", torch_dtype=config.torch_dtype,
                               trust_remote_code=config.trust_remote_code) if training and config.ref_model else None
        return Models(policy, tokenizer, {"ref_model": ref})

    def trainer(self, config: FDPOTrainConfig, models: Models) -> FDPOTrainer:
        cols = (("prompt", "chosen", "rejected"),)
        return FDPOTrainer(models.model, models.tokenizer, _rows(config, "data", tiny_preference_rows, cols, "fdpo"),
                           eval_dataset=_rows(config, "eval_data", None, cols, "fdpo"),
                           ref_model=models.others["ref_model"],
                           config=trainer_config(config, FDPOConfig))
