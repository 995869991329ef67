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
from typing import Any, Callable, NamedTuple

from torch import nn

from ..engine import MethodTrainer
from ._export import export_hf

__all__ = ["CausalLMMethod", "Models", "TrainMethod", "available_methods", "get_method", "train_method",
           "trainer_config"]


class Models(NamedTuple):
    """What a method trains (``model``), its tokenizer, and the frozen others (teacher, reference...)."""

    model: nn.Module
    tokenizer: Any = None
    others: dict[str, Any] = {}


class TrainMethod:
    """Base of the registered methods; see the module docstring."""

    name: str = ""
    config_cls: type = object
    summary: str = ""
    checkpoint_model: str = ""  # engine model name of the exported model
    trained_attr: str = "model"  # trainer attribute holding the trained model after `train`

    def models(self, config: Any, training: bool) -> Models:
        """Load / build the models; ``training=False`` (re-export) may skip the frozen ones."""
        raise NotImplementedError

    def trainer(self, config: Any, models: Models) -> MethodTrainer:
        """Load the data and construct the method's trainer."""
        raise NotImplementedError

    def trained(self, trainer: MethodTrainer) -> nn.Module:
        return getattr(trainer, self.trained_attr)

    def export(self, model: nn.Module, models: Models, config: Any, run_dir: Path) -> list[Path]:
        raise NotImplementedError


class CausalLMMethod(TrainMethod):
    """A method that trains a Hugging Face causal LM: exported with ``save_pretrained`` + tokenizer."""

    def export(self, model: nn.Module, models: Models, config: Any, run_dir: Path) -> list[Path]:
        return export_hf(model, models.tokenizer, run_dir, merge_lora=config.merge_lora)


_METHODS: dict[str, TrainMethod] = {}


def train_method(name: str, config_cls: type, summary: str) -> Callable[[type], type]:
    """Register a :class:`TrainMethod` subclass under ``name`` with its config dataclass."""
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"train method {name!r}: `config_cls` must be a dataclass")

    def deco(cls: type) -> type:
        if name in _METHODS:
            raise ValueError(f"train method {name!r} is already registered")
        inst = cls()
        inst.name, inst.config_cls, inst.summary = name, config_cls, summary
        _METHODS[name] = inst
        return cls

    return deco


def available_methods() -> list[str]:
    return sorted(_METHODS)


def get_method(name: str) -> TrainMethod:
    try:
        return _METHODS[name]
    except KeyError:
        raise ValueError(f"unknown train method {name!r}; available: {', '.join(available_methods())}") from None


def trainer_config(config: Any, cls: type) -> Any:
    """The trainer's own config (``cls``) from a train config that subclasses it: the shared fields."""
    return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})
