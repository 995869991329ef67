"""``divmin train depict``: DEPICT deep clustering of an image set, the clustering network exported.

Data (``data``): null = scikit-learn's 8x8 digits (1797 images, shipped with the package, no
download); ``"fashion-mnist"`` = the 70,000 images (train then test) of Debian's
``dataset-fashion-mnist`` files (:func:`divmin.data.fashion_mnist`); ``max_samples`` keeps the first
ones. The method's knobs are :class:`DepictConfig`'s, under ``depict.`` (``--set depict.n_clusters=5``).

Export: the trained :class:`DepictNet` (encoder + clustering head) as ``model.safetensors`` +
``config.json`` in ``RUN_DIR/final``; :func:`divmin.engine.load_exported` rebuilds it, and
``net.clean(x)[1].argmax(1)`` gives the cluster of each image ``x`` (N, C, H, W) in [0, 1].
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from torch import nn

from ..data import ImageSource
from ..engine import EngineConfig, Instance, Models, TrainMethod, export_module, exportable_module, train_method
from ._nets import DepictNet
from ._trainer import DepictConfig, DepictTrainer

__all__ = ["DEPICTTrainConfig"]


def _tiny_depict() -> DepictConfig:
    # seconds on a CPU (about 6 s of one core on digits; clustering accuracy 0.65, k-means on its
    # pretrained embedding 0.62): the depict recipe's network, a fifth of its training
    return DepictConfig(channels=(16, 32), embed_dim=32, noise=0.2, pretrain_steps=200, kmeans_n_init=3,
                        engine=EngineConfig(max_steps=300, log_every=50))


@dataclasses.dataclass
class DEPICTTrainConfig(ImageSource):
    """``divmin train depict``: the images to cluster (``data``, ``max_samples``), and DEPICT's settings under ``depict``."""

    depict: DepictConfig = dataclasses.field(default_factory=_tiny_depict)  # the method (depict.engine: the training loop)

    CHECKS = dict(ImageSource.CHECKS, depict=Instance(DepictConfig))


@exportable_module("depict_net")
def _depict_net(in_shape: list[int], n_clusters: int, channels: list[int], embed_dim: int, noise: float,
                head: str) -> nn.Module:
    return DepictNet(tuple(in_shape), n_clusters=n_clusters, channels=tuple(channels), embed_dim=embed_dim,
                     noise=noise, head=head)


def _net_args(config: DEPICTTrainConfig) -> dict[str, Any]:
    c = config.depict
    return {"in_shape": list(config.image_set().shape), "n_clusters": c.n_clusters, "channels": list(c.channels),
            "embed_dim": c.embed_dim, "noise": c.noise, "head": c.head}


@train_method("depict", DEPICTTrainConfig, "cluster images with DEPICT (digits by default)")
class DEPICTMethod(TrainMethod):
    checkpoint_model = "clusterer"

    def models(self, config: DEPICTTrainConfig, training: bool) -> Models:
        # the network's shape, to reload a checkpoint into; DepictTrainer builds and trains its own
        return Models(_depict_net(**_net_args(config)))

    def trainer(self, config: DEPICTTrainConfig, models: Models) -> DepictTrainer:
        x = config.images()[0]
        return DepictTrainer(x, config=config.depict)

    def export(self, model: nn.Module, models: Models, config: Any, run_dir: Path) -> list[Path]:
        return export_module(model, "depict_net", _net_args(config), run_dir)
