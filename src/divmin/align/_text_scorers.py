"""Ready-made text scorers for energy-based targets (optional extras).

``vader_sentiment()`` wraps the VADER lexicon model (Hutto & Gilbert 2014, the
``vaderSentiment`` package, ``pip install divmin[text]``): a rule-based English
sentiment scorer that needs no download and no GPU. Use its score as a reward
tilt or threshold it into a GDC pointwise constraint:

>>> from divmin.align import EnergyTarget, PointwiseConstraint, RewardTilt
>>> score = vader_sentiment()                                   # doctest: +SKIP
>>> positive = EnergyTarget() * PointwiseConstraint(lambda t: score(t) > 0.5)   # doctest: +SKIP
>>> tilted = EnergyTarget() * RewardTilt(score, beta=0.1)       # doctest: +SKIP
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["vader_sentiment"]

_FIELDS = ("compound", "pos", "neg", "neu")


def vader_sentiment(field: str = "compound") -> Callable[[Sequence[str]], Tensor]:
    """A scorer texts -> (B,) VADER ``field`` scores ("compound" in [-1, 1]; "pos"/"neg"/"neu" in [0, 1])."""
    if field not in _FIELDS:
        raise ValueError(f"`field` must be one of {_FIELDS}, got {field!r}")
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("vader_sentiment needs the optional `vaderSentiment` package: "
                          "pip install 'divmin[text]'") from err
    analyzer = SentimentIntensityAnalyzer()

    def score(texts: Sequence[str]) -> Tensor:
        if isinstance(texts, str):
            raise TypeError("the scorer takes a sequence of texts, not one string")
        return torch.tensor([analyzer.polarity_scores(t)[field] for t in texts], dtype=torch.float32)

    return score
