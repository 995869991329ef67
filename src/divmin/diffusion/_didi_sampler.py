"""DiDi-Instruct's reward-guided ancestral sampler.

The plain ancestral sampler of :func:`divmin.diffusion.mdlm_sample`, with the discriminator's
logit c(z, t) ~ log P_t / Q_t (teacher over student) as a reward:

* early steps (t > ``switch``), gradient tilting: the student's probabilities p at masked positions
  become softmax(log p + scale * dc/dp), the gradient taken at the expected next state
  (s/t) mask + ((t - s)/t) p through the discriminator's soft input;
* late steps (t <= ``switch``), best-of-M: M candidate next states are drawn and the one with the
  largest c(z_s, s) is kept.

NFEs count student evaluations (one per step); the discriminator adds one forward and backward
per early step and M forwards per late step (``GuidedSample.disc_calls``).

Reference: Zheng et al., "Ultra-Fast Language Generation via Discrete Diffusion Divergence Instruct" (2025).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
from torch import Tensor

from ..divergences import check_real
from ._mdlm import _check_denoised, _time_grid, mdlm_reverse_step
from ._mdlm_checks import check_int, check_mask_id

__all__ = ["GuidedSample", "guided_sample"]


class GuidedSample(NamedTuple):
    tokens: Tensor  # (n, length) final ids
    calls: int  # student evaluations (= NFEs)
    disc_calls: int  # discriminator forwards (each batch of candidates counts M)


def _tilt(log_probs: Tensor, z: Tensor, disc: torch.nn.Module, t: float, s: float, scale: float,
          mask_id: int) -> Tensor:
    """log_probs (n, L, V + 1) SUBS -> the same with masked positions tilted by scale * grad of the logit."""
    masked = (z == mask_id).unsqueeze(-1)
    to_mask = torch.nn.functional.one_hot(torch.full_like(z, mask_id), mask_id + 1).to(log_probs.dtype)
    with torch.enable_grad():
        p = log_probs.exp().detach().requires_grad_(True)
        expected = torch.where(masked, (t - s) / t * p + (s / t) * to_mask, p)
        logit = disc.forward_soft(expected, torch.full((z.shape[0],), s, device=z.device))
        (grad,) = torch.autograd.grad(logit.sum(), p)
    tilted = log_probs + scale * grad
    tilted[..., mask_id] = -math.inf
    return torch.where(masked, torch.log_softmax(tilted, -1), log_probs)


@torch.no_grad()
def guided_sample(denoiser: Callable[[Tensor, Tensor], Tensor], discriminator: torch.nn.Module, n: int, length: int, *,
                  mask_id: int, nfe: int, guidance_scale: float = 30.0, switch: float = 0.5, best_of: int = 4,
                  generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> GuidedSample:
    """(n, length) samples of ``denoiser`` (SUBS log-probs) in ``nfe`` uniform steps, guided by ``discriminator``.

    ``discriminator(z, t) -> (n,)`` logits and ``discriminator.forward_soft(probs, t)`` (a
    :class:`MaskedDiscriminator`); ``guidance_scale = 0`` and ``best_of = 1`` give the plain sampler.
    """
    grid = _time_grid(nfe, None)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"`n` must be an int >= 1, got {n!r}")
    if isinstance(best_of, bool) or not isinstance(best_of, int) or best_of < 1:
        raise ValueError(f"`best_of` must be an int >= 1, got {best_of!r}")
    check_real("guidance_scale", guidance_scale, ge=0.0)
    check_real("switch", switch)
    length, mask_id = check_int("length", length, ge=1), check_mask_id(mask_id)
    if not callable(denoiser):
        raise TypeError(f"`denoiser` must be callable (z_t, t) -> log-probs, got {type(denoiser).__name__}")
    if not callable(discriminator) or not hasattr(discriminator, "forward_soft"):
        raise TypeError(f"`discriminator` must be callable and have `forward_soft` (a MaskedDiscriminator), "
                        f"got {type(discriminator).__name__}")
    z = torch.full((n, length), mask_id, dtype=torch.long, device=device)
    disc_calls = 0
    for t, s in zip(grid, grid[1:]):
        log_probs = denoiser(z, torch.full((n,), t, device=z.device))
        _check_denoised(log_probs, z, mask_id)
        if t > switch and guidance_scale > 0:
            log_probs, disc_calls = _tilt(log_probs, z, discriminator, t, s, guidance_scale, mask_id), disc_calls + 1
        if t <= switch and best_of > 1:
            m = best_of
            cands = mdlm_reverse_step(log_probs.repeat(m, 1, 1), z.repeat(m, 1), t, s, mask_id=mask_id,
                                      generator=generator)
            score = discriminator(cands, torch.full((m * n,), s, device=z.device)).view(m, n)
            z = cands.view(m, n, length)[score.argmax(0), torch.arange(n, device=z.device)]
            disc_calls += m
        else:
            z = mdlm_reverse_step(log_probs, z, t, s, mask_id=mask_id, generator=generator)
    return GuidedSample(z, len(grid) - 1, disc_calls)
