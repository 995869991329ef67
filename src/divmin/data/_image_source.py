"""The image sets of the image methods' ``divmin train`` configs, and their shared source fields.

:class:`ImageSource` is to ``divmin train depict`` / ``weat`` what :class:`divmin.lm.LMSource` is to the
LM methods: the base of their train configs, which nest the method's own config beside these fields.
``data``: null = scikit-learn's 8x8 digits (1797 images, shipped with the package, no download);
``"fashion-mnist"`` = the 70,000 28x28 images (train then test) of Debian's ``dataset-fashion-mnist``
files (:func:`fashion_mnist`); ``max_samples`` keeps the first ones.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple

import torch
from torch import Tensor

from ..engine import Int, OneOf, validate
from ..registry import Registry
from ._images import fashion_mnist, load_digits_images

__all__ = ["IMAGE_SETS", "ImageSet", "ImageSource"]


class ImageSet(NamedTuple):
    """A named image set: its loader (-> x (N, C, H, W) in [0, 1], labels (N,)), image shape and classes."""

    load: Callable[[], tuple[Tensor, Tensor]]
    shape: tuple[int, int, int]
    classes: int

    @property
    def features(self) -> int:
        """Pixels per image, C * H * W (the width of a flattened image)."""
        return math.prod(self.shape)


def _fashion() -> tuple[Tensor, Tensor]:
    # train + test, as the clustering literature reports Fashion-MNIST
    (xa, ya), (xb, yb) = fashion_mnist("train"), fashion_mnist("test")
    return torch.cat([xa, xb]), torch.cat([ya, yb])


IMAGE_SETS: Registry[ImageSet] = Registry("image set")
IMAGE_SETS.add("digits", ImageSet(load_digits_images, (1, 8, 8), 10))
IMAGE_SETS.add("fashion-mnist", ImageSet(_fashion, (1, 28, 28), 10))


@dataclasses.dataclass
class ImageSource:
    """Which images an image method trains on (the base of its ``divmin train`` config)."""

    data: str | None = None  # null = scikit-learn's 8x8 digits (no download); "fashion-mnist" = Debian's dataset-fashion-mnist
    max_samples: int | None = None  # use the first this many images (null: all)

    CHECKS = dict(data=OneOf(IMAGE_SETS, optional=True), max_samples=Int(ge=2, optional=True))

    def __post_init__(self) -> None:
        validate(self)

    def image_set(self) -> ImageSet:
        """The :data:`IMAGE_SETS` entry named by ``data`` (digits when null)."""
        return IMAGE_SETS.get(self.data or "digits")

    def images(self) -> tuple[Tensor, Tensor]:
        """The first ``max_samples`` images, x (N, C, H, W) in [0, 1], and their labels (N,)."""
        x, y = self.image_set().load()
        return x[:self.max_samples], y[:self.max_samples]
