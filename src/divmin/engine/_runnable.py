"""Train methods (``divmin train METHOD``): the registry every method package registers into.

A method is a class registered, next to its code, with its config dataclass::

    @train_method("kd", KDTrainConfig, "distil a teacher LM into a student")
    class KD(TrainMethod):
        checkpoint_model = "student"          # engine model exported (checkpoints/.../models/student.safetensors)
        def models(self, config, training): ...   # -> Models (loads/builds, no data)
        def trainer(self, config, models): ...    # -> the method's MethodTrainer (loads the data)
        def export(self, model, models, config, run_dir): ...  # -> files written under run_dir/final

:func:`get_method` and :func:`available_methods` first import every subpackage of
``divmin`` (:func:`discover_methods`), so a method registered in any of them is found:
adding one touches its own package only.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from pathlib import Path
from typing import Any, Callable, NamedTuple

from safetensors.torch import load_model
from torch import nn

from ..registry import Registry
from ._method import MethodTrainer

__all__ = ["METHODS", "Models", "TrainMethod", "available_methods", "discover_methods", "get_method", "train_method"]


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
    trained_attr: str = "model"  # trainer attribute holding the trained model after training

    def models(self, config: Any, training: bool) -> Models:
        """Load / build the models; ``training=False`` (re-export) may skip the frozen ones."""
        raise NotImplementedError

    def trainer(self, config: Any, models: Models) -> MethodTrainer:
        """Load the data and construct the method's trainer."""
        raise NotImplementedError

    def trained(self, trainer: MethodTrainer) -> nn.Module:
        return getattr(trainer, self.trained_attr)

    def restore(self, models: Models, checkpoint: Path) -> nn.Module:
        """The model to export, its weights read from the engine checkpoint directory ``checkpoint``
        (``divmin export``); default: ``checkpoint_model``'s weights into ``models.model``. A method whose
        export spans several engine models (speech-to-EGG: encoder and decoder) overrides it."""
        load_model(models.model, str(Path(checkpoint) / "models" / f"{self.checkpoint_model}.safetensors"))
        return models.model

    def export(self, model: nn.Module, models: Models, config: Any, run_dir: Path) -> list[Path]:
        """Write the trained ``model`` under ``run_dir/final``; return the files written."""
        raise NotImplementedError


METHODS: Registry[TrainMethod] = Registry("train method")


def train_method(name: str, config_cls: type, summary: str) -> Callable[[type], type]:
    """Register a :class:`TrainMethod` subclass under ``name`` with its config dataclass."""
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"train method {name!r}: `config_cls` must be a dataclass")

    def make(name: str, cls: type) -> TrainMethod:
        inst = cls()
        inst.name, inst.config_cls, inst.summary = name, config_cls, summary
        return inst

    return METHODS.register(name, make)


_SKIP = frozenset({"recipes", "train"})  # layers above the methods: they register none


def discover_methods() -> None:
    """Import every method package of ``divmin`` (each registers its methods on import)."""
    import divmin

    for info in pkgutil.iter_modules(divmin.__path__):
        if info.ispkg and info.name not in _SKIP:
            importlib.import_module(f"divmin.{info.name}")


def available_methods() -> list[str]:
    discover_methods()
    return METHODS.names()


def get_method(name: str) -> TrainMethod:
    discover_methods()
    return METHODS.get(name)
