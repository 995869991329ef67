"""``divmin train fdpo`` (preference optimisation) and ``divmin train fdpg`` (an LM toward an
energy-based target), on Hugging Face causal LMs and TRL-format data.

Each train config is where the models and data come from (:class:`divmin.lm.LMSource`) plus what
the method adds to them, and, nested under the method's name, the trainer's own config:
``--set fdpo.beta=0.3 --set fdpo.engine.max_steps=10``.

fdpg's target is GDC's pointwise constraint: P(y | x) proportional to a(y | x) (b(y) + epsilon),
with a the initial model and b(y) = 1 when the completion contains one of ``target_words``; other
targets: the Python API (:class:`FDPGTrainer`).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Callable

from ..data import prompts_of, rows_of, tiny_preference_rows
from ..engine import EngineConfig, Instance, Models, Number, Text, Tuple, train_method
from ..lm import SOURCE_CHECKS, CausalLMMethod, LMSource, load_causal_lm
from ._fdpg_trainer import FDPGConfig, FDPGTrainer
from ._fdpo_trainer import FDPOConfig, FDPOTrainer
from ._targets import EnergyTarget, PointwiseConstraint

__all__ = ["FDPGTrainConfig", "FDPOTrainConfig"]


def _short_engine() -> EngineConfig:
    # 100 steps: the tiny defaults finish in seconds; set <method>.engine.max_steps for a real run
    return EngineConfig(max_steps=100, log_every=10)


# ---------------------------------------------------------------------- fdpo
@dataclasses.dataclass
class FDPOTrainConfig(LMSource):
    """``divmin train fdpo``: the models and data, and the :class:`FDPOConfig` under ``fdpo``."""

    ref_model: str | Path | None = None  # the reference policy (name or path); null = a frozen copy of `model` (see `fdpo.reference`)
    fdpo: FDPOConfig = dataclasses.field(default_factory=lambda: FDPOConfig(engine=_short_engine()))  # f-DPO itself (divergence, beta, lr, engine...)

    CHECKS = dict(SOURCE_CHECKS, ref_model=Instance((str, Path), optional=True), fdpo=Instance(FDPOConfig))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ref_model is not None and self.fdpo.reference == "adapter":
            raise ValueError("`ref_model` is not used with `fdpo.reference`='adapter' (the base without adapter is "
                             "the reference); set one or the other")
        if self.fdpo.reference == "adapter" and self.lora.r == 0:
            raise ValueError("`fdpo.reference`='adapter' needs LoRA: set `lora.r` > 0")


@train_method("fdpo", FDPOTrainConfig, "preference optimisation (f-DPO: DPO under any admissible f)")
class FDPO(CausalLMMethod):
    checkpoint_model = "policy"

    def models(self, config: FDPOTrainConfig, training: bool) -> Models:
        policy, tokenizer = self.trained_lm(config, config.fdpo.engine.seed)
        ref = load_causal_lm(config.ref_model, key="ref_model", torch_dtype=config.torch_dtype,
                             trust_remote_code=config.trust_remote_code) if training and config.ref_model else None
        return Models(policy, tokenizer, {"ref_model": ref})

    def trainer(self, config: FDPOTrainConfig, models: Models) -> FDPOTrainer:
        cols = (("prompt", "chosen", "rejected"),)
        return FDPOTrainer(models.model, models.tokenizer, rows_of(config, "data", tiny_preference_rows, cols, "fdpo"),
                           eval_dataset=rows_of(config, "eval_data", None, cols, "fdpo"),
                           ref_model=models.others["ref_model"], config=config.fdpo)


# ---------------------------------------------------------------------- fdpg
@dataclasses.dataclass
class FDPGTrainConfig(LMSource):
    """``divmin train fdpg``: the model, the prompts and the target, and the :class:`FDPGConfig` under ``fdpg``."""

    target_words: tuple[str, ...] = ("good",)  # b(y) = 1 when the completion contains one of these words
    constraint_epsilon: float = 0.01  # smoothing of b: P ~ a (b + epsilon) keeps failing samples finite
    fdpg: FDPGConfig = dataclasses.field(default_factory=lambda: FDPGConfig(engine=_short_engine()))  # f-DPG itself (divergence, lr, sampling, engine...)

    CHECKS = dict(SOURCE_CHECKS, target_words=Tuple(each=Text(), min_len=1), constraint_epsilon=Number(ge=0),
                  fdpg=Instance(FDPGConfig))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eval_data is not None:
            raise ValueError("`eval_data` is not used by fdpg (it evaluates on its own samples); leave it null")


def _contains_any(words: tuple[str, ...]) -> Callable[[list[str]], list[bool]]:
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, words)) + r")\b")
    return lambda texts: [bool(pattern.search(t)) for t in texts]


def _tiny_prompts() -> list[dict[str, str]]:
    return [{"prompt": f"what is {w} :"} for w in ("one", "two", "three", "four")]


@train_method("fdpg", FDPGTrainConfig, "align an LM to an energy-based target (f-DPG; GDC's word constraint)")
class FDPG(CausalLMMethod):
    checkpoint_model = "policy"

    def models(self, config: FDPGTrainConfig, training: bool) -> Models:
        return Models(*self.trained_lm(config, config.fdpg.engine.seed))

    def trainer(self, config: FDPGTrainConfig, models: Models) -> FDPGTrainer:
        contexts = prompts_of(rows_of(config, "data", _tiny_prompts), models.tokenizer)
        target = EnergyTarget(None) * PointwiseConstraint(_contains_any(config.target_words),
                                                          epsilon=config.constraint_epsilon)
        return FDPGTrainer(models.model, models.tokenizer, target, contexts=contexts, config=config.fdpg)
