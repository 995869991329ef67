"""Log density ratios log r = log p / q from a logistic discriminator (the classifier trick).

A critic c(x) trained to tell target samples (P, label 1) from model samples
(Q, label 0) with the logistic loss

    L(c) = E_P[ softplus(-c(x)) ] + E_Q[ softplus(c(x)) ]

is minimised pointwise where -p sigmoid(-c) + q sigmoid(c) = 0, i.e. at

    c*(x) = log p(x) / q(x) = log r(x):

the optimal logit *is* the log-ratio that the f-divergence estimators consume
(the two terms are means, so the batch sizes do not shift the optimum). With
label smoothing eps (labels 1 - eps for P, eps for Q) the optimum becomes
c* = log(((1 - eps) r + eps) / (eps r + 1 - eps)): log r shrunk toward 0 and
bounded by +-log((1 - eps) / eps), a bias traded for a critic that cannot grow
without bound on (nearly) separable batches.

What is discriminated is the critic's business: noised samples at a noise
level (f-distill), partially masked sequences at a masking time
(DiDi-Instruct), latent codes. The critic should take that level as an input;
here it is only a position in [0, 1] (or a bin id) per sample, used to keep
running statistics per level. :class:`LogRatioEstimator` turns logits of
*model* samples into the log r a gradient estimator uses, in three steps:

1. clamp the logit to +-``logit_clamp``: far from its optimum (early training,
   samples off its training distribution) a critic's logit is unbounded, and
   g(r), h(r) of most members explode with it;
2. divide r by a per-level-bin exponential moving average of its mean over model
   samples: a true ratio has E_Q[r] = 1 at every level, a lagging critic does
   not, and the division restores that mean (f-distill's normaliser);
3. clamp the normalised r to ``ratio_clamp``, bounding the estimator's weights.

References: Gutmann & Hyvarinen, "Noise-contrastive estimation" (2010);
Sugiyama, Suzuki & Kanamori, "Density Ratio Estimation in Machine Learning"
(2012); Xu, Nie & Vahdat, "One-step Diffusion Models with f-Divergence
Distribution Matching" (f-distill, 2025); Zheng et al., DiDi-Instruct (2025).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["LogRatioEstimator", "logistic_discriminator_loss"]


def _float_tensor(name: str, t: Any) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"`{name}` must be a tensor, got {type(t).__name__}")
    if not t.is_floating_point() or t.numel() == 0:
        raise ValueError(f"`{name}` must be a non-empty floating-point tensor, got {t.dtype} of shape "
                         f"{tuple(t.shape)}")


def logistic_discriminator_loss(model_logits: Tensor, target_logits: Tensor, *,
                                label_smoothing: float = 0.0) -> Tensor:
    """The critic's logistic loss E_Q[softplus(c)] + E_P[softplus(-c)]: at its optimum c = log p / q.

    Args:
        model_logits: (N, ...) critic logits on model (generated, "fake") samples, label 0.
        target_logits: (M, ...) critic logits on target (data, teacher, "real") samples, label 1.
        label_smoothing: eps in [0, 0.5): labels become eps and 1 - eps (the optimum then is
            log(((1 - eps) r + eps) / (eps r + 1 - eps)), see the module docstring).

    Returns:
        The scalar loss, in fp32 or wider.

    >>> c = torch.tensor([0.0])
    >>> round(float(logistic_discriminator_loss(c, c)), 4)  # chance level: 2 log 2
    1.3863
    """
    _float_tensor("model_logits", model_logits)
    _float_tensor("target_logits", target_logits)
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) \
            or not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"`label_smoothing` must be a number in [0, 0.5), got {label_smoothing!r}")
    fake = model_logits.to(torch.promote_types(model_logits.dtype, torch.float32))
    real = target_logits.to(torch.promote_types(target_logits.dtype, torch.float32))
    loss = F.softplus(-real).mean() + F.softplus(fake).mean()
    if label_smoothing > 0:
        eps = label_smoothing  # BCE(c, y) = y softplus(-c) + (1 - y) softplus(c); y = 1 - eps on P, eps on Q
        loss = (1 - eps) * loss + eps * (F.softplus(real).mean() + F.softplus(-fake).mean())
    return loss


class LogRatioEstimator:
    """Critic logits on model samples -> log r: clamped, normalised per level bin to E_Q[r] = 1, clamped.

    Args:
        logit_clamp: the logit (the raw log r estimate) is clamped to +-this.
        ratio_clamp: (lo, hi) with 0 < lo < 1 < hi: r after normalisation is clamped here;
            None: no final clamp.
        num_bins: equal bins of the level in [0, 1], each with its own running mean of r.
        ratio_ema: decay in [0, 1) of the per-bin running mean of r (which starts at 1);
            0 turns the normalisation off.

    State: ``ratio_mean``, (num_bins,) float32 on the CPU; ``state_dict`` / ``load_state_dict``
    checkpoint it exactly. Call it on logits of samples from the model Q (the mean of r
    is an expectation under Q); ``update=False`` reads the running means without moving them.
    Differentiable in ``logits`` where no clamp binds (the running mean is a constant).

    >>> est = LogRatioEstimator(num_bins=2, ratio_ema=0.5, ratio_clamp=None)
    >>> log_r = est(torch.log(torch.tensor([2.0, 4.0])), level=torch.tensor([0.1, 0.9]))
    >>> est.ratio_mean  # 0.5 * 1 + 0.5 * r, per bin
    tensor([1.5000, 2.5000])
    >>> [round(v, 4) for v in log_r.exp().tolist()]  # r / running mean
    [1.3333, 1.6]
    """

    def __init__(self, *, logit_clamp: float = 10.0, ratio_clamp: tuple[float, float] | None = (0.1, 20.0),
                 num_bins: int = 1, ratio_ema: float = 0.99) -> None:
        if not (_number(logit_clamp) and logit_clamp > 0):
            raise ValueError(f"`logit_clamp` must be a finite number > 0, got {logit_clamp!r}")
        if ratio_clamp is not None and not (len(ratio_clamp) == 2 and all(map(_number, ratio_clamp))
                                            and 0 < ratio_clamp[0] < 1 < ratio_clamp[1]):
            raise ValueError(f"`ratio_clamp` must be (lo, hi) with 0 < lo < 1 < hi, or None, got {ratio_clamp!r}")
        if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
            raise ValueError(f"`num_bins` must be an int >= 1, got {num_bins!r}")
        if not (_number(ratio_ema) and 0 <= ratio_ema < 1):
            raise ValueError(f"`ratio_ema` must lie in [0, 1), got {ratio_ema!r}")
        self.logit_clamp, self.ratio_clamp = float(logit_clamp), ratio_clamp
        self.num_bins, self.ratio_ema = num_bins, float(ratio_ema)
        self.ratio_mean = torch.ones(num_bins)  # (num_bins,) running E_Q[r] per bin

    def bin_ids(self, level: Tensor) -> Tensor:
        """(B,) levels in [0, 1] -> (B,) int64 bin ids on the CPU; levels outside go to the end bins."""
        _float_tensor("level", level)
        if bool(torch.isnan(level).any()):
            raise ValueError("`level` contains NaN")
        return (level * self.num_bins).long().clamp(0, self.num_bins - 1).cpu()

    def _bins(self, shape: torch.Size, level: Tensor | None, bins: Tensor | None) -> Tensor:
        if level is not None and bins is not None:
            raise ValueError("pass `level` or `bins`, not both")
        if level is None and bins is None:
            if self.num_bins > 1:
                raise ValueError(f"`level` or `bins` is required with num_bins={self.num_bins}")
            return torch.zeros(shape, dtype=torch.long)
        given, name = (level, "level") if level is not None else (bins, "bins")
        if not isinstance(given, Tensor) or given.shape != shape:
            raise ValueError(f"`{name}` must be a tensor of the logits' shape {tuple(shape)}")
        if level is not None:
            return self.bin_ids(level)
        if bins.is_floating_point() or bins.dtype == torch.bool or bool(((bins < 0) | (bins >= self.num_bins)).any()):
            raise ValueError(f"`bins` must be integer bin ids in [0, {self.num_bins})")
        return bins.long().cpu()

    def __call__(self, logits: Tensor, *, level: Tensor | None = None, bins: Tensor | None = None,
                 update: bool = True) -> Tensor:
        """log r (shape of ``logits``, fp32 or wider) from critic logits on model samples.

        Args:
            logits: (B,) critic logits, the raw estimates of log p / q.
            level: (B,) position of each sample in [0, 1] (e.g. normalised log noise level or
                masking time), binned into ``num_bins``; or
            bins: (B,) integer bin ids directly; neither: one bin (needs ``num_bins == 1``).
            update: fold this batch into the running means first.
        """
        _float_tensor("logits", logits)
        log_r = logits.to(torch.promote_types(logits.dtype, torch.float32)).clamp(-self.logit_clamp,
                                                                                  self.logit_clamp)
        if self.ratio_ema > 0:
            ids, mean = self._bins(logits.shape, level, bins), self.ratio_mean
            if update:
                r, decay = log_r.detach().exp().cpu(), self.ratio_ema  # exp is safe: the logit is clamped
                for b in ids.unique().tolist():  # at most num_bins iterations
                    mean[b] = decay * mean[b] + (1 - decay) * r[ids == b].mean()
            log_r = log_r - mean[ids].to(log_r.device).log()
        if self.ratio_clamp is None:
            return log_r
        lo, hi = self.ratio_clamp
        return log_r.clamp(math.log(lo), math.log(hi))

    def state_dict(self) -> dict[str, Tensor]:
        return {"ratio_mean": self.ratio_mean.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mean = torch.as_tensor(state["ratio_mean"])
        if mean.shape != (self.num_bins,):
            raise ValueError(f"`ratio_mean` in the state has shape {tuple(mean.shape)}, expected ({self.num_bins},)")
        self.ratio_mean = mean.detach().to("cpu", torch.float32).clone()


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
