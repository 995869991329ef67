"""The registry of trainable methods behind ``divmin train METHOD``.

A method is a class registered with its config dataclass::

    @train_method("kd", KDTrainConfig, "distil a teacher LM into a student")
    class KD(CausalLMMethod):
        checkpoint_model = "student"          # engine model exported (checkpoints/.../models/student.safetensors)
        def models(self, config, training): ...   # -> Models (loads/builds, no data)
        def trainer(self, config, models): ...    # -> the method's MethodTrainer (loads the data)

``export`` (write ``RUN_DIR/final``) and ``trained`` (the trained model of a trainer) have
defaults for Hugging Face causal LMs in :class:`CausalLMMethod`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from torch import nn

from ..engine import Models, TrainMethod, available_methods, get_method, train_method
from ..engine import export_hf

__all__ = ["CausalLMMethod", "Models", "TrainMethod", "available_methods", "get_method", "train_method",
           "trainer_config"]


class CausalLMMethod(TrainMethod):
    """A method that trains a Hugging Face causal LM: exported with ``save_pretrained`` + tokenizer."""

    def export(self, model: nn.Module, models: Models, config: Any, run_dir: Path) -> list[Path]:
        return export_hf(model, models.tokenizer, run_dir, merge_lora=config.merge_lora)


def trainer_config(config: Any, cls: type) -> Any:
    """The trainer's own config (``cls``) from a train config that subclasses it: the shared fields."""
    return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})
