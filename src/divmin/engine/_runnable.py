"""Train methods (``divmin train METHOD``): the registry every method package registers into.

A method is a class registered, next to its code, with its config dataclass::

    # divmin/distill/_method.py
    @train_method("kd", KDTrainConfig, "distil a teacher LM into a student")
    class KD(TrainMethod):
        checkpoint_model = "student"          # engine model exported (checkpoints/.../models/student.safetensors)
        def models(self, config, training): ...   # -> Models (loads/builds, no data)
        def trainer(self, config, models): ...    # -> the method's MethodTrainer (loads the data)
        def export(self, model, models, config, run_dir): ...  # -> files written under run_dir/final

The config nests the method's own config under the method's name (``KDTrainConfig.kd`` is a
``DistillConfig``, with its ``engine``) beside where the models and data come from.
:func:`get_method` and :func:`available_methods` first import every subpackage of ``divmin``
that holds a module named ``_method`` or ``_<something>_method``, and those modules
(:func:`discover_methods`), so a method registered in such a module of any package is found:
adding one touches its own package only (a new file; no list to extend anywhere).
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


def _method_modules(info: pkgutil.ModuleInfo) -> list[str]:
    """The method modules (``_method``, ``_<x>_method``) of package ``info``, read from its files without
    importing it: the packages without one are not imported (nor their dependencies)."""
    path = getattr(info.module_finder, "path", None)
    if path is None:  # not a plain directory (a zip...): import the package to be sure
        return [f"divmin.{info.name}"]
    return [f"divmin.{info.name}.{m.name}" for m in pkgutil.iter_modules([str(Path(path) / info.name)])
            if m.name == "_method" or (m.name.startswith("_") and m.name.endswith("_method"))]


def discover_methods() -> None:
    """Import the method modules of every package of ``divmin`` (each registers its methods on import)."""
    import divmin

    for info in pkgutil.iter_modules(divmin.__path__):
        if info.ispkg and info.name not in _SKIP:
            for module in _method_modules(info):
                importlib.import_module(module)


def available_methods() -> list[str]:
    discover_methods()
    return METHODS.names()


def get_method(name: str) -> TrainMethod:
    discover_methods()
    return METHODS.get(name)
