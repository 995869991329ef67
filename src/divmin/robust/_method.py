"""``divmin train weat``: a classifier trained robustly (WEAT by default) on images, the classifier exported.

Data (``data``): null = scikit-learn's 8x8 digits (1797 images, no download); ``"fashion-mnist"`` =
the 70,000 28x28 images (train then test) of Debian's ``dataset-fashion-mnist`` files; ``max_samples``
keeps the first ones. Pixels are in [0, 1] and flattened; ``test_fraction`` of them (drawn by
``split_seed``) are held out, and the run ends with :func:`divmin.robust.robustness_metrics` on them
(clean and PGD accuracy, energies). The classifier is an MLP with two hidden layers of ``width``.
The method's knobs are :class:`WEATConfig`'s, under ``weat.`` (``--set weat.objective=trades``).

Export: ``model.safetensors`` + ``config.json`` in ``RUN_DIR/final``; :func:`divmin.engine.load_exported`
rebuilds the classifier, ``(N, D) -> (N, classes)`` logits.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from ..data import ImageSource
from ..engine import (EngineConfig, Instance, Int, Models, Number, TrainMethod, export_module, exportable_module,
                      train_method)
from ._objectives import AttackSettings
from ._trainer import RobustTrainer

from ._trainer import WEATConfig

__all__ = ["WEATTrainConfig"]


def _tiny_weat() -> WEATConfig:
    # seconds on a CPU: the weat recipe's threat model (L-inf 0.1 on [0, 1] pixels), shorter attacks and run
    return WEATConfig(objective="weat", attack=AttackSettings(eps=0.1, steps=5), eval_steps=10,
                      engine=EngineConfig(max_steps=150, log_every=25))


@dataclasses.dataclass
class WEATTrainConfig(ImageSource):
    """``divmin train weat``: the images (``data``, ``max_samples``), their split, the classifier's width, and
    WEAT's settings under ``weat``."""

    test_fraction: float = 0.25  # share of the images held out for the final evaluation (clean and PGD accuracy)
    split_seed: int = 0  # seed of the train / held-out split
    width: int = 128  # hidden width of the MLP classifier (two hidden layers)
    weat: WEATConfig = dataclasses.field(default_factory=_tiny_weat)  # the method (weat.engine: the training loop)

    CHECKS = dict(ImageSource.CHECKS, test_fraction=Number(gt=0, lt=1), split_seed=Int(ge=0), width=Int(ge=1),
                  weat=Instance(WEATConfig))


@exportable_module("mlp_classifier")
def _mlp_classifier(features: int, width: int, classes: int) -> nn.Module:
    return nn.Sequential(nn.Linear(features, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, classes))


def _classifier_args(config: WEATTrainConfig) -> dict[str, Any]:
    images = config.image_set()
    return {"features": images.features, "width": config.width, "classes": images.classes}


def _splits(config: WEATTrainConfig) -> tuple[TensorDataset, TensorDataset]:
    x, y = config.images()
    x = x.flatten(1)
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(config.split_seed))
    n_test = max(1, int(round(config.test_fraction * x.shape[0])))
    if n_test >= x.shape[0]:
        raise ValueError(f"`test_fraction` {config.test_fraction} of {x.shape[0]} images leaves none to train on")
    test, train = perm[:n_test], perm[n_test:]
    return TensorDataset(x[train], y[train]), TensorDataset(x[test], y[test])


@train_method("weat", WEATTrainConfig, "train an image classifier robustly with WEAT (digits by default)")
class WEATMethod(TrainMethod):
    checkpoint_model = "classifier"

    def models(self, config: WEATTrainConfig, training: bool) -> Models:
        with torch.random.fork_rng(devices=[]):  # initialised from the run's seed, the global RNG left alone
            torch.manual_seed(config.weat.engine.seed)
            return Models(_mlp_classifier(**_classifier_args(config)))

    def trainer(self, config: WEATTrainConfig, models: Models) -> RobustTrainer:
        train, test = _splits(config)
        return RobustTrainer(models.model, train, eval_dataset=test, config=config.weat)

    def export(self, model: nn.Module, models: Models, config: Any, run_dir: Path) -> list[Path]:
        return export_module(model, "mlp_classifier", _classifier_args(config), run_dir)
