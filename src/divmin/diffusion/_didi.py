"""DiDi-Instruct building blocks: the masked-sequence discriminator, the student's path log-probability,
grouped reward normalisation and the policy-gradient surrogate of an integral divergence.

Teacher P (a trained MDLM sampled with many steps), student Q (an MDLM sampled with few);
P_t, Q_t their marginals after masking each token with probability t. The method minimises
int_0^1 D(P_t || Q_t) dt (a registry member of kind ``"integral"``,
:mod:`divmin.divergences._integral`), whose gradient is

    E_{t, path ~ Q, x_t ~ q(.|x_0)} [ -R(x_t, t) grad log Q(path) ],   R = -g(r_t),

with log r_t = log P_t(x_t) / Q_t(x_t) estimated by a discriminator's log-odds (trained
with :func:`divmin.estimators.logistic_discriminator_loss`, teacher samples labelled 1).
Q(path) is the probability of the student's ancestral path z_1 (all mask) -> z_tau -> z_0:
only the tokens drawn at each step depend on the student; when to unmask does not
(it is s/t), so log Q(path) = sum_k sum_{l newly unmasked at step k} log x_theta(z_{t_k}, t_k)[l, z_{t_{k+1}}^l].
The score of the path has the score of z_0's marginal as its conditional mean, so REINFORCE
on the path is unbiased for the gradient above ("intermediate-state matching": the student
is trained from the intermediate states z_tau it meets when sampling with several steps).

Grouped reward normalisation (GRPO-like): the batch is split into groups of G samples that
share one diffusion time t; each reward is standardised within its group and clipped.

With label smoothing eps the optimal logit is log(((1 - eps) r + eps) / (eps r + 1 - eps)),
a monotone compression of log r; like the paper, the reward takes the logit as log r.

Reference: Zheng et al., "Ultra-Fast Language Generation via Discrete Diffusion Divergence
Instruct" (2025).
"""

from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from ..divergences import as_divergence
from ..divergences import check_float_tensor, check_real
from ..estimators import score_function_surrogate
from ._mdlm_checks import (MAX_STEPS, check_ids, check_int, check_log_probs3, check_mask_id, check_masked_rows,
                           check_times)
from ._nets import _noise_embedding

__all__ = ["MaskedDiscriminator", "group_normalize", "integral_policy_loss", "path_log_prob"]

Denoiser = Callable[[Tensor, Tensor], Tensor]  # (z_t (B, L), t (B,)) -> SUBS log-probs (B, L, V + 1)


class MaskedDiscriminator(nn.Module):
    """Logit c(z_t, t) ~ log P_t(z_t) / Q_t(z_t) on masked sequences, on a copy of a trained denoiser's trunk.

    Args:
        trunk: a network with ``features(z_t, t) -> (B, L, width)``, ``features_from_embeddings``,
            ``token`` (nn.Embedding) and ``encoder.layers`` (e.g. the teacher's :class:`MDLMTransformer`);
            it is deep-copied.
        trainable_blocks: the last this-many encoder layers (and the final norm) are trained; the
            rest of the copy is frozen (the authors unfreeze the teacher's last blocks); None: all.
        hidden: width of the head (mean-pooled features + Fourier features of t -> MLP -> 1).

    ``forward(z_t (B, L) ids, t (B,)) -> (B,)`` float32 logits; ``forward_soft(probs (B, L, V + 1), t)``
    the same on a soft input (probability-weighted token embeddings), differentiable in ``probs``.
    """

    def __init__(self, trunk: nn.Module, *, trainable_blocks: int | None = 1, hidden: int = 64) -> None:
        super().__init__()
        for attr in ("features", "features_from_embeddings", "token", "encoder"):
            if not hasattr(trunk, attr):
                raise TypeError(f"`trunk` must have `{attr}` (e.g. an MDLMTransformer), got {type(trunk).__name__}")
        if trainable_blocks is not None and (isinstance(trainable_blocks, bool) or not isinstance(trainable_blocks, int)
                                             or trainable_blocks < 0):
            raise ValueError(f"`trainable_blocks` must be an int >= 0 or None, got {trainable_blocks!r}")
        self.trunk = copy.deepcopy(trunk).requires_grad_(trainable_blocks is None)
        if trainable_blocks:
            for layer in list(self.trunk.encoder.layers)[-trainable_blocks:]:
                layer.requires_grad_(True)
            if hasattr(self.trunk, "norm"):
                self.trunk.norm.requires_grad_(True)
        if hasattr(self.trunk, "head"):
            self.trunk.head.requires_grad_(False)  # the denoiser's head is not used: no parameter left unused
        self.width = self.trunk.token.weight.shape[1]
        self.out = nn.Sequential(nn.Linear(2 * self.width, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def _head(self, feats: Tensor, t: Tensor) -> Tensor:
        pooled = feats.float().mean(1)
        return self.out(torch.cat([pooled, _noise_embedding(t.float(), self.width)], -1)).squeeze(-1).float()

    def forward(self, z_t: Tensor, t: Tensor) -> Tensor:
        if isinstance(z_t, Tensor) and z_t.dim() == 2:
            check_times("t", t, z_t.shape[0])
        return self._head(self.trunk.features(z_t, t), t)

    def forward_soft(self, probs: Tensor, t: Tensor) -> Tensor:
        check_float_tensor("probs", probs, ndim=3)
        if probs.shape[-1] != self.trunk.token.weight.shape[0]:
            raise ValueError(f"`probs` must have {self.trunk.token.weight.shape[0]} columns (V + 1), "
                             f"got shape {tuple(probs.shape)}")
        check_times("t", t, probs.shape[0])
        # each position a distribution over the V + 1 ids: anything else (a 1e30 entry) would give NaN features
        # one host sync: a sum that is not finite, a negative entry, or a row sum off 1 (by more than the
        # rounding of a half-precision softmax)
        p = probs.detach().float()
        tol = max(1e-3, 4 * torch.finfo(probs.dtype).eps)
        bad = (~torch.isfinite(p.sum(-1))).any() | (p < 0).any() | ((p.sum(-1) - 1).abs() > tol).any()
        if bool(bad):
            raise ValueError("`probs` must hold one distribution per position: finite, >= 0, each row summing to 1")
        return self._head(self.trunk.features_from_embeddings(probs @ self.trunk.token.weight, t), t)


def path_log_prob(denoiser: Denoiser, states: Sequence[Tensor], times: Sequence[float], *, mask_id: int) -> Tensor:
    """(B,) log-probability (up to terms free of the denoiser) of ancestral paths states[0] -> ... -> states[-1].

    ``states``: K + 1 tensors (B, L) of ids (states[0] usually all mask), ``times``: the K + 1
    decreasing times in [0, 1] they belong to. Sum over steps of the log-probs of the tokens unmasked there.
    A token once unmasked stays (the absorbing process): a path that changes or re-masks one is refused.
    """
    if not callable(denoiser):
        raise TypeError(f"`denoiser` must be callable (z_t, t) -> log-probs, got {type(denoiser).__name__}")
    states, times = _check_path(states, times, check_mask_id(mask_id))
    total = torch.zeros(states[0].shape[0], device=states[0].device)
    for t, z, z_next in zip(times, states, states[1:]):
        log_probs = denoiser(z, torch.full((z.shape[0],), float(t), device=z.device))
        try:
            check_log_probs3("log_probs", log_probs, tuple(z.shape), mask_id)
            check_masked_rows("log_probs", log_probs, z, mask_id)
        except (TypeError, ValueError) as err:
            raise type(err)(f"`denoiser` returned bad output: {err}") from None
        newly = (z == mask_id) & (z_next != mask_id)
        picked = log_probs.gather(-1, torch.where(newly, z_next, 0).unsqueeze(-1)).squeeze(-1)
        total = total + torch.where(newly, picked, 0.0).sum(-1)
    return total


def _check_path(states: object, times: object, mask_id: int) -> tuple[list[Tensor], list[float]]:
    if isinstance(states, Tensor) or not isinstance(states, (list, tuple)):
        raise TypeError(f"`states` must be a list of (B, L) id tensors, got {type(states).__name__}")
    if isinstance(times, Tensor):
        times = times.detach().flatten().tolist()
    if not isinstance(times, (list, tuple)):
        raise TypeError(f"`times` must be a sequence of floats, got {type(times).__name__}")
    if len(states) != len(times) or not 2 <= len(states) <= MAX_STEPS + 1:
        raise ValueError(f"need as many `states` as `times` (2 to {MAX_STEPS + 1}), got {len(states)} and {len(times)}")
    times = [check_real(f"times[{i}]", v) for i, v in enumerate(times)]
    if not (times[0] <= 1.0 and times[-1] >= 0.0 and all(a > b for a, b in zip(times, times[1:]))):
        raise ValueError(f"`times` must decrease strictly within [0, 1] (1 = all masked), got {times[:8]}")
    first = check_ids("states[0]", states[0], mask_id, with_mask=True)
    states = [first] + [check_ids(f"states[{i}]", z, mask_id, with_mask=True, shape=tuple(first.shape))
                        for i, z in enumerate(states[1:], 1)]
    for i, (z, z_next) in enumerate(zip(states, states[1:])):
        if bool(((z != mask_id) & (z_next != z)).any()):
            raise ValueError(f"`states[{i + 1}]` changes or re-masks a token already unmasked in `states[{i}]`")
    return states, times


def group_normalize(rewards: Tensor, group_size: int, *, clip: float | None = None, eps: float = 1e-6) -> Tensor:
    """(B,) rewards -> (B,) (R - mean_group) / (std_group + eps), clipped to +-clip; groups are consecutive.

    Computed in the rewards' dtype (float32 at least), on rewards scaled by each group's largest
    magnitude, so that float64 rewards beyond float32's range (or whose squares overflow) stay exact.

    >>> group_normalize(torch.tensor([1.0, 3.0, 10.0, 10.0]), 2)
    tensor([-1.0000,  1.0000,  0.0000,  0.0000])
    """
    group_size = check_int("group_size", group_size, ge=2)
    eps = check_real("eps", eps, gt=0.0)
    clip = None if clip is None else check_real("clip", clip, gt=0.0)
    check_float_tensor("rewards", rewards, ndim=1)
    if rewards.shape[0] % group_size:
        raise ValueError(f"`rewards` must be 1-D with a length divisible by `group_size` ({group_size}), "
                         f"got shape {tuple(rewards.shape)}")
    if not bool(rewards.isfinite().all()):
        raise ValueError("`rewards` must be finite (a NaN or infinite reward has no standardised value)")
    r = rewards.to(torch.promote_types(rewards.dtype, torch.float32)).view(-1, group_size)
    if r.shape[0] == 0:
        return r.view(-1)
    # (R - m) / (sd + eps) = (R/c - m/c) / (sd/c + eps/c) with c the group's largest |R|: no overflow in sd
    scale = r.abs().amax(1, keepdim=True).clamp_min(torch.finfo(r.dtype).tiny)
    r = r / scale
    out = (r - r.mean(1, keepdim=True)) / (r.std(1, unbiased=False, keepdim=True) + eps / scale)
    if clip is not None:
        out = out.clamp(-clip, clip)
    return out.view(-1)


def integral_policy_loss(model_logps: Tensor, log_ratio: Tensor, *, divergence: object = "integral_reverse_kl",
                         group_size: int | None = None, clip: float | None = None,
                         baseline: float | None = None) -> tuple[Tensor, Tensor]:
    """Surrogate whose gradient descends int D(P_t || Q_t) dt; returns (loss, rewards (B,), detached).

    Args:
        model_logps: (B,) log Q(path) of the student's samples, with grad.
        log_ratio: (B,) log r_t = log P_t / Q_t at each sample's noised x_t (a discriminator's logit).
        divergence: a registry member of kind "integral" (its ``reward`` maps log r to -g(r)).
        group_size: None: the plain estimate mean_i (g(r_i) - baseline) grad log Q (through
            :func:`divmin.estimators.score_function_surrogate`, unbiased); G: rewards standardised
            within consecutive groups of G (:func:`group_normalize`), the loss -mean(A_i log Q_i).
        clip: clip of the standardised rewards (with ``group_size``).
        baseline: constant subtracted from g (without ``group_size``).
    """
    div = as_divergence(divergence, "divergence", kinds=("integral",))
    check_float_tensor("model_logps", model_logps, ndim=1)
    check_float_tensor("log_ratio", log_ratio, ndim=1)
    if log_ratio.shape != model_logps.shape:
        raise ValueError(f"`log_ratio` must have the shape of `model_logps` {tuple(model_logps.shape)}, "
                         f"got {tuple(log_ratio.shape)}")
    if group_size is None:
        out = score_function_surrogate(model_logps, log_ratio, divergence=div.base(), baseline=baseline)
        return out.loss, out.pseudo_rewards
    rewards = div.reward(log_ratio.detach())
    advantage = group_normalize(rewards, group_size, clip=clip)
    return -(advantage.to(model_logps.dtype) * model_logps).mean(), rewards
